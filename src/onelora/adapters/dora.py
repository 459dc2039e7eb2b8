"""DoRA (Liu et al. 2024): ``m * (W0 + s B A) x / ||W0 + s B A||_row + bias``.

``m`` starts at W0's row norms, so the output is unchanged at initialisation; the norm is
treated as a constant in backward (DoRA paper, Sec. 4.3, and peft). Unlike peft, which rebuilds
``B A`` through an identity matrix and keeps the base output and the LoRA output for backward,
the low-rank product is formed directly from the two small matrices.

Training runs one custom autograd function per layer (``_DoRAFunction``): the forward pass is a
single ``F.linear`` through the scaled, updated weight ``m / n * (W0 + s B A)``, and backward keeps
only ``x`` (for ``A``'s gradient, as LoRA) and ``A x`` (r values per token). The magnitude's
gradient, ``sum_tokens g * x (W0 + s B A)^T / n``, recomputes the unscaled output in backward (one
more matmul per layer) instead of keeping it: peft keeps two output-sized tensors per layer for
it, and keeping even one costs 13-26% more activation memory on ViT-B / LLaMA, whose attention
output and MLP down projections feed residual adds that keep nothing. Dropout in training, or a
trainable base weight, uses the plain autograd formulation.
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
    def forward(ctx, x, weight, bias, lora_A, lora_B, magnitude, scaling, keep_output):
        dtype = x.dtype
        A, B = lora_A.to(dtype), lora_B.to(dtype)
        direction = torch.addmm(weight.to(dtype), B, A, alpha=scaling)  # W + s B A, (d, k)
        norm = torch.linalg.norm(direction, dim=1)
        m = magnitude.to(dtype)
        y = F.linear(x, direction.mul_((m / norm)[:, None]), bias)
        h = F.linear(x, A)  # (..., r): B's gradient needs it
        ctx.scaling = scaling
        # y gives the unscaled output back only where no magnitude is zero
        output = y if keep_output and ctx.needs_input_grad[5] and not bool((m == 0).any()) else None
        keep_x = ctx.needs_input_grad[3] or (ctx.needs_input_grad[5] and output is None)
        ctx.save_for_backward(x if keep_x else None, h, output, weight, bias, lora_A, lora_B, magnitude, norm)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, h, output, weight, bias, lora_A, lora_B, magnitude, norm = ctx.saved_tensors
        s = ctx.scaling
        d = grad_out.shape[-1]
        g = grad_out.reshape(-1, d)
        dtype = g.dtype
        A, B = lora_A.to(dtype), lora_B.to(dtype)
        scale = magnitude.to(dtype) / norm
        direction = torch.addmm(weight.to(dtype), B, A, alpha=s)  # W + s B A
        grad_x = grad_bias = grad_A = grad_B = grad_m = None
        if ctx.needs_input_grad[5] and output is not None:  # z = (y - bias) n / m
            gy = (g * output.reshape(-1, d)).sum(0)
            if bias is not None:
                gy = gy - bias.to(dtype) * g.sum(0)
            grad_m = (gy / magnitude.to(dtype)).to(magnitude.dtype)
        elif ctx.needs_input_grad[5]:
            unscaled = F.linear(x.reshape(-1, x.shape[-1]), direction)  # recomputed, never kept
            grad_m = ((g * unscaled).sum(0) / norm).to(magnitude.dtype)
            del unscaled
        if ctx.needs_input_grad[0]:
            grad_x = (g @ direction.mul_(scale[:, None])).view(*grad_out.shape[:-1], direction.shape[1])
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(0).to(bias.dtype)
        if ctx.needs_input_grad[3]:
            u = g @ (B * scale[:, None])  # (N, r)
            grad_A = (s * (u.t() @ x.reshape(-1, x.shape[-1]))).to(lora_A.dtype)
        if ctx.needs_input_grad[4]:
            grad_B = (s * (g.t() @ h.reshape(-1, h.shape[-1])) * scale[:, None]).to(lora_B.dtype)
        return grad_x, None, grad_bias, grad_A, grad_B, grad_m, None, None


@register("dora")
class DoRALinear(AdaptedLinear):
    """``r (k + d) + d`` trainable parameters (LoRA's plus the magnitude vector)."""

    adapter_tensor_names = ("lora_A", "lora_B", "dora_magnitude")

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        r: int = 1,
        alpha: float = 1.0,
        dropout: float = 0.0,
        keep_output: bool = False,
        **kwargs,
    ):
        super().__init__(base_layer, **kwargs)
        self.r = check_rank("dora", r, base_layer)
        self.keep_output = bool(keep_output)
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
                self.keep_output,
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
