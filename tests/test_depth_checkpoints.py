"""Metric-depth checkpoints in their original key layouts load strictly after conversion; their counts."""

from __future__ import annotations

import math

import pytest
import torch

from onelora.models.weights import read_state_dict
from onelora.models.depth_anything import (
    DepthAnything,
    build_depth_anything,
    convert_metric_checkpoint,
    metric_checkpoint_layout,
    zoedepth_head_shapes,
)

TINY = {"encoder": "tiny", "embed_dim": 64, "depth": 4, "num_heads": 4, "patch_size": 14, "img_size": 56,
        "features": 16, "out_channels": [8, 16, 32, 32], "max_depth": 10.0}


def tiny(seed: int, **over) -> DepthAnything:
    torch.manual_seed(seed)
    model = DepthAnything(**{**TINY, **over})
    with torch.no_grad():  # non-trivial everywhere, so a mis-mapped tensor shows in the output
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def zoedepth_state(model: DepthAnything) -> dict[str, torch.Tensor]:
    """A ZoeDepth (v1 metric_depth) state dict: the DPT model under core.core. plus the metric-bins head."""
    state = {f"core.core.{k}": v.clone() for k, v in model.state_dict().items()}
    # the tiny core's channels: bottleneck = features, decoder blocks = features each (ZoeDepth's hooks)
    shapes = zoedepth_head_shapes(core_channels=[16] * 5, n_bins=8, bin_embedding_dim=16)
    for key, shape in shapes.items():
        state[key] = torch.randn(shape)
    return state


def test_zoedepth_layout_loads_strictly(tmp_path):
    src = tiny(1)
    state = zoedepth_state(src)
    for key in (  # names as the original code's modules spell them
        "core.core.pretrained.blocks.0.attn.qkv.weight",
        "core.core.pretrained.mask_token",
        "core.core.depth_head.scratch.refinenet1.resConfUnit2.conv1.weight",
        "core.core.depth_head.scratch.output_conv2.2.bias",
        "seed_bin_regressor._net.2.weight",
        "attractors.3._net.2.bias",
        "conditional_log_binomial.log_binomial_transform.k_idx",
    ):
        assert key in state
    path = tmp_path / "depth_anything_metric_depth_indoor.pt"
    torch.save({"model": state, "optimizer": None, "epoch": 4}, path)  # as the ZoeDepth trainer saves
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert metric_checkpoint_layout(raw["model"]) == "zoedepth"
    fresh = tiny(2)
    fresh.load_state_dict(convert_metric_checkpoint(raw), strict=True)
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        assert torch.equal(fresh(x), src(x))


@pytest.mark.parametrize("wrapped", [False, True])
def test_v2_metric_layout_loads_strictly(tmp_path, wrapped):
    src = tiny(3, intermediate_layers=[0, 1, 2, 3], max_depth=20.0)  # V2 taps spread-out blocks
    state = {k: v.clone() for k, v in src.state_dict().items()}
    if wrapped:  # Depth-Anything-V2 metric_depth/train.py: {"model": DDP state, "optimizer", "epoch", "previous_best"}
        state = {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}, "epoch": 3, "previous_best": {}}
    path = tmp_path / "depth_anything_v2_metric_hypersim_vits.pth"
    torch.save(state, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    fresh = tiny(4, intermediate_layers=[0, 1, 2, 3], max_depth=20.0)
    converted = convert_metric_checkpoint(raw)
    assert metric_checkpoint_layout(converted) == "dpt"
    fresh.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 42, 28)
    with torch.no_grad():
        assert torch.equal(fresh(x), src(x))
        assert fresh(x).max() < 20.0  # sigmoid * max_depth, as V2's metric head


def test_relative_v1_layout_passes_through_unchanged(tmp_path):
    state = tiny(5).state_dict()
    assert convert_metric_checkpoint(state).keys() == state.keys()
    path = tmp_path / "depth_anything_vits14.pth"
    torch.save(state, path)
    built = build_depth_anything({"arch": TINY, "pretrained": str(path)}, load_weights=True)
    assert torch.equal(built.depth_head.scratch.output_conv1.weight, state["depth_head.scratch.output_conv1.weight"])
    assert read_state_dict(path).keys() == state.keys()


def test_unknown_layouts_and_stray_keys_are_errors():
    with pytest.raises(ValueError, match="unknown key layout.*backbone.embeddings"):
        convert_metric_checkpoint({"backbone.embeddings.cls_token": torch.zeros(1), "head.conv1.weight": torch.zeros(1)})
    state = zoedepth_state(tiny(6))
    state["bin_projector.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="bin_projector.weight"):
        convert_metric_checkpoint(state)


def test_zoedepth_head_does_not_fit_the_paper_count():
    """The paper's 'full' 335.32M is the DPT model alone; ZoeDepth's metric-bins head adds 478K."""
    with torch.device("meta"):
        dpt = build_depth_anything({"arch": {"encoder": "vitl"}, "pretrained": None}, load_weights=False)
    dpt_total = sum(p.numel() for p in dpt.parameters())
    assert dpt_total == 335_315_649 and round(dpt_total / 1e6, 2) == 335.32
    head = {k: v for k, v in zoedepth_head_shapes().items() if "log_binomial_transform" not in k}  # no buffers
    head_total = sum(math.prod(shape) for shape in head.values())
    assert head_total == 478_145
    assert round((dpt_total + head_total) / 1e6, 2) == 335.79 != 335.32
    normed = {k: v for k, v in zoedepth_head_shapes(bin_centers_type="normed").items() if "log_binomial_transform" not in k}
    assert sum(math.prod(s) for s in normed.values()) == 481_886
    # V2's metric model has the DPT model's layout and count: the same 335,315,649 (sigmoid adds nothing)
