"""DepthModule's steps on the tiny Depth Anything, without the runner."""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from onelora.data.depth import SplitFileDepthDataModule
from onelora.data.synthetic.depth import SPLIT_FILES, ensure_synthetic_depth
from onelora.metrics.depth import METRIC_NAMES, DepthMetrics, silog_loss
from onelora.models.depth_anything import build_depth_anything
from onelora.tasks.base import FineTuneModule
from onelora.tasks.depth import DepthModule

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
METRIC = {"name": "rmse", "direction": "min", "val_key": "val/rmse", "test_key": "test/rmse"}


def tiny_model() -> torch.nn.Module:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "tiny_depth_anything.yaml"), resolve=True)
    torch.manual_seed(0)
    return build_depth_anything({"arch": cfg["arch"], "pretrained": None}, load_weights=False)


def base_kwargs(lr: float = 1e-3) -> dict:
    """The base class's own arguments (its constructor is being rewritten: build for whichever is here)."""
    params = inspect.signature(FineTuneModule.__init__).parameters
    if "optimizer" in params:
        return {"optimizer": partial(torch.optim.AdamW, lr=lr), "metric": METRIC}
    return {"optim": {"lr": lr}, "metric": METRIC}


@pytest.fixture(scope="module")
def indoor(tmp_path_factory) -> SplitFileDepthDataModule:
    root = ensure_synthetic_depth(tmp_path_factory.mktemp("synthetic"), "indoor", "nyu", n_train=10, n_test=4, seed=0, size=56)
    train_list, test_list = SPLIT_FILES["nyu"]
    dm = SplitFileDepthDataModule(dataset="nyu", root=str(root), train_list=str(root / train_list),
                                  test_list=str(root / test_list), batch_size=4, input_size=56, val_fraction=0.2,
                                  eval_crop=None)
    dm.setup()
    return dm


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # steps called directly, no Trainer
def test_training_step_loss_is_finite_and_decreases(indoor):
    module = DepthModule(tiny_model(), dataset="nyu", **base_kwargs())
    assert module.model.max_depth == 10.0  # the output scale follows the target's range
    torch.manual_seed(0)  # shuffling and augmentation
    batch = next(iter(indoor.train_dataloader()))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        loss = module.training_step(batch, step)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_validation_and_test_log_every_metric(indoor):
    module = DepthModule(tiny_model(), dataset="nyu", eval_crop=None, **base_kwargs())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    val = trainer.validate(module, dataloaders=indoor.val_dataloader(), verbose=False)[0]
    test = trainer.test(module, dataloaders=indoor.test_dataloader(), verbose=False)[0]
    for name in METRIC_NAMES:
        assert f"val/{name}" in val and f"test/{name}" in test
    assert "val/loss" in val and "test/loss" in test
    # the logged numbers are the accumulator's over the whole set
    reference = DepthMetrics(min_depth=1e-3, max_depth=10.0, crop=None)
    module.eval()
    with torch.no_grad():
        for batch in indoor.test_dataloader():
            reference.update(module(batch["image"]), batch["depth"])
    expected = reference.compute()
    for name in METRIC_NAMES:
        assert test[f"test/{name}"] == pytest.approx(float(expected[name]), rel=1e-5), name
    assert 0 < test["test/rmse"] < 10 and 0 <= test["test/a1"] <= 1


def test_flip_test_averages_the_mirrored_prediction():
    module = DepthModule(tiny_model(), dataset="kitti", flip_test=True, **base_kwargs()).eval()
    assert module.model.max_depth == 80.0 and module.eval_crop == "garg"
    images = torch.randn(2, 3, 28, 56)
    with torch.no_grad():
        plain = module(images)
        flipped = module(images.flip(-1)).flip(-1)
        assert torch.allclose(module.predict_depth(images, flip=True), 0.5 * (plain + flipped))


def test_settings_and_errors():
    module = DepthModule(tiny_model(), min_depth=0.5, max_depth=20.0, eval_crop=None, output_max_depth=40.0, **base_kwargs())
    assert module.model.max_depth == 40.0 and module.val_metrics.max_depth == 20.0 and module.eval_crop is None
    with pytest.raises(ValueError, match="give task.module.dataset"):
        DepthModule(tiny_model(), max_depth=10.0, **base_kwargs())
    with pytest.raises(ValueError, match="must be one of"):
        DepthModule(tiny_model(), dataset="nyu2", **base_kwargs())
    with pytest.raises(ValueError, match="has no max_depth"):
        DepthModule(torch.nn.Conv2d(3, 1, 1), dataset="nyu", output_max_depth=5.0, **base_kwargs())


def test_depth_mini_config_counts_and_steps_fast(tmp_path):
    """conf/model/depth_mini.yaml: the count its comment states, 56 x 56 in and out, a cheap step."""
    import time

    from hydra import compose, initialize_config_dir

    from onelora.adapters import MethodSpec, inject

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = OmegaConf.to_container(compose(config_name="depth_mini"), resolve=True)
    assert cfg["name"] == "depth_mini" and cfg["pretrained"] is None
    torch.manual_seed(0)
    model = build_depth_anything(cfg, load_weights=True)
    assert sum(p.numel() for p in model.parameters()) == 598_281
    assert sum(p.numel() for p in model.pretrained.parameters()) == 468_960
    assert model.pretrained.patch_embed.patch_size == (7, 7) and len(model.pretrained.blocks) == 4
    report = inject(build_depth_anything(cfg, load_weights=False), MethodSpec(name="onelora", linear="onelora"),
                    target_sets=cfg["target_sets"], head=cfg["head"])
    assert report.adapted_layers == 16 and report.trainable_params == 3_456
    module = DepthModule(model, dataset="nyu", **base_kwargs())
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    batch = {"image": torch.randn(32, 3, 56, 56), "depth": torch.rand(32, 1, 56, 56) * 9 + 0.5}
    batch["mask"] = torch.ones_like(batch["depth"], dtype=torch.bool)
    cpu = []
    for step in range(3):
        start = time.process_time()
        loss = silog_loss(module(batch["image"]), batch["depth"], batch["mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        cpu.append(time.process_time() - start)
    assert module(batch["image"][:1]).shape == (1, 56, 56)
    assert min(cpu[1:]) < 1.0, cpu  # ~0.25 s CPU with one thread (CPU time: robust to a busy machine)


def test_artifacts_save_and_draw_fixed_test_examples(indoor, tmp_path):
    """The examples a report compares across runs: the same evenly spaced test images, their ground
    truth, the prediction at the ground truth's resolution (clamped as the metric clamps it), and a
    figure of RGB | ground truth | prediction | error per image with invalid pixels masked."""
    import matplotlib.pyplot as plt
    import numpy as np

    from onelora.figures.depth_maps import EXAMPLES_FILE, load_examples, run_figure

    module = DepthModule(tiny_model(), dataset="nyu", eval_crop="eigen", examples=3, **base_kwargs())
    written = module.artifacts(tmp_path, indoor)
    assert [p.name for p in written] == ["depth_examples.npz", "depth_examples.png"]
    ex = load_examples(tmp_path / EXAMPLES_FILE)
    assert list(ex["indices"]) == [0, 2, 3]  # 3 of the 4 test images, evenly spaced: any run picks these
    for i, index in enumerate(ex["indices"]):
        item = indoor.test_set[int(index)]
        gt = item["depth"][0].numpy()
        assert ex["depth"][i].shape == gt.shape == ex["pred"][i].shape and ex["rgb"][i].shape == (*gt.shape, 3)
        np.testing.assert_allclose(ex["depth"][i], gt, rtol=1e-3, atol=1e-3)  # float16
        with torch.no_grad():
            module.eval()
            pred = module(item["image"][None])
        from onelora.metrics.depth import clamp_prediction, resize_to
        pred = clamp_prediction(resize_to(pred, gt.shape), 1e-3, 10.0)[0, 0].numpy()
        np.testing.assert_allclose(ex["pred"][i], pred, rtol=2e-3, atol=2e-3)
        assert (ex["valid"][i] == ((gt > 1e-3) & (gt < 10.0))).all()
        assert ex["evaluated"][i].sum() < ex["valid"][i].sum()  # the Eigen crop leaves the border out
    fig = run_figure(ex, "title")
    try:
        images = [ax for ax in fig.axes if ax.images]
        assert len(images) == 3 * 4  # per image: RGB, ground truth, prediction, error
        assert [ax.get_title() for ax in images[:4]] == ["RGB", "ground truth", "prediction", "absolute error"]
        gt_im, pred_im, err_im = (images[k].images[0] for k in (1, 2, 3))
        assert (np.ma.getmaskarray(gt_im.get_array()) == ~ex["valid"][0]).all()
        assert (np.ma.getmaskarray(err_im.get_array()) == ~ex["evaluated"][0]).all()
        assert gt_im.get_clim() == pred_im.get_clim()  # one depth scale per row
        bars = [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.get_ylabel()]
        assert bars.count("depth (m)") == 3 and bars.count("|error| (m)") == 3
    finally:
        plt.close(fig)
