"""Adapters on odd models and in odd states (issue 14, items 5-9): meta-device materialisation,
tied and shared weights, an atomic ``inject``, GPT-2's ``Conv1D`` and MultiheadAttention, and the
merged state recorded in the state_dict."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from onelora.adapters import (
    ADAPTER_KINDS,
    AdapterConfigError,
    MethodSpec,
    adapted_layers,
    inject,
    load_adapter,
    merge,
    merge_and_unload,
    save_adapter,
    trainable_state,
    unmerge,
)

from adapter_cases import HEAD, KIND_METHODS, spec_of, tiny_llama, tiny_vit


def images(seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 7, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def flags(model: nn.Module) -> dict[str, tuple[str, bool]]:
    """Every parameter's owner type and requires_grad flag: what a failed inject must leave alone."""
    return {
        f"{n}.{pn}": (type(m).__name__, p.requires_grad)
        for n, m in model.named_modules()
        for pn, p in m.named_parameters(recurse=False)
    }


# ------------------------------------------------------------------------------------------------
# item 5: meta-device materialisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mora6", "mora1", "onelora_random", "vera", "dora", "lora", "difffit"])
def test_meta_materialisation_matches_a_model_built_normally(method):
    """Build on the meta device, ``to_empty``, ``load_state_dict(strict=True)``: same outputs as the
    model the state_dict came from (mora6's RoPE tables are not in the state_dict: rebuilt)."""
    reference = tiny_vit()
    inject(reference, spec_of(method), head=HEAD)
    perturb(reference)
    with torch.device("meta"):
        model = tiny_vit()
        inject(model, spec_of(method), head=HEAD)
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict(), strict=True)
    for (_, a), (_, b) in zip(adapted_layers(model), adapted_layers(reference)):
        for name, buf in b.named_buffers():
            torch.testing.assert_close(a.get_buffer(name), buf, rtol=0, atol=0, msg=name)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=0, atol=0)


def test_mora6_rope_tables_follow_dtype_and_device_moves():
    layer = ADAPTER_KINDS["mora6"](nn.Linear(30, 40))
    cos = layer.rope_cos.clone()
    layer.to(torch.bfloat16)
    assert layer.rope_cos.dtype == torch.bfloat16
    torch.testing.assert_close(layer.rope_cos.float(), cos, rtol=0, atol=4e-3)
    layer.to(torch.float64)
    torch.testing.assert_close(layer.rope_cos, cos.double(), rtol=0, atol=1e-7)  # rebuilt, not a bf16 round trip


# ------------------------------------------------------------------------------------------------
# item 6: tied and shared weights
# ------------------------------------------------------------------------------------------------


def tied_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


@pytest.mark.parametrize("method", [
    {"name": "onelora", "linear": "onelora"},
    {"name": "dora", "linear": "dora", "options": {"r": 1}},
    {"name": "difffit", "gamma": True, "norms": True, "gamma_targets": "linear_and_lm_head"},
])
def test_merge_refuses_lm_head_tied_to_the_embedding(method):
    model = tied_llama()
    sets = {"linear": ["all-linear"], "linear_and_lm_head": ["all-linear"]}
    inject(model, method, target_sets=sets)
    perturb(model)
    embedding = model.model.embed_tokens.weight.detach().clone()
    ids = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids).logits
    with pytest.raises(AdapterConfigError, match=r"lm_head.*shared with model\.embed_tokens\.weight"):
        merge(model)
    with pytest.raises(AdapterConfigError, match="tied weights"):
        merge_and_unload(model)
    assert not any(layer.merged for _, layer in adapted_layers(model)), "a refused merge merges nothing"
    assert torch.equal(model.model.embed_tokens.weight, embedding)
    with pytest.raises(AdapterConfigError, match="shared with"):
        model.lm_head.merge()  # the layer alone knows it too (recorded by inject)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)
    # untied layers of the same model merge normally once lm_head is left out
    model = tied_llama()
    inject(model, method, target_sets={"linear": {"include": ["all-linear"], "exclude": ["lm_head"]},
                                       "linear_and_lm_head": {"include": ["all-linear"], "exclude": ["lm_head"]}})
    perturb(model)
    with torch.no_grad():
        expected = model(ids).logits
        merge(model)
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-5)


class SharedPair(nn.Module):
    """Two linear layers that share one weight (and bias) object, plus a third of their own."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight
        self.c = nn.Linear(8, 4)

    def forward(self, x):
        return self.c(self.b(torch.tanh(self.a(x))))


@pytest.mark.parametrize("kind", ["dora", "lora", "onelora"])
def test_two_linears_sharing_one_weight(kind):
    torch.manual_seed(0)
    model = SharedPair()
    w0 = model.a.weight.detach().clone()
    report = inject(model, {"name": kind, "linear": kind, "options": {"r": 1} if kind != "onelora" else {}})
    assert report.layers == ["a", "b", "c"]
    assert model.a.shared_with == ("b.weight",) and model.b.shared_with == ("a.weight",) and model.c.shared_with == ()
    perturb(model)
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = model(x)
    with pytest.raises(AdapterConfigError, match=r"cannot merge .* shared with b\.weight"):
        merge(model)
    with pytest.raises(AdapterConfigError, match="tied weights"):
        model.a.merge()
    model.c.merge()  # its own weight: fine
    model.c.unmerge()
    unmerge(model)
    assert torch.equal(model.a.base_layer.weight, w0) and model.a.base_layer.weight is model.b.base_layer.weight
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)


def test_slices_of_one_storage_are_not_shared():
    """Weights that are disjoint views of one storage (a fused tensor cut into layers, or every
    parameter in one flat buffer) merge normally; overlapping views do not."""
    torch.manual_seed(0)
    flat = torch.randn(3 * 6 * 6)
    model = nn.Sequential(*[nn.Linear(6, 6, bias=False) for _ in range(3)])
    for i, layer in enumerate(model):
        layer.weight = nn.Parameter(flat[36 * i: 36 * (i + 1)].view(6, 6))
    inject(model, {"name": "lora", "linear": "lora"})
    assert all(layer.shared_with == () for _, layer in adapted_layers(model))
    perturb(model)
    x = torch.randn(2, 6)
    with torch.no_grad():
        expected = model(x)
        merge(model)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    # overlapping views (the second layer's weight starts inside the first's)
    model = nn.Sequential(nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False))
    model[0].weight = nn.Parameter(flat[:36].view(6, 6))
    model[1].weight = nn.Parameter(flat[30:66].view(6, 6))
    inject(model, {"name": "lora", "linear": "lora"})
    assert model[0].shared_with == ("1.weight",)
    with pytest.raises(AdapterConfigError, match="shared with"):
        merge(model)


def test_tie_made_after_inject_is_found_by_merge():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
    inject(model, {"name": "lora", "linear": "lora"})
    model[1].base_layer.weight = model[0].base_layer.weight  # tied afterwards
    with pytest.raises(AdapterConfigError, match="shared with"):
        merge(model)
    # BitFit alone never rewrites the weight: a shared weight merges fine
    model = SharedPair()
    inject(model, {"name": "bitfit", "bias": True})
    merge(model)
    assert all(layer.merged for _, layer in adapted_layers(model))


# ------------------------------------------------------------------------------------------------
# item 7: inject is atomic
# ------------------------------------------------------------------------------------------------

FAILING_INJECTS = [
    # (model, method, target_sets, head, error)
    ("vit", {"name": "o", "linear": "onelora"}, {"linear": [r".*\.q_proj"]}, HEAD, "selects no linear layer"),
    ("vit", {"name": "o", "linear": "onelora"}, {"linear": [r".*\.qkv", r"patch_embed\.proj"]}, HEAD, "not nn.Linear"),
    # q_proj (16 -> 16) takes r=12, k_proj (16 -> 8) does not: the first layer would be wrapped already
    ("llama", {"name": "lora", "linear": "lora", "options": {"r": 12}}, None, [], r"r=12 does not fit a 16->8"),
    ("llama", {"name": "dora", "linear": "dora", "options": {"r": 12}}, None, [], r"r=12 does not fit a 16->8"),
    ("llama", {"name": "vera", "linear": "vera", "options": {"r": 12}}, None, [], r"r=12 does not fit a 16->8"),
    ("llama", {"name": "m", "linear": "mora1", "options": {"size_rule": "mora", "r": 4}}, None, [], "does not fit"),
    ("seq", {"name": "norms", "bias": True, "norms": True}, None, ["2"], "has none"),
    ("vit", {"name": "g", "gamma": True, "gamma_targets": "missing"}, {"linear": ["all-linear"]}, HEAD, "no target set 'missing'"),
    ("vit", {"name": "o", "linear": "lora", "options": {"dropout": 1.5}}, None, HEAD, r"dropout=1\.5"),
]


def _model(kind: str) -> nn.Module:
    if kind == "vit":
        return tiny_vit()
    if kind == "llama":
        return tiny_llama()
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("case", range(len(FAILING_INJECTS)))
def test_failed_inject_leaves_the_model_unchanged(case):
    kind, method, sets, head, error = FAILING_INJECTS[case]
    model = _model(kind)
    model.get_submodule(head[0] if head else "").requires_grad_(True)
    before = flags(model)
    modules_before = [(n, type(m)) for n, m in model.named_modules()]
    with pytest.raises(AdapterConfigError, match=error):
        inject(model, method, target_sets=sets, head=head)
    assert flags(model) == before, "requires_grad flags or modules changed by a failed inject"
    assert [(n, type(m)) for n, m in model.named_modules()] == modules_before
    assert not hasattr(model, "onelora_method")
    # and a retry with a method that fits works (no "already adapted")
    report = inject(model, {"name": "onelora", "linear": "onelora"}, head=head)
    assert report.adapted_layers > 0


def test_failed_inject_rolls_back_a_construction_error(monkeypatch):
    """Even an error nothing validated beforehand (here: a constructor that fails on the third
    layer) leaves the model as it was: modules, flags, and BitFit's added biases."""
    model = tiny_llama()
    before = flags(model)
    cls = ADAPTER_KINDS["onelora"]
    original_init = cls.__init__
    calls = []

    def failing_init(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", failing_init)
    with pytest.raises(RuntimeError, match="boom"):
        inject(model, {"name": "x", "linear": "onelora", "bias": True},
               target_sets={"linear": {"include": ["all-linear"], "exclude": ["lm_head"]}})
    assert flags(model) == before
    assert all(m.bias is None for n, m in model.named_modules() if isinstance(m, nn.Linear))
    monkeypatch.undo()
    inject(model, {"name": "x", "linear": "onelora", "bias": True},
           target_sets={"linear": {"include": ["all-linear"], "exclude": ["lm_head"]}})


# the runner validates a method once, with no model
@pytest.mark.parametrize(
    "cfg,error",
    [
        ({"linear": "lora", "options": {"r": 0}}, r"r=0: must be an integer >= 1"),
        ({"linear": "lora", "options": {"r": 1.5}}, r"r=1\.5: must be an integer"),
        ({"linear": "dora", "options": {"dropout": 1.0}}, r"dropout=1\.0: must be a probability in \[0, 1\)"),
        ({"linear": "dora", "options": {"dropout": -0.1}}, r"dropout"),
        ({"linear": "dora", "options": {"keep_output": "yes"}}, r"keep_output"),
        ({"linear": "onelora", "options": {"impl": "cuda"}}, r"impl must be one of \('fused', 'autograd'\)"),
        ({"linear": "mora6", "options": {"size_rule": "square"}}, r"size_rule must be one of"),
        ({"linear": "vera", "options": {"shared_A": 1}}, r"no option\(s\) \['shared_A'\]"),
        ({"linear": "vera", "options": {"alpha": 1}}, r"no option\(s\) \['alpha'\]; its options are d_initial, dropout, r, seed"),
        ({"bias": True, "options": {"r": 1}}, r"no option\(s\) \['r'\]"),
        ({"linear": "lora", "options": {"alpha": float("nan")}}, r"alpha=nan"),
    ],
)
def test_method_spec_validates_options_without_a_model(cfg, error):
    with pytest.raises(AdapterConfigError, match=error):
        MethodSpec.from_config({"name": "m", **cfg})


def test_every_shipped_method_config_validates():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "conf" / "method"
    for path in sorted(root.glob("*.yaml")):
        MethodSpec.from_config(yaml.safe_load(path.read_text())).validate()
    assert ADAPTER_KINDS["lora"].option_names() == ["alpha", "dropout", "r"]
    assert ADAPTER_KINDS["onelora_random"].option_names() == ["impl", "seed"]
    assert ADAPTER_KINDS["none"].option_names() == []


# ------------------------------------------------------------------------------------------------
# item 8: GPT-2's Conv1D is adapted; MultiheadAttention's out_proj is skipped loudly
# ------------------------------------------------------------------------------------------------


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial biases (GPT-2 initialises them to zero)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


GPT2_LAYERS = [f"transformer.h.{i}.{n}" for i in range(2) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


@pytest.mark.parametrize("method", KIND_METHODS + ["difffit", "onelora+bias+gamma+norms"])
def test_gpt2_conv1d_layers_are_adapted(method):
    from transformers.pytorch_utils import Conv1D

    model = tiny_gpt2()
    original = copy.deepcopy(model)
    report = inject(model, spec_of(method), head=["lm_head"])
    assert report.layers == GPT2_LAYERS and report.skipped == {}
    shapes = {n: tuple(original.get_submodule(n).weight.shape) for n in GPT2_LAYERS}  # (in, out)
    for name, layer in adapted_layers(model):
        assert (layer.in_features, layer.out_features) == shapes[name]
        assert layer.weight.shape == shapes[name][::-1]
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)
    perturb(model, scale=0.1)
    model.train()
    out = model(ids).logits
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        reference = model(ids).logits
        assert not torch.allclose(reference, original(ids).logits, atol=1e-3)
        w0 = {n: m.base_layer.weight.clone() for n, m in adapted_layers(model)}
        merge(model)
        torch.testing.assert_close(model(ids).logits, reference, rtol=0, atol=1e-5)
        unmerge(model)
        for n, m in adapted_layers(model):
            torch.testing.assert_close(m.base_layer.weight, w0[n], rtol=0, atol=1e-6)
        plain = merge_and_unload(copy.deepcopy(model))
        assert all(type(plain.get_submodule(n)) is Conv1D for n in GPT2_LAYERS)  # GPT-2's own format
        torch.testing.assert_close(plain(ids).logits, reference, rtol=0, atol=1e-5)


def test_gpt2_dora_matches_peft():
    """peft adapts Conv1D with fan_in_fan_out: its DoRA gives the same outputs and gradients as ours."""
    from peft import LoraConfig, get_peft_model

    base = tiny_gpt2()
    ours = copy.deepcopy(base)
    inject(ours, {"name": "dora", "linear": "dora", "options": {"r": 1, "alpha": 2.0}}, head=["lm_head"])
    config = LoraConfig(r=1, lora_alpha=2.0, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, use_dora=True)
    theirs = get_peft_model(copy.deepcopy(base), config).base_model.model
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, layer in adapted_layers(ours):
            peft_layer = theirs.get_submodule(name)
            torch.testing.assert_close(layer.dora_magnitude, peft_layer.lora_magnitude_vector["default"].weight)
            for ours_name, target in (("lora_A", peft_layer.lora_A["default"].weight),
                                      ("lora_B", peft_layer.lora_B["default"].weight),
                                      ("dora_magnitude", peft_layer.lora_magnitude_vector["default"].weight)):
                p = getattr(layer, ours_name)
                p.add_(0.3 * torch.randn(p.shape, generator=g))
                target.copy_(p)
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (ours, theirs):
        out = model(ids).logits
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for name, layer in adapted_layers(ours):
        torch.testing.assert_close(layer.lora_A.grad, theirs.get_submodule(name).lora_A["default"].weight.grad, rtol=1e-5, atol=1e-5)


class WithMHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.block(x))


def test_multihead_attention_out_proj_is_skipped_loudly(caplog):
    torch.manual_seed(0)
    model = WithMHA().eval()
    with caplog.at_level(logging.WARNING, logger="onelora.adapters"):
        report = inject(model, {"name": "lora", "linear": "lora"}, head=["head"])
    assert report.layers == ["block.linear1", "block.linear2"]
    assert list(report.skipped) == ["block.self_attn.out_proj"]
    assert "MultiheadAttention" in report.skipped["block.self_attn.out_proj"]
    assert "block.self_attn.out_proj" in caplog.text and "skipped" in caplog.text
    assert type(model.block.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    # asked for by name, it is an error, not a silent no-op
    with pytest.raises(AdapterConfigError, match=r"block\.self_attn\.out_proj.*MultiheadAttention"):
        inject(WithMHA(), {"name": "lora", "linear": "lora"}, head=["head"], target_sets={"linear": [r".*out_proj"]})


# ------------------------------------------------------------------------------------------------
# item 9: the merged state is part of the state_dict
# ------------------------------------------------------------------------------------------------


def trained(method: str) -> nn.Module:
    model = tiny_vit()
    inject(model, spec_of(method), head=HEAD)
    perturb(model)
    return model


@pytest.mark.parametrize("method", ["onelora", "dora", "difffit", "lora"])
def test_merged_state_dict_does_not_load_into_an_unmerged_model(method):
    model = trained(method)
    x = images()
    with torch.no_grad():
        expected = model(x)
    merge(model)
    merged_state = copy.deepcopy(model.state_dict())
    assert merged_state["blocks.0.attn.qkv._extra_state"].item() is True

    fresh = tiny_vit()
    inject(fresh, spec_of(method), head=HEAD)
    before = copy.deepcopy(fresh.state_dict())
    with pytest.raises(AdapterConfigError, match=r"saved from a merged adapter layer.*this layer is unmerged"):
        fresh.load_state_dict(merged_state)
    with pytest.raises(AdapterConfigError, match="merged"):
        fresh.load_state_dict(merged_state, strict=False)
    first = "blocks.0.attn.qkv.base_layer.weight"
    assert torch.equal(fresh.state_dict()[first], before[first]), "refused before the first layer's weights were copied"

    # merged into merged: the same model
    merge(fresh)
    fresh.load_state_dict(merged_state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=1e-5)

    # unmerged into merged: refused too
    unmerged = trained(method)
    with pytest.raises(AdapterConfigError, match="saved from a unmerged|unmerged adapter layer"):
        fresh.load_state_dict(unmerged.state_dict())


def test_unmerge_after_loading_merged_dora_refuses():
    model = trained("dora")
    merge(model)
    fresh = tiny_vit()
    inject(fresh, spec_of("dora"), head=HEAD)
    merge(fresh)
    fresh.load_state_dict(model.state_dict())
    w = fresh.blocks[0].attn.qkv.base_layer.weight.clone()
    with pytest.raises(AdapterConfigError, match="cannot unmerge this DoRA layer"):
        unmerge(fresh)
    assert torch.equal(fresh.blocks[0].attn.qkv.base_layer.weight, w)
    # an additive method's merged weights carry everything unmerge needs
    model = trained("lora")
    merge(model)
    fresh = tiny_vit()
    inject(fresh, spec_of("lora"), head=HEAD)
    merge(fresh)
    fresh.load_state_dict(model.state_dict())
    unmerge(fresh)
    unmerge(model)
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())


@pytest.mark.parametrize("method", ["onelora", "vera", "difffit"])
def test_adapter_only_checkpoints_still_load(method, tmp_path):
    """trainable_state (what a Lightning checkpoint keeps) loads with strict=False; save/load_adapter
    round trip; both refuse a merged model."""
    model = trained(method)
    x = images()
    with torch.no_grad():
        expected = model(x)
    adapter_only = {k: v.detach().clone() for k, v in trainable_state(model).items()}
    assert not any(k.endswith("_extra_state") for k in adapter_only)
    fresh = tiny_vit()
    inject(fresh, spec_of(method), head=HEAD)
    result = fresh.load_state_dict(adapter_only, strict=False)
    assert not result.unexpected_keys and any(k.endswith("_extra_state") for k in result.missing_keys)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    # the full state_dict round trip (strict) works unmerged
    other = tiny_vit()
    inject(other, spec_of(method), head=HEAD)
    other.load_state_dict(model.state_dict(), strict=True)
    save_adapter(tmp_path, model)
    loaded = tiny_vit()
    load_adapter(tmp_path, loaded)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    merge(fresh)
    with pytest.raises(AdapterConfigError, match=r"is merged: loading its tensors"):
        fresh.load_state_dict(adapter_only, strict=False)
