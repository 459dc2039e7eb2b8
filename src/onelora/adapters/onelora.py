"""1LoRA: ``W0 x + b * sum_i x_i`` (summation compression, one trainable vector per layer).

The update is ``dW = b c^T`` with ``c`` the all-ones vector (``onelora``) or a fixed random one
(``onelora_random``, the paper's Table S1 ablation). Its gradient needs only the per-token
compressed input ``s = c^T x``, so the fused implementation keeps ``s`` for backward and never
``x``: a frozen base costs no activation memory, and 1LoRA adds a scalar per token.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .base import AdditiveAdapter, AdapterConfigError, apply_autocast, register
from .ops import fused_call, register_op

#: the extended weight's rows (``d`` rows of ``W + b c^T``, the row ``c^T``, zeros) are padded to a
#: multiple of this, so the matmul's output rows stay aligned for tensor cores and for attention
#: kernels that read q, k, v through the strided output (16 bytes in bf16 / fp16)
ROW_ALIGN = 8


def sums_in_matmul(device: torch.device) -> bool:
    """Whether, under mixed precision, the per-token sums come from one more output row of the
    matmul (accelerators, where a separate sum is one more pass over the activations through memory)
    rather than from a sum over features (the CPU: there the sum costs what the extra row costs, and
    the 1 to 8 padding columns slowed the bf16 matmul and the ops after it by 2-5% per layer)."""
    return device.type != "cpu"


def merged_is_cheaper(tokens: int, d: int, k: int) -> bool:
    """Whether ``W + b c^T`` (``d k`` work) costs less than the rank-one term on the activations
    (``tokens (d + k)`` work): backward's choice for ``grad_x`` where no merged copy was kept."""
    return 2 * d * k < tokens * (d + k)


def extended_weight(weight: Tensor, b: Tensor, c: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """``[W + b c^T; c^T; 0]`` in ``dtype``, ``(round_up(d + 1, ROW_ALIGN), k)``: one matmul through
    it gives the layer's output and, in the extra row, the per-token sums ``s = x c``, so no pass of
    its own reads the activations. Built in one pass over the weight (the cast ``nn.Linear`` makes
    under autocast); ``b`` enters as a constant (its gradient comes from ``s``)."""
    d, k = weight.shape
    rows = -(-(d + 1) // ROW_ALIGN) * ROW_ALIGN
    ext = weight.new_empty((rows, k), dtype=dtype)
    b = b.detach()
    if c is None:
        torch.add(weight, b[:, None], out=ext[:d])
    else:
        torch.addr(weight, b, c, out=ext[:d])
    ext[d:].zero_()
    if c is None:
        ext[d].fill_(1)
    else:
        ext[d].copy_(c)
    return ext


def _forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], b: Tensor, c: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, s, kept)``: ``y = x W^T + bias + (x c) b^T`` in ``x``'s dtype, the per-token sums
    ``s = x c``, and under mixed precision (``x`` in another dtype than ``W``) the weight copy the
    matmul ran through: the extended ``[W + b c^T; c^T; 0]`` where ``sums_in_matmul``, else ``W``
    cast (empty in the same precision: backward uses ``W`` itself)."""
    dtype, k = x.dtype, x.shape[-1]
    x2 = x.reshape(-1, k)
    d = weight.shape[0]
    mixed = weight.dtype != dtype
    if mixed and sums_in_matmul(x.device):  # folded into the weight copy the matmul needs anyway
        kept = extended_weight(weight, b, c, dtype)
        bias_ext = None if bias is None else F.pad(bias.to(dtype), (0, kept.shape[0] - d))
        out = F.linear(x2, kept, bias_ext)
        s = out[:, d].clone()
        y = out[:, :d]  # a strided view: the padding columns are never copied out
    else:  # on the activations: bias + s b^T written first, the matmul accumulates into it
        s = x2.sum(-1) if c is None else x2 @ c.to(dtype)
        bd = b.to(dtype)
        y = torch.outer(s.to(dtype), bd) if bias is None else torch.addr(bias.to(dtype), s.to(dtype), bd)
        w = weight.to(y.dtype)  # the weight itself, or (mixed precision) nn.Linear's cast copy
        y.addmm_(x2.to(y.dtype), w.t())
        kept = w if mixed else x.new_empty(0)
    # detached: a view made inside an autograd Function may not be modified in place downstream
    return y.view(*x.shape[:-1], d).detach(), s, kept


def _setup_context(ctx, inputs, output) -> None:
    """Keep ``s`` (one value per token) where ``b`` needs a gradient, and for ``x``'s gradient the
    weight: the extended copy under mixed precision (``nn.Linear`` keeps a cast copy of that size),
    else the frozen weight itself (no copy)."""
    x, weight, bias, b, c = inputs
    _, s, kept = output
    needs_x, _, needs_bias, needs_b = ctx.needs_input_grad[:4]  # the op's autograd adds an entry
    mixed = kept.numel() > 0
    ctx.save_for_backward(
        s if needs_b else None,
        kept if needs_x and mixed else None,
        weight if needs_x and not mixed else None,
        b,
        c,
    )
    ctx.kept_merged = kept.shape[0] > weight.shape[0]  # the extended copy: W + b c^T in its first d rows
    ctx.x_shape = x.shape
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad_y: Tensor, *unused: Any):
    """``grad_x = g (W + b c^T)``, ``grad_b = g^T s``, ``grad_bias = g^T 1`` (both from one
    ``g^T [s, 1]`` product when both are trained)."""
    s, kept, weight, b, c = ctx.saved_tensors
    needs_x, _, needs_bias, needs_b = ctx.needs_input_grad[:4]  # the op's autograd adds an entry
    g = grad_y.reshape(-1, grad_y.shape[-1])
    (tokens, d), k = g.shape, ctx.x_shape[-1]
    dtype = g.dtype
    grad_x = grad_bias = grad_b = None
    if needs_x:
        weight = weight if kept is None else kept  # the cast copy under mixed precision
        if ctx.kept_merged:  # W + b c^T, from forward
            grad_x = g @ kept[:d].to(dtype)
        elif merged_is_cheaper(tokens, d, k):  # through the merged weight, rebuilt (never kept)
            w, bg = weight.to(dtype), b.to(dtype)
            merged = w + bg[:, None] if c is None else torch.addr(w, bg, c.to(dtype))
            grad_x = g @ merged.to(dtype)
        else:  # g W + (g b) c^T
            u = g @ b.to(dtype)[:, None]  # (tokens, 1): the gradient of the compressed input
            ones_or_c = u.expand(tokens, k) if c is None else u * c.to(u.dtype)[None, :]
            grad_x = torch.addmm(ones_or_c.to(dtype), g, weight.to(dtype))
        grad_x = grad_x.view(ctx.x_shape)
    if needs_b and needs_bias:  # (2, tokens) @ (tokens, d): g is read once for both
        both = torch.stack((s.to(dtype), torch.ones_like(s, dtype=dtype))) @ g
        grad_b, grad_bias = both[0].to(b.dtype), both[1].to(ctx.bias_dtype)
    elif needs_b:
        grad_b = (s.to(dtype)[None, :] @ g)[0].to(b.dtype)  # a (1, tokens) matmul: faster than a bf16 gemv
    elif needs_bias:
        grad_bias = g.sum(0).to(ctx.bias_dtype)
    return grad_x, None, grad_bias, grad_b, None


class _OneLoRAFunction(torch.autograd.Function):
    """``y = x W^T + bias + (x c) b^T`` with ``W`` frozen; keeps only ``s = x c`` (one value per
    token) and, for ``x``'s gradient, the weight (mixed precision: the cast extended copy).

    The eager face of ``onelora::linear`` (``ops``): the same ``_forward`` / ``_backward``.

    On the CPU, and in the same precision (``x`` in ``W``'s dtype): forward writes ``bias + s b^T``
    into the output and lets the matmul accumulate into it (``addmm_``), so the only extra forward
    work is the sum over features; backward takes ``grad_x = g (W + b c^T)`` through the merged
    weight (rebuilt, never kept) or as ``g W + (g b) c^T``, whichever costs less
    (``merged_is_cheaper``). Under mixed precision the weight is cast for the matmul and the cast
    copy kept, as ``nn.Linear`` does.

    Mixed precision on an accelerator (``x`` in a lower precision than ``W``, as ``apply_autocast``
    hands it under autocast; ``sums_in_matmul``): ``nn.Linear`` casts (and keeps) a copy of the
    weight anyway; here that copy is ``[W + b c^T; c^T; 0]``, built in the same one pass over ``W``,
    and one matmul through it gives the output and, in its extra row, the sums ``s``: no pass over
    the activations of its own, and backward takes ``grad_x = g (W + b c^T)`` from the kept copy.
    The output is a view of the matmul's ``(tokens, round_up(d + 1, 8))`` result (aligned rows;
    the padding costs ``8 / d`` of an output where a later op keeps it). Every op casts its operands itself and no in-place op
    mixes dtypes, so the function runs with autocast on (CUDA autocast computes ``sum`` in float32,
    casts ``addr``, ...): no context switch per layer. The backward is first-order only.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, b, c):
        inputs = (x, weight, bias, b, c)
        output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        return _backward(ctx, grad_out)


#: ``torch.ops.onelora.linear(x, weight, bias, b, c) -> (y, s, kept)``: what torch.compile traces
linear_op = register_op("onelora::linear", _forward, _setup_context, _backward)
onelora_linear = fused_call(_OneLoRAFunction, linear_op)


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
            return apply_autocast(onelora_linear, x, self.weight, self.base_layer.bias, self.onelora_b, c, isolate=False)
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
