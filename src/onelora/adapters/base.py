"""The common shape of every per-layer adapter: a frozen ``nn.Linear`` plus a method's update.

A subclass implements ``adapted_forward`` (the layer's output with its update, before gamma) and
``adapted_weight`` / ``restore_weight`` (the update folded into, and taken out of, a weight
matrix). Everything shared by all methods lives here: the optional trainable bias (BitFit), the
optional per-output scale gamma (DiffFit), merging for zero-cost inference, and the registry
that maps a method's ``linear`` kind to its class.
"""

from __future__ import annotations

from typing import Any, ClassVar

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


class AdaptedLinear(nn.Module):
    """A frozen linear layer ``base_layer`` with optional trainable bias and gamma.

    With no update of its own (``kind = "none"``) this is BitFit and/or DiffFit's gamma.
    """

    kind: ClassVar[str] = "none"
    #: names of the tensors that make up this adapter (trainable parameters and fixed buffers)
    adapter_tensor_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        train_bias: bool = False,
        gamma: bool = False,
        layer_index: int = 0,
        **options: Any,
    ):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise AdapterConfigError(
                f"{type(self).__name__} adapts nn.Linear layers, got {type(base_layer).__name__}"
            )
        if options:
            raise AdapterConfigError(f"method '{self.kind}' has no option(s) {sorted(options)}")
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.merged = False
        self._merge_cache: dict[str, torch.Tensor] = {}
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(train_bias)
        elif train_bias:  # BitFit on a layer without bias: a new zero bias
            base_layer.bias = nn.Parameter(self._zeros(self.out_features))
        self.gamma = nn.Parameter(self._ones(self.out_features)) if gamma else None

    # -- helpers for subclasses -------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

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
    def shared_kwargs(cls, layers: list[nn.Linear], options: dict[str, Any]) -> dict[str, Any]:
        """Extra constructor arguments computed once over all target layers (VeRA's shared A, B)."""
        return {}

    # -- what a method implements -----------------------------------------------------------
    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``W0 x + bias`` plus this method's update (gamma is applied by ``forward``)."""
        return self.base_layer(x)

    def adapted_weight(self) -> torch.Tensor:
        """The weight matrix equivalent to ``adapted_forward`` (for merging)."""
        return self.base_layer.weight

    def restore_weight(self, merged: torch.Tensor) -> torch.Tensor:
        """Inverse of ``adapted_weight``: the original W0 from a merged weight."""
        return merged

    # -- shared behaviour ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        y = self.adapted_forward(x)
        if self.gamma is not None:
            y = y * self.gamma
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update (and gamma) into ``base_layer`` so inference is one plain linear."""
        if self.merged:
            return
        weight = self.adapted_weight()
        bias = self.base_layer.bias
        if self.gamma is not None:
            if torch.any(self.gamma == 0):
                raise AdapterConfigError("cannot merge a gamma with zero entries: unmerge would divide by 0")
            weight = weight * self.gamma[:, None]
            if bias is not None:
                bias.mul_(self.gamma)
        self.base_layer.weight.copy_(weight)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge``: restore W0 (and the unscaled bias) from the merged weights."""
        if not self.merged:
            return
        weight = self.base_layer.weight.clone()
        if self.gamma is not None:
            weight = weight / self.gamma[:, None]
            if self.base_layer.bias is not None:
                self.base_layer.bias.div_(self.gamma)
        self.base_layer.weight.copy_(self.restore_weight(weight))
        self._merge_cache.clear()
        self.merged = False

    def to_plain_linear(self) -> nn.Linear:
        """The merged layer as an ordinary ``nn.Linear`` (what ``merge_and_unload`` installs)."""
        self.merge()
        return self.base_layer

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}", f"out_features={self.out_features}", f"kind={self.kind}"]
        if self.base_layer.bias is not None and self.base_layer.bias.requires_grad:
            parts.append("train_bias=True")
        if self.gamma is not None:
            parts.append("gamma=True")
        return ", ".join(parts)


class AdditiveAdapter(AdaptedLinear):
    """An adapter whose update is ``delta_weight() @ x`` added to the frozen layer's output."""

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def adapted_weight(self) -> torch.Tensor:
        return self.base_layer.weight + self.delta_weight().to(self.base_layer.weight.dtype)

    def restore_weight(self, merged: torch.Tensor) -> torch.Tensor:
        return merged - self.delta_weight().to(merged.dtype)



ADAPTER_KINDS["none"] = AdaptedLinear
