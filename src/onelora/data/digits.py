"""The embedded default's data: scikit-learn's 8x8 digits, shipped inside scikit-learn.

A transfer protocol in miniature, like the paper's: a backbone is pre-trained on the *source*
split (digits 0-4, upright) and fine-tuned on the *target* split (digits 5-9, rotated 90
degrees, relabelled 0-4). The target split is stratified 50/50 into train and test with a fixed
``split_seed`` (the same for every run seed, so methods see the same data), and a stratified
``val_fraction`` of the training half is held out for model selection.
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

#: the transfer in miniature: pre-train on the source classes, fine-tune on the target classes
SPLITS = {"source": (0, 1, 2, 3, 4), "target": (5, 6, 7, 8, 9)}


class ShiftedDigits(Dataset):
    """Images with optional random +-``shift`` pixel translations (zero padded), for pre-training."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0):
        self.images, self.labels, self.shift = images, labels, int(shift)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.shift:
            dy, dx = (int(v) for v in torch.randint(-self.shift, self.shift + 1, (2,)))
            padded = torch.nn.functional.pad(image, (self.shift,) * 4)
            h, w = image.shape[-2:]
            image = padded[:, self.shift + dy : self.shift + dy + h, self.shift + dx : self.shift + dx + w]
        return image, self.labels[index]


def digits_images(split: str | None = None, *, rotate: int = 0, mean: float = 0.5,
                  std: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 1, 8, 8) float32 images ``(x / 16 - mean) / std`` (in [-1, 1]
    by default) and their labels: all ten classes, or the classes of ``split`` relabelled from 0,
    optionally rotated by ``rotate`` degrees (a multiple of 90). The one loader of the digits: the
    classification and generation tasks and the FID features all read them here."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        classes = SPLITS[split]
        keep = np.isin(labels, classes)
        images, labels = images[keep], labels[keep] - min(classes)
    images = images / 16.0
    if rotate:
        images = np.rot90(images, k=rotate // 90, axes=(1, 2))
    x = torch.tensor(np.ascontiguousarray(images), dtype=torch.float32)[:, None]
    return (x - mean) / std, torch.tensor(labels, dtype=torch.long)


class DigitsDataModule(L.LightningDataModule):
    num_classes = 5

    def __init__(
        self,
        split: str = "target",
        rotate: int = 90,
        batch_size: int = 32,
        val_fraction: float = 0.125,
        test_fraction: float = 0.5,
        split_seed: int = 0,
        shift: int = 0,
        num_workers: int = 0,
        model_input: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if not 0 < float(val_fraction) < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if not 0 <= float(test_fraction) < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        if int(rotate) % 90:
            raise ValueError(f"rotate must be a multiple of 90 degrees, got {rotate}")
        self.split, self.rotate, self.batch_size = split, int(rotate), int(batch_size)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.shift, self.num_workers = shift, num_workers
        model_input = dict(model_input or {"mean": [0.5], "std": [0.5]})
        self.mean, self.std = float(model_input["mean"][0]), float(model_input["std"][0])

    def setup(self, stage: str | None = None) -> None:
        from sklearn.model_selection import train_test_split

        x, y = digits_images(self.split, rotate=self.rotate, mean=self.mean, std=self.std)
        index = np.arange(len(y))
        train_idx, test_idx = (index, index[:0])
        if self.test_fraction:
            train_idx, test_idx = train_test_split(
                index, test_size=self.test_fraction, stratify=y, random_state=self.split_seed
            )
        train_idx, val_idx = train_test_split(
            train_idx, test_size=self.val_fraction, stratify=y[train_idx], random_state=self.split_seed
        )
        self.train_set = ShiftedDigits(x[train_idx], y[train_idx], self.shift)
        self.val_set = ShiftedDigits(x[val_idx], y[val_idx])
        self.test_set = ShiftedDigits(x[test_idx], y[test_idx]) if len(test_idx) else None

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set if self.test_set is not None else self.val_set, False)
