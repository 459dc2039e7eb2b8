"""1LoRA: ``W0 x + b * sum_i x_i`` (summation compression, one trainable vector per layer).

The update is ``dW = b c^T`` with ``c`` the all-ones vector (``onelora``) or a fixed random one
(``onelora_random``, the paper's Table S1 ablation). Its gradient needs only the per-token
compressed input ``s = c^T x``, so the fused implementation keeps ``s`` for backward and never
``x``: a frozen base costs no activation memory, and 1LoRA adds a scalar per token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from torch.nn import functional as F

from .base import AdditiveAdapter, AdapterConfigError, apply_autocast, register


class _OneLoRAFunction(torch.autograd.Function):
    """``y = x W^T + bias + (x c) b^T`` with ``W`` frozen; saves only ``s = x c`` (one value per token).

    The rank-one term is applied where it is cheaper, which is the same choice in forward and
    backward: on the activations (``tokens (d + k)`` work) or folded into the weight (``d k``).
    On the activations, forward writes ``bias + s b^T`` into the output and lets the matmul
    accumulate into it (``addmm_``), which costs what ``F.linear``'s own bias copy costs, and
    backward takes ``grad_x = g W + (g b) c^T``. Folded, backward takes ``grad_x = g (W + b c^T)``
    through the merged weight, rebuilt (never kept) in full precision.

    Mixed precision (``x`` in a lower precision than ``W``, as ``apply_autocast`` hands it under
    autocast): the weight is cast for the matmul, and the cast copy is what backward keeps, as
    ``nn.Linear`` under autocast keeps its cast weight (BitFit's cost). Folded, the copy is of
    ``W + b c^T`` and the forward is one ``F.linear`` through it, so backward rebuilds nothing.
    Every op casts its operands itself and no in-place op mixes dtypes, so the function runs with
    autocast on (CUDA autocast computes ``sum`` in float32, casts ``addr``, ...): no context switch
    per layer. The backward is first-order only (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, b, c):
        dtype = x.dtype
        x2 = x.reshape(-1, x.shape[-1])
        (d, k), tokens = weight.shape, x2.shape[0]
        s = x2.sum(-1) if c is None else x2 @ c.to(dtype)
        bd = b.to(dtype)
        ctx.kept_merged = weight.dtype != dtype and 2 * d * k < tokens * (d + k)
        if ctx.kept_merged:  # folded into the weight copy autocast needs anyway
            merged = weight.to(dtype, copy=True)
            merged = merged.add_(bd[:, None]) if c is None else merged.addr_(bd, c.to(dtype))
            y = F.linear(x2, merged, None if bias is None else bias.to(dtype))
            kept = merged
        else:  # on the activations
            y = torch.outer(s.to(dtype), bd) if bias is None else torch.addr(bias.to(dtype), s.to(dtype), bd)
            kept = weight.to(y.dtype)  # the weight itself, or (mixed precision) nn.Linear's cast copy
            y.addmm_(x2.to(y.dtype), kept.t())
        # the weight only where x needs a gradient (nn.Linear keeps nothing for a frozen layer fed
        # by frozen layers either); s only where b needs one
        ctx.save_for_backward(
            s if ctx.needs_input_grad[3] else None, kept if ctx.needs_input_grad[0] else None, b, c
        )
        ctx.x_shape = x.shape
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.view(*x.shape[:-1], d)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        s, kept, b, c = ctx.saved_tensors
        grad_x = grad_bias = grad_b = None
        g = grad_out.reshape(-1, grad_out.shape[-1])
        dtype = g.dtype
        if ctx.needs_input_grad[0]:
            (tokens, d), k = g.shape, ctx.x_shape[-1]
            w, bg = kept.to(dtype), b.to(dtype)
            if ctx.kept_merged:  # W + b c^T, kept from forward
                grad_x = g @ w
            elif 2 * d * k < tokens * (d + k):  # through the merged weight, rebuilt
                merged = w + bg[:, None] if c is None else torch.addr(w, bg, c.to(dtype))
                grad_x = g @ merged.to(dtype)
            else:
                u = g @ bg[:, None]  # (tokens, 1): the gradient of the compressed input
                ones_or_c = u.expand(tokens, k) if c is None else u * c.to(u.dtype)[None, :]
                grad_x = torch.addmm(ones_or_c.to(dtype), g, w)
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[2]:
            grad_bias = g.sum(0).to(ctx.bias_dtype)
        if ctx.needs_input_grad[3]:
            grad_b = (s.to(dtype)[None, :] @ g)[0].to(b.dtype)  # a (1, tokens) matmul: faster than a bf16 gemv
        return grad_x, None, grad_bias, grad_b, None


@register("onelora")
class OneLoRALinear(AdditiveAdapter):
    """1LoRA on one linear layer: ``d`` trainable parameters, ``b`` initialised to zeros.

    ``impl="fused"`` (default) runs one custom autograd function that saves only the per-token
    sums; ``impl="autograd"`` is the paper's listing in plain PyTorch ops (same numbers, kept for
    the benchmark and as a reference in tests).
    """

    adapter_tensor_names = ("onelora_b",)
    implementations = ("fused", "autograd")
    execution_options = ("impl",)  # both compute W0 x + b sum(x) from the same vector b

    def __init__(self, base_layer: nn.Module, *, impl: str = "fused", **kwargs):
        super().__init__(base_layer, **kwargs)
        self.check_impl(impl)
        self.impl = impl
        self.onelora_b = nn.Parameter(self._zeros(self.out_features))

    @classmethod
    def check_impl(cls, impl: Any) -> None:
        if impl not in cls.implementations:
            raise AdapterConfigError(f"{cls.kind} impl must be one of {cls.implementations}, got {impl!r}")

    @classmethod
    def check_options(cls, **options: Any) -> None:
        super().check_options(**options)
        if "impl" in options:
            cls.check_impl(options["impl"])

    def compression(self) -> torch.Tensor | None:
        """The fixed compression vector ``c``; ``None`` means all ones (a plain sum)."""
        return None

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.compression()
        if self.impl == "fused" and not self.base_layer.weight.requires_grad:
            return apply_autocast(
                _OneLoRAFunction, x, self.weight, self.base_layer.bias, self.onelora_b, c, isolate=False
            )
        s = x.sum(-1, keepdim=True) if c is None else x @ c[:, None].to(x.dtype)
        y = self.base_layer(x)
        return y + s.to(y.dtype) * self.onelora_b.to(y.dtype)  # in y's dtype: bf16 under autocast

    def delta_weight(self) -> torch.Tensor:
        c = self.compression()
        c = torch.ones(self.in_features, **self._factory()) if c is None else c
        return torch.outer(self.onelora_b, c)


@register("onelora_random")
class RandomOneLoRALinear(OneLoRALinear):
    """The Table S1 ablation: a fixed random compression vector ``c ~ N(0, 1)`` instead of ones.

    Each layer draws its own ``c`` from a generator seeded with ``seed`` and the layer's position
    among the targets, so the same seed and model give the same vectors; ``c`` is saved with the
    adapter so a loaded adapter never depends on the generator.
    """

    adapter_tensor_names = ("onelora_b", "onelora_c")

    def __init__(self, base_layer: nn.Module, *, seed: int = 0, layer_index: int = 0, **kwargs):
        super().__init__(base_layer, layer_index=layer_index, **kwargs)
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(layer_index))
        c = torch.randn(self.in_features, generator=generator)
        self.register_buffer("onelora_c", c.to(**self._factory()))

    def compression(self) -> torch.Tensor:
        return self.onelora_c
