"""DoRA (Liu et al. 2024): ``m * (W0 + s B A) x / ||W0 + s B A||_row + bias``.

``m`` starts at W0's row norms, so the output is unchanged at initialisation; the norm is
treated as a constant in backward (DoRA paper, Sec. 4.3, and peft). Unlike peft, which rebuilds
``B A`` through an identity matrix and keeps the base output and the LoRA output for backward,
the low-rank product is formed directly from the two small matrices.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdaptedLinear, register
from .lora import check_rank


@register("dora")
class DoRALinear(AdaptedLinear):
    """``r (k + d) + d`` trainable parameters (LoRA's plus the magnitude vector)."""

    adapter_tensor_names = ("lora_A", "lora_B", "dora_magnitude")

    def __init__(self, base_layer: nn.Linear, *, r: int = 1, alpha: float = 1.0, dropout: float = 0.0, **kwargs):
        super().__init__(base_layer, **kwargs)
        self.r = check_rank("dora", r, base_layer)
        self.scaling = float(alpha) / self.r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(self.r, self.in_features, **self._factory()))
        self.lora_B = nn.Parameter(self._zeros(self.out_features, self.r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        with torch.no_grad():
            magnitude = torch.linalg.norm(base_layer.weight.float(), dim=1).to(base_layer.weight.dtype)
        self.dora_magnitude = nn.Parameter(magnitude)

    def _direction(self) -> torch.Tensor:
        return self.base_layer.weight + self.scaling * (self.lora_B @ self.lora_A).to(self.base_layer.weight.dtype)

    def _scale(self) -> torch.Tensor:
        with torch.no_grad():
            norm = torch.linalg.norm(self._direction(), dim=1)
        return self.dora_magnitude / norm

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._scale().to(x.dtype)
        x_drop = self.lora_dropout(x)
        lora = F.linear(F.linear(x_drop, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        directional = F.linear(x_drop, self.base_layer.weight) + lora * self.scaling
        result = directional * scale
        if self.base_layer.bias is not None:
            result = result + self.base_layer.bias
        return result

    def adapted_weight(self) -> torch.Tensor:
        scale = self._scale().detach()
        self._merge_cache["scale"] = scale
        return self._direction() * scale[:, None]

    def restore_weight(self, merged: torch.Tensor) -> torch.Tensor:
        scale = self._merge_cache["scale"]
        return merged / scale[:, None] - self.scaling * (self.lora_B @ self.lora_A).to(merged.dtype)
