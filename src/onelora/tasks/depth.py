"""Monocular metric depth (the paper's Depth Anything transfers; the synthetic laptop transfer).

Training minimises the SILog loss on the batch's valid pixels; validation and test accumulate the
reference's metrics over the whole set (onelora.metrics.depth, where all the maths lives) and log
``val/<metric>`` and ``test/<metric>`` for a1, a2, a3, abs_rel, sq_rel, rmse, rmse_log, log_10 and
silog. Batches are the depth data modules' ``{"image", "depth", "mask"}`` dicts.

The metric range and crop come from the dataset (``dataset: nyu | kitti | diode_outdoor``, the
values of onelora.data.depth.DATASETS) unless given explicitly. A metric model's output scale
(Depth Anything: ``sigmoid * max_depth``) is set to the target's range, ``output_max_depth``
(default: ``max_depth``), before fine-tuning, as Depth Anything V2's metric recipe does per dataset.

``artifacts(run_dir, data)`` saves ``examples`` evenly spaced test images with their ground truth
and the prediction of the weights the runner loaded (the best round's), and draws them
(``predictions/depth_examples.npz``, ``depth_examples.png``: onelora.figures.depth_maps), for
the report's side-by-side of the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.depth import dataset_spec
from ..metrics.depth import DepthMetrics, clamp_prediction, evaluation_mask, resize_to, silog_loss
from .base import FineTuneModule


class DepthModule(FineTuneModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        dataset: str | None = None,
        min_depth: float | None = None,
        max_depth: float | None = None,
        eval_crop: str | None = "auto",
        output_max_depth: float | None = None,
        silog_beta: float = 0.15,
        flip_test: bool = False,
        examples: int = 4,
        **base_kwargs: Any,
    ):
        super().__init__(model, **base_kwargs)
        spec = dataset_spec(dataset) if dataset is not None else None
        if spec is None and (min_depth is None or max_depth is None or eval_crop == "auto"):
            raise ValueError(
                "DepthModule: give task.module.dataset (nyu | kitti | diode_outdoor) or all of min_depth, max_depth "
                "and eval_crop"
            )
        self.min_depth = float(spec.min_depth if min_depth is None else min_depth)  # type: ignore[union-attr]
        self.max_depth = float(spec.max_depth if max_depth is None else max_depth)  # type: ignore[union-attr]
        self.eval_crop = spec.eval_crop if eval_crop == "auto" else (None if eval_crop == "none" else eval_crop)  # type: ignore[union-attr]
        self.silog_beta, self.flip_test = float(silog_beta), bool(flip_test)
        self.examples = int(examples)
        settings = {"min_depth": self.min_depth, "max_depth": self.max_depth, "crop": self.eval_crop}
        self.val_metrics = DepthMetrics(**settings)
        self.test_metrics = DepthMetrics(**settings)
        self.output_max_depth = float(output_max_depth if output_max_depth is not None else self.max_depth)
        if hasattr(model, "max_depth"):
            model.max_depth = self.output_max_depth
        elif output_max_depth is not None:
            raise ValueError(f"DepthModule: output_max_depth given but {type(model).__name__} has no max_depth")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def predict_depth(self, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """The depth map; with ``flip``, averaged with the mirrored image's (the reference's evaluate.py)."""
        pred = self(images)
        if flip:
            pred = 0.5 * (pred + self(images.flip(-1)).flip(-1))
        return pred

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self(batch["image"])
        loss = silog_loss(pred, batch["depth"], batch["mask"], beta=self.silog_beta)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], metrics: DepthMetrics, stage: str, flip: bool) -> None:
        pred = self.predict_depth(batch["image"], flip=flip)
        metrics.update(pred, batch["depth"])
        loss = silog_loss(pred, batch["depth"], batch["mask"], beta=self.silog_beta)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(pred))

    def _log_epoch(self, metrics: DepthMetrics, stage: str) -> dict[str, float]:
        values = {f"{stage}/{name}": float(value) for name, value in metrics.compute().items()}
        metrics.reset()
        self.log_dict(values, sync_dist=True)  # already synced by torchmetrics: the mean of equal values
        return values

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val", flip=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test", flip=self.flip_test)

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, "test")

    # -- artifacts ------------------------------------------------------------------------------
    @torch.no_grad()
    def artifacts(self, run_dir: str | Path, data: Any = None) -> list[Path]:
        """``predictions/depth_examples.npz`` and ``depth_examples.png``: ``examples`` evenly spaced
        test images (the same for every run of the task), their ground truth and this model's
        prediction at the ground truth's resolution, clamped as the metric clamps it."""
        from ..figures.depth_maps import EXAMPLES_FILE, example_indices, load_examples, run_figure, save_examples
        from ..figures.figtools import save_figure

        dataset = getattr(data, "test_set", None)
        if dataset is None and data is not None and hasattr(data, "setup"):
            data.setup("test")
            dataset = getattr(data, "test_set", None)
        if not self.examples or dataset is None or len(dataset) == 0:
            return []
        indices = example_indices(len(dataset), self.examples)
        rgb, depth, valid, evaluated, pred = [], [], [], [], []
        was_training = self.training
        self.eval()
        try:
            for index in indices:
                item = dataset[index]
                gt = item["depth"][None].float()  # (1,1,H,W)
                out = self.predict_depth(item["image"][None].to(self.device), flip=self.flip_test).float().cpu()
                out = clamp_prediction(resize_to(out, gt.shape[-2:]), self.min_depth, self.max_depth)
                image = _display_rgb(item["image"], getattr(dataset, "mean", None), getattr(dataset, "std", None))
                image = resize_to(image[None], gt.shape[-2:])[0]
                rgb.append(image.permute(1, 2, 0).numpy())
                depth.append(gt[0, 0].numpy())
                valid.append(((gt > self.min_depth) & (gt < self.max_depth))[0, 0].numpy())
                evaluated.append(evaluation_mask(gt, self.min_depth, self.max_depth, self.eval_crop)[0, 0].numpy())
                pred.append(out[0, 0].numpy())
        finally:
            self.train(was_training)
        run_dir = Path(run_dir)
        npz = save_examples(run_dir / EXAMPLES_FILE, indices=indices, rgb=rgb, depth=depth, valid=valid,
                            evaluated=evaluated, pred=pred, min_depth=self.min_depth, max_depth=self.max_depth)
        step = self.weights_step
        rmse, absrel = self.test_metric("test/rmse"), self.test_metric("test/abs_rel")
        title = " · ".join(filter(None, [
            self.method_label or "model",
            "as loaded (not trained)" if step is None else f"weights of step {step}",
            None if rmse is None else f"test RMSE {rmse:.3f} m", None if absrel is None else f"AbsRel {absrel:.4f}",
        ]))
        png = save_figure(run_figure(load_examples(npz), title), run_dir / "depth_examples.png")
        return [npz, png]


def _display_rgb(image: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """A normalised input image back in [0, 1] (its dataset's mean / std; else stretched)."""
    if mean is not None and std is not None:
        return (image * torch.as_tensor(std).view(3, 1, 1) + torch.as_tensor(mean).view(3, 1, 1)).clamp(0, 1)
    lo, hi = image.min(), image.max()
    return (image - lo) / (hi - lo).clamp_min(1e-6)
