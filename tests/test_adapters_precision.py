"""Adapters under mixed precision (issue 14, items 1, 2 and 4).

Every adapter kind must follow autocast as ``nn.Linear`` does: under ``torch.autocast`` it returns
the autocast dtype, its backward runs, its gradients land in the parameters' dtype and agree with
the float32 ones to bfloat16 accuracy. CUDA autocast casts more ops than CPU autocast (``addr``,
``sum``, ``norm``, ...), so the custom autograd functions are also run under an emulation of CUDA's
casting rules on the CPU. Their backwards are first-order only: a second derivative must raise.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from onelora.adapters import ADAPTER_KINDS
from onelora.adapters.dora import _DoRAFunction
from onelora.adapters import onelora as onelora_module
from onelora.adapters.onelora import ROW_ALIGN, _OneLoRAFunction

KINDS = ["none", "onelora", "onelora_random", "lora", "vera", "dora", "mora1", "mora6"]
BF16 = torch.bfloat16
#: CPU autocast here; CUDA autocast (its own casting rules) where a GPU is present
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


class EmulatedCudaAutocast(TorchFunctionMode):
    """CUDA autocast's casting rules, on the CPU, for the ops the adapters call.

    Ops on CUDA's lower-precision list get their float32 / float16 tensor arguments cast to
    bfloat16, ops on its float32 list get them cast to float32; in-place ops, ``out=`` variants
    (autocast registers only the functional overloads) and everything else run as they are, so an
    in-place matmul with operands of another dtype fails as it does on a GPU.
    """

    LOWER = {
        torch.addmm, torch.addmv, torch.addr, torch.matmul, torch.mm, torch.mv, torch.bmm, torch.baddbmm,
        torch.addbmm, torch.einsum, F.linear, torch.Tensor.addmm, torch.Tensor.addmv, torch.Tensor.addr,
        torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.Tensor.mm, torch.Tensor.mv,
        torch.Tensor.bmm,
    }
    FP32 = {
        torch.sum, torch.Tensor.sum, torch.norm, torch.Tensor.norm, torch.linalg.norm, torch.linalg.vector_norm,
        torch.exp, torch.Tensor.exp, torch.pow, torch.Tensor.pow, torch.rsqrt, torch.reciprocal, F.layer_norm,
        F.softmax, torch.softmax, torch.cumsum, torch.prod,
    }

    def __init__(self):
        super().__init__()
        self.cast_calls = 0

    def _cast(self, value, dtype):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
            if value.dtype != dtype:
                self.cast_calls += 1
            return value.to(dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(self._cast(v, dtype) for v in value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "out" in kwargs:
            pass
        elif func in self.LOWER:
            args, kwargs = self._cast(args, BF16), {k: self._cast(v, BF16) for k, v in kwargs.items()}
        elif func in self.FP32:
            args, kwargs = self._cast(args, torch.float32), {k: self._cast(v, torch.float32) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def make_layer(kind: str, *, bias: bool = True, train_bias: bool = False, gamma: bool = False, seed: int = 0, **options):
    """A perturbed adapter on a 32 -> 24 linear (updates away from their zero initialisation)."""
    torch.manual_seed(seed)
    extra = {"r": 2} if kind in ("lora", "dora", "vera") else {}
    layer = ADAPTER_KINDS[kind](nn.Linear(32, 24, bias=bias), train_bias=train_bias, gamma=gamma, **extra, **options)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return layer


def grads_of(layer: nn.Module, x: torch.Tensor, weights: torch.Tensor, *, autocast: bool, seed: int = 0):
    """(output, {name: grad}) of ``sum(weights * layer(x))``, with x's gradient under "x"."""
    layer.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout mask in both runs
    with torch.autocast(x.device.type, dtype=BF16, enabled=autocast):
        y = layer(xi)
    (y.float() * weights).sum().backward()
    grads = {n: p.grad for n, p in layer.named_parameters() if p.requires_grad}
    grads["x"] = xi.grad
    return y, grads


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def assert_bf16_close(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = float(expected.abs().max())
    err = float((got.float() - expected.float()).abs().max())
    assert err <= 2e-2 * scale, f"{what}: max error {err:.3g} against scale {scale:.3g}"


# ------------------------------------------------------------------------------------------------
# CPU autocast: every kind, with and without bias, gamma, DoRA's keep_output and dropout
# ------------------------------------------------------------------------------------------------

CASES = [(k, {}) for k in KINDS] + [
    ("none", {"train_bias": True, "gamma": True}),
    ("onelora", {"bias": False}),
    ("onelora", {"train_bias": True, "gamma": True}),
    ("onelora_random", {"bias": False, "train_bias": True}),
    ("onelora", {"impl": "autograd", "train_bias": True}),
    ("dora", {"bias": False}),
    ("dora", {"keep_output": True}),
    ("dora", {"keep_output": True, "bias": False}),
    ("dora", {"train_bias": True, "gamma": True}),
    ("dora", {"dropout": 0.2}),
    ("lora", {"dropout": 0.2, "gamma": True}),
    ("vera", {"bias": False, "train_bias": True}),
    ("mora6", {"gamma": True}),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tokens", [5, 60])  # 1LoRA: the rank-one term on the activations / in the weight
@pytest.mark.parametrize("kind,options", CASES, ids=[f"{k}-{'-'.join(f'{a}={b}' for a, b in o.items())}" for k, o in CASES])
def test_every_kind_follows_autocast(kind, options, tokens, device):
    layer = make_layer(kind, **options).train().to(device)
    x = torch.randn(3, tokens, 32, generator=torch.Generator().manual_seed(2)).to(device)
    weights = torch.randn(3, tokens, 24, generator=torch.Generator().manual_seed(3)).to(device)
    with torch.autocast(device, dtype=BF16):
        plain_dtype = layer.base_layer(x).dtype  # what nn.Linear returns under the same autocast
    assert plain_dtype == BF16

    y32, g32 = grads_of(layer, x, weights, autocast=False)
    y16, g16 = grads_of(layer, x, weights, autocast=True)

    assert y32.dtype == torch.float32
    assert y16.dtype == BF16, f"{kind} returns {y16.dtype} under bf16 autocast, nn.Linear returns bf16"
    assert_bf16_close(y16, y32, "output")
    assert g16.keys() == g32.keys()
    for name, grad in g16.items():
        assert grad is not None, name
        expected_dtype = torch.float32  # parameters and x are float32: gradients land in float32
        assert grad.dtype == expected_dtype, f"{name}: gradient in {grad.dtype}"
        assert torch.isfinite(grad).all(), name
        assert cosine(grad, g32[name]) > 0.99, f"{name}: cosine {cosine(grad, g32[name]):.4f}"


@pytest.mark.parametrize("device", DEVICES)
def test_issue_reproduction_dora_backward_under_autocast(device):
    """Issue 14 item 1, as reported: DoRA's backward under bf16 autocast."""
    for keep_output in (False, True):
        for bias in (False, True):
            layer = ADAPTER_KINDS["dora"](nn.Linear(32, 24, bias=bias), r=2, keep_output=keep_output).to(device)
            with torch.autocast(device, dtype=BF16):
                y = layer(torch.randn(4, 32, device=device))
            y.float().sum().backward()
            assert layer.lora_B.grad is not None and layer.lora_B.grad.dtype == torch.float32
            assert layer.dora_magnitude.grad is not None


@pytest.mark.parametrize("device", DEVICES)
def test_fused_onelora_returns_what_linear_returns_under_autocast(device):
    """Issue 14 item 2: the fused 1LoRA runs the frozen matmul in the autocast dtype, as nn.Linear
    (on CUDA, with a bias, the old function crashed: addr cast to bf16, then addmm_ with fp32)."""
    layer = ADAPTER_KINDS["onelora"](nn.Linear(32, 24)).to(device)
    x = torch.randn(4, 32, device=device)
    with torch.autocast(device, dtype=BF16):
        y = layer(x)
        expected = layer.base_layer(x)
    assert "_OneLoRAFunction" in type(y.grad_fn).__name__ or y.grad_fn is None
    assert y.dtype == expected.dtype == BF16
    torch.testing.assert_close(y, expected)  # b = 0 at initialisation: exactly the linear's output


def _kept(fn) -> list[torch.Tensor]:
    """The tensors autograd keeps for backward while ``fn()`` runs (parameters included)."""
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t.detach())
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.float().sum().backward()
    return saved


@pytest.mark.parametrize("in_matmul", [False, True], ids=["cpu", "gpu-path"])
@pytest.mark.parametrize("tokens", [6, 200])  # without autocast: backward through (g b) c^T / the merged weight
def test_autocast_keeps_what_bitfit_keeps_plus_one_value_per_token(tokens, in_matmul, monkeypatch):
    """Under bf16 autocast, BitFit's nn.Linear keeps its bf16 weight copy for x's gradient; the
    fused 1LoRA keeps a copy of that size plus one bf16 sum per token (on an accelerator, where the
    sums come from the matmul, the copy is ``[W + b 1^T; 1^T; 0]``: 8 rows more; played here on the
    CPU); DoRA keeps bf16 activations (x and A x) and no weight copy (it rebuilds the weight in
    backward, as without autocast)."""
    x = torch.randn(tokens, 32, requires_grad=True)
    bitfit = make_layer("none", train_bias=True)
    with torch.autocast("cpu", dtype=BF16):
        kept_bitfit = _kept(lambda: bitfit(x))
    params = {p.data_ptr() for p in bitfit.parameters()}
    bitfit_bytes = sum(t.numel() * t.element_size() for t in kept_bitfit if t.data_ptr() not in params)
    assert bitfit_bytes == 24 * 32 * 2  # the bf16 weight copy

    monkeypatch.setattr(onelora_module, "sums_in_matmul", lambda device: in_matmul)
    one = make_layer("onelora", train_bias=True)
    with torch.autocast("cpu", dtype=BF16):
        kept = _kept(lambda: one(x))
        assert one(x).grad_fn.kept_merged == in_matmul
    params = {p.data_ptr() for p in one.parameters()}
    extra = [t for t in kept if t.data_ptr() not in params]
    rows = 32 if in_matmul else 24  # round_up(24 + 1, ROW_ALIGN)
    assert ROW_ALIGN == 8
    assert sorted((tuple(t.shape), t.dtype) for t in extra) == sorted([((tokens,), BF16), ((rows, 32), BF16)])
    without = _kept(lambda: one(x))  # and without autocast: the weight itself, no copy
    assert [tuple(t.shape) for t in without if t.data_ptr() not in params] == [(tokens,)]

    dora = make_layer("dora")
    with torch.autocast("cpu", dtype=BF16):
        kept = _kept(lambda: dora(x))
    params = {p.data_ptr() for p in dora.parameters()}
    per_token = [t for t in kept if t.data_ptr() not in params and t.dim() >= 1 and t.shape[0] == tokens]
    assert sorted(tuple(t.shape) for t in per_token) == [(tokens, 2), (tokens, 32)]
    assert all(t.dtype == BF16 for t in per_token)
    assert not any(t.shape == dora.weight.shape for t in kept if t.data_ptr() not in params), "DoRA keeps a copy of W"


# ------------------------------------------------------------------------------------------------
# CUDA's casting rules, emulated
# ------------------------------------------------------------------------------------------------


#: the inputs of each custom function, by position, that tests compare gradients of
FUNCTION_INPUTS = {"onelora": {0: "x", 2: "base_layer.bias", 3: "onelora_b"},
                   "dora": {0: "x", 2: "base_layer.bias", 3: "lora_A", 4: "lora_B", 5: "dora_magnitude"}}


@pytest.mark.parametrize("tokens", [5, 60])
@pytest.mark.parametrize("kind,options", [
    ("onelora", {}), ("onelora", {"bias": False}), ("onelora", {"train_bias": True}),
    ("onelora_random", {"train_bias": True}), ("dora", {}), ("dora", {"keep_output": True}),
    ("dora", {"bias": False, "keep_output": True}), ("dora", {"train_bias": True}),
])
def test_fused_functions_under_emulated_cuda_autocast(kind, options, tokens):
    """Inside the custom functions every op may be cast as CUDA autocast casts it (``addr`` and the
    matmuls to bf16, ``sum`` and norms to float32): no in-place op may mix dtypes, and the results
    stay the float32 ones to bf16 accuracy. The engine does not carry a function mode into
    backward, so the backward is also called directly under the emulation."""
    layer = make_layer(kind, **options)
    x = torch.randn(3, tokens, 32, generator=torch.Generator().manual_seed(2))
    weights = torch.randn(3, tokens, 24, generator=torch.Generator().manual_seed(3))
    y32, g32 = grads_of(layer, x, weights, autocast=False)

    layer.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    mode = EmulatedCudaAutocast()
    with mode:
        y = layer(xi)
    assert type(y.grad_fn).__name__ in ("_OneLoRAFunctionBackward", "_DoRAFunctionBackward")
    assert_bf16_close(y, y32, "output")
    with mode:
        direct = y.grad_fn._forward_cls.backward(y.grad_fn, weights.to(y.dtype))
    (y.float() * weights).sum().backward()  # and through the engine
    assert mode.cast_calls > 0, "the emulation must have cast something"
    grads = {n: p.grad for n, p in layer.named_parameters() if p.requires_grad}
    grads["x"] = xi.grad
    for name, grad in grads.items():
        assert grad is not None and grad.dtype == torch.float32, name
        assert cosine(grad, g32[name]) > 0.99, f"{name}: cosine {cosine(grad, g32[name]):.4f}"
    positions = FUNCTION_INPUTS["dora" if kind == "dora" else "onelora"]
    for index, name in positions.items():
        if name in g32:
            assert direct[index] is not None, name
            assert cosine(direct[index], g32[name]) > 0.99, f"{name} (direct backward)"


@pytest.mark.parametrize("in_matmul", [False, True], ids=["cpu", "gpu-path"])
@pytest.mark.parametrize("tokens", [4, 64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("random_c", [False, True])
def test_onelora_function_with_bf16_input_and_fp32_weights(with_bias, random_c, tokens, in_matmul, monkeypatch):
    """What CUDA autocast hands a function that casts only its input: bf16 x, float32 parameters.
    ``gpu-path``: as on an accelerator, the rank-one term folded into the cast weight and the sums
    from its extra row (forced on the CPU), also under CUDA's casting rules."""
    monkeypatch.setattr(onelora_module, "sums_in_matmul", lambda device: in_matmul)
    torch.manual_seed(0)
    x = torch.randn(tokens, 16)
    weight, b = torch.randn(12, 16), torch.randn(12, requires_grad=True)
    bias = torch.randn(12, requires_grad=True) if with_bias else None
    c = torch.randn(16) if random_c else None
    cc = torch.ones(16) if c is None else c

    x16 = x.to(BF16).requires_grad_(True)
    y = _OneLoRAFunction.apply(x16, weight, bias, b, c)
    assert y.dtype == BF16 and y.grad_fn.kept_merged == in_matmul
    expected = x @ weight.T + (0 if bias is None else bias) + (x @ cc)[..., None] * b
    assert_bf16_close(y, expected.detach(), "output")
    for mode in (None, EmulatedCudaAutocast()):
        for t in (x16, b, bias):
            if t is not None:
                t.grad = None
        with mode or torch.autocast("cpu", enabled=False):
            y = _OneLoRAFunction.apply(x16, weight, bias, b, c)
            y.float().square().sum().backward()
        assert x16.grad.dtype == BF16 and b.grad.dtype == torch.float32
        xr, br = x.clone().requires_grad_(True), b.detach().clone().requires_grad_(True)  # float32 reference
        (xr @ weight.T + (0 if bias is None else bias.detach()) + (xr @ cc)[..., None] * br).square().sum().backward()
        assert cosine(x16.grad, xr.grad) > 0.99 and cosine(b.grad, br.grad) > 0.99
        if bias is not None:
            assert bias.grad.dtype == torch.float32


@pytest.mark.parametrize("keep_output", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dora_function_with_bf16_input_and_fp32_weights(keep_output, with_bias):
    torch.manual_seed(0)
    lay = make_layer("dora", bias=with_bias, keep_output=keep_output)
    x = torch.randn(2, 5, 32)
    weights = torch.randn(2, 5, 24)
    _, g32 = grads_of(lay, x, weights, autocast=False)
    for mode in (None, EmulatedCudaAutocast()):
        lay.zero_grad(set_to_none=True)
        x16 = x.to(BF16).requires_grad_(True)
        bias = lay.base_layer.bias
        args = (lay.weight, bias, lay.lora_A, lay.lora_B, lay.dora_magnitude, lay.scaling, keep_output)
        with mode or torch.autocast("cpu", enabled=False):
            y = _DoRAFunction.apply(x16, *args)
            (y.float() * weights).sum().backward()
        assert x16.grad.dtype == BF16
        for name in ("lora_A", "lora_B", "dora_magnitude"):
            grad = getattr(lay, name).grad
            assert grad.dtype == torch.float32, name
            assert cosine(grad, g32[name]) > 0.99, (name, cosine(grad, g32[name]))


# ------------------------------------------------------------------------------------------------
# second derivatives are refused, not wrong
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,options", [
    ("onelora", {}), ("onelora_random", {"train_bias": True}), ("dora", {}), ("dora", {"keep_output": True}),
])
def test_double_backward_raises(kind, options):
    layer = make_layer(kind, **options).double()
    x = torch.randn(3, 32, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert type(y.grad_fn).__name__.startswith(("_OneLoRAFunction", "_DoRAFunction")), type(y.grad_fn).__name__
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.square().sum().backward()


@pytest.mark.parametrize("with_bias", [False, True])
def test_second_derivative_through_onelora_raises(with_bias):
    """A second derivative through the fused function raises, whichever way it is asked for
    (before, a Hessian-vector product w.r.t. b came out silently wrong); from a plain sum (no
    grad_output graph) the first gradient has no graph at all."""
    torch.manual_seed(0)
    weight = torch.randn(5, 6, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True) if with_bias else None
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = _OneLoRAFunction.apply(x, weight, bias, b, None)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(gx.sum(), b)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()
    y = _OneLoRAFunction.apply(x, weight, bias, b, None)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert not gx.requires_grad
    # first derivatives stay exact
    fn = lambda x, b: _OneLoRAFunction.apply(x, weight, bias, b, None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))


def test_autograd_reference_still_twice_differentiable():
    """The paper's listing (impl="autograd") is plain PyTorch: second derivatives work there."""
    layer = make_layer("onelora", impl="autograd").double()
    x = torch.randn(3, 32, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    gx.square().sum().backward()
    assert layer.onelora_b.grad is not None
