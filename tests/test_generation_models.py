"""The generation models: the pixel-space digits DiT (linear patch embedding), DiT-B/2 and S/2 configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from onelora.adapters import MethodSpec, inject
from onelora.models.dit import DiT, LinearPatchEmbed, build_dit

MODEL_CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def model_config(name: str) -> dict:
    with initialize_config_dir(config_dir=str(MODEL_CONF), version_base=None):
        return OmegaConf.to_container(compose(config_name=name), resolve=True)


def test_linear_patch_embedding_equals_the_convolution():
    torch.manual_seed(0)
    conv = DiT(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1, num_heads=2, num_classes=4)
    linear = DiT(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1, num_heads=2, num_classes=4,
                 patch_embed="linear")
    assert isinstance(linear.x_embedder, LinearPatchEmbed) and isinstance(linear.x_embedder.proj, torch.nn.Linear)
    with torch.no_grad():  # adaLN-Zero starts with zero outputs: perturb so the output depends on x
        for p in conv.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = conv.state_dict()
    state["x_embedder.proj.weight"] = state["x_embedder.proj.weight"].flatten(1)  # (hidden, C, p, p) -> (hidden, C*p*p)
    linear.load_state_dict(state, strict=True)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3, 900]), torch.tensor([1, 4])
    assert torch.allclose(conv.eval()(x, t, y), linear.eval()(x, t, y), atol=1e-5)
    with pytest.raises(ValueError, match="patch_embed"):
        DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2, patch_embed="mlp")


def test_dit_digits_config_counts_and_targets():
    cfg = model_config("dit_digits")
    model = build_dit(cfg, num_classes=5, load_weights=False)
    assert model.learn_sigma and model.out_channels == 2 and model.x_embedder.num_patches == 16
    assert sum(p.numel() for p in model.parameters()) == 329_928  # the count in the YAML's comment
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 328_904
    out = model(torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2]), torch.tensor([0, 4, 5]))  # 5 = null label
    assert out.shape == (3, 2, 8, 8)

    report = inject(model, MethodSpec(name="onelora", linear="onelora"), target_sets=cfg["target_sets"], head=cfg["head"])
    # x_embedder 4->64, per block qkv 64->192, proj 64->64, fc1 64->256, fc2 256->64, adaLN 64->384,
    # final adaLN 64->128 and linear 64->8: 1LoRA trains one vector of each layer's output size
    per_block = 192 + 64 + 256 + 64 + 384
    assert report.adapted_layers == 1 + 4 * 5 + 2
    assert "x_embedder.proj" in report.layers
    assert report.adapter_params == 64 + 4 * per_block + 128 + 8 == 4040
    assert report.head_params == 6 * 64  # 5 classes + the null row, re-initialised and trained

    lora = build_dit(cfg, num_classes=5, load_weights=False)
    report = inject(lora, MethodSpec(name="lora", linear="lora", options={"r": 1, "alpha": 1.0}),
                    target_sets=cfg["target_sets"], head=cfg["head"])
    in_plus_out = (4 + 64) + 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64) + (64 + 384)) + (64 + 128) + (64 + 8)
    assert report.adapter_params == in_plus_out


@pytest.mark.parametrize("name, total", [("dit_b_2", 130_512_416), ("dit_s_2", 32_963_360)])
def test_smaller_dit_configs(name, total):
    cfg = model_config(name)
    assert cfg["pretrained"] is None and cfg["head"] == [r"y_embedder\.embedding_table"]
    with torch.device("meta"):
        model = build_dit(cfg, num_classes=None, load_weights=False)  # ImageNet's 1000 classes
    assert sum(p.numel() for p in model.parameters()) == total
    assert isinstance(model.x_embedder.proj, torch.nn.Conv2d)  # the original layout
