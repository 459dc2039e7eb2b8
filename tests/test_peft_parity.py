"""Numerical parity with Hugging Face peft for LoRA, VeRA and DoRA at r=1.

The same tiny base model is adapted by us and by peft on the same layers; after the adapter
values are perturbed (so updates are non-zero) and copied from ours into peft's, outputs and the
gradients w.r.t. every adapter parameter and the input must agree. Two layouts: transformers'
ViT with separate q/k/v (+ o, fc1, fc2; classifier excluded) and LLaMA (q, k, v, o, gate, up,
down; lm_head excluded).
"""

from __future__ import annotations

import copy

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from peft import LoraConfig, VeraConfig, get_peft_model  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

from onelora.adapters import adapted_layers, inject  # noqa: E402

from adapter_cases import tiny_llama  # noqa: E402

ALPHA = 2.0  # not peft's default 8, and not 1 so that a missing scaling would show
DROPOUT = 0.3
TOL = dict(rtol=1e-5, atol=1e-5)
LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def hf_vit(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ViTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        image_size=8,
        patch_size=4,
        num_channels=3,
        num_labels=3,
    )
    model = ViTForImageClassification(cfg).eval()
    with torch.no_grad():  # non-trivial biases
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def make_inputs(kind: str):
    g = torch.Generator().manual_seed(3)
    if kind == "vit":
        return {"pixel_values": torch.randn(2, 3, 8, 8, generator=g)}
    return {"inputs_embeds": torch.randn(2, 5, 16, generator=g)}


MODELS = {
    # ours: every linear outside the head; peft: all-linear with the classifier excluded explicitly
    "vit": dict(
        build=hf_vit,
        ours=dict(target_sets={"linear": "all-linear"}, head=["classifier"]),
        peft=dict(target_modules="all-linear", exclude_modules=["classifier"]),
        # VeraConfig has no exclude_modules: a full-name regex (peft fullmatches a string)
        peft_vera=dict(target_modules=r"vit\.layers\.\d+\.(attention\.[qkvo]_proj|mlp\.fc[12])"),
        n_layers=12,
    ),
    "llama": dict(
        build=tiny_llama,
        ours=dict(target_sets={"linear": {"include": ["all-linear"], "exclude": ["lm_head"]}}, head=[]),
        peft=dict(target_modules=LLAMA_MODULES),
        n_layers=14,
    ),
}

METHODS = {
    "lora": (
        {"name": "lora", "linear": "lora", "options": {"r": 1, "alpha": ALPHA}},
        lambda targets: LoraConfig(r=1, lora_alpha=ALPHA, lora_dropout=0.0, **targets),
        {"lora_A": "lora_A.default.weight", "lora_B": "lora_B.default.weight"},
    ),
    "dora": (
        {"name": "dora", "linear": "dora", "options": {"r": 1, "alpha": ALPHA}},
        lambda targets: LoraConfig(r=1, lora_alpha=ALPHA, lora_dropout=0.0, use_dora=True, **targets),
        {
            "lora_A": "lora_A.default.weight",
            "lora_B": "lora_B.default.weight",
            "dora_magnitude": "lora_magnitude_vector.default.weight",
        },
    ),
    # dropout > 0 in training: peft keeps W0 x undropped and drops the input of the LoRA and
    # magnitude paths; the same seed before each forward gives both the same masks
    "lora_dropout": (
        {"name": "lora", "linear": "lora", "options": {"r": 1, "alpha": ALPHA, "dropout": DROPOUT}},
        lambda targets: LoraConfig(r=1, lora_alpha=ALPHA, lora_dropout=DROPOUT, **targets),
        {"lora_A": "lora_A.default.weight", "lora_B": "lora_B.default.weight"},
    ),
    "dora_dropout": (
        {"name": "dora", "linear": "dora", "options": {"r": 1, "alpha": ALPHA, "dropout": DROPOUT}},
        lambda targets: LoraConfig(r=1, lora_alpha=ALPHA, lora_dropout=DROPOUT, use_dora=True, **targets),
        {
            "lora_A": "lora_A.default.weight",
            "lora_B": "lora_B.default.weight",
            "dora_magnitude": "lora_magnitude_vector.default.weight",
        },
    ),
    "vera": (
        {"name": "vera", "linear": "vera", "options": {"r": 1, "seed": 11, "d_initial": 0.1}},
        lambda targets: VeraConfig(r=1, projection_prng_key=11, d_initial=0.1, vera_dropout=0.0, **targets),
        {"vera_lambda_b": "vera_lambda_b.default", "vera_lambda_d": "vera_lambda_d.default"},
    ),
}


def peft_tensor(module: torch.nn.Module, dotted: str) -> torch.Tensor:
    obj = module
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, (torch.nn.ModuleDict, torch.nn.ParameterDict)) else getattr(obj, part)
    return obj


def build_pair(model_kind: str, method: str):
    info = MODELS[model_kind]
    ours_spec, peft_config, names = METHODS[method]
    base = info["build"]()
    ours = copy.deepcopy(base)
    report = inject(ours, ours_spec, **info["ours"])
    theirs = get_peft_model(copy.deepcopy(base), peft_config(info.get(f"peft_{method}", info["peft"])))
    inner = theirs.base_model.model
    layers = adapted_layers(ours)
    assert len(layers) == info["n_layers"]
    peft_layers = sorted(
        n for n, m in inner.named_modules() if isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer)
    )
    assert peft_layers == sorted(n for n, _ in layers), "peft and we must adapt the same layers"
    return ours, theirs, inner, layers, names, report


def forward(model, kind: str, inputs: dict) -> torch.Tensor:
    return model(**inputs).logits


@pytest.mark.parametrize("model_kind", list(MODELS))
@pytest.mark.parametrize("method", list(METHODS))
def test_parity_with_peft(model_kind, method):
    ours, theirs, inner, layers, names, report = build_pair(model_kind, method)

    # same parameter budget: peft's trainable parameters (no head) equal our adapter parameters
    peft_trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert report.adapter_params == peft_trainable

    # initial values that are not random draws must agree without copying
    for name, layer in layers:
        peft_layer = inner.get_submodule(name)
        if method == "dora":
            torch.testing.assert_close(layer.dora_magnitude, peft_tensor(peft_layer, names["dora_magnitude"]), **TOL)
        if method == "vera":
            # the shared projections drawn from the same seed (projection_prng_key) are peft's
            vera_A = theirs.base_model.vera_A["default"]
            vera_B = theirs.base_model.vera_B["default"]
            assert torch.equal(layer.vera_A, vera_A[:, : layer.in_features])
            assert torch.equal(layer.vera_B, vera_B[: layer.out_features, :])
            assert torch.equal(layer.vera_lambda_d, peft_tensor(peft_layer, names["vera_lambda_d"]))
            assert torch.equal(layer.vera_lambda_b, peft_tensor(peft_layer, names["vera_lambda_b"]))

    # perturb ours, copy into peft
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, layer in layers:
            peft_layer = inner.get_submodule(name)
            for ours_name, peft_name in names.items():
                p = getattr(layer, ours_name)
                p.add_(0.3 * torch.randn(p.shape, generator=g))
                target = peft_tensor(peft_layer, peft_name)
                assert target.shape == p.shape, (name, ours_name)
                target.copy_(p)

    inputs = make_inputs(model_kind)
    dropout = "dropout" in method
    results = []
    for model in (ours, theirs):
        model.train(dropout)  # the models' own dropout probabilities are 0: only the adapters' drop
        inp = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        torch.manual_seed(123)  # the same dropout masks, layer by layer, in both models
        out = forward(model, model_kind, inp)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weights).sum().backward()
        results.append((out.detach(), next(iter(inp.values())).grad))
    (out_ours, gx_ours), (out_peft, gx_peft) = results

    with torch.no_grad():
        base_out = forward(MODELS[model_kind]["build"](), model_kind, inputs)
    assert not torch.allclose(out_ours, base_out, atol=1e-3), "the perturbed adapters must change the output"
    if dropout:  # guard: the masks really dropped something (the output differs from eval mode)
        ours.eval()
        with torch.no_grad():
            assert not torch.allclose(forward(ours, model_kind, inputs), out_ours, atol=1e-4)
    torch.testing.assert_close(out_ours, out_peft, **TOL)
    torch.testing.assert_close(gx_ours, gx_peft, **TOL)
    for name, layer in layers:
        peft_layer = inner.get_submodule(name)
        for ours_name, peft_name in names.items():
            ours_grad = getattr(layer, ours_name).grad
            peft_grad = peft_tensor(peft_layer, peft_name).grad
            assert ours_grad is not None and peft_grad is not None, (name, ours_name)
            assert ours_grad.abs().sum() > 0
            torch.testing.assert_close(ours_grad, peft_grad, **TOL, msg=lambda m: f"{name}.{ours_name}: {m}")


@pytest.mark.parametrize("model_kind", list(MODELS))
def test_peft_merge_matches_ours(model_kind):
    """Merged weights agree too (DoRA's merge is the subtle one)."""
    from onelora.adapters import merge

    ours, theirs, inner, layers, names, _ = build_pair(model_kind, "dora")
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, layer in layers:
            for ours_name, peft_name in names.items():
                p = getattr(layer, ours_name)
                p.add_(0.3 * torch.randn(p.shape, generator=g))
                peft_tensor(inner.get_submodule(name), peft_name).copy_(p)
        merge(ours)
        merged_peft = theirs.merge_and_unload()
        for name, layer in layers:
            torch.testing.assert_close(layer.base_layer.weight, merged_peft.get_submodule(name).weight, **TOL)
