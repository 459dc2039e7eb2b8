"""DoRA (Liu et al. 2024): ``m * (W0 + s B A) x / ||W0 + s B A||_row + bias``.

``m`` starts at W0's row norms, so the output is unchanged at initialisation; the norm is
treated as a constant in backward (DoRA paper, Sec. 4.3, and peft). Unlike peft, which rebuilds
``B A`` through an identity matrix and keeps the base output and the LoRA output for backward,
the low-rank product is formed directly from the two small matrices.

Training runs one custom autograd function per layer (``_DoRAFunction``): the forward pass is a
single ``F.linear`` through the scaled, updated weight ``m / n * (W0 + s B A)``, and backward keeps
only ``x`` (for ``A``'s gradient, as LoRA), ``A x`` (r values per token) and the layer's own output
``y``, from which the magnitude's gradient is recovered as ``sum_tokens g (y - bias) / m``. The
output is usually kept anyway by the next operation (attention keeps q, k, v; GELU / SiLU keep
their input), so DoRA costs about LoRA's activation memory instead of peft's two extra
output-sized tensors per layer. Where a magnitude is exactly zero the output cannot give that
row's direction back, and the function keeps the unscaled output as well. Dropout in training, or
a trainable base weight, uses the plain autograd formulation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import AdaptedLinear, register
from .lora import check_rank


class _DoRAFunction(torch.autograd.Function):
    """``y = m / ||W + s B A||_row * x (W + s B A)^T + bias``, the norm a constant in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, magnitude, scaling):
        dtype = x.dtype
        A, B = lora_A.to(dtype), lora_B.to(dtype)
        direction = torch.addmm(weight.to(dtype), B, A, alpha=scaling)  # W + s B A, (d, k)
        norm = torch.linalg.norm(direction, dim=1)
        m = magnitude.to(dtype)
        # m's gradient is sum_tokens g * z / n with z = x (W + s B A)^T = (y - bias) n / m: a zero m
        # loses z, so then z itself is kept
        unscaled = F.linear(x, direction) if bool((m == 0).any()) else None
        y = F.linear(x, direction.mul_((m / norm)[:, None]), bias)
        h = F.linear(x, A)  # (..., r): B's gradient needs it
        ctx.scaling = scaling
        ctx.has_bias = bias is not None
        ctx.save_for_backward(
            x if ctx.needs_input_grad[3] else None, h, y, unscaled, weight, bias, lora_A, lora_B, magnitude, norm
        )
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, h, y, unscaled, weight, bias, lora_A, lora_B, magnitude, norm = ctx.saved_tensors
        s = ctx.scaling
        d = grad_out.shape[-1]
        g = grad_out.reshape(-1, d)
        dtype = g.dtype
        A, B = lora_A.to(dtype), lora_B.to(dtype)
        scale = magnitude.to(dtype) / norm
        grad_x = grad_bias = grad_A = grad_B = grad_m = None
        if ctx.needs_input_grad[0]:
            scaled = torch.addmm(weight.to(dtype), B, A, alpha=s).mul_(scale[:, None])
            grad_x = (g @ scaled).view(*grad_out.shape[:-1], scaled.shape[1])
        if ctx.needs_input_grad[2] or (ctx.needs_input_grad[5] and ctx.has_bias):
            g_sum = g.sum(0)
            if ctx.needs_input_grad[2]:
                grad_bias = g_sum.to(bias.dtype)
        if ctx.needs_input_grad[3]:
            u = g @ (B * scale[:, None])  # (N, r)
            grad_A = (s * (u.t() @ x.reshape(-1, x.shape[-1]))).to(lora_A.dtype)
        if ctx.needs_input_grad[4]:
            grad_B = (s * (g.t() @ h.reshape(-1, h.shape[-1])) * scale[:, None]).to(lora_B.dtype)
        if ctx.needs_input_grad[5]:
            if unscaled is not None:
                grad_m = (g * unscaled.reshape(-1, d)).sum(0) / norm
            else:
                gy = (g * y.reshape(-1, d)).sum(0)
                if ctx.has_bias:
                    gy = gy - bias.to(dtype) * g_sum
                grad_m = gy / magnitude.to(dtype)
            grad_m = grad_m.to(magnitude.dtype)
        return grad_x, None, grad_bias, grad_A, grad_B, grad_m, None


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
        dropout_active = self.training and not isinstance(self.lora_dropout, nn.Identity)
        if not dropout_active and not self.base_layer.weight.requires_grad:
            return _DoRAFunction.apply(
                x,
                self.base_layer.weight,
                self.base_layer.bias,
                self.lora_A,
                self.lora_B,
                self.dora_magnitude,
                self.scaling,
            )
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
