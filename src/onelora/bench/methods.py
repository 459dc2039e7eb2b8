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
from ..methods import method_config
from .models import ModelShape, target_names

PEFT_METHODS = ("lora", "vera", "dora")


@dataclass(frozen=True)
class BenchMethod:
    method: str  # the record's ``method``: frozen, bitfit, onelora, onelora_listing, lora, ...
    impl: str  # "onelora" (this package) or "peft"
    label: str  # for tables and charts
    spec: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        return self.method if self.impl == "onelora" else f"peft_{self.method}"


def _ours(method: str, label: str, config: str, **options: Any) -> BenchMethod:
    """A method of conf/method/<config>.yaml (with extra ``options`` for a variant)."""
    spec = dict(method_config(config))
    spec.update(name=method, options={**(spec.get("options") or {}), **options})
    spec.pop("lr", None)
    spec.pop("modules", None)  # the bench's models train their head with every method
    return BenchMethod(method, "onelora", label, spec)


#: in the order they run (and are tabulated); the specs are the shipped method configs
OURS = [
    _ours("frozen", "frozen base (head only)", "head"),
    _ours("bitfit", "BitFit", "bitfit"),
    _ours("onelora", "1LoRA (fused)", "onelora", impl="fused"),
    _ours("onelora_listing", "1LoRA (paper's listing)", "onelora", impl="autograd"),
    _ours("lora", "LoRA r=1", "lora"),
    _ours("vera", "VeRA r=1", "vera"),
    _ours("dora", "DoRA r=1", "dora"),
    _ours("dora_keep_output", "DoRA r=1 (keep_output)", "dora", keep_output=True),
    _ours("mora1", "MoRA type 1", "mora1"),
    _ours("mora6", "MoRA type 6", "mora6"),
    _ours("difffit", "DiffFit", "difffit"),
    _ours("norms", "norms", "norms"),
    _ours("full", "full", "full"),
]
PEFT = [
    BenchMethod("lora", "peft", "peft LoRA r=1"),
    BenchMethod("vera", "peft", "peft VeRA r=1"),
    BenchMethod("dora", "peft", "peft DoRA r=1"),
]
ALL_METHODS = OURS + PEFT
BY_KEY = {m.key: m for m in ALL_METHODS}


def select(keys: list[str] | None) -> list[BenchMethod]:
    """Methods by key (``lora``, ``peft_lora``, ...), in the canonical order; ``frozen`` and
    ``bitfit`` are always included (every ratio refers to them)."""
    if not keys:
        return list(ALL_METHODS)
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise ValueError(f"unknown bench method(s) {unknown}; available: {', '.join(BY_KEY)}")
    wanted = set(keys) | {"frozen", "bitfit"}
    return [m for m in ALL_METHODS if m.key in wanted]


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

