"""Data for class-conditional image generation: Food-101 as it ships, and scikit-learn's digits.

Batches are dicts: ``{"image": (N, C, H, W) in [-1, 1], "label": (N,)}``, or, for training from a
latent cache, ``{"latent": ..., "label": ...}``. The validation and test loaders give the real
images FID compares against (pixels, never latents); which images those are is a setting, because
FID protocols differ (DiffFit measures against the training images).

- :class:`Food101GenerationDataModule`: ``<root>/food-101/images/<class>/<id>.jpg`` with
  ``meta/{train,test}.json`` (read by torchvision's ``Food101``) or, where only those ship,
  ``meta/{train,test}.txt``; DiT's ADM centre crop to the image size, random horizontal flip for
  training, Normalize(0.5). With a VAE part and a ``cache_dir`` the training set is encoded once
  (each image and its flip) and training reads the latents.
- :class:`DigitsGenerationDataModule`: the laptop-sized transfer. Source: digits 0-4 (pre-training),
  target: digits 5-9 relabelled 0-4 (fine-tuning with a new class table); 8x8 single-channel images
  in [-1, 1]; a stratified, seeded held-out half for the test FID.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .digits import SPLITS, digits_images
from .errors import missing_data

# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


def center_crop_arr(image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop (what DiT trains with): halve with a box filter while the short side is
    at least twice the size, bicubic-resize the short side to ``image_size``, crop the centre."""
    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    array = np.array(image)
    top, left = (array.shape[0] - image_size) // 2, (array.shape[1] - image_size) // 2
    return Image.fromarray(array[top:top + image_size, left:left + image_size])


def dit_transform(image_size: int, *, train: bool):
    """DiT's train.py transform (centre crop, flip, [-1, 1]); evaluation images are not flipped."""
    from torchvision import transforms as T

    steps: list[Any] = [T.Lambda(lambda image: center_crop_arr(image.convert("RGB"), image_size))]
    if train:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])]
    return T.Compose(steps)


class LabelledImages(Dataset):
    """``{"image", "label"}`` items from a dataset of ``(image, label)`` pairs (optionally a subset)."""

    def __init__(self, base: Dataset, indices: list[int] | None = None):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.base[self.indices[index] if self.indices is not None else index]
        return {"image": image, "label": torch.as_tensor(label, dtype=torch.long)}


def _first(count: int | None, n: int, seed: int) -> list[int] | None:
    """A seeded random subset of ``count`` of ``n`` indices (None: all)."""
    if count is None or count >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].sort().values.tolist()


# ---------------------------------------------------------------------------------------------
# Food-101
# ---------------------------------------------------------------------------------------------

FOOD101_EXPECTS = "food-101/images/<class>/<id>.jpg and food-101/meta/{train,test}.json (or .txt)"
FOOD101_HOW = (
    "download http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz (5 GB) and extract it under the root "
    "(`tar xzf food-101.tar.gz -C <root>`), or run `torchvision.datasets.Food101('<root>', download=True)` once "
    "on a machine with internet"
)


class Food101Files(Dataset):
    """Food-101 from ``meta/<split>.txt`` lines ``<class>/<id>`` (for copies without the .json files);
    classes sorted by name, as torchvision's ``Food101``."""

    def __init__(self, root: str | Path, split: str, transform: Any = None):
        base = Path(root) / "food-101"
        lines = [ln.strip() for ln in (base / "meta" / f"{split}.txt").read_text().splitlines() if ln.strip()]
        self.classes = sorted({ln.split("/")[0] for ln in lines})
        index = {name: i for i, name in enumerate(self.classes)}
        self.files = [base / "images" / f"{ln}.jpg" for ln in lines]
        self.labels = [index[ln.split("/")[0]] for ln in lines]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = Image.open(self.files[index]).convert("RGB")
        return (self.transform(image) if self.transform else image), self.labels[index]


def open_food101(root: str | Path, split: str, transform: Any = None) -> Dataset:
    """torchvision's ``Food101`` where the .json metadata is there, else the .txt lists; a missing
    dataset raises :class:`MissingDataError` naming the path and how to get it."""
    base = Path(root).expanduser() / "food-101"
    meta, images = base / "meta", base / "images"
    if not images.is_dir() or not meta.is_dir():
        raise missing_data("Food-101", base.resolve(), FOOD101_EXPECTS, FOOD101_HOW)
    if (meta / f"{split}.json").is_file():
        from torchvision.datasets import Food101

        return Food101(str(Path(root).expanduser()), split=split, transform=transform, download=False)
    if (meta / f"{split}.txt").is_file():
        return Food101Files(Path(root).expanduser(), split, transform)
    raise missing_data("Food-101", meta.resolve() / f"{split}.json", FOOD101_EXPECTS, FOOD101_HOW)


def food101_classes(root: str | Path) -> list[str]:
    meta = Path(root).expanduser() / "food-101" / "meta"
    if (meta / "train.json").is_file():
        return sorted(json.loads((meta / "train.json").read_text()))
    return Food101Files(root, "train").classes


class Food101GenerationDataModule(L.LightningDataModule):
    """Food-101 for DiT fine-tuning (DiffFit's setting: 101 classes at 256 px).

    ``val_reference`` / ``test_reference``: the split whose real images FID is measured against
    ("train": DiffFit's protocol, or "test"), ``val_size`` / ``test_size`` how many of them (a
    seeded subset; None = all). ``vae``: the task's VAE part; with a real VAE and ``cache_dir``
    the training images are encoded once (with their flips when ``hflip``) and training reads latents.
    """

    num_classes = 101

    def __init__(
        self,
        root: str,
        *,
        image_size: int | None = None,
        model_input: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        vae: Any = None,
        cache_dir: str | None = None,
        hflip: bool = True,
        val_reference: str = "train",
        val_size: int | None = 10_000,
        test_reference: str = "train",
        test_size: int | None = None,
        split_seed: int = 0,
        num_workers: int = 4,
    ):
        super().__init__()
        for key, value in (("val_reference", val_reference), ("test_reference", test_reference)):
            if value not in ("train", "test"):
                raise ValueError(f"task.data.{key} must be 'train' or 'test', got {value!r}")
        size = image_size if image_size is not None else (model_input or {}).get("size")
        if size is None:
            raise ValueError("task.data.image_size: not set and the model declares no input size")
        self.root, self.image_size = root, int(size)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.vae, self.cache_dir, self.hflip = vae, cache_dir, bool(hflip)
        self.val_reference, self.val_size = val_reference, val_size
        self.test_reference, self.test_size = test_reference, test_size
        self.split_seed, self.num_workers = int(split_seed), int(num_workers)
        self.latent_cache: Path | None = None

    @property
    def uses_latent_cache(self) -> bool:
        return self.vae is not None and not getattr(self.vae, "is_identity", False) and self.cache_dir is not None

    def dataset_key(self, split: str) -> str:
        return f"food101|{Path(self.root).expanduser().resolve()}|{split}|{self.image_size}"

    def prepare_data(self) -> None:
        """Fail fast when the data is absent; encode the training latents once (rank 0)."""
        train = open_food101(self.root, "train", dit_transform(self.image_size, train=False))
        open_food101(self.root, "test")
        if self.uses_latent_cache:
            from .latents import cache_latents, latent_cache_path

            key = f"{self.dataset_key('train')}|n={len(train)}"
            self.latent_cache = cache_latents(train, self.vae, latent_cache_path(self.cache_dir, key, self.vae),
                                              dataset_key=key, hflip=self.hflip, batch_size=self.eval_batch_size,
                                              num_workers=self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        eval_transform = dit_transform(self.image_size, train=False)
        if self.uses_latent_cache:
            from .latents import LatentDataset, latent_cache_path

            if self.latent_cache is None:  # another process ran prepare_data
                n = len(open_food101(self.root, "train"))
                key = f"{self.dataset_key('train')}|n={n}"
                self.latent_cache = latent_cache_path(self.cache_dir, key, self.vae)
            self.train_set: Dataset = LatentDataset(self.latent_cache, hflip=self.hflip)
        else:
            self.train_set = LabelledImages(open_food101(self.root, "train", dit_transform(self.image_size, train=True)))
        references = {split: open_food101(self.root, split, eval_transform) for split in {self.val_reference, self.test_reference}}
        val = references[self.val_reference]
        test = references[self.test_reference]
        self.val_set = LabelledImages(val, _first(self.val_size, len(val), self.split_seed))
        self.test_set = LabelledImages(test, _first(self.test_size, len(test), self.split_seed + 1))

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------


class TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


class DigitsGenerationDataModule(L.LightningDataModule):
    """scikit-learn digits for class-conditional generation (5 classes per split).

    The split's images are divided (stratified, ``split_seed``) into train and a held-out test part
    (``test_fraction``) that the test FID is measured against; ``val_fraction`` holds out a
    validation part of the training images, and when it is 0 the validation FID is measured
    against the training images themselves (DiffFit's protocol; ~450 images beat a noisy ~60).

    ``steps_per_epoch``: how many batches one training epoch draws (reshuffled passes over the
    training images, each image once per pass); None: one pass (7 batches of 64). Lightning
    validates, checkpoints and restarts its loader once per epoch, so with a step budget one epoch
    per validation round (e.g. 500 steps) is what a run wants, not a round of work every 7 steps.
    """

    num_classes = 5

    def __init__(
        self,
        split: str = "target",
        *,
        batch_size: int = 64,
        eval_batch_size: int = 500,
        test_fraction: float = 0.5,
        val_fraction: float = 0.0,
        split_seed: int = 0,
        steps_per_epoch: int | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise ValueError(f"task.data.steps_per_epoch must be >= 1 (or null: one pass), got {steps_per_epoch}")
        if split not in SPLITS:
            raise ValueError(f"task.data.split must be one of {sorted(SPLITS)}, got {split!r}")
        for key, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"task.data.{key} must be in [0, 1), got {value}")
        self.split, self.batch_size, self.eval_batch_size = split, int(batch_size), int(eval_batch_size)
        self.test_fraction, self.val_fraction = float(test_fraction), float(val_fraction)
        self.split_seed, self.num_workers = int(split_seed), int(num_workers)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)

    def setup(self, stage: str | None = None) -> None:
        from sklearn.model_selection import train_test_split

        images, labels = digits_images(self.split)  # in [-1, 1]
        index = np.arange(len(labels))
        train_idx, test_idx = index, index[:0]
        if self.test_fraction:
            train_idx, test_idx = train_test_split(index, test_size=self.test_fraction, stratify=labels.numpy(),
                                                   random_state=self.split_seed)
        val_idx = None
        if self.val_fraction:
            train_idx, val_idx = train_test_split(train_idx, test_size=self.val_fraction,
                                                  stratify=labels.numpy()[train_idx], random_state=self.split_seed)
        self.train_set = TensorImages(images[train_idx], labels[train_idx])
        self.val_set = TensorImages(images[val_idx], labels[val_idx]) if val_idx is not None else self.train_set
        self.test_set = TensorImages(images[test_idx], labels[test_idx]) if len(test_idx) else self.val_set

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        if self.steps_per_epoch is None:
            return self._loader(self.train_set, True, self.batch_size)
        # whole reshuffled passes, the last one cut: every image once per pass, as plain shuffling
        sampler = RandomSampler(self.train_set, num_samples=self.steps_per_epoch * self.batch_size)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)
