"""Image classification datasets through torchvision's own classes and on-disk formats.

CIFAR-10 / CIFAR-100 (``cifar-10-batches-py`` / ``cifar-100-python`` under ``root``) and
Food-101 (``food-101/``). ``download`` is off by default: a cluster user downloads once, on a
node with internet, with ``task.data.download=true``. A missing dataset stops the run at once
with an error that names the path and how to get it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

from .errors import damaged_data, missing_data
from .transforms import classification_transforms


class _NoChecksumMixin:
    """torchvision checks every file's md5 even with download=False; ``verify=False`` only checks presence."""

    def __init__(self, *args: Any, verify_checksums: bool = True, **kwargs: Any):
        self.verify_checksums = verify_checksums
        super().__init__(*args, **kwargs)

    def _check_integrity(self) -> bool:  # CIFAR's hook
        if self.verify_checksums:
            return super()._check_integrity()  # type: ignore[misc]
        base = Path(self.root) / self.base_folder  # type: ignore[attr-defined]
        return all((base / name).is_file() for name, _ in self.train_list + self.test_list)  # type: ignore[attr-defined]

    def _load_meta(self) -> None:  # CIFAR's hook; the same md5 check on the meta file
        if self.verify_checksums:
            return super()._load_meta()  # type: ignore[misc]
        path = Path(self.root) / self.base_folder / self.meta["filename"]  # type: ignore[attr-defined]
        if not path.is_file():
            raise RuntimeError(f"Dataset metadata file {path} not found")
        with open(path, "rb") as handle:
            data = pickle.load(handle, encoding="latin1")
        self.classes = data[self.meta["key"]]  # type: ignore[attr-defined]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


    def find_damaged(self) -> tuple[Path, BaseException] | None:
        """The first file that is not a CIFAR batch (or meta file) of this dataset, and why. With
        checksums off, torchvision would fail on it with a bare UnpicklingError or KeyError."""
        base = Path(self.root) / self.base_folder  # type: ignore[attr-defined]
        label_key = "fine_labels" if isinstance(self, datasets.CIFAR100) else "labels"
        files = [(name, ("data", label_key)) for name, _ in self.train_list + self.test_list]  # type: ignore[attr-defined]
        files.append((self.meta["filename"], (self.meta["key"],)))  # type: ignore[attr-defined]
        for name, keys in files:
            path = base / name
            try:
                with open(path, "rb") as handle:
                    entry = pickle.load(handle, encoding="latin1")
                if not isinstance(entry, dict):
                    raise TypeError(f"holds a {type(entry).__name__}, not a dict")
                for key in keys:
                    if key not in entry:
                        raise KeyError(f"no {key!r} entry (it has {sorted(map(str, entry))[:8]})")
                if "data" in keys:  # one 3 x 32 x 32 image per label
                    np.asarray(entry["data"]).reshape(len(entry[label_key]), 3, 32, 32)
            except OSError:
                raise
            except Exception as err:  # truncated, garbage, another pickle
                return path, err
        return None


class CIFAR10(_NoChecksumMixin, datasets.CIFAR10):
    pass


class CIFAR100(_NoChecksumMixin, datasets.CIFAR100):
    pass


DATASETS: dict[str, dict[str, Any]] = {
    "cifar10": {"cls": CIFAR10, "classes": 10, "expects": "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"},
    "cifar100": {"cls": CIFAR100, "classes": 100, "expects": "cifar-100-python/{train,test,meta}"},
    "food101": {"cls": datasets.Food101, "classes": 101, "expects": "food-101/{images,meta}"},
}


def open_dataset(name: str, root: str | Path, train: bool, transform: Any, download: bool, verify: bool) -> Dataset:
    spec = DATASETS[name]
    cls = spec["cls"]
    how = (
        f"run once with internet `python run.py task={name} task.data.download=true` "
        f"(or `torchvision.datasets.{cls.__name__}(root='{root}', download=True)`)"
    )
    try:
        if name == "food101":
            return cls(str(root), split="train" if train else "test", transform=transform, download=download)
        return cls(str(root), train=train, transform=transform, download=download, verify_checksums=verify)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise missing_data(name, Path(root).resolve(), spec["expects"], how, err) from None
    except (OSError, MemoryError):  # no permission, ...: the CLI names the path and the key
        raise
    except Exception as err:  # checksums off and a file that is not CIFAR's: which one?
        if name == "food101":
            raise
        found = cls.__new__(cls)
        found.root = str(root)
        damaged = found.find_damaged()
        if damaged is None:
            raise
        fix = (f"download it again (delete {damaged[0].parent} and run with task.data.download=true), or run with "
               "task.data.verify_checksums=true to check every file against torchvision's checksums")
        raise damaged_data(name, damaged[0], f"a {cls.__name__} file in torchvision's python format", damaged[1],
                           fix) from err


class TransformedSubset(Dataset):
    """``base[indices]`` with a transform of its own: the training split (augmented) and the
    validation hold-out (not augmented) read one copy of the training set."""

    def __init__(self, base: Dataset, indices: list[int], transform: Any):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.base[self.indices[index]]
        return self.transform(image), label


class TorchvisionClassificationDataModule(L.LightningDataModule):
    """Train / validation / test for a torchvision dataset; validation is a seeded hold-out of train."""

    def __init__(
        self,
        dataset: str,
        root: str,
        batch_size: int = 10,
        eval_batch_size: int | None = None,
        val_size: int | float = 0.1,
        split_seed: int = 0,
        num_workers: int = 4,
        download: bool = False,
        verify_checksums: bool = True,
        augment: Mapping[str, Any] | None = None,
        model_input: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if isinstance(val_size, float) and not 0 <= val_size < 1:
            raise ValueError(f"val_size: a fraction must be in [0, 1), got {val_size}")
        if int(val_size) < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}")
        self.dataset, self.root = dataset, root
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.val_size, self.split_seed, self.num_workers = val_size, split_seed, num_workers
        self.download, self.verify = download, verify_checksums
        self.augment, self.model_input = augment, dict(model_input or {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3})
        self.num_classes = DATASETS[dataset]["classes"]

        self._prepared = False

    def _transform(self, augmented: bool) -> Any:
        return classification_transforms(self.model_input, self.augment, train=augmented)

    def prepare_data(self) -> None:
        # Runs once per node before setup: download if asked, otherwise fail fast if absent. The
        # checksums are verified here, once (the runner calls it before Lightning does).
        if self._prepared:
            return
        for train in (True, False):
            open_dataset(self.dataset, self.root, train, None, self.download, self.verify)
        self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        verify = self.verify and not self._prepared  # a process that ran prepare_data checked them
        train = open_dataset(self.dataset, self.root, True, None, download=False, verify=verify)
        n = len(train)
        n_val = int(round(self.val_size * n)) if isinstance(self.val_size, float) else int(self.val_size)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        self.train_set = TransformedSubset(train, order[n_val:], self._transform(augmented=True))
        self.val_set = TransformedSubset(train, order[:n_val], self._transform(augmented=False)) if n_val else None
        self.test_set = open_dataset(self.dataset, self.root, False, self._transform(False), download=False, verify=verify)

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set if self.val_set is not None else self.test_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)
