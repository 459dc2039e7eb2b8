"""Depth datasets as they ship, read the way Depth Anything's metric_depth (ZoeDepth) reads them.

- **NYU Depth v2** and **KITTI**: split files of ``rgb depth focal`` lines (the reference's
  ``train_test_inputs/*_files_with_gt.txt``), paths relative to an image and a depth folder (a
  leading ``/`` is ignored). NYU depth: uint16 PNG in millimetres (/1000). KITTI depth: uint16 PNG
  /256, 0 = no LiDAR return; lines whose depth is ``None`` (45 of the 697 test lines) are skipped.
  KITTI images are KB-cropped to 352 x 1216 (bottom rows, centred columns) as in the reference.
- **DIODE outdoor**: ``<root>/<split>/outdoor/<scene>/<scan>/<name>.png`` with ``<name>_depth.npy``
  (H,W,1 float metres) and ``<name>_depth_mask.npy``. The reference loader ignores the mask and uses
  only the depth range; ``use_depth_mask=True`` applies it too.

Input size: ``input_size`` (an int for a square, or [h, w]; default the model input block's ``size``),
each side rounded to a multiple of the model's patch (``patch_size``, else ``model_input.patch_size``,
else 14). Mean / std: the model input block's (ImageNet's by default).

A sample is ``{"image": (3,h,w) normalised, resized to the model's input, "depth": (1,H,W) metres at
the ground truth's own resolution, "mask": (1,H,W) bool, min_depth < depth < max_depth}``: the loss
and the metrics upsample the prediction to the ground truth, as the reference does (its model
resizes the input to ``img_size`` inside its forward; we resize in the loader, which is the same).

Training augmentation (``train_preprocess``/``augment_image`` of the reference): a rotation uniform
in +-``rotate_degrees`` (image bilinear, depth nearest), a horizontal flip with p=0.5, and with
p=0.5 a gamma (0.9-1.1), brightness (NYU 0.75-1.25, else 0.9-1.1) and per-channel colour (0.9-1.1)
change, clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .crops import crop_box
from .errors import MissingDataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DepthDatasetSpec:
    """What the reference's ``DATASETS_CONFIG`` says about one dataset."""

    name: str
    min_depth: float
    max_depth: float
    eval_crop: str | None  # see onelora.data.crops.crop_box
    brightness: tuple[float, float]
    depth_format: str  # png_mm (NYU) | png_256 (KITTI) | npy (DIODE)
    kb_crop: tuple[int, int] | None  # (height, width) or None
    image_dir: str = ""  # the training list's folders under root (the reference's data_path / gt_path)
    depth_dir: str = ""
    test_image_dir: str | None = None  # the test list's (data_path_eval / gt_path_eval); None: as training
    test_depth_dir: str | None = None
    focal: float = 0.0  # the split files' focal length at the original width (the synthetic writer scales it)
    width: int = 0
    height: int = 0  # the original images' height (with ``width``: the ground truth's size before any crop)


DATASETS: dict[str, DepthDatasetSpec] = {
    "nyu": DepthDatasetSpec(
        "nyu", 1e-3, 10.0, "eigen", (0.75, 1.25), "png_mm", None, image_dir="sync", depth_dir="sync",
        test_image_dir="official_splits/test", test_depth_dir="official_splits/test", focal=518.8579, width=640,
        height=480,
    ),
    "kitti": DepthDatasetSpec(
        "kitti", 1e-3, 80.0, "garg", (0.9, 1.1), "png_256", (352, 1216),
        image_dir="raw_data", depth_dir="data_depth_annotated_zoedepth", focal=721.5377, width=1242,
        height=375,
    ),
    "diode_outdoor": DepthDatasetSpec("diode_outdoor", 1e-3, 80.0, "garg", (0.9, 1.1), "npy", None, width=1024, height=768),
}
GAMMA_RANGE = (0.9, 1.1)
COLOUR_RANGE = (0.9, 1.1)
VAL_FROM = ("train", "test")


def dataset_spec(name: str) -> DepthDatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"depth dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


@dataclass(frozen=True)
class DepthSample:
    image: Path
    depth: Path
    mask: Path | None = None  # DIODE's validity mask


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def read_split_file(path: str | Path) -> list[tuple[str, str | None, float]]:
    """``rgb depth focal`` lines -> (rgb, depth or None, focal); a bad line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(
            f"depth split file not found: {path}. It lists `rgb depth focal` per line (Depth Anything's "
            f"metric_depth/train_test_inputs/*_files_with_gt.txt); point task.data.train_list / test_list at it."
        )
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3:
            raise ValueError(f"{path}:{number}: expected `rgb depth focal`, got {line!r}")
        try:
            focal = float(fields[2])
        except ValueError:
            raise ValueError(f"{path}:{number}: the focal length {fields[2]!r} is not a number") from None
        entries.append((fields[0], None if fields[1] == "None" else fields[1], focal))
    if not entries:
        raise ValueError(f"depth split file {path} has no lines")
    return entries


def _under(root: Path, relative: str) -> Path:
    return root / relative.lstrip("/\\")


def check_files_exist(samples: Sequence[DepthSample], listed_in: str | Path) -> None:
    """One error for every missing file (the first few named), before any training starts."""
    missing = [p for s in samples for p in (s.image, s.depth, s.mask) if p is not None and not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise MissingDataError(
            f"{len(missing)} file(s) listed in {listed_in} are missing, e.g. {shown}. Check task.data.root and the "
            f"image / depth folders (the paths in the list are relative to them)."
        )


def read_rgb(path: Path) -> np.ndarray:
    """(H,W,3) float32 in [0, 1]."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "RGBA", "L", "P", "CMYK", "YCbCr"):
                raise ValueError(f"image {path}: mode {img.mode} is not an 8-bit colour image")
            return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise MissingDataError(f"image not found: {path}") from None


def read_depth_png(path: Path, divisor: float) -> np.ndarray:
    """A 16-bit single-channel PNG -> (H,W) float32 metres (NYU: mm, /1000; KITTI: /256)."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            depth = np.asarray(img)
    except FileNotFoundError:
        raise MissingDataError(f"depth file not found: {path}") from None
    if depth.ndim != 2 or mode not in ("I;16", "I;16B", "I;16L", "I") or depth.dtype.kind not in "iu":
        raise ValueError(
            f"depth file {path}: expected a 16-bit single-channel PNG (uint16, depth x {divisor:g}), got mode {mode}, "
            f"shape {depth.shape}, dtype {depth.dtype}"
        )
    return depth.astype(np.float32) / divisor


def read_depth_npy(path: Path) -> np.ndarray:
    """DIODE's ``_depth.npy``: (H,W,1) or (H,W) float metres -> (H,W) float32."""
    try:
        depth = np.load(path)
    except FileNotFoundError:
        raise MissingDataError(f"depth file not found: {path}") from None
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.dtype.kind != "f":
        raise ValueError(f"depth file {path}: expected (H, W, 1) float metres, got shape {depth.shape}, dtype {depth.dtype}")
    return depth.astype(np.float32)


def read_mask_npy(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = np.load(path)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != shape:
        raise ValueError(f"depth mask {path}: shape {mask.shape} differs from its depth map's {shape}")
    return mask > 0


def read_depth(sample: DepthSample, depth_format: str, use_mask: bool) -> np.ndarray:
    if depth_format == "png_mm":
        depth = read_depth_png(sample.depth, 1000.0)
    elif depth_format == "png_256":
        depth = read_depth_png(sample.depth, 256.0)
    elif depth_format == "npy":
        depth = read_depth_npy(sample.depth)
    else:
        raise ValueError(f"unknown depth format {depth_format!r}")
    if use_mask and sample.mask is not None:
        depth = np.where(read_mask_npy(sample.mask, depth.shape), depth, 0.0).astype(np.float32)
    return depth


def kb_crop(image: torch.Tensor, depth: torch.Tensor, size: Sequence[int], where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """KITTI's KB crop: the bottom ``size[0]`` rows, ``size[1]`` centred columns."""
    height, width = image.shape[-2:]
    ch, cw = int(size[0]), int(size[1])
    if height < ch or width < cw:
        raise ValueError(f"image {where} is {height}x{width}, smaller than the KB crop {ch}x{cw}: set task.data.kb_crop=null")
    top, left = height - ch, (width - cw) // 2
    return image[..., top : top + ch, left : left + cw], depth[..., top : top + ch, left : left + cw]


def snap_size(size: int | Sequence[int], patch_size: int) -> tuple[int, int]:
    """(h, w), each rounded to the nearest multiple of the patch size (at least one patch)."""
    hw = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    if len(hw) != 2:
        raise ValueError(f"input_size must be an int or [height, width], got {size!r}")
    return tuple(max(patch_size, int(round(s / patch_size)) * patch_size) for s in hw)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    rotate_degrees: float = 1.0
    flip_p: float = 0.5
    colour_p: float = 0.5
    brightness: tuple[float, float] = (0.9, 1.1)


def _uniform(low: float, high: float, n: int = 1) -> torch.Tensor:
    return low + (high - low) * torch.rand(n)


def augment_pair(image: torch.Tensor, depth: torch.Tensor, aug: Augment) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's training augmentation on (3,H,W) in [0,1] and (1,H,W) metres."""
    if aug.rotate_degrees:
        angle = float(_uniform(-aug.rotate_degrees, aug.rotate_degrees))
        image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
        depth = TF.rotate(depth, angle, interpolation=InterpolationMode.NEAREST)
    if float(torch.rand(1)) < aug.flip_p:
        image, depth = image.flip(-1), depth.flip(-1)
    if float(torch.rand(1)) < aug.colour_p:
        gamma = float(_uniform(*GAMMA_RANGE))
        brightness = float(_uniform(*aug.brightness))
        colours = _uniform(*COLOUR_RANGE, n=3).view(3, 1, 1)
        image = (image.clamp_min(0) ** gamma * brightness * colours).clamp(0, 1)
    return image, depth


class DepthImageDataset(Dataset):
    """Reads one sample per index; see the module docstring for what a sample is."""

    def __init__(
        self,
        samples: Sequence[DepthSample],
        *,
        depth_format: str,
        min_depth: float,
        max_depth: float,
        input_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        kb_crop_size: Sequence[int] | None = None,
        augment: Augment | None = None,
        use_depth_mask: bool = False,
    ):
        self.samples = list(samples)
        self.depth_format, self.min_depth, self.max_depth = depth_format, float(min_depth), float(max_depth)
        self.input_size = tuple(input_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.kb_crop_size, self.augment, self.use_depth_mask = kb_crop_size, augment, use_depth_mask

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        rgb = read_rgb(sample.image)
        depth_np = read_depth(sample, self.depth_format, self.use_depth_mask)
        if rgb.shape[:2] != depth_np.shape:
            raise ValueError(
                f"image {sample.image} is {rgb.shape[0]}x{rgb.shape[1]} but its depth {sample.depth} is "
                f"{depth_np.shape[0]}x{depth_np.shape[1]}"
            )
        image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        depth = torch.from_numpy(depth_np)[None]
        if self.kb_crop_size is not None:
            image, depth = kb_crop(image, depth, self.kb_crop_size, sample.image)
        if self.augment is not None:
            image, depth = augment_pair(image, depth, self.augment)
        mask = (depth > self.min_depth) & (depth < self.max_depth)
        if tuple(image.shape[-2:]) != self.input_size:
            image = F.interpolate(image[None], size=self.input_size, mode="bilinear", align_corners=True)[0]
        image = (image - self.mean) / self.std
        return {"image": image, "depth": depth.contiguous(), "mask": mask.contiguous()}


def collate_depth(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    sizes = {tuple(item["depth"].shape[-2:]) for item in batch}
    if len(sizes) > 1:
        raise ValueError(
            f"depth maps of different sizes in one batch ({sorted(sizes)}): KITTI needs its KB crop "
            f"(task.data.kb_crop) or an evaluation batch size of 1"
        )
    return default_collate(batch)


# ----------------------------------------------------------------------------------------------
# Data modules
# ----------------------------------------------------------------------------------------------


class _DepthDataModule(L.LightningDataModule):
    """What the depth data modules share: sizes, augmentation, validation split, loaders."""

    def __init__(
        self,
        spec: DepthDatasetSpec,
        *,
        batch_size: int,
        eval_batch_size: int | None,
        model_input: Mapping[str, Any] | None,
        input_size: int | Sequence[int] | None,
        patch_size: int | None,
        kb_crop: Sequence[int] | str | None,
        augment: bool,
        rotate_degrees: float,
        brightness: Sequence[float] | None,
        min_depth: float | None,
        max_depth: float | None,
        eval_crop: str | None,
        val_from: str,
        val_fraction: float,
        split_seed: int,
        num_workers: int,
        use_depth_mask: bool = False,
    ):
        super().__init__()
        self.spec = spec
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        model_input = dict(model_input or {})
        size = input_size if input_size is not None else model_input.get("size")
        if size is None:
            raise ValueError(f"{type(self).__name__}: no input_size and no model input size")
        # the model's patch: given here, or in its input block (`input.patch_size`), else Depth Anything's 14
        patch = patch_size if patch_size is not None else model_input.get("patch_size", 14)
        self.input_size = snap_size(size, int(patch))
        self.mean = tuple(model_input.get("mean", IMAGENET_MEAN))
        self.std = tuple(model_input.get("std", IMAGENET_STD))
        self.kb_crop = spec.kb_crop if kb_crop == "auto" else (tuple(int(s) for s in kb_crop) if kb_crop else None)
        self.min_depth = float(spec.min_depth if min_depth is None else min_depth)
        self.max_depth = float(spec.max_depth if max_depth is None else max_depth)
        self.eval_crop = spec.eval_crop if eval_crop == "auto" else (None if eval_crop in (None, "none") else eval_crop)
        crop_box(480, 640, self.eval_crop)  # an unknown crop name fails here, not after training
        bright = tuple(float(b) for b in (brightness if brightness is not None else spec.brightness))
        self.train_augment = Augment(rotate_degrees=float(rotate_degrees), brightness=bright) if augment else None  # type: ignore[arg-type]
        if val_from not in VAL_FROM:
            raise ValueError(f"task.data.val_from must be one of {list(VAL_FROM)}, got {val_from!r}")
        if val_from == "train" and not 0 < val_fraction < 1:
            raise ValueError(f"task.data.val_fraction must be in (0, 1), got {val_fraction}")
        self.val_from, self.val_fraction, self.split_seed = val_from, float(val_fraction), int(split_seed)
        self.num_workers = int(num_workers)
        self.use_depth_mask = bool(use_depth_mask)
        self.train_set = self.val_set = self.test_set = None

    # subclasses: the two lists of samples, checked to exist
    def train_test_samples(self) -> tuple[list[DepthSample], list[DepthSample]]:
        raise NotImplementedError

    @property
    def eval_settings(self) -> dict[str, Any]:
        """What the metric needs: the range and the crop."""
        return {"min_depth": self.min_depth, "max_depth": self.max_depth, "crop": self.eval_crop}

    def _dataset(self, samples: Sequence[DepthSample], train: bool) -> DepthImageDataset:
        return DepthImageDataset(
            samples,
            depth_format=self.spec.depth_format,
            min_depth=self.min_depth,
            max_depth=self.max_depth,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            kb_crop_size=self.kb_crop,
            augment=self.train_augment if train else None,
            use_depth_mask=self.use_depth_mask,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, test = self.train_test_samples()
        if self.val_from == "test":  # the reference validates on the test list (online_eval)
            val = test
        else:
            order = np.random.default_rng(self.split_seed).permutation(len(train))
            n_val = max(1, int(round(self.val_fraction * len(train))))
            if n_val >= len(train):
                raise ValueError(f"{type(self).__name__}: {len(train)} training samples cannot spare {n_val} for validation")
            val = [train[i] for i in sorted(order[:n_val])]
            train = [train[i] for i in sorted(order[n_val:])]
        self.train_set = self._dataset(train, train=True)
        self.val_set = self._dataset(val, train=False)
        self.test_set = self._dataset(test, train=False)

    def _loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_depth,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, batch_size=self.eval_batch_size, shuffle=False)


class SplitFileDepthDataModule(_DepthDataModule):
    """NYU Depth v2 or KITTI through the reference's split files.

    ``train_list`` / ``test_list``: absolute, or relative to ``root``. Paths in the lists are
    relative to ``root/image_dir`` and ``root/depth_dir`` (the test list's to
    ``test_image_dir`` / ``test_depth_dir`` where given). Defaults, the reference's ``data_path`` /
    ``gt_path`` (and ``*_eval``) layout: NYU (BTS's extraction) ``sync`` for training and
    ``official_splits/test`` for test; KITTI ``raw_data`` and ``data_depth_annotated_zoedepth`` for both.
    Lines with ``None`` depth are skipped (``skipped_lines`` counts them).
    """

    def __init__(
        self,
        *,
        dataset: str,
        root: str,
        train_list: str,
        test_list: str,
        image_dir: str | None = None,
        depth_dir: str | None = None,
        test_image_dir: str | None = None,
        test_depth_dir: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        model_input: Mapping[str, Any] | None = None,
        input_size: int | Sequence[int] | None = None,
        patch_size: int | None = None,
        kb_crop: Sequence[int] | str | None = "auto",
        augment: bool = True,
        rotate_degrees: float = 1.0,
        brightness: Sequence[float] | None = None,
        min_depth: float | None = None,
        max_depth: float | None = None,
        eval_crop: str | None = "auto",
        val_from: str = "train",
        val_fraction: float = 0.05,
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        spec = dataset_spec(dataset)
        if spec.depth_format == "npy":
            raise ValueError(f"dataset {dataset!r} has no split files: use DIODEDepthDataModule")
        super().__init__(
            spec,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            model_input=model_input,
            input_size=input_size,
            patch_size=patch_size,
            kb_crop=kb_crop,
            augment=augment,
            rotate_degrees=rotate_degrees,
            brightness=brightness,
            min_depth=min_depth,
            max_depth=max_depth,
            eval_crop=eval_crop,
            val_from=val_from,
            val_fraction=val_fraction,
            split_seed=split_seed,
            num_workers=num_workers,
        )
        self.root = Path(root).expanduser()
        # a relative list path is taken inside root (the synthetic sets keep their lists there)
        self.train_list, self.test_list = (self.root / Path(p).expanduser() for p in (train_list, test_list))
        # test folders: as given; else as the training folders given; else the dataset's own test folders
        if test_image_dir is None:
            test_image_dir = image_dir if image_dir is not None else (spec.test_image_dir or spec.image_dir)
        if test_depth_dir is None:
            test_depth_dir = depth_dir if depth_dir is not None else (spec.test_depth_dir or spec.depth_dir)
        image_dir = spec.image_dir if image_dir is None else image_dir
        depth_dir = spec.depth_dir if depth_dir is None else depth_dir
        self.dirs = {
            "train": (self.root / image_dir, self.root / depth_dir),
            "test": (self.root / test_image_dir, self.root / test_depth_dir),
        }
        self.skipped_lines = {"train": 0, "test": 0}

    def _samples(self, split: str, listed: Path) -> list[DepthSample]:
        if not self.root.is_dir():
            raise MissingDataError(
                f"dataset {self.spec.name} not found: {self.root} is not a folder. Put the data there (see the README's "
                f"depth section) or point the run at it with `task.data.root=<dir>`."
            )
        image_root, depth_root = self.dirs[split]
        samples = []
        for rgb, depth, _ in read_split_file(listed):
            if depth is None:  # KITTI frames without ground truth: the reference skips them
                self.skipped_lines[split] += 1
                continue
            samples.append(DepthSample(_under(image_root, rgb), _under(depth_root, depth)))
        if not samples:
            raise ValueError(f"{listed}: no line has a ground-truth depth file")
        check_files_exist(samples, listed)
        return samples

    def train_test_samples(self) -> tuple[list[DepthSample], list[DepthSample]]:
        return self._samples("train", self.train_list), self._samples("test", self.test_list)


class DIODEDepthDataModule(_DepthDataModule):
    """DIODE outdoor: every ``<scene>/<scan>/<name>.png`` under ``root/train_dir`` and ``root/test_dir``."""

    def __init__(
        self,
        *,
        root: str,
        train_dir: str = "train/outdoor",
        test_dir: str = "val/outdoor",
        use_depth_mask: bool = False,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        model_input: Mapping[str, Any] | None = None,
        input_size: int | Sequence[int] | None = None,
        patch_size: int | None = None,
        augment: bool = True,
        rotate_degrees: float = 1.0,
        brightness: Sequence[float] | None = None,
        min_depth: float | None = None,
        max_depth: float | None = None,
        eval_crop: str | None = "auto",
        val_from: str = "train",
        val_fraction: float = 0.05,
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(
            dataset_spec("diode_outdoor"),
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            model_input=model_input,
            input_size=input_size,
            patch_size=patch_size,
            kb_crop=None,
            augment=augment,
            rotate_degrees=rotate_degrees,
            brightness=brightness,
            min_depth=min_depth,
            max_depth=max_depth,
            eval_crop=eval_crop,
            val_from=val_from,
            val_fraction=val_fraction,
            split_seed=split_seed,
            num_workers=num_workers,
            use_depth_mask=use_depth_mask,
        )
        self.root = Path(root).expanduser()
        self.train_dir, self.test_dir = self.root / train_dir, self.root / test_dir

    @staticmethod
    def scan(folder: Path) -> list[DepthSample]:
        """The reference's ``glob(<folder>/*/*/*.png)``, sorted so runs see one order."""
        if not folder.is_dir():
            raise MissingDataError(
                f"dataset DIODE outdoor not found: {folder} is not a folder (expected <scene>/<scan>/<name>.png with "
                f"<name>_depth.npy and <name>_depth_mask.npy). Get it from https://diode-dataset.org (val.tar.gz, "
                f"train.tar.gz) and point the run at it with `task.data.root=<dir>`."
            )
        images = sorted(folder.glob("*/*/*.png"))
        if not images:
            raise MissingDataError(f"dataset DIODE outdoor: no <scene>/<scan>/*.png under {folder}")
        samples = [
            DepthSample(p, p.with_name(p.stem + "_depth.npy"), p.with_name(p.stem + "_depth_mask.npy")) for p in images
        ]
        check_files_exist(samples, folder)
        return samples

    def train_test_samples(self) -> tuple[list[DepthSample], list[DepthSample]]:
        return self.scan(self.train_dir), self.scan(self.test_dir)


def focal_for_width(spec: DepthDatasetSpec, width: int) -> float:
    """The dataset's focal length scaled to an image ``width`` pixels wide (for written split files)."""
    return spec.focal * width / spec.width if spec.width and spec.focal else 0.0


def horizontal_fov_deg(spec: DepthDatasetSpec) -> float:
    """The camera's horizontal field of view, from the dataset's focal length and width."""
    return math.degrees(2 * math.atan(spec.width / (2 * spec.focal))) if spec.focal else 0.0
