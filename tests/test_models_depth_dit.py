"""Depth Anything and DiT in their original layouts: the paper's counts, tiny forwards, strict loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onelora.adapters import MethodSpec, inject
from onelora.models import MODEL_BUILDERS
from onelora.models.depth_anything import DepthAnything, build_depth_anything, load_depth_anything_weights
from onelora.models.dit import DiT, build_dit, load_dit_weights, sincos_pos_embed_2d
from onelora.models.weights import MissingWeightsError

def model_yaml(name: str) -> dict:
    """A model's target sets and head as conf/model/<name>.yaml declares them (not a copy)."""
    from omegaconf import OmegaConf

    from runs import CONF

    return OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"), resolve=True)


DA_TARGETS = model_yaml("depth_anything_l")["target_sets"]
DIT_TARGETS = model_yaml("dit_xl_2")["target_sets"]
DIT_HEAD = model_yaml("dit_xl_2")["head"]

TINY_DA_ARCH = {
    "encoder": "tiny",
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "patch_size": 14,
    "img_size": 56,
    "features": 16,
    "out_channels": [8, 16, 32, 32],
    "max_depth": 10.0,
}
TINY_DIT_ARCH = {"input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 2, "num_heads": 4}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_builders_registered():
    assert MODEL_BUILDERS["depth_anything"] is build_depth_anything
    assert MODEL_BUILDERS["dit"] is build_dit


# ---------------------------------------------------------------------------- Depth Anything


def meta_da(encoder: str = "vitl") -> DepthAnything:
    with torch.device("meta"):
        return build_depth_anything({"arch": {"encoder": encoder}, "pretrained": None}, load_weights=False)


@pytest.mark.parametrize("encoder, total", [("vits", 24_785_089), ("vitb", 97_470_785), ("vitl", 335_315_649)])
def test_depth_anything_totals(encoder, total):
    model = meta_da(encoder)
    assert n_params(model) == total
    if encoder == "vitl":
        assert round(total / 1e6, 2) == 335.32
        # the paper's 335.32M needs DINOv2's mask_token: without it the total rounds to 335.31M
        assert model.pretrained.mask_token.numel() == 1024
        assert round((total - 1024) / 1e6, 2) == 335.31


def test_depth_anything_original_key_names():
    keys = set(meta_da("vitl").state_dict())
    for key in (
        "pretrained.mask_token",
        "pretrained.cls_token",
        "pretrained.pos_embed",
        "pretrained.patch_embed.proj.weight",
        "pretrained.blocks.23.attn.qkv.weight",
        "pretrained.blocks.0.ls1.gamma",
        "pretrained.norm.bias",
        "depth_head.projects.3.weight",
        "depth_head.resize_layers.0.weight",
        "depth_head.resize_layers.3.bias",
        "depth_head.scratch.layer4_rn.weight",
        "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight",
        "depth_head.scratch.refinenet1.out_conv.bias",
        "depth_head.scratch.output_conv1.weight",
        "depth_head.scratch.output_conv2.0.weight",
        "depth_head.scratch.output_conv2.2.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith(("pretrained.head", "pretrained.fc_norm")) for k in keys)
    assert "depth_head.scratch.layer1_rn.bias" not in keys  # the original's rn convs have no bias


@pytest.mark.parametrize(
    "spec, expected",
    [
        (dict(linear="onelora"), 221_184),
        (dict(bias=True), 221_184),
        (dict(linear="lora"), 393_216),
        (dict(linear="vera"), 221_280),
        (dict(linear="dora"), 614_400),
        (dict(linear="mora1"), 220_056),
        (dict(linear="mora6"), 217_440),
        (dict(norms=True), 100_352),
        (dict(bias=True, norms=True), 321_536),  # the paper's DiffFit count for Depth Anything (321.54K)
        (dict(full=True), 335_315_649),
    ],
)
def test_depth_anything_paper_counts(spec, expected):
    model = meta_da("vitl")
    report = inject(model, MethodSpec(name="m", **spec), target_sets=DA_TARGETS, head=[])
    assert report.trainable_params == expected
    assert report.head_params == 0
    if not spec.get("full") and spec != dict(norms=True):
        assert report.adapted_layers == 96
        assert all(name.startswith("pretrained.blocks.") for name in report.layers)


def tiny_da(**over) -> DepthAnything:
    torch.manual_seed(0)
    arch = {**TINY_DA_ARCH, **over}
    return build_depth_anything({"arch": arch, "pretrained": None}, load_weights=True).eval()


@pytest.mark.parametrize("size", [(28, 28), (56, 56), (42, 70)])
def test_depth_anything_tiny_forward(size):
    model = tiny_da()
    with torch.no_grad():
        depth = model(torch.randn(2, 3, *size))
    assert depth.shape == (2, *size)
    assert torch.isfinite(depth).all()
    assert (depth > 0).all() and (depth < 10.0).all()  # metric: sigmoid * max_depth
    relative = tiny_da(depth_output="relative")
    with torch.no_grad():
        rel = relative(torch.randn(1, 3, *size))
    assert rel.shape == (1, *size) and (rel >= 0).all()


def test_depth_anything_rejects_sizes_off_the_patch_grid():
    with pytest.raises(ValueError, match="multiple of 14"):
        tiny_da()(torch.randn(1, 3, 30, 28))


def test_depth_anything_tiny_trains_with_onelora():
    model = tiny_da().train()
    inject(model, MethodSpec(name="onelora", linear="onelora"), target_sets=DA_TARGETS, head=[])
    depth = model(torch.randn(2, 3, 28, 28))
    depth.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_depth_anything_strict_roundtrip(tmp_path, suffix):
    src = tiny_da()
    with torch.no_grad():  # make every tensor non-trivial so a mis-mapped key would show
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"depth_anything_tiny{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    x = torch.randn(1, 3, 28, 42)
    fresh = tiny_da()
    load_depth_anything_weights(fresh, path)
    built = build_depth_anything({"arch": TINY_DA_ARCH, "pretrained": str(path)}, load_weights=True)
    with torch.no_grad():
        ref = src(x)
        assert torch.equal(fresh(x), ref)
        assert torch.equal(built.eval()(x), ref)
    # encoder only (the v2 metric recipe): the head keeps its own init
    enc_only = tiny_da()
    head_before = enc_only.depth_head.scratch.output_conv1.weight.clone()
    load_depth_anything_weights(enc_only, path, load_head=False)
    assert torch.equal(enc_only.pretrained.blocks[0].attn.qkv.weight, src.pretrained.blocks[0].attn.qkv.weight)
    assert torch.equal(enc_only.depth_head.scratch.output_conv1.weight, head_before)


def test_depth_anything_strict_load_rejects_other_layouts(tmp_path):
    state = tiny_da().state_dict()
    state.pop("pretrained.mask_token")
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="mask_token"):
        load_depth_anything_weights(tiny_da(), path)


def test_depth_anything_missing_weights(tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "depth_anything_vitl14.pth"
    with pytest.raises(MissingWeightsError, match="depth_anything_vitl14.pth"):
        build_depth_anything({"arch": TINY_DA_ARCH, "pretrained": str(missing)}, load_weights=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="LiheYoung/depth_anything_vitl14") as err:
        build_depth_anything({"arch": TINY_DA_ARCH, "pretrained": "LiheYoung/depth_anything_vitl14"}, load_weights=True)
    assert "model.pretrained" in str(err.value)
    space = "spaces/LiheYoung/Depth-Anything:checkpoints/depth_anything_vitl14.pth"
    with pytest.raises(MissingWeightsError, match="--repo-type space LiheYoung/Depth-Anything checkpoints/"):
        build_depth_anything({"arch": TINY_DA_ARCH, "pretrained": space}, load_weights=True)
    # counting never touches weights
    build_depth_anything({"arch": TINY_DA_ARCH, "pretrained": str(missing)}, load_weights=False)


# ---------------------------------------------------------------------------- DiT


def meta_dit(num_classes: int | None = 101) -> DiT:
    with torch.device("meta"):
        return build_dit({"arch": {"model": "DiT-XL/2", "input_size": 32}, "pretrained": None},
                         num_classes=num_classes, load_weights=False)


def test_dit_xl2_totals():
    assert n_params(meta_dit(None)) == 675_129_632  # ImageNet: 1001-row table
    food = meta_dit(101)
    assert food.y_embedder.embedding_table.weight.shape == (102, 1152)
    assert n_params(food) == 675_129_632 - 1001 * 1152 + 102 * 1152
    assert not food.pos_embed.requires_grad  # fixed sin-cos, a frozen parameter as in the original


@pytest.mark.parametrize(
    "spec, expected",
    [
        (dict(linear="onelora"), 603_680),
        (dict(bias=True), 603_680),
        (dict(linear="vera"), 603_822),
        (dict(linear="lora"), 864_032),
        (dict(bias=True, gamma=True), 1_089_856),  # DiffFit: DiT's LayerNorms have no affine
        (dict(linear="mora1"), 604_412),
        (dict(linear="mora6"), 596_516),
    ],
)
def test_dit_paper_counts(spec, expected):
    report = inject(meta_dit(101), MethodSpec(name="m", **spec), target_sets=DIT_TARGETS, head=DIT_HEAD)
    assert report.adapted_layers == 142
    assert not any(name.startswith("t_embedder") for name in report.layers)
    assert report.head_params == 102 * 1152 == 117_504
    assert report.trainable_params == expected


def test_dit_sincos_matches_the_numpy_recipe():
    dim, grid = 32, 4

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), axis=0)
    ref = np.concatenate([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], axis=1)
    assert np.allclose(sincos_pos_embed_2d(dim, grid).numpy(), ref)


def tiny_dit(num_classes: int | None = 10, pretrained: str | None = None, **arch) -> DiT:
    torch.manual_seed(0)
    cfg = {"arch": {**TINY_DIT_ARCH, "pretrained_num_classes": 10, **arch}, "pretrained": pretrained}
    return build_dit(cfg, num_classes=num_classes, load_weights=True)


def test_dit_tiny_forward():
    model = tiny_dit().eval()
    with torch.no_grad():  # the zero (adaLN-Zero) init would make the output trivially 0
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x, t, y = torch.randn(4, 4, 8, 8), torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,))
    with torch.no_grad():
        out = model(x, t, y)
        t2 = torch.cat([t[:2], t[:2]])
        guided = model.forward_with_cfg(x, t2, torch.cat([y[:2], torch.full((2,), 10)]), 1.5)
    assert out.shape == (4, 8, 8, 8) and torch.isfinite(out).all()
    assert out.abs().sum() > 0
    assert guided.shape == (4, 8, 8, 8) and torch.isfinite(guided).all()
    assert torch.equal(guided[:2, :3], guided[2:, :3])  # guided eps (first 3 channels, as the original)


def _perturbed_state(model: DiT, tmp_path, name="dit_tiny.pt", wrap=False):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path / name
    state = model.state_dict()
    torch.save({"ema": state, "model": state} if wrap else state, path)
    return path


@pytest.mark.parametrize("wrap", [False, True])
def test_dit_strict_roundtrip(tmp_path, wrap):
    src = tiny_dit().eval()
    path = _perturbed_state(src, tmp_path, wrap=wrap)
    loaded = tiny_dit(pretrained=str(path)).eval()
    fresh = load_dit_weights(tiny_dit().eval(), path)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), torch.tensor([1, 7])
    with torch.no_grad():
        ref = src(x, t, y)
        assert torch.equal(loaded(x, t, y), ref)
        assert torch.equal(fresh(x, t, y), ref)


def test_dit_new_label_set_reinitialises_the_table(tmp_path):
    src = tiny_dit().eval()
    path = _perturbed_state(src, tmp_path)
    model = tiny_dit(num_classes=5, pretrained=str(path))
    assert model.y_embedder.embedding_table.weight.shape == (6, 64)
    assert model.y_embedder.num_classes == 5
    assert torch.equal(model.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    assert torch.equal(model.t_embedder.mlp[2].bias, src.t_embedder.mlp[2].bias)
    # anything else missing is still an error
    state = torch.load(path)
    state.pop("blocks.0.mlp.fc1.weight")
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="fc1"):
        tiny_dit(num_classes=5, pretrained=str(path))


def test_dit_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError, match="DiT-XL-2-256x256.pt"):
        tiny_dit(pretrained=str(tmp_path / "DiT-XL-2-256x256.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = "http://127.0.0.1:9/DiT/models/DiT-XL-2-256x256.pt"  # nothing listens there: fails at once
    with pytest.raises(MissingWeightsError, match="torch hub cache") as err:
        tiny_dit(pretrained=url)
    assert "wget" in str(err.value) and "model.pretrained" in str(err.value)
    with torch.device("meta"):  # counting never touches weights
        build_dit({"arch": TINY_DIT_ARCH, "pretrained": url}, num_classes=3, load_weights=False)


def test_dit_arch_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_dit({"arch": {"model": "DiT-XXL/2"}}, load_weights=False)
    with pytest.raises(ValueError, match="unknown arch keys"):
        build_dit({"arch": {"hidden": 3}}, load_weights=False)


def test_dit_configs_cover_the_original_family():
    from onelora.models.dit import DIT_CONFIGS

    assert DIT_CONFIGS["DiT-XL/2"] == {"depth": 28, "hidden_size": 1152, "patch_size": 2, "num_heads": 16}
    assert len(DIT_CONFIGS) == 12
    assert sum(1 for k in DIT_CONFIGS if k.endswith("/2")) == 4
