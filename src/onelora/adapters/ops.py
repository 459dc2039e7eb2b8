"""The fused adapters (1LoRA, DoRA) as registered PyTorch operators, so ``torch.compile`` traces them.

Each fused adapter is written once, as three plain functions: ``forward(*inputs) -> outputs`` (its
first output is the layer's output, the others are what backward needs that forward computed),
``setup_context(ctx, inputs, outputs)`` (what to keep) and ``backward(ctx, grad_y, *unused)``. From
them come two faces with the same numbers:

- an ``torch.autograd.Function`` for eager mode: the least host overhead per call (a custom op
  goes through the dispatcher twice and costs ~2x the Function's time per tiny call on the CPU);
- ``torch.library.custom_op("onelora::<name>")`` for ``torch.compile``, with ``register_fake``
  (the forward itself: it only uses ops with meta kernels and never reads values, so the fake
  outputs have the real shapes, dtypes and strides), ``register_autograd`` (the same
  ``setup_context`` and ``backward``, first-order only) and a decomposition under AOTAutograd's
  functional mode (what ``torch.library.triton_op`` registers): the compiled graph then holds the
  forward's aten ops, not an opaque call into Python, so Inductor can fuse the per-token sum and the
  weight preparation into neighbouring kernels and no Python runs per layer at run time.

``fused_call`` picks the face: the Function in eager mode, the op while Dynamo traces.

No autocast rule is registered: ``register_autocast`` casts every floating input to one fixed
dtype, the weight and the trainable vectors included, whereas ``nn.Linear`` follows the active
autocast dtype and casts only its input and a copy of the weight. The adapters therefore cast the
activation to the autocast dtype before the call (``base.apply_autocast``), and each forward
casts its weight-sized operands itself, so it computes the same with autocast on or off.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.autograd.function import once_differentiable


def register_op(name: str, forward: Callable, setup_context: Callable, backward: Callable):
    """``torch.library.custom_op(name)`` from ``forward`` (its schema from the type annotations),
    with its fake, its autograd and its decomposition under AOTAutograd registered."""
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    op = torch.library.custom_op(name, forward, mutates_args=())
    op.register_fake(forward)
    op.register_autograd(once_differentiable(backward), setup_context=setup_context)

    def decompose(mode, func, types, args, kwargs):
        # as torch.library.triton_op: trace the forward's own ops into the graph; leave tensor
        # subclasses other than fake / functional tensors to their own handling
        known = (torch.Tensor, torch._subclasses.FakeTensor, torch._subclasses.functional_tensor.FunctionalTensor)
        if any(t not in known and not issubclass(t, torch._subclasses.FakeTensor) for t in types):
            return NotImplemented
        with mode:
            return forward(*args, **kwargs)

    op.register_torch_dispatch(FunctionalTensorMode, decompose)
    return op


def fused_call(function: type[torch.autograd.Function], op: Any) -> Callable[..., torch.Tensor]:
    """The layer output of a fused adapter: ``function.apply`` in eager mode, ``op`` (its first
    output) while ``torch.compile`` traces."""

    def call(*inputs: Any) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return op(*inputs)[0]
        return function.apply(*inputs)

    call.__name__ = f"fused_{function.__name__.strip('_')}"
    return call
