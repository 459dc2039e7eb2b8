"""The one entry point that puts a method into a model, and the whole-model operations on it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .base import ADAPTER_KINDS, AdaptedLinear, AdapterConfigError
from .spec import MethodSpec
from .targeting import TargetRule, is_under, select_targets

log = logging.getLogger(__name__)

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
    #: linear layers the target set's ``all-linear`` matched but that cannot be adapted: {name: why}
    skipped: dict[str, str] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("layers")
        out.pop("skipped")
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


@dataclass
class _Plan:
    """Everything ``inject`` will change, worked out (and checked) before it changes anything."""

    targets: list[tuple[str, nn.Module]]
    gamma_only: list[tuple[str, nn.Module]]
    skipped: dict[str, str]
    norm_params: list[nn.Parameter]
    shared: dict[str, Any]
    module_params: list[nn.Parameter]


def _plan(model: nn.Module, spec: MethodSpec, target_sets: Mapping[str, Any], head: list[str],
          module_sets: Mapping[str, Any]) -> _Plan:
    targets: list[tuple[str, nn.Module]] = []
    gamma_only: list[tuple[str, nn.Module]] = []
    skipped: dict[str, str] = {}
    shared: dict[str, Any] = {}
    if spec.wraps_linears:
        targets, skipped = select_targets(model, _rule(target_sets, spec.targets), head, set_name=spec.targets)
        if spec.gamma and spec.gamma_targets and spec.gamma_targets != spec.targets:
            extra, extra_skipped = select_targets(
                model, _rule(target_sets, spec.gamma_targets), head, set_name=spec.gamma_targets
            )
            target_names = {n for n, _ in targets}
            gamma_only = [(n, m) for n, m in extra if n not in target_names]
            skipped.update({n: why for n, why in extra_skipped.items() if n not in skipped})
        cls = ADAPTER_KINDS[spec.linear or "none"]
        for name, layer in targets:  # every layer before any is wrapped (rank and size checks)
            cls.check_layer(name, layer, **spec.options)
        shared = cls.shared_kwargs([m for _, m in targets], spec.options)
    norm_params: list[nn.Parameter] = []
    if spec.norms:
        norm_params = [
            p for n, m in model.named_modules() if is_norm(m) and not is_under(n, head) for p in m.parameters()
        ]
        if not norm_params:
            raise AdapterConfigError(f"method '{spec.name}' trains norms, but {type(model).__name__} has none")
    return _Plan(targets, gamma_only, skipped, norm_params, shared, _module_set_params(model, spec, module_sets))


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
    ``linear`` is every linear layer outside the head. ``module_sets`` maps names (a method's
    ``modules``) to module-name regexes whose parameters train in full. Returns the parameter report.

    Atomic: every target and option is checked before the model changes, and should anything still
    fail while wrapping, the model is put back as it was (modules, ``requires_grad`` flags, added
    biases), so a corrected call can follow.
    """
    spec = method if isinstance(method, MethodSpec) else MethodSpec.from_config(method)
    spec.validate()
    already = adapted_layers(model)
    if already:  # wrapping again would nest adapters around adapters' base layers
        raise AdapterConfigError(f"the model is already adapted (e.g. {already[0][0]}); inject into a fresh model")
    target_sets = dict(target_sets or {"linear": TargetRule()})
    head = list(head)
    plan = _plan(model, spec, target_sets, head, dict(module_sets or {}))
    for name, why in plan.skipped.items():
        log.warning("onelora inject: skipped %s (%s)", name, why)
    regions = _parameter_regions(model)

    flags = {id(p): (p, p.requires_grad) for p in model.parameters()}
    installed: list[tuple[str, nn.Module, bool]] = []  # (name, original layer, it had a bias)
    try:
        # `full` trains what the model itself trains (DiT keeps its fixed sin-cos pos_embed frozen)
        for p in model.parameters():
            p.requires_grad_(spec.full and p.requires_grad)
        adapted: list[str] = []
        cls = ADAPTER_KINDS[spec.linear or "none"]
        layers = [(n, m, cls, True) for n, m in plan.targets] + [(n, m, ADAPTER_KINDS["none"], False) for n, m in plan.gamma_only]
        for index, (name, layer, kind, with_update) in enumerate(layers):
            had_bias = layer.bias is not None
            installed.append((name, layer, had_bias))
            if with_update:
                try:
                    wrapped = kind(
                        layer, train_bias=spec.bias, gamma=spec.gamma, layer_index=index, **spec.options, **plan.shared
                    )
                except TypeError as err:  # an option the method does not take
                    raise AdapterConfigError(f"method '{spec.name}' on layer {name}: {err}") from None
            else:
                wrapped = kind(layer, gamma=True)
            wrapped.shared_with = _shared_with(regions, layer, name)
            _set_module(model, name, wrapped)
            adapted.append(name)
        for p in plan.norm_params:
            p.requires_grad_(True)
        for p in plan.module_params:
            p.requires_grad_(True)
        for name, module in model.named_modules():
            if name and is_under(name, head):
                for p in module.parameters():
                    p.requires_grad_(True)
    except BaseException:
        for name, layer, had_bias in reversed(installed):
            _set_module(model, name, layer)
            if not had_bias:
                layer.bias = None
        for p, flag in flags.values():
            p.requires_grad_(flag)
        raise

    model.onelora_method = spec  # type: ignore[attr-defined]
    model.onelora_head = head  # type: ignore[attr-defined]
    model.onelora_target_sets = target_sets  # type: ignore[attr-defined]  (save_adapter records them)
    model.onelora_module_sets = dict(module_sets or {})  # type: ignore[attr-defined]
    return count_parameters(model, head, method=spec.name, layers=adapted, skipped=plan.skipped)


# ------------------------------------------------------------------------------------------------
# shared (tied) weights
# ------------------------------------------------------------------------------------------------


def _region(t: torch.Tensor) -> tuple[tuple, int, int]:
    """(storage key, first byte, end byte) of the memory a tensor spans. On the meta device, where
    addresses mean nothing, a tensor is only itself."""
    if t.device.type == "meta":
        return ("id", id(t)), 0, 1
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) if t.numel() else 0
    start = t.data_ptr()
    return (str(t.device), t.untyped_storage().data_ptr()), start, start + span * t.element_size()


def _parameter_regions(model: nn.Module) -> dict[tuple, list[tuple[str, int, int]]]:
    """Every parameter's memory, by storage, with each name it is registered under (a module
    reused in two places counts twice; an adapter's ``base_layer`` is named as before inject)."""
    regions: dict[tuple, list[tuple[str, int, int]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, p in module.named_parameters(recurse=False):
            full = (f"{module_name}.{name}" if module_name else name).replace(".base_layer.", ".")
            key, lo, hi = _region(p)
            regions.setdefault(key, []).append((full, lo, hi))
    return regions


def _shared_with(regions: Mapping[tuple, list[tuple[str, int, int]]], layer: nn.Module, name: str) -> tuple[str, ...]:
    """Other parameters whose memory overlaps ``layer``'s weight or bias (tied weights; two views
    of one storage that do not overlap, such as slices of a fused weight, are not shared)."""
    own = {f"{name}.weight", f"{name}.bias"}
    out: set[str] = set()
    for tensor in (layer.weight, layer.bias):
        if tensor is None:
            continue
        key, lo, hi = _region(tensor)
        out |= {n for n, a, b in regions.get(key, []) if n not in own and a < hi and lo < b}
    return tuple(sorted(out))


def refresh_shared_weights(model: nn.Module) -> list[tuple[str, AdaptedLinear]]:
    """Record on every adapted layer which other modules share its weight or bias (ties made after
    ``inject`` included); returns the layers that merging would refuse."""
    regions = _parameter_regions(model)
    refused = []
    for name, layer in adapted_layers(model):
        layer.shared_with = _shared_with(regions, layer.base_layer, name)
        if layer.shared_with and layer.merge_changes_base:
            refused.append((name, layer))
    return refused


def _module_set_params(model: nn.Module, spec: MethodSpec, module_sets: Mapping[str, Any]) -> list[nn.Parameter]:
    """The parameters of the method's module set (``method=head``'s probe), checked before inject changes anything."""
    if not spec.modules:
        return []
    if spec.modules not in module_sets:
        raise AdapterConfigError(
            f"method '{spec.name}' trains the module set '{spec.modules}', which {type(model).__name__}'s config does "
            f"not define (model.module_sets has {sorted(module_sets)})"
        )
    patterns = list(module_sets[spec.modules] or [])
    chosen = [m for n, m in model.named_modules() if n and is_under(n, patterns)]
    if patterns and not chosen:
        raise AdapterConfigError(f"module set '{spec.modules}' ({patterns}) matches no module of {type(model).__name__}")
    return [p for module in chosen for p in module.parameters()]


def count_parameters(
    model: nn.Module,
    head: Iterable[str] = (),
    *,
    method: str = "",
    layers: list[str] | None = None,
    skipped: Mapping[str, str] | None = None,
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
        skipped=dict(skipped or {}),
    )


def adapted_layers(model: nn.Module) -> list[tuple[str, AdaptedLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLinear)]


def _refuse_shared(model: nn.Module) -> None:
    refused = refresh_shared_weights(model)
    if refused:
        name, layer = refused[0]
        try:
            layer._check_mergeable()
        except AdapterConfigError as err:
            more = f" ({len(refused) - 1} more such layers)" if len(refused) > 1 else ""
            raise AdapterConfigError(f"{name}: {err}{more}") from None


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weights; forward then runs only the plain linears.

    Refuses (before merging anything) where a layer's weight is shared with another module."""
    _refuse_shared(model)
    for _, layer in adapted_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for _, layer in adapted_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge and replace every adapter wrapper by its plain linear layer (for export / serving)."""
    _refuse_shared(model)
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
