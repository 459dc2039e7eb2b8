"""DoRA (Liu et al. 2024): ``m * (W0 + s B A) x / ||W0 + s B A||_row + bias``.

``m`` starts at W0's row norms, so the output is unchanged at initialisation; the norm is
treated as a constant in backward (DoRA paper, Sec. 4.3, and peft). Unlike peft, which rebuilds
``B A`` through an identity matrix and keeps the base output and the LoRA output for backward,
the low-rank product is formed directly from the two small matrices.

Training runs one fused function per layer (``_DoRAFunction`` in eager mode, the registered op
``onelora::dora_linear`` under ``torch.compile``, see ``ops``): the forward pass is a
single ``F.linear`` through the scaled, updated weight ``m / n * (W0 + s B A)``, and backward keeps
only ``x`` (for ``A``'s gradient, as LoRA) and ``A x`` (r values per token). The magnitude's
gradient, ``sum_tokens g * x (W0 + s B A)^T / n``, recomputes the unscaled output in backward (one
more matmul per layer) instead of keeping it: peft keeps two output-sized tensors per layer for
it, and keeping even one costs 13-26% more activation memory on ViT-B / LLaMA, whose attention
output and MLP down projections feed residual adds that keep nothing. ``keep_output=true`` keeps
the output instead and reads the unscaled output from it; rows whose magnitude is exactly 0 lost it
there and recompute it from ``x`` (kept for ``A``'s gradient anyway).

Dropout in training, or a trainable base weight, uses the plain autograd formulation of peft's
``DoraLinearVariant``: the frozen ``W0 x + bias`` is not dropped, the dropped input ``xd`` feeds the
LoRA path and the magnitude's rescaling, ``W0 x + bias + (m/n - 1) W0 xd + (m/n) s B A xd``
(without dropout this is the formula above).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .base import AdaptedLinear, AdapterConfigError, apply_autocast, autocast_off, register
from .lora import check_rank
from .ops import fused_call, register_op


def _forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], lora_A: Tensor, lora_B: Tensor, magnitude: Tensor,
             scaling: float, keep_output: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, A x, ||W + s B A||_row)``, ``y = m / ||W + s B A||_row * x (W + s B A)^T + bias``."""
    dtype = x.dtype
    wdtype = torch.promote_types(weight.dtype, lora_A.dtype)
    direction = _direction(weight, lora_A, lora_B, scaling, wdtype)  # W + s B A, (d, k)
    norm = torch.linalg.norm(direction, dim=1)
    scaled = direction.mul_((magnitude.to(norm.dtype) / norm)[:, None])
    y = F.linear(x, scaled.to(dtype), None if bias is None else bias.to(dtype))
    h = F.linear(x, lora_A.to(dtype))  # (..., r): B's gradient needs it
    return y, h, norm


def _setup_context(ctx, inputs, output) -> None:
    """Keep ``x`` (A's gradient, and the magnitude's where the output is not kept), ``A x``, the
    norm, and with ``keep_output`` the output ``y``."""
    x, weight, bias, lora_A, lora_B, magnitude, scaling, keep_output = inputs
    y, h, norm = output
    needs = ctx.needs_input_grad
    keep_y = keep_output and needs[5]
    # with keep_output, x still serves rows of zero magnitude (their output row lost z) for m's gradient
    keep_x = needs[3] or needs[5]
    ctx.save_for_backward(x if keep_x else None, h, y if keep_y else None, weight, bias, lora_A, lora_B, magnitude, norm)
    ctx.scaling = scaling


def _backward(ctx, grad_out: Tensor, *unused: Any):
    x, h, output, weight, bias, lora_A, lora_B, magnitude, norm = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_x = grad_bias = grad_A = grad_B = grad_m = None
    with autocast_off(grad_out.device.type):
        s = ctx.scaling
        d = grad_out.shape[-1]
        g = grad_out.reshape(-1, d)
        dtype = g.dtype
        wdtype = torch.promote_types(weight.dtype, lora_A.dtype)
        m = magnitude.to(norm.dtype)
        scale = m / norm
        direction = _direction(weight, lora_A, lora_B, s, wdtype)  # W + s B A
        if needs[5] and output is not None:  # z = (y - bias) n / m, where m != 0
            gy = (g * output.reshape(-1, d)).sum(0)
            if bias is not None:
                gy = gy - bias.to(gy.dtype) * g.sum(0)
            zero = m == 0
            from_output = gy.to(norm.dtype) / torch.where(zero, torch.ones_like(m), m)
            x2 = x.reshape(-1, x.shape[-1])
            grad_m = torch.where(zero, zero_magnitude_grad(g, x2, direction, magnitude, norm), from_output)
            grad_m = grad_m.to(magnitude.dtype)
        elif needs[5]:
            x2 = x.reshape(-1, x.shape[-1])
            unscaled = F.linear(x2, direction.to(x2.dtype))  # recomputed, never kept
            grad_m = ((g * unscaled.to(dtype)).sum(0).to(norm.dtype) / norm).to(magnitude.dtype)
            del unscaled
        if needs[0]:
            scaled = direction.mul_(scale[:, None]).to(dtype)
            grad_x = (g @ scaled).view(*grad_out.shape[:-1], direction.shape[1])
        if needs[2]:
            grad_bias = g.sum(0).to(bias.dtype)
        if needs[3]:
            u = g @ (lora_B.to(scale.dtype) * scale[:, None]).to(dtype)  # (N, r)
            x2 = x.reshape(-1, x.shape[-1])
            grad_A = (s * (u.t() @ x2.to(u.dtype))).to(lora_A.dtype)
        if needs[4]:
            h2 = h.reshape(-1, h.shape[-1])
            grad_B = (s * (g.t() @ h2.to(dtype)) * scale[:, None]).to(lora_B.dtype)
    return grad_x, None, grad_bias, grad_A, grad_B, grad_m, None, None


@torch.library.custom_op("onelora::dora_zero_magnitude_grad", mutates_args=())
def zero_magnitude_grad(g: Tensor, x: Tensor, direction: Tensor, magnitude: Tensor, norm: Tensor) -> Tensor:
    """The magnitude's gradient ``sum_tokens g z / n`` for the rows whose magnitude is 0 (a kept
    output lost ``z`` there), recomputing ``z`` for those rows alone; 0 on the other rows.

    Which rows that is depends on the values, so this is an op of its own, opaque to
    ``torch.compile`` (a data-dependent choice inside a traced backward would not compile)."""
    out = torch.zeros_like(norm)
    rows = (magnitude == 0).nonzero().flatten()
    if rows.numel():
        z = F.linear(x, direction[rows].to(x.dtype))
        out[rows] = (g[:, rows] * z.to(g.dtype)).sum(0).to(norm.dtype) / norm[rows]
    return out


@zero_magnitude_grad.register_fake
def _(g, x, direction, magnitude, norm):
    return torch.empty_like(norm)


class _DoRAFunction(torch.autograd.Function):
    """``y = m / ||W + s B A||_row * x (W + s B A)^T + bias``, the norm a constant in backward.

    The eager face of ``onelora::dora_linear`` (``ops``): the same ``_forward`` / ``_backward``.

    Mixed precision: the weight-space work (``W + s B A``, its row norms, the scale) runs in the
    parameters' dtype, as peft computes DoRA's norm; the activation-sized matmuls run in ``x``'s
    dtype (``apply_autocast`` casts ``x`` as autocast casts a linear layer's input), so under bf16
    autocast the output is bf16 like ``nn.Linear``'s and the parameters, not cast copies, are kept
    for backward. Every matmul casts its operands to one dtype, so the function also survives ops
    cast one by one (CUDA autocast's rules). The backward is first-order only.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, magnitude, scaling, keep_output):
        inputs = (x, weight, bias, lora_A, lora_B, magnitude, scaling, keep_output)
        output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output[0].detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        return _backward(ctx, grad_out)


#: ``torch.ops.onelora.dora_linear(x, weight, bias, A, B, m, scaling, keep_output) -> (y, A x, norm)``
dora_linear_op = register_op("onelora::dora_linear", _forward, _setup_context, _backward)
dora_linear = fused_call(_DoRAFunction, dora_linear_op)


def _direction(weight, lora_A, lora_B, scaling: float, dtype: torch.dtype) -> torch.Tensor:
    """``W + s B A`` in ``dtype``, a new tensor (the caller may scale it in place)."""
    return torch.addmm(weight.to(dtype), lora_B.to(dtype), lora_A.to(dtype), alpha=scaling)


@register("dora")
class DoRALinear(AdaptedLinear):
    """``r (k + d) + d`` trainable parameters (LoRA's plus the magnitude vector)."""

    adapter_tensor_names = ("lora_A", "lora_B", "dora_magnitude")
    execution_options = ("keep_output",)  # kept or recomputed output: the same update

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
                dora_linear,
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
