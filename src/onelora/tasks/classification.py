"""Image classification (the paper's ViT-B/16 on CIFAR-10/100; the embedded digits default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from .base import FineTuneModule


class ClassificationModule(FineTuneModule):
    """Cross-entropy training; accuracy in percent, as the paper's tables print it."""

    def __init__(self, model: torch.nn.Module, *, num_classes: int, **base: Any):
        super().__init__(model, **base)
        self.num_classes = int(num_classes)
        self.val_accuracy = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(self.num_classes, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return getattr(out, "logits", out)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, accuracy: MulticlassAccuracy, stage: str) -> None:
        images, labels = batch
        logits = self(images)
        accuracy.update(logits, labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), sync_dist=True)

    @staticmethod
    def _epoch_accuracy(accuracy: MulticlassAccuracy) -> float:
        value = float(accuracy.compute()) * 100
        accuracy.reset()
        return value

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_accuracy, "val")

    def on_validation_epoch_end(self):
        self.log("val/accuracy", self._epoch_accuracy(self.val_accuracy), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_accuracy, "test")

    def on_test_epoch_end(self):
        self.log("test/accuracy", self._epoch_accuracy(self.test_accuracy), sync_dist=True)

    @torch.no_grad()
    def artifacts(self, run_dir: Path, data: Any) -> None:
        """``predictions/val.npz``: validation logits and labels of these (the best round's) weights,
        for the calibration analysis (Fig. 11)."""
        was_training = self.training
        self.eval()
        logits, labels = [], []
        for images, target in data.val_dataloader():
            logits.append(self(images.to(self.device)).float().cpu())
            labels.append(target)
        self.train(was_training)
        folder = Path(run_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "val.npz", logits=torch.cat(logits).numpy(), labels=torch.cat(labels).numpy())
