"""GenerationModule on a tiny DiT, driven by Lightning directly (no runner): the diffusion loss,
EMA after each optimizer step, FID rounds, EMA checkpoints, latents through a VAE, the sample grid."""

from __future__ import annotations

import functools
import math

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from unittest.mock import patch

from onelora.adapters import MethodSpec, inject
from onelora.data.generation import DigitsGenerationDataModule
from onelora.metrics.fid import digits_features
from onelora.models.dit import DiT
from onelora.figures.samples import grid_figure, load_samples
from onelora.tasks.generation import EMA_KEY, GenerationModule

METRIC = {"name": "fid", "direction": "min", "val_key": "val/fid", "test_key": "test/fid"}


def base_kwargs(lr: float = 2e-3) -> dict:
    return {"optimizer": functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.0), "metric": METRIC}


def tiny_dit(in_channels: int = 1, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    return DiT(input_size=8, patch_size=2, in_channels=in_channels, hidden_size=32, depth=2, num_heads=2,
               num_classes=5, class_dropout_prob=0.1, learn_sigma=True, patch_embed="linear")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return digits_features(tmp_path_factory.mktemp("cache"))


def module(features, model=None, **kwargs) -> GenerationModule:
    settings = dict(fid_samples=20, sample_steps=3, sample_batch_size=10, ema_decay=0.9, grid_columns=4)
    return GenerationModule(model or tiny_dit(), fid_features=features, **{**settings, **kwargs}, **base_kwargs())


def trainer(tmp_path, **kwargs) -> L.Trainer:
    settings = dict(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=3, num_sanity_val_steps=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path))
    return L.Trainer(**{**settings, **kwargs})


def test_fit_validate_test_and_artifacts(tmp_path, features):
    gen = module(features)
    data = DigitsGenerationDataModule("target", batch_size=16)
    start = {n: p.detach().clone() for n, p in gen.model.named_parameters()}
    fit = trainer(tmp_path)
    fit.fit(gen, datamodule=data)

    assert gen.ema is not None and gen.ema.num_updates == 6  # one update per optimizer step
    assert set(gen.ema.shadow) == {n for n, p in gen.model.named_parameters() if p.requires_grad}
    assert "pos_embed" not in gen.ema.shadow
    for name, param in gen.model.named_parameters():  # after fit the model holds the EMA weights
        if param.requires_grad:
            assert torch.equal(param, gen.ema.shadow[name])
    moved = gen.model.final_layer.adaLN_modulation[1].weight
    assert not torch.equal(moved, start["final_layer.adaLN_modulation.1.weight"])
    assert math.isfinite(float(fit.callback_metrics["train/loss"]))
    assert "train/vb" in fit.callback_metrics  # learned sigma: the hybrid loss
    val_fid = float(fit.callback_metrics["val/fid"])
    assert math.isfinite(val_fid) and val_fid > 0
    # the real side: the 448 training images once, not again per round nor from the sanity check
    assert int(gen.val_fid.real_features_num_samples) == 448
    assert gen.fid_counts["val"] == {"real": 448, "generated": 20}

    fit.test(gen, datamodule=data)
    assert math.isfinite(float(fit.callback_metrics["test/fid"]))
    assert gen.fid_counts["test"] == {"real": 448, "generated": 20}  # the held-out half

    labels = torch.tensor([0, 1, 2, 3, 4])
    first, again = gen.generate(labels, seed=7), gen.generate(labels, seed=7)
    assert first.shape == (5, 1, 8, 8) and torch.equal(first, again)
    assert first.min() >= -1 and first.max() <= 1
    assert not torch.equal(first, gen.generate(labels, seed=8))

    npz, png = gen.artifacts(tmp_path / "run", data)
    assert (npz.name, png.name) == ("samples.npz", "samples.png") and Image.open(png).format == "PNG"
    samples = load_samples(npz)  # 5 class rows x 4 samples, drawn with the module's sample seed
    assert samples["images"].shape == (20, 8, 8, 1) and samples["images"].dtype == np.uint8
    assert samples["labels"].tolist() == [k for k in range(5) for _ in range(4)] and samples["seed"] == 0
    expected = gen.generate(torch.tensor(samples["labels"]), seed=0)  # the same labels and noise: the same grid
    np.testing.assert_array_equal(samples["images"][..., 0],
                                  np.clip((expected[:, 0].numpy() + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8))
    fig = grid_figure(samples, "title")
    try:
        (ax,) = fig.axes
        assert [t.get_text() for t in ax.get_yticklabels()] == [f"label {k}" for k in range(5)]
        assert ax.images[0].get_array().shape == (5 * 9 + 1, 4 * 9 + 1)  # 8 px samples, 1 px apart
    finally:
        plt.close(fig)


def test_sample_grid_is_titled_with_method_step_and_fid(tmp_path, features):
    """The run's grid says what it shows: the method, the step of the weights, the test FID."""
    gen = module(features)
    data = DigitsGenerationDataModule("target", batch_size=16)
    fit = trainer(tmp_path, max_epochs=1, limit_train_batches=2, num_sanity_val_steps=0)
    fit.fit(gen, datamodule=data)
    fit.test(gen, datamodule=data)
    gen.weights_step = 2  # the runner sets it (the best round's step): tests/test_generation_tasks.py
    titles = []
    with patch("onelora.figures.samples.grid_figure", side_effect=lambda s, title: titles.append(title) or
               plt.figure()):
        gen.artifacts(tmp_path / "run", data)
    fid = float(fit.callback_metrics["test/fid"])
    assert titles == [f"model · weights of step 2 · test FID {fid:.2f} · sample seed 0"]


def test_samples_use_the_ema_weights(features):
    gen = module(features, ema_decay=0.5)
    ema = gen.ensure_ema()
    with torch.no_grad():
        for p in gen.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ema.update(gen.model)  # EMA: halfway between the start and the perturbed weights
    own = {n: p.detach().clone() for n, p in gen.model.named_parameters()}
    labels = torch.tensor([0, 3])
    with_ema = gen.generate(labels, seed=1)
    assert all(torch.equal(p, own[n]) for n, p in gen.model.named_parameters())  # restored afterwards
    plain = module(features, model=gen.model, ema_decay=None)
    without = plain.generate(labels, seed=1)
    assert not torch.allclose(with_ema, without)
    ema.copy_to(plain.model)
    assert torch.allclose(plain.generate(labels, seed=1), with_ema, atol=1e-6)


def test_ema_state_travels_with_the_checkpoint(tmp_path, features):
    gen = module(features)
    fit = trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    fit.fit(gen, datamodule=DigitsGenerationDataModule("target", batch_size=16))
    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint[EMA_KEY]["num_updates"] == 3
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])  # adapter-only: no VAE / FID features

    fresh = module(features)
    fresh.on_load_checkpoint(checkpoint)
    ema = fresh.ensure_ema()
    assert ema.num_updates == 3
    assert all(torch.equal(ema.shadow[n], gen.ema.shadow[n]) for n in ema.shadow)

    # the runner tests the best round through ckpt_path: its EMA comes back with its weights
    saved = {n: t.clone() for n, t in gen.ema.shadow.items()}
    for shadow in gen.ema.shadow.values():
        shadow.add_(1.0)
    fit.test(gen, datamodule=DigitsGenerationDataModule("target", batch_size=16), ckpt_path=str(path), verbose=False)
    assert all(torch.equal(gen.ema.shadow[n], saved[n]) for n in saved)


def test_a_model_evaluated_as_loaded_has_no_ema(features):
    model = tiny_dit().requires_grad_(False)  # mode=eval, method=none: nothing trains
    gen = module(features, model=model)
    assert gen.ensure_ema() is None
    assert gen.generate(torch.tensor([0, 1]), seed=0).shape == (2, 1, 8, 8)


def test_adapted_model_averages_only_the_adapters_and_table(features):
    model = tiny_dit()
    targets = {"linear": {"include": [r"x_embedder\.proj", r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2|adaLN_modulation\.1)",
                                      r"final_layer\.(adaLN_modulation\.1|linear)"]}}
    report = inject(model, MethodSpec(name="onelora", linear="onelora"), target_sets=targets,
                    head=[r"y_embedder\.embedding_table"])
    gen = module(features, model=model)
    ema = gen.ensure_ema()
    assert sum(t.numel() for t in ema.shadow.values()) == report.trainable_params
    assert "y_embedder.embedding_table.weight" in ema.shadow
    batch = {"image": torch.rand(8, 1, 8, 8) * 2 - 1, "label": torch.arange(8) % 5}
    loss = gen.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_latent_space_through_a_vae(tmp_path, features):
    from fakes import write_tiny_vae

    from onelora.models.vae import build_vae

    vae = build_vae(str(write_tiny_vae(tmp_path / "vae")))
    gen = module(features, model=tiny_dit(in_channels=4), vae=vae)
    assert gen.clip_denoised is False and module(features).clip_denoised is True  # DiT: latents unclipped
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(0)
    assert gen.latents({"image": images, "label": torch.zeros(4)}).shape == (4, 4, 8, 8)
    cached = torch.randn(4, 4, 8, 8)
    assert gen.latents({"latent": cached, "label": torch.zeros(4)}) is cached
    loss = gen.training_step({"image": images, "label": torch.tensor([0, 1, 2, 3])}, 0)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    out = gen.generate(torch.tensor([1, 4]), seed=0)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1  # decoded to pixels


def test_guidance_and_settings_errors(features):
    gen = module(features, cfg_scale=3.0)
    assert gen.null_label == 5
    assert gen.generate(torch.tensor([0, 1]), seed=0).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="sampler"):
        module(features, sampler="euler")
    with pytest.raises(ValueError, match="num_classes=4 but the model's class table has 5"):
        module(features, num_classes=4)
