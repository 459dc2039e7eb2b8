"""The common shape of every per-layer adapter: a frozen linear layer plus a method's update.

A subclass implements ``adapted_forward`` (the layer's output with its update, before gamma) and
``adapted_weight`` / ``restore_weight`` (the update folded into, and taken out of, a weight
matrix). Everything shared by all methods lives here: the optional trainable bias (BitFit), the
optional per-output scale gamma (DiffFit), merging for zero-cost inference (refused on weights
another module shares, recorded in the state_dict), option checks that need no model, and the
registry that maps a method's ``linear`` kind to its class.

The frozen layer is an ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2), which is a linear layer
with its weight stored transposed, ``(in, out)``; ``weight`` is always the ``(out, in)`` matrix (a
view for ``Conv1D``), so the methods never see the difference.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

ADAPTER_KINDS: dict[str, type["AdaptedLinear"]] = {}


def register(kind: str):
    """Class decorator: make ``kind`` usable as a method's ``linear`` value."""

    def wrap(cls: type[AdaptedLinear]) -> type[AdaptedLinear]:
        cls.kind = kind
        ADAPTER_KINDS[kind] = cls
        return cls

    return wrap


class AdapterConfigError(ValueError):
    """A method or target setting that cannot be applied to this model or layer."""


# ------------------------------------------------------------------------------------------------
# linear layers: nn.Linear and transformers' Conv1D
# ------------------------------------------------------------------------------------------------


def is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2's linear layers: ``x @ W + b`` with ``W`` of shape (in, out))."""
    cls = type(module)
    return (
        any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers") for c in cls.__mro__)
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.dim() == 2
    )


def is_linear(module: nn.Module) -> bool:
    """A layer an adapter can wrap: ``nn.Linear`` or transformers' ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an ``nn.Linear`` or a ``Conv1D``."""
    if is_conv1d(layer):
        return int(layer.weight.shape[0]), int(layer.weight.shape[1])
    return layer.in_features, layer.out_features


# ------------------------------------------------------------------------------------------------
# mixed precision
# ------------------------------------------------------------------------------------------------


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would run a linear layer on ``x`` in, or None where autocast is off
    (or does not apply: float64 and non-float tensors, devices without autocast)."""
    device_type = x.device.type
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
    except RuntimeError:  # a device type autocast does not know (meta, ...)
        return None
    if not x.is_floating_point() or x.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(device_type)


def apply_autocast(call: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any, isolate: bool = True) -> torch.Tensor:
    """Run a fused adapter function on ``x`` the way autocast runs ``nn.Linear``.

    ``call`` is the function (``ops.fused_call``: its autograd Function in eager mode, its
    registered op under ``torch.compile``). This is ``torch.amp.custom_fwd(cast_inputs=<the
    autocast dtype>)`` for whichever device ``x`` is on, except that only the activation ``x`` is
    cast: the function receives the parameters in their own dtype and casts the weight-sized
    operands itself (DoRA computes its weight norm in them, as peft does). ``isolate``: run it with
    autocast off, as ``custom_fwd`` does (its backward then switches autocast off too, with
    ``autocast_off``, as ``custom_bwd`` does); a function whose every op casts its own operands may
    skip that and save a context switch per layer.
    """
    dtype = autocast_dtype(x)
    if dtype is None:
        return call(x, *args)
    if not isolate:
        return call(x.to(dtype), *args)
    with torch.autocast(x.device.type, enabled=False):
        return call(x.to(dtype), *args)


@contextlib.contextmanager
def autocast_off(device_type: str) -> Iterator[None]:
    """A backward runs with autocast off, as its forward did (what ``torch.amp.custom_bwd`` does)."""
    if torch.amp.is_autocast_available(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


# ------------------------------------------------------------------------------------------------
# option checks that need no model
# ------------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


#: options whose value ranges are the same for every kind that takes them
COMMON_OPTION_RULES: dict[str, tuple[Any, str]] = {
    "r": (lambda v: _is_int(v) and int(v) >= 1, "an integer >= 1"),
    "alpha": (_is_number, "a finite number"),
    "dropout": (lambda v: _is_number(v) and 0 <= float(v) < 1, "a probability in [0, 1)"),
    "seed": (_is_int, "an integer"),
    "d_initial": (_is_number, "a finite number"),
    "keep_output": (lambda v: isinstance(v, bool), "true or false"),
}

#: constructor arguments that are not user options (set by inject or computed by shared_kwargs)
FRAMEWORK_ARGUMENTS = ("self", "base_layer", "train_bias", "gamma", "layer_index", "options", "kwargs")


class AdaptedLinear(nn.Module):
    """A frozen linear layer ``base_layer`` with optional trainable bias and gamma.

    With no update of its own (``kind = "none"``) this is BitFit and/or DiffFit's gamma.
    """

    kind: ClassVar[str] = "none"
    #: names of the tensors that make up this adapter (trainable parameters and fixed buffers)
    adapter_tensor_names: ClassVar[tuple[str, ...]] = ()
    #: constructor arguments computed by ``shared_kwargs``, never set by a user
    internal_options: ClassVar[tuple[str, ...]] = ()
    #: options that choose how the update is computed, not what it is (1LoRA's ``impl``): an adapter
    #: saved with one value loads into a model injected with another
    execution_options: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        base_layer: nn.Module,
        *,
        train_bias: bool = False,
        gamma: bool = False,
        layer_index: int = 0,
        **options: Any,
    ):
        super().__init__()
        if not is_linear(base_layer):
            raise AdapterConfigError(
                f"{type(self).__name__} adapts nn.Linear layers (and transformers' Conv1D), "
                f"got {type(base_layer).__name__}"
            )
        if options:
            raise AdapterConfigError(f"method '{self.kind}' has no option(s) {sorted(options)}")
        self.base_layer = base_layer
        self.transposed = is_conv1d(base_layer)
        self.in_features, self.out_features = linear_features(base_layer)
        self.merged = False
        #: other modules' parameters that are this layer's weight or bias (tied weights): set by
        #: ``inject`` and ``merge(model)``; merging then refuses, since it would change them too
        self.shared_with: tuple[str, ...] = ()
        self._merge_cache: dict[str, torch.Tensor] = {}
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(train_bias)
        elif train_bias:  # BitFit on a layer without bias: a new zero bias
            base_layer.bias = nn.Parameter(self._zeros(self.out_features))
        self.gamma = nn.Parameter(self._ones(self.out_features)) if gamma else None

    # -- checks without a model (the runner validates a method once per run) ---------------------
    @classmethod
    def option_names(cls) -> list[str]:
        """The options this kind takes: the keyword arguments of its constructors."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass is AdaptedLinear or not issubclass(klass, AdaptedLinear):
                break
            names |= set(inspect.signature(klass.__init__).parameters)
        return sorted(names - set(FRAMEWORK_ARGUMENTS) - set(cls.internal_options))

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The value each option has when a method does not set it."""
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, AdaptedLinear):
                for name, parameter in inspect.signature(klass.__init__).parameters.items():
                    if parameter.default is not inspect.Parameter.empty:
                        defaults[name] = parameter.default
        return {k: v for k, v in defaults.items() if k in cls.option_names()}

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Raise ``AdapterConfigError`` for an option this kind does not take or a value out of range."""
        allowed = cls.option_names()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            takes = f"its options are {', '.join(allowed)}" if allowed else "it takes none"
            raise AdapterConfigError(f"method '{cls.kind}' has no option(s) {unknown}; {takes}")
        for name, value in options.items():
            rule = COMMON_OPTION_RULES.get(name)
            if rule is not None and not rule[0](value):
                raise AdapterConfigError(f"{cls.kind} option {name}={value!r}: must be {rule[1]}")

    @classmethod
    def check_layer(cls, name: str, layer: nn.Module, **options: Any) -> None:
        """Raise ``AdapterConfigError`` if this kind cannot adapt ``layer`` with ``options``."""
        if not is_linear(layer):
            raise AdapterConfigError(f"{name} ({type(layer).__name__}) is not a linear layer")

    # -- helpers for subclasses -------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """The frozen weight as an ``(out, in)`` matrix (a transposed view for ``Conv1D``)."""
        w = self.base_layer.weight
        return w.t() if self.transposed else w

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def _factory(self) -> dict[str, Any]:
        w = self.base_layer.weight
        return {"device": w.device, "dtype": w.dtype}

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, **self._factory())

    def _ones(self, *shape: int) -> torch.Tensor:
        return torch.ones(*shape, **self._factory())

    @classmethod
    def shared_kwargs(cls, layers: list[nn.Module], options: dict[str, Any]) -> dict[str, Any]:
        """Extra constructor arguments computed once over all target layers (VeRA's shared A, B)."""
        return {}

    # -- what a method implements -----------------------------------------------------------
    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``W0 x + bias`` plus this method's update (gamma is applied by ``forward``)."""
        return self.base_layer(x)

    def adapted_weight(self) -> torch.Tensor:
        """The ``(out, in)`` weight matrix equivalent to ``adapted_forward`` (for merging)."""
        return self.weight

    def restore_weight(self, merged: torch.Tensor) -> torch.Tensor:
        """Inverse of ``adapted_weight``: the original W0 from a merged weight."""
        return merged

    # -- shared behaviour ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        y = self.adapted_forward(x)
        if self.gamma is not None:  # in the output's dtype: bf16 under autocast, as the linear's
            y = y * self.gamma.to(y.dtype)
        return y

    @property
    def merge_changes_base(self) -> bool:
        """Whether merging rewrites the frozen weight (not for BitFit alone: its bias is its own)."""
        return self.kind != "none" or self.gamma is not None

    def _check_mergeable(self) -> None:
        if self.shared_with and self.merge_changes_base:
            raise AdapterConfigError(
                f"cannot merge a {self.kind} adapter into a weight shared with {', '.join(self.shared_with)} "
                "(tied weights): merging would change those modules too. Keep the adapter unmerged, or untie "
                "the weight first (give this layer its own copy) and inject again"
            )

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update (and gamma) into ``base_layer`` so inference is one plain linear."""
        if self.merged:
            return
        self._check_mergeable()
        weight = self.adapted_weight()
        bias = self.base_layer.bias
        if self.gamma is not None:
            if torch.any(self.gamma == 0):
                raise AdapterConfigError("cannot merge a gamma with zero entries: unmerge would divide by 0")
            weight = weight * self.gamma[:, None]
            if bias is not None:
                bias.mul_(self.gamma)
        self.weight.copy_(weight)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge``: restore W0 (and the unscaled bias) from the merged weights."""
        if not self.merged:
            return
        weight = self.weight.clone()
        if self.gamma is not None:
            weight = weight / self.gamma[:, None]
        restored = self.restore_weight(weight)  # may refuse (DoRA without its merge scale): before any change
        if self.gamma is not None and self.base_layer.bias is not None:
            self.base_layer.bias.div_(self.gamma)
        self.weight.copy_(restored)
        self._merge_cache.clear()
        self.merged = False

    def to_plain_linear(self) -> nn.Module:
        """The merged layer as its plain linear module (what ``merge_and_unload`` installs)."""
        self.merge()
        return self.base_layer

    # -- the merged state travels with the state_dict ---------------------------------------------
    def get_extra_state(self) -> torch.Tensor:
        """``<layer>._extra_state``: whether the weights saved next to it hold the merged update."""
        return torch.tensor(self.merged)

    def set_extra_state(self, state: Any) -> None:
        self._check_merged_state(bool(state), "")

    def _check_merged_state(self, saved_merged: bool, prefix: str) -> None:
        if saved_merged != self.merged:
            saved, here = ("merged", "unmerged") if saved_merged else ("unmerged", "merged")
            fix = "merge(model) before loading it" if saved_merged else "unmerge(model) before loading it"
            raise AdapterConfigError(
                f"state_dict entry {prefix or '<layer>.'}* was saved from a {saved} adapter layer, but this layer is "
                f"{here}: loading it would apply the update {'twice' if saved_merged else 'on top of merged weights'}; "
                f"{fix}, or load an unmerged checkpoint"
            )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # checked before any tensor of this layer (or its base layer, loaded after it) is copied
        key = prefix + "_extra_state"
        if key in state_dict:
            self._check_merged_state(bool(state_dict[key]), prefix)
            if self.merged:  # merged weights and adapter tensors from elsewhere: the cached scale is stale
                self._merge_cache.clear()
        elif self.merged and any(k.startswith(prefix) for k in state_dict):
            raise AdapterConfigError(
                f"layer {prefix[:-1] or '<layer>'} is merged: loading its tensors from a state_dict without the merged "
                "flag (an adapter-only or older checkpoint) would leave the old update in its weights; "
                "unmerge(model) first"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}", f"out_features={self.out_features}", f"kind={self.kind}"]
        if self.base_layer.bias is not None and self.base_layer.bias.requires_grad:
            parts.append("train_bias=True")
        if self.gamma is not None:
            parts.append("gamma=True")
        if self.merged:
            parts.append("merged=True")
        return ", ".join(parts)


class AdditiveAdapter(AdaptedLinear):
    """An adapter whose update is ``delta_weight() @ x`` added to the frozen layer's output."""

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def adapted_weight(self) -> torch.Tensor:
        return self.weight + self.delta_weight().to(self.weight.dtype)

    def restore_weight(self, merged: torch.Tensor) -> torch.Tensor:
        return merged - self.delta_weight().to(merged.dtype)


ADAPTER_KINDS["none"] = AdaptedLinear
