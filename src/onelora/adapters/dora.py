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
output and MLP down projections feed residual adds that keep nothing.

Dropout in training, or a trainable base weight, uses the plain autograd formulation of peft's
``DoraLinearVariant``: the frozen ``W0 x + bias`` is not dropped, the dropped input ``xd`` feeds the
LoRA path and the magnitude's rescaling, ``W0 x + bias + (m/n - 1) W0 xd + (m/n) s B A xd``
(without dropout this is the formula above).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from torch.autograd.function import once_differentiable

from .base import AdaptedLinear, AdapterConfigError, apply_autocast, autocast_off, register
from .lora import check_rank


class _DoRAFunction(torch.autograd.Function):
    """``y = m / ||W + s B A||_row * x (W + s B A)^T + bias``, the norm a constant in backward.

    Mixed precision: the weight-space work (``W + s B A``, its row norms, the scale) runs in the
    parameters' dtype, as peft computes DoRA's norm; the activation-sized matmuls run in ``x``'s
    dtype (``apply_autocast`` casts ``x`` as autocast casts a linear layer's input), so under bf16
    autocast the output is bf16 like ``nn.Linear``'s and the parameters, not cast copies, are kept
    for backward. Every matmul casts its operands to one dtype, so the function also survives ops
    cast one by one (CUDA autocast's rules). The backward is first-order only (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, magnitude, scaling, keep_output):
        dtype = x.dtype
        wdtype = torch.promote_types(weight.dtype, lora_A.dtype)
        direction = _direction(weight, lora_A, lora_B, scaling, wdtype)  # W + s B A, (d, k)
        norm = torch.linalg.norm(direction, dim=1)
        m = magnitude.to(norm.dtype)
        scaled = direction.mul_((m / norm)[:, None])
        y = F.linear(x, scaled.to(dtype), None if bias is None else bias.to(dtype))
        h = F.linear(x, lora_A.to(dtype))  # (..., r): B's gradient needs it
        ctx.scaling = scaling
        # y gives the unscaled output back only where no magnitude is zero
        output = y if keep_output and ctx.needs_input_grad[5] and not bool((m == 0).any()) else None
        keep_x = ctx.needs_input_grad[3] or (ctx.needs_input_grad[5] and output is None)
        ctx.save_for_backward(x if keep_x else None, h, output, weight, bias, lora_A, lora_B, magnitude, norm)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, h, output, weight, bias, lora_A, lora_B, magnitude, norm = ctx.saved_tensors
        grad_x = grad_bias = grad_A = grad_B = grad_m = None
        with autocast_off(grad_out.device.type):
            s = ctx.scaling
            d = grad_out.shape[-1]
            g = grad_out.reshape(-1, d)
            dtype = g.dtype
            wdtype = torch.promote_types(weight.dtype, lora_A.dtype)
            scale = magnitude.to(norm.dtype) / norm
            direction = _direction(weight, lora_A, lora_B, s, wdtype)  # W + s B A
            if ctx.needs_input_grad[5] and output is not None:  # z = (y - bias) n / m
                gy = (g * output.reshape(-1, d)).sum(0)
                if bias is not None:
                    gy = gy - bias.to(gy.dtype) * g.sum(0)
                grad_m = (gy.to(norm.dtype) / magnitude.to(norm.dtype)).to(magnitude.dtype)
            elif ctx.needs_input_grad[5]:
                x2 = x.reshape(-1, x.shape[-1])
                unscaled = F.linear(x2, direction.to(x2.dtype))  # recomputed, never kept
                grad_m = ((g * unscaled.to(dtype)).sum(0).to(norm.dtype) / norm).to(magnitude.dtype)
                del unscaled
            if ctx.needs_input_grad[0]:
                scaled = direction.mul_(scale[:, None]).to(dtype)
                grad_x = (g @ scaled).view(*grad_out.shape[:-1], direction.shape[1])
            if ctx.needs_input_grad[2]:
                grad_bias = g.sum(0).to(bias.dtype)
            if ctx.needs_input_grad[3]:
                u = g @ (lora_B.to(scale.dtype) * scale[:, None]).to(dtype)  # (N, r)
                x2 = x.reshape(-1, x.shape[-1])
                grad_A = (s * (u.t() @ x2.to(u.dtype))).to(lora_A.dtype)
            if ctx.needs_input_grad[4]:
                h2 = h.reshape(-1, h.shape[-1])
                grad_B = (s * (g.t() @ h2.to(dtype)) * scale[:, None]).to(lora_B.dtype)
        return grad_x, None, grad_bias, grad_A, grad_B, grad_m, None, None


def _direction(weight, lora_A, lora_B, scaling: float, dtype: torch.dtype) -> torch.Tensor:
    """``W + s B A`` in ``dtype``, a new tensor (the caller may scale it in place)."""
    return torch.addmm(weight.to(dtype), lora_B.to(dtype), lora_A.to(dtype), alpha=scaling)


@register("dora")
class DoRALinear(AdaptedLinear):
    """``r (k + d) + d`` trainable parameters (LoRA's plus the magnitude vector)."""

    adapter_tensor_names = ("lora_A", "lora_B", "dora_magnitude")

    def __init__(
        self,
        base_layer: nn.Module,
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
            magnitude = torch.linalg.norm(self.weight.float(), dim=1).to(self.weight.dtype)
        self.dora_magnitude = nn.Parameter(magnitude)

    @classmethod
    def check_layer(cls, name: str, layer: nn.Module, **options) -> None:
        super().check_layer(name, layer, **options)
        check_rank("dora", options.get("r", 1), layer, name=name)

    def _direction(self) -> torch.Tensor:
        return self.weight + self.scaling * (self.lora_B @ self.lora_A).to(self.weight.dtype)

    def _scale(self) -> torch.Tensor:
        """``m / ||W + s B A||_row`` with the norm detached (a constant in backward)."""
        with torch.no_grad():
            norm = torch.linalg.norm(self._direction(), dim=1)
        return self.dora_magnitude / norm

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        dropout_active = self.training and not isinstance(self.lora_dropout, nn.Identity)
        if not dropout_active and not self.base_layer.weight.requires_grad:
            return apply_autocast(
                _DoRAFunction,
                x,
                self.weight,
                self.base_layer.bias,
                self.lora_A,
                self.lora_B,
                self.dora_magnitude,
                self.scaling,
                self.keep_output,
            )
        # peft's DoraLinearVariant: W0 x + b undropped, dropout on the input of the LoRA path and
        # of the magnitude's rescaling of W0:  W0 x + b + (m/n - 1) W0 xd + (m/n) s B A xd
        base = self.base_layer(x)
        x_drop = self.lora_dropout(x)
        dtype = base.dtype  # bf16 under autocast, as the linear's output
        lora = F.linear(F.linear(x_drop, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        base_drop = F.linear(x_drop, self.weight.to(x.dtype))
        scale = self._scale()
        return base + (scale - 1).to(dtype) * base_drop.to(dtype) + (scale * self.scaling).to(dtype) * lora.to(dtype)

    def adapted_weight(self) -> torch.Tensor:
        scale = self._scale().detach()
        self._merge_cache["scale"] = scale
        return self._direction() * scale[:, None]

    def restore_weight(self, merged: torch.Tensor) -> torch.Tensor:
        scale = self._merge_cache.get("scale")
        if scale is None:
            raise AdapterConfigError(
                "cannot unmerge this DoRA layer: its merged weights were loaded from a state_dict, and the norm "
                "they were scaled by is not recoverable from them; load the unmerged adapter instead"
            )
        return merged / scale[:, None] - self.scaling * (self.lora_B @ self.lora_A).to(merged.dtype)
