"""The methods the benchmark compares: ours (through ``onelora.adapters.inject``) and peft's
LoRA, VeRA and DoRA at r=1 on the same model and target layers.

Every method trains the model's head as well, so ``frozen`` (the head alone) is the floor every
other method's cost is measured against, together with BitFit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..adapters import MethodSpec, inject
from ..methods import BenchRow, MethodInfo, method_config, method_table
from .models import ModelShape, target_names


@dataclass(frozen=True)
class BenchMethod:
    method: str  # the record's ``method``: frozen, bitfit, onelora, onelora_listing, lora, ...
    impl: str  # "onelora" (this package) or "peft"
    label: str  # for tables and charts
    spec: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: a row that changes its method's options (1LoRA's listing, DoRA keep_output): same merged model
    variant: bool = False

    @property
    def key(self) -> str:
        return self.method if self.impl == "onelora" else f"peft_{self.method}"


#: the rows every ratio refers to: they run first, and every selection includes them
REFERENCES = ("frozen", "bitfit")


def _ours(info: MethodInfo, row: BenchRow) -> BenchMethod:
    """A benchmark row of conf/method/<file>.yaml (``describe.bench``), its options changed as it says."""
    spec = method_config(info.file)
    spec.update(name=row.key, options={**(spec.get("options") or {}), **row.options})
    for key in ("lr", "describe"):
        spec.pop(key, None)
    spec.pop("modules", None)  # the bench's models train their head with every method
    return BenchMethod(row.key, "onelora", row.label, spec, variant=bool(row.options))


def ours() -> list[BenchMethod]:
    """Our rows, in the order they run (and are tabulated): the references, then the method table's order."""
    rows = [_ours(info, row) for info in method_table().values() for row in info.bench]
    return sorted(rows, key=lambda m: m.method not in REFERENCES)


#: peft's counterparts of ours, at r=1 on the same target layers
PEFT = [
    BenchMethod("lora", "peft", "peft LoRA r=1"),
    BenchMethod("vera", "peft", "peft VeRA r=1"),
    BenchMethod("dora", "peft", "peft DoRA r=1"),
]


def all_methods() -> list[BenchMethod]:
    return ours() + PEFT


def by_key() -> dict[str, BenchMethod]:
    return {m.key: m for m in all_methods()}


def mergeable(method: BenchMethod) -> bool:
    """Merged inference times it: one of our methods (not a variant, which merges into the same
    model) that wraps the target linears (a linear update, bias or gamma): merging folds it away."""
    return method.impl == "onelora" and not method.variant and MethodSpec.from_config(method.spec).wraps_linears


def select(keys: list[str] | None) -> list[BenchMethod]:
    """Methods by key (``lora``, ``peft_lora``, ...), in the canonical order; ``frozen`` and
    ``bitfit`` are always included (every ratio refers to them)."""
    methods = all_methods()
    if not keys:
        return methods
    known = [m.key for m in methods]
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown bench method(s) {unknown}; available: {', '.join(known)}")
    wanted = set(keys) | set(REFERENCES)
    return [m for m in methods if m.key in wanted]


def apply(method: BenchMethod, model: nn.Module, shape: ModelShape) -> nn.Module:
    """Put ``method`` into ``model`` (in place) and return the module to call."""
    head = list(shape.head)
    if method.impl == "onelora":
        inject(model, MethodSpec.from_config(method.spec), head=head)
        return model
    return _apply_peft(method.method, model, shape)


def _apply_peft(kind: str, model: nn.Module, shape: ModelShape) -> nn.Module:
    from peft import LoraConfig, VeraConfig, get_peft_model

    targets = target_names(shape, model)
    if kind == "vera":
        config = VeraConfig(r=1, target_modules=targets, vera_dropout=0.0, d_initial=0.1, projection_prng_key=0)
    else:
        config = LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, target_modules=targets, use_dora=kind == "dora")
    peft_model = get_peft_model(model, config)
    inner = peft_model.base_model.model  # the same object as ``model``, adapted in place
    for name, module in inner.named_modules():
        if any(name == h for h in shape.head):
            for p in module.parameters():
                p.requires_grad_(True)
    return inner


def count_adapted(model: nn.Module) -> int:
    """Layers carrying a method (ours or peft's)."""
    from ..adapters import AdaptedLinear

    n = 0
    for module in model.modules():
        if isinstance(module, AdaptedLinear):
            n += 1
        elif hasattr(module, "base_layer") and hasattr(module, "active_adapters"):
            n += 1
    return n


def check_only_head_trains(model: nn.Module, shape: ModelShape) -> None:
    bad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and not any(n.startswith(h + ".") for h in shape.head)
    ]
    if bad:
        raise AssertionError(f"frozen base trains {bad[:3]}")

