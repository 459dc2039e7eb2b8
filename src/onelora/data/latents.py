"""VAE latents of a dataset, encoded once and cached, so latent-diffusion training never runs the encoder.

DiT's train.py encodes every batch with the VAE (``latent_dist.sample() * 0.18215``); its fast
variants encode the dataset once beforehand, each image and its horizontal flip. Here the cache
holds the posterior's mean and standard deviation (float16) of each image (and of its flip), so
:class:`LatentDataset` still draws a fresh posterior sample each time, as DiT's training does, and
picks the image or its flip at random (DiT's RandomHorizontalFlip). The file name is a hash of
what the latents depend on (the dataset key and the VAE's source and scale), so another dataset,
image size or VAE never reads a stale cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..cache import build_once

FORMAT = 1


def latent_cache_path(cache_dir: str | Path, dataset_key: str, vae: Any) -> Path:
    """``<cache_dir>/latents/<name>-<hash>.pt`` for this dataset and VAE."""
    key = f"{dataset_key}|{vae.cache_key}|hflip-cache-v{FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in dataset_key.split("|")[0])[:40]
    return Path(cache_dir).expanduser() / "latents" / f"{name}-{digest}.pt"


def _images_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    images, labels = batch
    return images, torch.as_tensor(labels)


@torch.no_grad()
def cache_latents(dataset: Dataset, vae: Any, path: str | Path, *, dataset_key: str, hflip: bool = True,
                  batch_size: int = 32, num_workers: int = 0, device: str | torch.device | None = None) -> Path:
    """Encode ``dataset`` (items ``(image in [-1, 1], label)``, not augmented) once into ``path``.

    Returns at once when the file exists. Written to a temporary name and renamed, so an
    interrupted run leaves no half-written cache. ``device``: where the VAE runs (default: the
    first GPU if there is one).
    """

    def encode(path: Path) -> None:
        where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        encoder = vae.to(where)
        means, stds, flip_means, flip_stds, labels = [], [], [], [], []
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for batch in loader:
            images, y = _images_and_labels(batch)
            images = images.to(where)
            mean, std = encoder.moments(images)
            means.append(mean.half().cpu())
            stds.append(std.half().cpu())
            if hflip:
                mean, std = encoder.moments(images.flip(-1))
                flip_means.append(mean.half().cpu())
                flip_stds.append(std.half().cpu())
            labels.append(y.long().cpu())
        if not labels:
            raise ValueError(f"cannot cache latents of an empty dataset ({dataset_key})")
        content = {
            "format": FORMAT, "dataset_key": dataset_key, "vae": encoder.cache_key, "scale": float(encoder.scale),
            "mean": torch.cat(means), "std": torch.cat(stds), "label": torch.cat(labels),
        }
        if hflip:
            content["flip_mean"], content["flip_std"] = torch.cat(flip_means), torch.cat(flip_stds)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(content, tmp)
        tmp.replace(path)

    # a complete file is only read (a teammate's read-only cache serves as it is)
    return build_once(Path(path), encode, complete=Path.is_file, what="the cached training latents")


class LatentDataset(Dataset):
    """Items ``{"latent": (mean + std * noise) * scale, "label": y}`` from a latent cache file.

    With a flipped copy in the cache, each item is the image or its flip with probability 1/2.
    """

    def __init__(self, path: str | Path, *, hflip: bool = True, sample_posterior: bool = True):
        content = torch.load(Path(path), map_location="cpu", weights_only=True)
        if content.get("format") != FORMAT:
            raise ValueError(f"latent cache {path} has format {content.get('format')}, expected {FORMAT}: delete it")
        self.mean, self.std, self.labels = content["mean"], content["std"], content["label"]
        self.scale = float(content["scale"])
        self.flip = (content["flip_mean"], content["flip_std"]) if hflip and "flip_mean" in content else None
        self.sample_posterior = sample_posterior

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mean, std = self.mean[index], self.std[index]
        if self.flip is not None and bool(torch.rand(()) < 0.5):
            mean, std = self.flip[0][index], self.flip[1][index]
        latent = mean.float()
        if self.sample_posterior:
            latent = latent + std.float() * torch.randn_like(latent)
        return {"latent": latent * self.scale, "label": self.labels[index]}
