"""The one entry point that puts a method into a model, and the whole-model operations on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .base import ADAPTER_KINDS, AdaptedLinear, AdapterConfigError
from .spec import MethodSpec
from .targeting import TargetRule, is_under, select_linears

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


@dataclass
class AdapterReport:
    """Exact parameter accounting of an adapted model (what ``mode=count`` prints)."""

    method: str
    adapted_layers: int
    adapter_params: int
    head_params: int
    trainable_params: int
    total_params: int
    layers: list[str] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("layers")
        return out


def is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, NORM_TYPES) or name.endswith(("LayerNorm", "RMSNorm"))


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _rule(target_sets: Mapping[str, Any], name: str) -> TargetRule:
    if name not in target_sets:
        raise AdapterConfigError(f"the model defines no target set '{name}'; it has: {', '.join(target_sets)}")
    return TargetRule.from_config(target_sets[name])


def inject(
    model: nn.Module,
    method: MethodSpec | Mapping[str, Any],
    *,
    target_sets: Mapping[str, Any] | None = None,
    head: Iterable[str] = (),
    module_sets: Mapping[str, Iterable[str]] | None = None,
) -> AdapterReport:
    """Adapt ``model`` in place with ``method``; freeze everything else except the ``head`` modules.

    ``target_sets`` maps set names (a method's ``targets``) to include / exclude rules; by default
    ``linear`` is every ``nn.Linear`` outside the head. ``module_sets`` maps names (a method's
    ``modules``) to module-name regexes whose parameters train in full. Returns the parameter report.
    """
    spec = method if isinstance(method, MethodSpec) else MethodSpec.from_config(method)
    spec.validate()
    already = adapted_layers(model)
    if already:  # wrapping again would nest adapters around adapters' base layers
        raise AdapterConfigError(f"the model is already adapted (e.g. {already[0][0]}); inject into a fresh model")
    target_sets = dict(target_sets or {"linear": TargetRule()})
    head = list(head)
    # `full` trains what the model itself trains (DiT keeps its fixed sin-cos pos_embed frozen)
    for p in model.parameters():
        p.requires_grad_(spec.full and p.requires_grad)

    adapted: list[str] = []
    if spec.wraps_linears:
        targets = select_linears(model, _rule(target_sets, spec.targets), head, set_name=spec.targets)
        gamma_only: list[tuple[str, nn.Linear]] = []
        if spec.gamma and spec.gamma_targets and spec.gamma_targets != spec.targets:
            extra = select_linears(model, _rule(target_sets, spec.gamma_targets), head, set_name=spec.gamma_targets)
            target_names = {n for n, _ in targets}
            gamma_only = [(n, m) for n, m in extra if n not in target_names]
        cls = ADAPTER_KINDS[spec.linear or "none"]
        shared = cls.shared_kwargs([m for _, m in targets], spec.options)
        for index, (name, layer) in enumerate(targets):
            try:
                wrapped = cls(
                    layer, train_bias=spec.bias, gamma=spec.gamma, layer_index=index, **spec.options, **shared
                )
            except TypeError as err:  # an option the method does not take
                raise AdapterConfigError(f"method '{spec.name}' on layer {name}: {err}") from None
            _set_module(model, name, wrapped)
            adapted.append(name)
        for name, layer in gamma_only:
            _set_module(model, name, ADAPTER_KINDS["none"](layer, gamma=True))
            adapted.append(name)

    if spec.norms:
        norm_params = [
            p for n, m in model.named_modules() if is_norm(m) and not is_under(n, head) for p in m.parameters()
        ]
        if not norm_params:
            raise AdapterConfigError(f"method '{spec.name}' trains norms, but {type(model).__name__} has none")
        for p in norm_params:
            p.requires_grad_(True)

    if spec.modules:
        _train_module_set(model, spec, dict(module_sets or {}))

    for name, module in model.named_modules():
        if name and is_under(name, head):
            for p in module.parameters():
                p.requires_grad_(True)

    model.onelora_method = spec  # type: ignore[attr-defined]
    model.onelora_head = head  # type: ignore[attr-defined]
    model.onelora_target_sets = target_sets  # type: ignore[attr-defined]  (save_adapter records them)
    model.onelora_module_sets = dict(module_sets or {})  # type: ignore[attr-defined]
    return count_parameters(model, head, method=spec.name, layers=adapted)


def _train_module_set(model: nn.Module, spec: MethodSpec, module_sets: dict[str, Any]) -> None:
    if spec.modules not in module_sets:
        raise AdapterConfigError(
            f"method '{spec.name}' trains the module set '{spec.modules}', which {type(model).__name__}'s config does "
            f"not define (model.module_sets has {sorted(module_sets)})"
        )
    patterns = list(module_sets[spec.modules] or [])
    chosen = [m for n, m in model.named_modules() if n and is_under(n, patterns)]
    if patterns and not chosen:
        raise AdapterConfigError(f"module set '{spec.modules}' ({patterns}) matches no module of {type(model).__name__}")
    for module in chosen:
        for p in module.parameters():
            p.requires_grad_(True)


def count_parameters(
    model: nn.Module, head: Iterable[str] = (), *, method: str = "", layers: list[str] | None = None
) -> AdapterReport:
    """Count unique parameters (tied weights once): total, trainable, and the head's share."""
    head = list(head)
    head_ids = {
        id(p) for n, m in model.named_modules() if n and is_under(n, head) for p in m.parameters()
    }
    seen: set[int] = set()
    total = trainable = head_trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            if id(p) in head_ids:
                head_trainable += p.numel()
    if layers is None:
        layers = [n for n, m in model.named_modules() if isinstance(m, AdaptedLinear)]
    return AdapterReport(
        method=method or getattr(getattr(model, "onelora_method", None), "name", ""),
        adapted_layers=len(layers),
        adapter_params=trainable - head_trainable,
        head_params=head_trainable,
        trainable_params=trainable,
        total_params=total,
        layers=list(layers),
    )


def adapted_layers(model: nn.Module) -> list[tuple[str, AdaptedLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLinear)]


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weights; forward then runs only the plain linears."""
    for _, layer in adapted_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for _, layer in adapted_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge and replace every adapter wrapper by its plain ``nn.Linear`` (for export / serving)."""
    for name, layer in adapted_layers(model):
        _set_module(model, name, layer.to_plain_linear())
    return model


@torch.no_grad()
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapter checkpoint holds: trainable parameters plus the adapters' fixed tensors."""
    state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, layer in adapted_layers(model):
        for tensor_name in layer.adapter_tensor_names:
            tensor = getattr(layer, tensor_name)
            state.setdefault(f"{name}.{tensor_name}", tensor)
    return state
