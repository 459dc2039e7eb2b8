"""The adapters under ``torch.compile`` (issue 19): every kind compiles with no graph break, the
compiled outputs and gradients equal eager ones, the fused 1LoRA and DoRA are registered operators
(``onelora::linear``, ``onelora::dora_linear``) with working fake, autograd and autocast behaviour,
and an adapted model runs forward and backward under ``FakeTensorMode``.

Compiling on the CPU with Inductor writes and builds C++ (tens of seconds a graph), so the tests use
``backend="aot_eager"``: Dynamo and AOTAutograd trace exactly as for Inductor (graph breaks, the
ops' fake and autograd registrations, their decomposition), then the graph runs eagerly. One test
(slow tier) builds the Inductor kernels.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch._dynamo.utils import counters

from onelora.adapters import ADAPTER_KINDS
from onelora.adapters.dora import dora_linear_op
from onelora.adapters.onelora import linear_op

BF16 = torch.bfloat16

#: (kind, options) of every adapter kind, each on its own 16 -> 24 layer
KIND_CASES = [
    ("none", {"train_bias": True, "gamma": True}),  # BitFit + DiffFit's gamma
    ("onelora", {}),
    ("onelora", {"train_bias": True}),  # b and the bias from one product in backward
    ("onelora", {"impl": "autograd"}),  # the paper's listing
    ("onelora_random", {"gamma": True}),
    ("lora", {"r": 2, "alpha": 2.0}),
    ("vera", {"r": 2}),
    ("dora", {"r": 2}),
    ("dora", {"r": 2, "keep_output": True}),
    ("mora1", {}),
    ("mora6", {}),
]


class Fan(nn.Module):
    """``sum_i gelu(layer_i(norm(x)))``: every adapter case on the same normalised input (so
    ``x`` needs a gradient through each, as inside a transformer block)."""

    def __init__(self, cases, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.norm = nn.LayerNorm(16)
        self.norm.requires_grad_(False)
        self.layers = nn.ModuleList(ADAPTER_KINDS[kind](nn.Linear(16, 24), **options) for kind, options in cases)
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():  # updates away from their (often zero) initialisation, and a norm
            for p in self.parameters():  # whose outputs do not sum to ~0 (1LoRA's b sees those sums)
                if p.requires_grad or p.dim() == 1:
                    p.add_(0.2 * torch.randn(p.shape, generator=g))

    def forward(self, x):
        h = self.norm(x)
        return sum(F.gelu(layer(h)) for layer in self.layers)


def step(model: nn.Module, call, x: torch.Tensor, *, autocast: bool = False):
    """(output, {name: gradient}) of a fixed weighted sum of ``call(x)``, x's gradient under "x"."""
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        y = call(xi)
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y.float() * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    grads["x"] = xi.grad.clone()
    return y.detach().float(), grads


def graph_ops(model: nn.Module, *args) -> list:
    """The call targets of the graph Dynamo hands its backend (one graph: fullgraph)."""
    seen: list = []

    def backend(gm, example_inputs):
        seen.extend(n.target for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=backend, fullgraph=True)(*args)
    return seen


def assert_close_rel(got: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    scale = float(expected.abs().max()) or 1.0
    err = float((got.float() - expected.float()).abs().max())
    assert err <= rel * scale, f"{what}: max error {err:.3g} against scale {scale:.3g}"


# ------------------------------------------------------------------------------------------------
# every adapter kind in one compiled graph
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens,autocast,in_matmul", [  # 1LoRA's fp32 backward: (g b) c^T / the merged weight
    (40, False, False), (3, True, True), pytest.param(3, False, False, marks=pytest.mark.slow),
    pytest.param(40, True, False, marks=pytest.mark.slow),
], ids=["40-fp32", "3-bf16-autocast-gpu-path", "3-fp32", "40-bf16-autocast"])
def test_every_kind_compiles_in_one_graph_and_matches_eager(tokens, autocast, in_matmul, monkeypatch):
    """``gpu-path``: 1LoRA's sums from the matmul's extra row, as on an accelerator (forced here)."""
    from onelora.adapters import onelora

    monkeypatch.setattr(onelora, "sums_in_matmul", lambda device: in_matmul)
    fan = Fan(KIND_CASES).train()
    x = torch.randn(2, tokens, 16, generator=torch.Generator().manual_seed(3))
    y_eager, g_eager = step(fan, fan, x, autocast=autocast)
    assert y_eager.shape == (2, tokens, 24)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(fan, backend="aot_eager", fullgraph=True)  # a graph break raises
    y_comp, g_comp = step(fan, compiled, x, autocast=autocast)
    assert not counters["graph_break"], dict(counters["graph_break"])
    rel = 2e-2 if autocast else 1e-5
    assert_close_rel(y_comp, y_eager, rel, "output")
    assert g_comp.keys() == g_eager.keys()
    for name, grad in g_eager.items():
        assert_close_rel(g_comp[name], grad, rel, name)
    assert all(p.grad is None for n, p in fan.named_parameters() if n.endswith("base_layer.weight"))


def test_fused_layers_are_one_registered_op_each_in_the_graph():
    """Dynamo traces the fused 1LoRA and DoRA as their registered ops (not their Python bodies and
    not a graph break); the paper's listing (impl=autograd) stays plain aten ops."""
    fan = Fan(KIND_CASES)
    ops = graph_ops(fan, torch.randn(2, 3, 16))
    onelora = sum(1 for op in ops if op in (torch.ops.onelora.linear.default, torch.ops.onelora.linear))
    dora = sum(1 for op in ops if op in (torch.ops.onelora.dora_linear.default, torch.ops.onelora.dora_linear))
    fused_onelora = sum(1 for kind, o in KIND_CASES if kind.startswith("onelora") and o.get("impl", "fused") == "fused")
    assert onelora == fused_onelora and dora == sum(1 for kind, _ in KIND_CASES if kind == "dora")


# ------------------------------------------------------------------------------------------------
# the registered ops: schema, fake, autograd, AOT dispatch (torch.library.opcheck)
# ------------------------------------------------------------------------------------------------

OPCHECK_CASES = [  # (x dtype, tokens, bias, random c)
    (torch.float32, 3, True, True),  # on the activations
    (torch.float32, 40, False, False),  # backward through the merged weight, rebuilt
    (BF16, 3, True, False),  # mixed precision, as on an accelerator: folded into the cast weight
    (BF16, 40, False, True),  # mixed precision, as on the CPU: the cast weight kept
]


@pytest.mark.parametrize("dtype,tokens,bias,random_c", OPCHECK_CASES)
def test_onelora_op_passes_opcheck(dtype, tokens, bias, random_c, monkeypatch):
    from onelora.adapters import onelora

    monkeypatch.setattr(onelora, "sums_in_matmul", lambda device: tokens == 3)  # bf16: both mixed paths
    torch.manual_seed(0)
    x = torch.randn(2, tokens, 8).to(dtype).requires_grad_(True)
    args = (x, torch.randn(12, 8), torch.randn(12, requires_grad=True) if bias else None,
            torch.randn(12, requires_grad=True), torch.randn(8) if random_c else None)
    result = torch.library.opcheck(linear_op, args)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("keep_output", [False, True])
def test_dora_op_passes_opcheck(keep_output):
    torch.manual_seed(0)
    magnitude = (torch.rand(12) + 0.5).requires_grad_(True)
    args = (torch.randn(2, 5, 8, requires_grad=True), torch.randn(12, 8), torch.randn(12),
            torch.randn(2, 8, requires_grad=True), torch.randn(12, 2, requires_grad=True), magnitude, 0.5, keep_output)
    result = torch.library.opcheck(dora_linear_op, args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_op_and_eager_function_agree_and_stay_first_order():
    """The op and the eager Function are two faces of one forward / backward: same output (with
    the same strides), same gradients; a second derivative raises through either."""
    from onelora.adapters.onelora import _OneLoRAFunction

    torch.manual_seed(0)
    weight, c = torch.randn(12, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    for tokens in (3, 40):
        x = torch.randn(2, tokens, 8, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(12, dtype=torch.float64, requires_grad=True)
        b = torch.randn(12, dtype=torch.float64, requires_grad=True)
        y_fn = _OneLoRAFunction.apply(x, weight, bias, b, c)
        y_op = linear_op(x, weight, bias, b, c)[0]
        assert y_fn.stride() == y_op.stride()
        torch.testing.assert_close(y_op, y_fn)
        g_fn = torch.autograd.grad(y_fn.square().sum(), (x, bias, b))
        g_op = torch.autograd.grad(y_op.square().sum(), (x, bias, b))
        for a, e in zip(g_op, g_fn):
            torch.testing.assert_close(a, e)
        assert torch.autograd.gradcheck(lambda x, bias, b: linear_op(x, weight, bias, b, c)[0], (x, bias, b))
        (gx,) = torch.autograd.grad(linear_op(x, weight, bias, b, c)[0].square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            gx.sum().backward()


def test_fused_outputs_may_be_modified_in_place():
    """A model may add into a layer's output in place (``out += residual``): the fused functions
    return outputs autograd does not treat as views made inside them."""
    for kind, options in (("onelora", {}), ("dora", {"keep_output": False})):
        layer = ADAPTER_KINDS[kind](nn.Linear(8, 12), **options)
        x = torch.randn(40, 8, requires_grad=True)
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=BF16, enabled=autocast):
                y = layer(x)
                y += 1.0
            y.float().sum().backward()


# ------------------------------------------------------------------------------------------------
# FakeTensorMode (the memory planner traces adapted models without weights)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_adapted_model_runs_forward_and_backward_under_fake_tensor_mode(autocast):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from adapter_cases import tiny_llama
    from onelora.adapters import MethodSpec, inject

    for method in ({"name": "onelora", "linear": "onelora"}, {"name": "dora", "linear": "dora", "options": {"keep_output": True}}):
        with FakeTensorMode(allow_non_fake_inputs=False):
            model = tiny_llama()
            inject(model, MethodSpec.from_config(method), head=["lm_head"], target_sets={"linear": {"include": ["all-linear"], "exclude": ["lm_head"]}})
            ids = torch.randint(0, 40, (2, 12))
            with torch.autocast("cpu", dtype=BF16, enabled=autocast):
                logits = model(input_ids=ids).logits
            logits.float().sum().backward()
            grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert grads and all(g is not None and g.shape == dict(model.named_parameters())[n].shape for n, g in grads.items())
        assert type(logits).__name__ == "FakeTensor"


def test_onelora_op_fake_matches_real_strides(monkeypatch):
    """The fake gives the real outputs' shapes, dtypes and strides: under mixed precision on the CPU
    a contiguous output; on an accelerator (played here) a view of the matmul that also gave the
    sums, rows of ``round_up(d + 1, 8)``."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from onelora.adapters import onelora

    x, weight, b = torch.randn(2, 40, 8, dtype=BF16), torch.randn(12, 8), torch.randn(12)
    for in_matmul, row_stride in ((False, 12), (True, 16)):
        monkeypatch.setattr(onelora, "sums_in_matmul", lambda device: in_matmul)
        real = torch.ops.onelora.linear(x, weight, None, b, None)
        with FakeTensorMode() as mode:
            fake = torch.ops.onelora.linear(mode.from_tensor(x), mode.from_tensor(weight), None, mode.from_tensor(b), None)
        for r, f in zip(real, fake):
            assert (r.shape, r.stride(), r.dtype) == (f.shape, f.stride(), f.dtype)
        assert real[0].stride()[-2] == row_stride and real[1].is_contiguous()
        assert real[2].shape == ((16 if in_matmul else 12), 8)  # the kept weight copy
        torch.testing.assert_close(real[1], x.float().sum(-1).to(BF16).flatten(), rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------------
# Inductor, once
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_inductor_compiles_every_kind_and_matches_eager():
    fan = Fan(KIND_CASES).train()
    x = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(3))
    y_eager, g_eager = step(fan, fan, x)
    torch._dynamo.reset()
    compiled = torch.compile(fan, backend="inductor", fullgraph=True)
    y_comp, g_comp = step(fan, compiled, x)
    assert_close_rel(y_comp, y_eager, 1e-4, "output")
    for name, grad in g_eager.items():
        assert_close_rel(g_comp[name], grad, 1e-4, name)


# ------------------------------------------------------------------------------------------------
# the tiny twin of each family: every method compiles with no graph break, compiled == eager
# ------------------------------------------------------------------------------------------------

FAMILIES = ["tiny_vit", "tiny_depth_anything", "tiny_dit", "tiny_llama"]
#: in the default tier; the rest of the family x method matrix runs in the slow tier
DEFAULT_TIER = {("tiny_llama", "onelora"), ("tiny_vit", "dora")}


def _family_cases():
    from adapter_cases import METHODS

    for family in FAMILIES:
        for method in METHODS:
            marks = () if (family, method) in DEFAULT_TIER else (pytest.mark.slow,)
            yield pytest.param(family, method, marks=marks, id=f"{family}-{method}")


def twin_model(family: str, method: str, tmp_path):
    """The family's tiny twin (conf/model/<family>.yaml) with ``method`` injected as a run injects
    it (the model's method_overrides applied), its trainable tensors perturbed; and its inputs."""
    from omegaconf import OmegaConf

    from onelora.adapters import AdapterConfigError, MethodSpec, inject
    from onelora.methods import method_config, method_files
    from onelora.models import build_model
    from runs import config

    cfg = OmegaConf.to_container(config(tmp_path, f"model={family}").model, resolve=True)
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False, **({"num_classes": 10} if family in ("tiny_vit", "tiny_dit") else {}))
    shipped = {c["name"]: c for c in map(method_config, method_files())}[method]  # with its module set (head: probe)
    spec = {**shipped, **((cfg.get("method_overrides") or {}).get(method) or {})}
    try:
        inject(model, MethodSpec.from_config(spec), target_sets=cfg["target_sets"], head=cfg.get("head") or [],
               module_sets=cfg.get("module_sets") or {})
    except AdapterConfigError as err:  # a method this model has nothing for (norms on DiT: no affine norms)
        pytest.skip(f"{method} does not apply to {family}: {err}")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    size = cfg["arch"].get("img_size") or cfg["arch"].get("image_size") or 32
    inputs = {
        "tiny_vit": lambda: (torch.randn(2, 3, size, size, generator=g),),
        "tiny_depth_anything": lambda: (torch.randn(2, 3, size, size, generator=g),),
        "tiny_dit": lambda: (torch.randn(2, 4, 8, 8, generator=g), torch.randint(0, 1000, (2,), generator=g),
                             torch.randint(0, 10, (2,), generator=g)),
        "tiny_llama": lambda: (torch.randint(0, cfg["arch"]["vocab_size"], (2, 12), generator=g),),
    }[family]()
    return model.eval(), inputs  # eval: no dropout, so eager and compiled see the same function


@pytest.mark.parametrize("family,method", list(_family_cases()))
def test_family_twin_compiles_without_graph_breaks_and_matches_eager(family, method, tmp_path):
    model, inputs = twin_model(family, method, tmp_path)

    def run(call):
        model.zero_grad(set_to_none=True)
        out = call(*inputs)
        out = (out.logits if hasattr(out, "logits") else out).float()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        # (parameters the forward never uses, as Depth Anything's mask token, get no gradient either way)
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    y_eager, g_eager = run(model)
    torch._dynamo.reset()
    counters.clear()
    y_comp, g_comp = run(torch.compile(model, backend="aot_eager", fullgraph=True))  # a graph break raises
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert_close_rel(y_comp, y_eager, 1e-5, "output")
    assert g_comp.keys() == g_eager.keys() and g_eager
    for name, grad in g_eager.items():  # fp32 rounding: AOTAutograd may order a reduction differently
        assert_close_rel(g_comp[name], grad, 1e-3, name)


# ------------------------------------------------------------------------------------------------
# trainer.compile: a run compiles its adapted model
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    from fakes import write_cifar

    return write_cifar(tmp_path_factory.mktemp("data") / "cifar10", per_batch=20, test=30)


def test_trainer_compile_trains_the_compiled_model_to_the_eager_numbers(tmp_path, cifar_root, monkeypatch):
    """``trainer.compile`` (aot_eager: the same arithmetic as eager) gives the eager run's metrics,
    through a model that was really compiled, and leaves checkpoints and adapter files as eager."""
    from onelora import callbacks
    from runs import CIFAR_TINY, run_inprocess

    compiled = []
    original = callbacks.CompileModel.on_fit_start

    def spy(self, trainer, pl_module):
        original(self, trainer, pl_module)
        compiled.append(pl_module.model._compiled_call_impl is not None)

    monkeypatch.setattr(callbacks.CompileModel, "on_fit_start", spy)
    common = (*CIFAR_TINY, f"task.data.root={cifar_root}", "method=onelora_bias")
    eager = run_inprocess(tmp_path / "eager", *common)
    assert not compiled
    record = run_inprocess(tmp_path / "compiled", *common, "trainer.compile={backend: aot_eager}")
    assert compiled == [True]
    assert record["status"] == "completed" and record["fingerprint"] != eager["fingerprint"]
    for key in ("best_val", "test"):
        assert record["metric"][key] == pytest.approx(eager["metric"][key], abs=1e-6), key
    run_dir = tmp_path / "compiled" / "results" / "cifar10" / "tiny_vit" / record["method"] / "seed0"
    assert (run_dir / "adapter").is_dir()
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    assert state and not any("_orig_mod" in k for k in state)


@pytest.mark.parametrize("value,match", [
    ("yes", "trainer.compile"),
    ("{fullgraf: true}", r"trainer\.compile.*fullgraf"),
    ("{backend: nope}", r"trainer\.compile\.backend.*nope"),
])
def test_bad_trainer_compile_fails_fast(tmp_path, value, match):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings
    from runs import CIFAR_TINY, config

    with pytest.raises(ConfigError, match=match):
        RunSettings.from_config(config(tmp_path, *CIFAR_TINY, f"trainer.compile={value}"))


def test_fingerprint_counts_trainer_compile_only_when_on(tmp_path):
    """Runs completed before ``trainer.compile`` existed keep their fingerprint (eager is the
    default); a compiled run is another configuration."""
    from omegaconf import OmegaConf

    from onelora.settings import fingerprint
    from runs import CIFAR_TINY, config

    cfg = config(tmp_path, *CIFAR_TINY)
    assert cfg.trainer.compile is False
    before = OmegaConf.create(OmegaConf.to_container(cfg))
    del before.trainer["compile"]
    assert fingerprint(cfg) == fingerprint(before)
    assert fingerprint(config(tmp_path, *CIFAR_TINY, "trainer.compile=true")) != fingerprint(cfg)
