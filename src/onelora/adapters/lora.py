"""LoRA (Hu et al. 2021): ``W0 x + (alpha / r) B A x`` with ``A`` Kaiming-uniform and ``B`` zeros.

Initialisation, scaling and operation order follow peft's ``LoraLayer`` so the two match
numerically (tests/test_peft_parity.py). ``lora_qkv`` is this class with another target set.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdditiveAdapter, AdapterConfigError, linear_features, register


def check_rank(kind: str, r: int, layer: nn.Module, *, name: str = "") -> int:
    """``r`` as an int if ``1 <= r <= min(in, out)`` for ``layer``, else ``AdapterConfigError``."""
    r = int(r)
    k, d = linear_features(layer)
    if r < 1 or r > min(k, d):
        where = f" ({name})" if name else ""
        raise AdapterConfigError(
            f"{kind} rank r={r} does not fit a {k}->{d} linear layer{where} (need 1 <= r <= {min(k, d)})"
        )
    return r


@register("lora")
class LoRALinear(AdditiveAdapter):
    """``r (k + d)`` trainable parameters; the paper's very-low-rank setting is r=1."""

    adapter_tensor_names = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module, *, r: int = 1, alpha: float = 1.0, dropout: float = 0.0, **kwargs):
        super().__init__(base_layer, **kwargs)
        self.r = check_rank("lora", r, base_layer)
        self.scaling = float(alpha) / self.r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(self.r, self.in_features, **self._factory()))
        self.lora_B = nn.Parameter(self._zeros(self.out_features, self.r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @classmethod
    def check_layer(cls, name: str, layer: nn.Module, **options) -> None:
        super().check_layer(name, layer, **options)
        check_rank(cls.kind, options.get("r", 1), layer, name=name)

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        # the scaling goes into the (d x r) B, not onto the (tokens x d) update, and the update is
        # added in place: the base output is not kept for backward (its weight is frozen), so this
        # saves two output-sized passes and one output-sized tensor per layer against peft
        B = self.lora_B.to(x.dtype)
        B = B * self.scaling if self.scaling != 1.0 else B
        return result.add_(F.linear(F.linear(self.lora_dropout(x), self.lora_A.to(x.dtype)), B))

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling
