"""The adapter-injection layer on small real models: every method kind of the paper, its
parameter accounting, freezing, gradients, merging, numerics and error messages.

Expected parameter counts and trainable sets are computed here from the layer shapes, not taken
from the code under test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from onelora.adapters import (
    ADAPTER_KINDS,
    AdaptedLinear,
    AdapterConfigError,
    MethodSpec,
    adapted_layers,
    inject,
    merge,
    merge_and_unload,
    unmerge,
)
from onelora.adapters.mora import mora_size
from onelora.adapters.onelora import OneLoRALinear, RandomOneLoRALinear, _OneLoRAFunction

from adapter_cases import HEAD, KIND_METHODS, LINEAR_KINDS, METHODS, PER_LAYER, per_layer, spec_of, tiny_llama, tiny_vit

# the tensors each of the paper's kinds adds to a layer that must be trainable (a kind not listed
# here: the tensors its class declares, ``adapter_tensor_names``)
OWN_PARAMS = {
    "onelora": ["onelora_b"],
    "onelora_random": ["onelora_b"],
    "lora": ["lora_A", "lora_B"],
    "vera": ["vera_lambda_b", "vera_lambda_d"],
    "dora": ["lora_A", "lora_B", "dora_magnitude"],
    "mora1": ["mora_M"],
    "mora6": ["mora_M"],
}


def images(seed: int = 1, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g)


def target_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith("head")]


def norm_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [
        (f"{n}.{pn}", p)
        for n, m in model.named_modules()
        if isinstance(m, nn.LayerNorm)
        for pn, p in m.named_parameters(recurse=False)
    ]


def rhat_paper(out_features: int, mora_type: int) -> int:
    rhat = int(math.sqrt(out_features) + 0.5)
    return rhat // 2 * 2 if mora_type == 6 else rhat


def expected_layer_params(method: str, k: int, d: int) -> int:
    """Trainable parameters one target layer gets: the paper's count as the method's YAML states
    it (``describe.per_layer``; r = 1)."""
    return per_layer(PER_LAYER[method], k, d)


def expected_added_params(method: str, k: int, d: int) -> int:
    """Parameters the method adds to a target layer that has a bias (BitFit trains that bias)."""
    return expected_layer_params(method, k, d) - d * bool(METHODS[method].get("bias"))


def own_params(kind: str | None) -> list[str]:
    return OWN_PARAMS.get(kind, list(ADAPTER_KINDS[kind].adapter_tensor_names) if kind else [])


def expected_trainable(method: str, original: nn.Module) -> set[str]:
    """Names (in the adapted model) of every parameter the method must train, head included."""
    cfg = METHODS[method]
    if cfg.get("full"):
        return {n for n, _ in original.named_parameters()}
    names = {"head.weight", "head.bias"}
    if cfg.get("linear") or cfg.get("bias") or cfg.get("gamma"):
        for layer, _ in target_linears(original):
            names |= {f"{layer}.{p}" for p in own_params(cfg.get("linear"))}
            if cfg.get("bias"):
                names.add(f"{layer}.base_layer.bias")
            if cfg.get("gamma"):
                names.add(f"{layer}.gamma")
    if cfg.get("norms"):
        names |= {n for n, _ in norm_params(original)}
    return names


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 7, scale: float = 0.2) -> None:
    """Move every trainable tensor away from its initial value so updates are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def adapted(method: str, seed: int = 0, **inject_kwargs):
    model = tiny_vit(seed)
    original = copy.deepcopy(model)
    report = inject(model, spec_of(method), head=HEAD, **inject_kwargs)
    return original, model, report


# ------------------------------------------------------------------------------------------------
# the method matrix
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_output_unchanged_at_initialisation(method):
    original, model, _ = adapted(method)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_parameter_report_matches_formula(method):
    original, model, report = adapted(method)
    cfg = METHODS[method]
    total_original = sum(p.numel() for p in original.parameters())
    head = sum(p.numel() for p in original.head.parameters())
    if cfg.get("full"):
        expected_adapter = total_original - head
    else:
        expected_adapter = sum(expected_layer_params(method, m.in_features, m.out_features) for _, m in target_linears(original))
        if cfg.get("norms"):
            expected_adapter += sum(p.numel() for _, p in norm_params(original))
    assert report.adapter_params == expected_adapter
    for name, layer in adapted_layers(model):  # and layer by layer
        own = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        assert own == expected_layer_params(method, layer.in_features, layer.out_features), name
    assert report.head_params == head
    assert report.trainable_params == expected_adapter + head
    assert report.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    wraps = bool(cfg.get("linear") or cfg.get("bias") or cfg.get("gamma"))
    assert report.adapted_layers == (len(target_linears(original)) if wraps else 0)
    # the total counts each tensor once: the frozen model plus what the method adds
    added = sum(
        expected_added_params(method, m.in_features, m.out_features) for _, m in target_linears(original)
    ) if wraps else 0
    assert report.total_params == total_original + added


def test_report_formulas_on_concrete_numbers():
    """Guard the YAMLs' formulas (``describe.per_layer``) with hand-computed values for the tiny ViT."""
    # layers per block: qkv 32->96, proj 32->32, fc1 32->64, fc2 64->32; 2 blocks
    shapes = [(32, 96), (32, 32), (32, 64), (64, 32)] * 2
    d = sum(o for _, o in shapes)
    assert d == 448
    assert sum(expected_layer_params("lora", k, o) for k, o in shapes) == 448 + 2 * (32 + 32 + 32 + 64)
    assert sum(expected_layer_params("mora1", k, o) for k, o in shapes) == 2 * (10**2 + 6**2 + 8**2 + 6**2)
    assert sum(expected_layer_params("mora6", k, o) for k, o in shapes) == 2 * (10**2 + 6**2 + 8**2 + 6**2)
    assert rhat_paper(30, 1) == 5 and rhat_paper(30, 6) == 4
    for kind, n in (("mora1", 1), ("mora6", 6)):  # MoRA's sizes, one layer width after another
        assert all(expected_layer_params(kind, 8, d) == rhat_paper(d, n) ** 2 for d in range(1, 300))
    assert [expected_layer_params(m, 32, 96) for m in ("onelora", "vera", "dora", "bitfit", "difffit", "onelora+bias+gamma")] \
        == [96, 97, 32 + 192, 96, 192, 288]


@pytest.mark.parametrize("method", METHODS)
def test_only_own_parameters_train_and_receive_gradients(method):
    original, model, _ = adapted(method)
    expected = expected_trainable(method, original)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    perturb(model)
    model.train()
    out = model(images())
    (out * torch.randn_like(out)).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == expected
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{n}: zero gradient"


@pytest.mark.parametrize("method", METHODS)
def test_merge_unmerge_and_unload(method):
    _, model, _ = adapted(method)
    perturb(model)
    x = images()
    layers = adapted_layers(model)
    before = {n: (m.base_layer.weight.clone(), None if m.bias is None else m.bias.clone()) for n, m in layers}
    with torch.no_grad():
        reference = model(x)
        merge(model)
        assert all(m.merged for _, m in layers)
        torch.testing.assert_close(model(x), reference, rtol=0, atol=1e-5)
        cfg = METHODS[method]
        if cfg.get("linear") or cfg.get("gamma"):  # the merge really moved the weights
            assert any(not torch.equal(m.base_layer.weight, before[n][0]) for n, m in layers)
        unmerge(model)
        for n, m in layers:
            assert not m.merged
            torch.testing.assert_close(m.base_layer.weight, before[n][0], rtol=0, atol=1e-5)
            if before[n][1] is not None:
                torch.testing.assert_close(m.bias, before[n][1], rtol=0, atol=1e-5)
        torch.testing.assert_close(model(x), reference, rtol=0, atol=1e-5)
        # merge twice / unmerge twice are no-ops
        merge(model)
        merge(model)
        torch.testing.assert_close(model(x), reference, rtol=0, atol=1e-5)
        unmerge(model)
        unmerge(model)
        torch.testing.assert_close(model(x), reference, rtol=0, atol=1e-5)

        plain = merge_and_unload(copy.deepcopy(model))
        assert not any(isinstance(m, AdaptedLinear) for m in plain.modules())
        for n, _ in layers:
            assert type(plain.get_submodule(n)) is nn.Linear
        torch.testing.assert_close(plain(x), reference, rtol=0, atol=1e-5)


def test_merge_refuses_zero_gamma():
    _, model, _ = adapted("gamma")
    layer = adapted_layers(model)[0][1]
    with torch.no_grad():
        layer.gamma[0] = 0.0
    with pytest.raises(AdapterConfigError, match="zero"):
        layer.merge()


# ------------------------------------------------------------------------------------------------
# 1LoRA: the fused autograd function
# ------------------------------------------------------------------------------------------------


def _pair(kind: str, *, bias: bool, train_bias: bool, gamma: bool = False, dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    base = nn.Linear(24, 40, bias=bias).to(dtype)
    cls = ADAPTER_KINDS[kind]
    extra = {"seed": 5} if kind == "onelora_random" else {}
    fused = cls(copy.deepcopy(base), impl="fused", train_bias=train_bias, gamma=gamma, **extra)
    plain = cls(copy.deepcopy(base), impl="autograd", train_bias=train_bias, gamma=gamma, **extra)
    with torch.no_grad():
        b = torch.randn(40, dtype=dtype)
        fused.onelora_b.copy_(b)
        plain.onelora_b.copy_(b)
        if gamma:
            gm = 1 + 0.3 * torch.randn(40, dtype=dtype)
            fused.gamma.copy_(gm)
            plain.gamma.copy_(gm)
    return fused, plain


@pytest.mark.parametrize("kind", ["onelora", "onelora_random"])
@pytest.mark.parametrize("bias,train_bias,gamma", [(True, False, False), (True, True, False), (False, True, True), (False, False, True)])
def test_fused_equals_autograd(kind, bias, train_bias, gamma):
    fused, plain = _pair(kind, bias=bias, train_bias=train_bias, gamma=gamma)
    x = torch.randn(3, 5, 24)
    g = torch.randn(3, 5, 40)
    results = []
    for layer in (fused, plain):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * g).sum().backward()
        grads = [xi.grad, layer.onelora_b.grad]
        if train_bias:
            grads.append(layer.bias.grad)
        if gamma:
            grads.append(layer.gamma.grad)
        results.append((y.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fused.base_layer.weight.grad is None and plain.base_layer.weight.grad is None
    if bias and not train_bias:
        assert fused.bias.grad is None


@pytest.mark.parametrize("kind", ["onelora", "onelora_random"])
def test_fused_under_autocast(kind):
    """Mixed precision (what Lightning's bf16-mixed runs): fused and autograd agree to bf16 accuracy."""
    fused, plain = _pair(kind, bias=True, train_bias=True, gamma=True)
    x = torch.randn(3, 5, 24)
    results = []
    for layer in (fused, plain):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(xi)
        y.float().square().sum().backward()
        results.append([y.float(), xi.grad, layer.onelora_b.grad, layer.bias.grad, layer.gamma.grad])
    for a, b in zip(*results):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 3e-2 * b.abs().max()


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_merge_with_bias_and_gamma_per_kind(kind):
    torch.manual_seed(0)
    layer = ADAPTER_KINDS[kind](nn.Linear(20, 30), train_bias=True, gamma=True)
    W0 = layer.base_layer.weight.clone()
    perturb(layer)
    trained_bias = layer.bias.clone()
    x = torch.randn(4, 20)
    with torch.no_grad():
        ref = layer(x)
        layer.merge()
        torch.testing.assert_close(layer(x), ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.nn.functional.linear(x, layer.base_layer.weight, layer.bias), ref, rtol=0, atol=1e-5)
        layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, W0, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.bias, trained_bias, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, rtol=0, atol=1e-5)


def test_fused_uses_the_fused_function():
    """Guard against the fused path silently falling back to plain autograd."""
    fused, plain = _pair("onelora", bias=True, train_bias=False)
    y = fused(torch.randn(2, 24, requires_grad=True))
    assert "_OneLoRAFunction" in type(y.grad_fn).__name__
    y = plain(torch.randn(2, 24, requires_grad=True))
    assert "_OneLoRAFunction" not in type(y.grad_fn).__name__


@pytest.mark.parametrize("random_c", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_gradcheck_float64(random_c, with_bias):
    torch.manual_seed(0)
    k, d = 6, 5
    x = torch.randn(2, 3, k, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(d, k, dtype=torch.float64)
    bias = torch.randn(d, dtype=torch.float64, requires_grad=True) if with_bias else None
    b = torch.randn(d, dtype=torch.float64, requires_grad=True)
    c = torch.randn(k, dtype=torch.float64) if random_c else None
    if with_bias:
        fn = lambda x, bias, b: _OneLoRAFunction.apply(x, weight, bias, b, c)  # noqa: E731
        inputs = (x, bias, b)
    else:
        fn = lambda x, b: _OneLoRAFunction.apply(x, weight, None, b, c)  # noqa: E731
        inputs = (x, b)
    assert torch.autograd.gradcheck(fn, inputs)
    # and the value itself: W x + bias + b (c^T x)
    cc = torch.ones(k, dtype=torch.float64) if c is None else c
    expected = x @ weight.T + (0 if bias is None else bias) + (x @ cc)[..., None] * b
    torch.testing.assert_close(fn(*inputs), expected)


def _saved_tensors(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor autograd saves for backward during ``layer(x)``."""
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t.detach())
        return t.detach()  # returning t itself would keep the graph alive through a cycle

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    y.sum().backward()
    return saved


@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_onelora_saves_only_token_sums(x_requires_grad):
    torch.manual_seed(0)
    x = torch.randn(4, 9, 32, requires_grad=x_requires_grad)  # 1152 values; the weight has 48*32 = 1536
    tokens = 4 * 9

    def non_parameter(saved, layer):
        params = {p.data_ptr() for p in layer.parameters()} | {b.data_ptr() for b in layer.buffers()}
        return [t for t in saved if t.data_ptr() not in params]

    for cls in (OneLoRALinear, RandomOneLoRALinear):
        layer = cls(nn.Linear(32, 48))
        saved = non_parameter(_saved_tensors(layer, x), layer)
        assert saved, "the fused function should save the per-token sums"
        assert all(t.numel() <= tokens for t in saved), [tuple(t.shape) for t in saved]
        assert not any(t.numel() == x.numel() for t in saved)

    lora = ADAPTER_KINDS["lora"](nn.Linear(32, 48), r=1)
    saved = _saved_tensors(lora, x)
    assert any(t.numel() == x.numel() for t in saved), "LoRA's A needs x for its gradient"


# ------------------------------------------------------------------------------------------------
# onelora_random
# ------------------------------------------------------------------------------------------------


def _c_vectors(seed: int) -> list[torch.Tensor]:
    model = tiny_vit()
    inject(model, {"name": "r", "linear": "onelora_random", "options": {"seed": seed}}, head=HEAD)
    return [m.onelora_c.clone() for _, m in adapted_layers(model)]


def test_onelora_random_vectors_are_seeded():
    a, b, c = _c_vectors(3), _c_vectors(3), _c_vectors(4)
    assert len(a) == 8
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(not torch.allclose(u, v) for u, v in zip(a, c))
    # each layer gets its own vector, not ones, drawn N(0, 1)
    assert not torch.allclose(a[0], a[1][: a[0].numel()])
    flat = torch.cat(a)
    assert abs(flat.mean()) < 0.3 and 0.7 < flat.std() < 1.3
    # c is a fixed buffer, not a parameter
    model = tiny_vit()
    inject(model, {"name": "r", "linear": "onelora_random", "options": {"seed": 3}}, head=HEAD)
    assert not any("onelora_c" in n for n, _ in model.named_parameters())


def test_onelora_random_update_uses_c():
    """dW = b c^T: the merged weight shows the random vector, not ones."""
    layer = RandomOneLoRALinear(nn.Linear(8, 4), seed=1)
    with torch.no_grad():
        layer.onelora_b.copy_(torch.arange(1.0, 5.0))
    torch.testing.assert_close(layer.delta_weight(), torch.outer(layer.onelora_b, layer.onelora_c))
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + (x @ layer.onelora_c)[:, None] * layer.onelora_b)


# ------------------------------------------------------------------------------------------------
# per-kind numerics against the formulas
# ------------------------------------------------------------------------------------------------


def test_kinds_compute_their_formulas_float64():
    torch.manual_seed(0)
    base = nn.Linear(12, 10).double()
    x = torch.randn(4, 12, dtype=torch.float64)
    W, b0 = base.weight, base.bias

    lay = ADAPTER_KINDS["onelora"](copy.deepcopy(base))
    perturb(lay)
    torch.testing.assert_close(lay(x), x @ W.T + b0 + x.sum(-1, keepdim=True) * lay.onelora_b)

    lay = ADAPTER_KINDS["lora"](copy.deepcopy(base), r=2, alpha=3.0)
    perturb(lay)
    torch.testing.assert_close(lay(x), x @ W.T + b0 + 1.5 * x @ lay.lora_A.T @ lay.lora_B.T)

    lay = ADAPTER_KINDS["vera"](copy.deepcopy(base), r=2)
    perturb(lay)
    A, B = lay.vera_A, lay.vera_B
    assert A.shape == (2, 12) and B.shape == (10, 2) and not A.requires_grad
    expected = x @ W.T + b0 + ((x @ A.T) * lay.vera_lambda_d) @ B.T * lay.vera_lambda_b
    torch.testing.assert_close(lay(x), expected)

    lay = ADAPTER_KINDS["dora"](copy.deepcopy(base), r=1, alpha=2.0)
    torch.testing.assert_close(lay.dora_magnitude, W.norm(dim=1))
    perturb(lay)
    V = W + 2.0 * lay.lora_B @ lay.lora_A
    expected = x @ (lay.dora_magnitude[:, None] * V / V.norm(dim=1, keepdim=True)).T + b0
    torch.testing.assert_close(lay(x), expected)

    lay = ADAPTER_KINDS["none"](copy.deepcopy(base), train_bias=True, gamma=True)
    perturb(lay)
    torch.testing.assert_close(lay(x), (x @ W.T + lay.bias) * lay.gamma)


def test_dora_norm_is_constant_in_backward():
    """DoRA paper Sec. 4.3 / peft: ||W0 + BA|| is detached, so B's gradient is the scaled LoRA one."""
    torch.manual_seed(0)
    lay = ADAPTER_KINDS["dora"](nn.Linear(6, 5).double(), r=1)
    perturb(lay)
    x = torch.randn(3, 6, dtype=torch.float64)
    lay(x).sum().backward()
    W = lay.base_layer.weight
    V = W + lay.lora_B @ lay.lora_A
    scale = (lay.dora_magnitude / V.norm(dim=1)).detach()
    # d/dB of sum(scale * (x (BA)^T)) with scale constant
    expected = scale[:, None] * (x @ lay.lora_A.T).detach().sum(0)[None, :]
    torch.testing.assert_close(lay.lora_B.grad, expected)


def _plain_dora_grads(lay: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The DoRA formula written out in plain autograd (the norm detached): the reference."""
    W, bias = lay.base_layer.weight, lay.base_layer.bias
    params = [lay.lora_A, lay.lora_B, lay.dora_magnitude, bias, x]
    direction = W + lay.scaling * lay.lora_B @ lay.lora_A
    scale = lay.dora_magnitude / direction.norm(dim=1).detach()
    y = (x @ direction.T) * scale + bias
    grads = torch.autograd.grad((y * weights).sum(), params)
    return dict(zip(["A", "B", "m", "bias", "x"], grads))


@pytest.mark.parametrize("keep_output", [False, True])
@pytest.mark.parametrize("zero_row", [False, True])
def test_dora_fused_gradients_and_what_backward_keeps(keep_output, zero_row):
    """The fused DoRA function gives plain autograd's gradients (a zero magnitude row included). By
    default it keeps x and ``A x`` for backward, never an output-sized tensor; ``keep_output`` keeps
    the output instead of recomputing it; rows of zero magnitude (the output lost them) are
    recomputed from x."""
    torch.manual_seed(0)
    lay = ADAPTER_KINDS["dora"](nn.Linear(6, 5).double(), r=2, alpha=2.0, keep_output=keep_output)
    perturb(lay)
    if zero_row:
        with torch.no_grad():
            lay.dora_magnitude[1] = 0.0
    lay.base_layer.bias.requires_grad_(True)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 4, 5, dtype=torch.float64)
    expected = _plain_dora_grads(lay, x, weights)

    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t.detach())
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = lay(x)
    params = {p.data_ptr() for p in lay.parameters()}
    kept = [tuple(t.shape) for t in saved if t.data_ptr() not in params]
    assert ((3, 4, 5) in kept) == keep_output, kept
    assert (3, 4, 6) in kept and (3, 4, 2) in kept, kept

    grads = torch.autograd.grad((y * weights).sum(), [lay.lora_A, lay.lora_B, lay.dora_magnitude, lay.base_layer.bias, x])
    for name, got in zip(["A", "B", "m", "bias", "x"], grads):
        torch.testing.assert_close(got, expected[name], msg=name)
    assert (expected["m"] != 0).all()  # a zero row still gets its gradient


# ------------------------------------------------------------------------------------------------
# MoRA against a re-implementation of kongds/MoRA's _apply_mora
# ------------------------------------------------------------------------------------------------


def reference_apply_mora(x: torch.Tensor, M: torch.Tensor, in_f: int, out_f: int, mora_type: int) -> torch.Tensor:
    """kongds/MoRA peft-mora/src/peft/tuners/lora/layer.py ``LoraLayer._apply_mora`` (types 1, 6)."""
    r = M.shape[0]
    sum_inter = in_f // r
    rb1 = in_f // r if in_f % r == 0 else in_f // r + 1
    if in_f % r != 0:
        pad_size = r - in_f % r
        x = torch.cat([x, x[..., :pad_size]], dim=-1)
        sum_inter += 1
    if mora_type == 1:
        in_x = x.view(*x.shape[:-1], sum_inter, r).sum(dim=-2)
    else:
        in_x = x.view(*x.shape[:-1], sum_inter, r)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, r, 2).float() / r))
        t = torch.arange(rb1)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos().unsqueeze(0).to(x.dtype)
        sin = emb.sin().unsqueeze(0).to(x.dtype)
        rh_in_x = torch.cat((-in_x[..., r // 2 :], in_x[..., : r // 2]), dim=-1)
        in_x = in_x * cos + rh_in_x * sin
    out_x = in_x @ M.T  # nn.Linear(r, r, bias=False) with weight M
    if mora_type == 1:
        repeat_time = out_f // r
        if out_f % r != 0:
            repeat_time += 1
        out_x = torch.cat([out_x] * repeat_time, dim=-1)[..., :out_f]
    else:
        out_x = out_x.view(*x.shape[:-1], -1)[..., :out_f]
        if out_x.shape[-1] < out_f:
            repeat_time = out_f // out_x.shape[-1]
            if out_f % out_x.shape[-1] != 0:
                repeat_time += 1
            out_x = torch.cat([out_x] * repeat_time, dim=-1)[..., :out_f]
    return out_x


@pytest.mark.parametrize("mora_type", [1, 6])
@pytest.mark.parametrize(
    "in_f,out_f,size_rule",
    [(32, 96, "paper"), (64, 32, "paper"), (30, 50, "paper"), (17, 40, "paper"), (36, 36, "paper"), (20, 12, "mora")],
)
def test_mora_matches_reference(mora_type, in_f, out_f, size_rule):
    torch.manual_seed(0)
    layer = ADAPTER_KINDS[f"mora{mora_type}"](nn.Linear(in_f, out_f).double(), size_rule=size_rule)
    with torch.no_grad():
        layer.mora_M.normal_()
    x = torch.randn(2, 3, in_f, dtype=torch.float64)
    expected = reference_apply_mora(x, layer.mora_M.detach(), in_f, out_f, mora_type)
    torch.testing.assert_close(layer(x) - layer.base_layer(x), expected)
    # the merged matrix reproduces the update
    torch.testing.assert_close(x @ layer.delta_weight().T, expected)


@pytest.mark.parametrize("mora_type", [1, 6])
def test_mora_dropout_drops_the_update_paths_input_in_training_only(mora_type):
    """MoRA's code applies its lora_dropout to the input of the update path (0.05 in its MetaMathQA
    script): in training the update is that of the dropped input; in eval, and merged, the whole input's."""
    torch.manual_seed(0)
    layer = ADAPTER_KINDS[f"mora{mora_type}"](nn.Linear(32, 48).double(), dropout=0.5)
    with torch.no_grad():
        layer.mora_M.normal_()
    x = torch.randn(4, 32, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x) - layer.base_layer(x), layer.update(x))
    torch.testing.assert_close(layer(x), x @ (layer.base_layer.weight + layer.delta_weight()).T + layer.base_layer.bias)
    layer.train()
    torch.manual_seed(1)
    trained = layer(x)
    torch.manual_seed(1)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    torch.testing.assert_close(trained, layer.base_layer(x) + layer.update(dropped))
    assert not torch.allclose(trained, layer.base_layer(x) + layer.update(x))
    with pytest.raises(AdapterConfigError, match="dropout"):
        MethodSpec.from_config({"name": "mora1", "linear": "mora1", "options": {"dropout": 1.0}})


def test_mora_size_rules():
    # paper: int(sqrt(out) + 0.5); type 6 rounds down to even
    assert mora_size(64, 32, r=1, size_rule="paper", mora_type=1) == 6
    assert mora_size(64, 30, r=1, size_rule="paper", mora_type=1) == 5
    assert mora_size(64, 30, r=1, size_rule="paper", mora_type=6) == 4
    assert mora_size(1024, 1024, r=1, size_rule="paper", mora_type=1) == 32
    assert mora_size(1024, 3072, r=1, size_rule="paper", mora_type=1) == 55  # sqrt(3072) = 55.4
    assert mora_size(1024, 3072, r=1, size_rule="paper", mora_type=6) == 54
    # mora: int(sqrt((in + out) r) + 0.5)
    assert mora_size(64, 32, r=1, size_rule="mora", mora_type=1) == 10  # sqrt(96) = 9.80
    assert mora_size(64, 32, r=2, size_rule="mora", mora_type=1) == 14  # sqrt(192) = 13.86
    assert mora_size(40, 50, r=1, size_rule="mora", mora_type=1) == 9  # sqrt(90) = 9.49
    assert mora_size(40, 50, r=1, size_rule="mora", mora_type=6) == 8
    layer = ADAPTER_KINDS["mora1"](nn.Linear(64, 32), size_rule="mora", r=2)
    assert layer.mora_M.shape == (14, 14)
    with pytest.raises(AdapterConfigError, match="size_rule"):
        ADAPTER_KINDS["mora1"](nn.Linear(64, 32), size_rule="square")
    with pytest.raises(AdapterConfigError, match="does not fit"):
        ADAPTER_KINDS["mora1"](nn.Linear(4, 400))  # rhat 20 > 4 inputs


# ------------------------------------------------------------------------------------------------
# bfloat16 and the meta device
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", KIND_METHODS + ["difffit", "onelora+bias+gamma+norms"])
def test_bfloat16(method):
    _, ref, _ = adapted(method)
    perturb(ref, scale=0.1)
    model = tiny_vit().to(torch.bfloat16)
    inject(model, spec_of(method), head=HEAD)
    with torch.no_grad():  # same adapter values, rounded to bf16
        params = dict(model.named_parameters())
        for n, p in ref.named_parameters():
            if p.requires_grad:
                params[n].copy_(p)
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16, n
    for n, b in model.named_buffers():
        assert b.dtype == torch.bfloat16, n
    x = images()
    model.train()
    out = model(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    (out.float() ** 2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g.float()).all() for g in grads)
    with torch.no_grad():
        expected = ref(x)
    scale = expected.abs().max()
    torch.testing.assert_close(out.detach().float(), expected, rtol=0, atol=0.05 * float(scale))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inject_on_meta_context", [True, False])
def test_meta_device_report(method, inject_on_meta_context):
    _, _, cpu_report = adapted(method)
    with torch.device("meta"):
        model = tiny_vit()
        if inject_on_meta_context:
            report = inject(model, spec_of(method), head=HEAD)
    if not inject_on_meta_context:
        report = inject(model, spec_of(method), head=HEAD)
    assert report.summary() == cpu_report.summary()
    assert report.layers == cpu_report.layers
    assert all(t.device.type == "meta" for t in model.parameters())
    assert all(t.device.type == "meta" for t in model.buffers())


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


def test_error_pattern_matches_non_linear():
    with pytest.raises(AdapterConfigError, match=r"not nn\.Linear.*patch_embed\.proj \(Conv2d\)"):
        inject(tiny_vit(), spec_of("onelora"), head=HEAD, target_sets={"linear": {"include": [r"patch_embed\.proj", r".*\.qkv"]}})


def test_error_empty_target_set():
    with pytest.raises(AdapterConfigError, match="selects no linear layer"):
        inject(tiny_vit(), spec_of("onelora"), head=HEAD, target_sets={"linear": {"include": [r".*\.q_proj"]}})
    # only the head is linear
    with pytest.raises(AdapterConfigError, match="selects no linear layer"):
        inject(tiny_vit(), spec_of("lora"), head=HEAD, target_sets={"linear": ["head"]})


@pytest.mark.parametrize("kind", ["lora", "dora", "vera"])
def test_error_rank_does_not_fit(kind):
    with pytest.raises(AdapterConfigError, match=rf"{kind} rank r=33 does not fit a 32->96"):
        inject(tiny_vit(), {"name": kind, "linear": kind, "options": {"r": 33}}, head=HEAD)
    with pytest.raises(AdapterConfigError, match=rf"{kind} option r=0: must be an integer >= 1"):
        inject(tiny_vit(), {"name": kind, "linear": kind, "options": {"r": 0}}, head=HEAD)
    with pytest.raises(AdapterConfigError, match=rf"{kind} rank r=0"):  # the layer itself checks too
        ADAPTER_KINDS[kind](nn.Linear(4, 4), r=0)


def test_error_unknown_kind():
    with pytest.raises(AdapterConfigError, match="unknown linear adapter 'twolora'"):
        MethodSpec.from_config({"name": "x", "linear": "twolora"})
    with pytest.raises(AdapterConfigError, match="unknown linear adapter 'twolora'"):
        inject(tiny_vit(), MethodSpec(name="x", linear="twolora"), head=HEAD)


@pytest.mark.parametrize(
    "cfg,option",
    [
        ({"linear": "lora", "options": {"rank": 1}}, "rank"),
        ({"linear": "onelora", "options": {"r": 1}}, "r"),
        ({"linear": "vera", "options": {"alpha": 1}}, "alpha"),
        ({"linear": "mora6", "options": {"seed": 1}}, "seed"),
        ({"bias": True, "options": {"r": 1}}, "r"),
    ],
)
def test_error_unknown_option(cfg, option):
    with pytest.raises(AdapterConfigError, match=rf"option.*'{option}'"):
        inject(tiny_vit(), {"name": "m", **cfg}, head=HEAD)


def test_error_unknown_onelora_impl():
    with pytest.raises(AdapterConfigError, match="impl"):
        inject(tiny_vit(), {"name": "m", "linear": "onelora", "options": {"impl": "cuda"}}, head=HEAD)


def test_error_unknown_target_set():
    with pytest.raises(AdapterConfigError, match="no target set 'qkv'.*linear"):
        inject(tiny_vit(), {"name": "lora_qkv", "linear": "lora", "targets": "qkv"}, head=HEAD)


def test_error_full_with_adapters():
    for extra in ({"linear": "onelora"}, {"bias": True}, {"gamma": True}):
        with pytest.raises(AdapterConfigError, match="full fine-tuning does not combine"):
            MethodSpec.from_config({"name": "bad", "full": True, **extra})


def test_error_wrapping_a_non_linear():
    with pytest.raises(AdapterConfigError, match=r"adapts nn.Linear layers \(and transformers' Conv1D\), got Conv2d"):
        OneLoRALinear(nn.Conv2d(3, 4, 1))


def test_error_norms_without_norm_layers():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(AdapterConfigError, match="has none"):
        inject(model, {"name": "norms", "norms": True}, head=["2"])


# ------------------------------------------------------------------------------------------------
# target selection
# ------------------------------------------------------------------------------------------------


def test_targets_include_exclude():
    model = tiny_vit()
    report = inject(
        model,
        spec_of("onelora"),
        head=HEAD,
        target_sets={"linear": {"include": [r".*\.attn\.qkv", r".*\.mlp\.fc\d"], "exclude": [r"blocks\.1\.mlp\..*"]}},
    )
    assert report.layers == ["blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.1.attn.qkv"]
    assert report.adapter_params == 96 + 64 + 32 + 96
    assert sorted(n for n, _ in adapted_layers(model)) == sorted(report.layers)
    assert type(model.blocks[1].mlp.fc1) is nn.Linear and not model.blocks[1].mlp.fc1.weight.requires_grad
    # a pattern is matched against the whole name: "qkv" alone selects nothing
    with pytest.raises(AdapterConfigError, match="selects no linear layer"):
        inject(tiny_vit(), spec_of("onelora"), head=HEAD, target_sets={"linear": ["qkv"]})


def test_targets_all_linear_never_head():
    model = tiny_vit()
    report = inject(model, spec_of("lora"), head=HEAD, target_sets={"linear": "all-linear"})
    assert report.layers == [n for n, _ in target_linears(tiny_vit())]
    assert type(model.head) is nn.Linear
    # an explicit pattern naming the head does not adapt it either
    model = tiny_vit()
    report = inject(model, spec_of("lora"), head=HEAD, target_sets={"linear": ["head", r"blocks\.0\.attn\.proj"]})
    assert report.layers == ["blocks.0.attn.proj"]
    assert type(model.head) is nn.Linear and model.head.weight.requires_grad
    # default target set: every linear outside the head
    model = tiny_vit()
    assert inject(model, spec_of("onelora"), head=HEAD).layers == [n for n, _ in target_linears(tiny_vit())]
    # norms of the head are not trained as "norms"
    model = nn.Sequential()
    model.add_module("body", nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    model.add_module("head", nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)))
    report = inject(model, {"name": "n", "norms": True}, head=["head"])
    assert report.adapter_params == 8 and report.head_params == 8 + 10


LLAMA_SETS = {
    "linear": {"include": ["all-linear"], "exclude": ["lm_head"]},
    "qkv": [r".*\.self_attn\.(q|k|v)_proj"],
    "linear_and_lm_head": ["all-linear"],
}


def _llama_linears(model) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]


def test_llama_difffit_gamma_targets():
    """LLaMA's DiffFit (paper counts): gamma on the 7 linears per layer and on lm_head, plus RMSNorms."""
    model = tiny_llama()
    original = copy.deepcopy(model)
    spec = {"name": "difffit", "gamma": True, "norms": True, "gamma_targets": "linear_and_lm_head"}
    report = inject(model, spec, target_sets=LLAMA_SETS)
    linears = _llama_linears(original)
    assert len(linears) == 14
    norms = sum(p.numel() for n, m in original.named_modules() if "RMSNorm" in type(m).__name__ for p in m.parameters())
    assert norms == 5 * 16
    assert report.adapter_params == sum(m.out_features for _, m in linears) + 40 + norms
    assert report.head_params == 0
    assert report.layers[-1] == "lm_head" and len(report.layers) == 15
    assert isinstance(model.lm_head, AdaptedLinear) and model.lm_head.gamma is not None
    ids = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-6)


def test_gamma_targets_add_gamma_only():
    """With a linear update and a bias, the extra gamma-only layers get neither."""
    model = tiny_llama()
    spec = {"name": "x", "linear": "onelora", "bias": True, "gamma": True, "gamma_targets": "linear_and_lm_head"}
    report = inject(model, spec, target_sets=LLAMA_SETS)
    assert type(model.lm_head) is AdaptedLinear
    assert model.lm_head.bias is None and not model.lm_head.weight.requires_grad
    assert {n for n, p in model.lm_head.named_parameters() if p.requires_grad} == {"gamma"}
    linears = _llama_linears(tiny_llama())
    assert report.adapter_params == sum(3 * m.out_features for _, m in linears) + 40
    # gamma_targets is ignored without gamma
    model = tiny_llama()
    report = inject(model, {"name": "o", "linear": "onelora", "gamma_targets": "linear_and_lm_head"}, target_sets=LLAMA_SETS)
    assert type(model.lm_head) is nn.Linear and "lm_head" not in report.layers


def test_llama_bitfit_adds_zero_biases():
    model = tiny_llama()
    original = copy.deepcopy(model)
    report = inject(model, {"name": "bitfit", "bias": True}, target_sets=LLAMA_SETS)
    linears = _llama_linears(original)
    assert all(m.bias is None for _, m in linears)
    assert report.adapter_params == sum(m.out_features for _, m in linears)
    for n, _ in linears:
        b = model.get_submodule(n).bias
        assert b is not None and b.requires_grad and torch.equal(b, torch.zeros_like(b))
    ids = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-6)


def test_llama_lora_qkv_targets():
    model = tiny_llama()
    report = inject(model, {"name": "lora_qkv", "linear": "lora", "targets": "qkv", "options": {"r": 1}}, target_sets=LLAMA_SETS)
    # q: 16->16, k, v: 16->8 (one kv head of width 8)
    assert report.adapter_params == 2 * ((16 + 16) + 2 * (16 + 8))
    assert all(n.split(".")[-1] in ("q_proj", "k_proj", "v_proj") for n in report.layers)


def test_error_injecting_twice():
    model = tiny_vit()
    inject(model, spec_of("onelora"), head=HEAD)
    with pytest.raises(AdapterConfigError, match=r"already adapted \(e\.g\. blocks\.0\.attn\.qkv\)"):
        inject(model, spec_of("lora"), head=HEAD)
    # the failed call left the model as it was
    assert all(type(m) is OneLoRALinear for _, m in adapted_layers(model))
    assert all(type(m.base_layer) is nn.Linear for _, m in adapted_layers(model))
