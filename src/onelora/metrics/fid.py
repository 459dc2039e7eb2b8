"""FID through torchmetrics' ``FrechetInceptionDistance``, with a feature module as a task part.

One code path for every task: :func:`fid_metric` wraps a feature module (anything with an
integer ``num_features`` taking images in the models' [-1, 1] range) in torchmetrics' metric, and
:func:`frechet_distance` computes FID of generated vs real images with it at a given sample count.
FID is biased by the sample count (fewer samples, higher FID): compare only at equal counts.

Two feature modules:

- :func:`inception_features`: the reference protocol, torch-fidelity's InceptionV3 (2048-d pool
  features, TF-FID compatible), as torchmetrics' ``feature=2048`` builds it. Needs the package
  ``torch-fidelity`` (torchmetrics' ``image`` extra) and the weights file
  ``weights-inception-2015-12-05-6726825d.pth``: from ``weights`` / ``$ONELORA_FID_WEIGHTS``, else
  torch.hub's cache, else downloaded once; without network a clear error says where to put it.
  Images are turned into uint8 as DiT's ``sample_ddp.py`` does (clamp(127.5 x + 128)).
- :func:`digits_features`: for the 8x8 digits task, an MLP 64 -> 256 -> 32 -> 10 trained once on all
  ten scikit-learn digit classes (~98% held-out accuracy) and cached; its 32-d penultimate layer.
- :class:`PooledPixels`: images average-pooled to a few pixels, no weights: the tiny twins' stand-in
  for Inception, so the FID code path runs in tests in milliseconds (its values mean nothing).

Why ``num_features`` must be an int: without it torchmetrics probes the module with a dummy
3 x 299 x 299 image, which a digits MLP cannot take; and custom modules get the images as they are
(torchmetrics rescales only for its own Inception), so each module converts its own input.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ..cache import build_once
from ..data.digits import digits_images
from ..models.weights import MissingWeightsError, resolve

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
FID_WEIGHTS_ENV = "ONELORA_FID_WEIGHTS"
TORCH_FIDELITY_PIN = "torch-fidelity==0.4.0"  # torchmetrics 1.9's `image` extra: torch-fidelity<=0.4.0


# ---------------------------------------------------------------------------------------------
# The FID computation (the one path)
# ---------------------------------------------------------------------------------------------


def fid_metric(features: nn.Module, *, reset_real_features: bool = True):
    """torchmetrics' FID on ``features`` (which must have an integer ``num_features``)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if not isinstance(getattr(features, "num_features", None), int):
        raise TypeError(f"FID feature module {type(features).__name__} needs an integer `num_features` attribute "
                        "(else torchmetrics probes it with a 299 x 299 image)")
    return FrechetInceptionDistance(feature=features, reset_real_features=reset_real_features, normalize=False)


def _take(images: torch.Tensor | Iterable[torch.Tensor], count: int | None, what: str) -> list[torch.Tensor]:
    """Batches holding the first ``count`` images (all if None); an error if there are fewer."""
    batches = [images] if isinstance(images, torch.Tensor) else list(images)
    available = sum(len(b) for b in batches)
    if count is None:
        count = available
    if available < count:
        raise ValueError(f"FID needs {count} {what} images (num_samples), got {available}; "
                         "lower num_samples or provide more (FID is only comparable at equal counts)")
    if count < 2:
        raise ValueError(f"FID needs at least 2 {what} images, got {count}")
    taken, left = [], count
    for batch in batches:
        if left <= 0:
            break
        taken.append(batch[:left])
        left -= len(taken[-1])
    return taken


@torch.no_grad()
def frechet_distance(generated: torch.Tensor | Iterable[torch.Tensor], real: torch.Tensor | Iterable[torch.Tensor],
                     features: nn.Module, *, num_samples: int | None = None, batch_size: int = 500) -> float:
    """FID of ``generated`` vs ``real`` images (tensors or iterables of batches, in [-1, 1]).

    ``num_samples``: how many of each to use (the first ones); both sides must have that many.
    None uses all of each.
    """
    metric = fid_metric(features)
    device = next((p.device for p in features.parameters()), torch.device("cpu"))
    metric = metric.to(device)
    for real_side, images in ((True, real), (False, generated)):
        for batch in _take(images, num_samples, "real" if real_side else "generated"):
            for chunk in batch.split(batch_size):
                metric.update(chunk.to(device), real=real_side)
    return float(metric.compute())


# ---------------------------------------------------------------------------------------------
# The reference protocol: torch-fidelity's InceptionV3
# ---------------------------------------------------------------------------------------------


def torch_fidelity_available() -> bool:
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    return bool(_TORCH_FIDELITY_AVAILABLE)


def resolve_inception_weights(weights: str | Path | None = None) -> Path:
    """The InceptionV3 weights file: ``weights`` (a file or a folder holding it), else
    ``$ONELORA_FID_WEIGHTS``, else its URL through the one weight loader (torch.hub's cache,
    downloaded there once if the network allows)."""
    given = weights or os.environ.get(FID_WEIGHTS_ENV)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if given and Path(given).expanduser().is_dir():
        given = Path(given).expanduser() / INCEPTION_FILE
    source = str(Path(given).expanduser().resolve()) if given else INCEPTION_URL
    try:
        return resolve(source)
    except MissingWeightsError as err:
        cause = f" ({type(err.__cause__).__name__}: {err.__cause__})" if err.__cause__ else ""
        looked = source if given else f"{hub_file} (torch.hub's cache) and {INCEPTION_URL}{cause}"
        raise MissingWeightsError(
            f"FID Inception weights not found: looked in {looked}. To get them, download {INCEPTION_URL} on a machine "
            f"with internet and put it at {hub_file} (torch.hub's cache), or anywhere and point the run at it with "
            f"${FID_WEIGHTS_ENV}=<file> or `+task.parts.fid_features.weights=<file>`."
        ) from None


def _torchmetrics_inception(weights_path: Path) -> nn.Module:
    """torchmetrics' wrapper of torch-fidelity's InceptionV3 (``feature=2048``), from a local file."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                              feature_extractor_weights_path=str(weights_path))


class InceptionFeatures(nn.Module):
    """2048-d InceptionV3 pool features of images in [-1, 1] (1 or 3 channels, any size)."""

    num_features = 2048

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pixels = torch.clamp(127.5 * images + 128.0, 0, 255).to(torch.uint8)  # DiT's sample_ddp.py
        return self.inception(pixels)


def inception_features(weights: str | None = None) -> InceptionFeatures:
    """The task part ``fid_features`` for the reference protocol (Food-101)."""
    if not torch_fidelity_available():
        raise ModuleNotFoundError(
            f"FID with InceptionV3 needs the package torch-fidelity: `pip install {TORCH_FIDELITY_PIN}` "
            "(torchmetrics' `image` extra); its Inception weights then come from "
            f"`task.parts.fid_features.weights`, ${FID_WEIGHTS_ENV}, torch.hub's cache or {INCEPTION_URL}"
        )
    return InceptionFeatures(_torchmetrics_inception(resolve_inception_weights(weights)))


class PooledPixels(nn.Module):
    """Images in [-1, 1] average-pooled to ``side`` x ``side`` and flattened (``channels`` x side^2
    features). No weights: the tiny twins' FID feature module (test-size runs of the real task)."""

    def __init__(self, side: int = 2, channels: int = 3):
        super().__init__()
        if side < 1 or channels < 1:
            raise ValueError(f"PooledPixels: side and channels must be >= 1, got {side}, {channels}")
        self.side, self.channels = int(side), int(channels)
        self.num_features = self.channels * self.side * self.side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.channels:
            raise ValueError(f"PooledPixels: expected {self.channels}-channel images, got {images.shape[1]}")
        return nn.functional.adaptive_avg_pool2d(images.float(), self.side).flatten(1)


# ---------------------------------------------------------------------------------------------
# The digits task's feature extractor
# ---------------------------------------------------------------------------------------------


class DigitsFeatures(nn.Module):
    """MLP 64 -> hidden -> features -> 10 on 8x8 digits in [-1, 1]; ``forward`` gives the
    ``features``-d penultimate activations (what FID compares), ``classify`` the logits."""

    def __init__(self, hidden: int = 256, features: int = 32, classes: int = 10):
        super().__init__()
        self.num_features = int(features)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, features), nn.ReLU())
        self.classifier = nn.Linear(features, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float())

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward(images))

    def train(self, mode: bool = True) -> "DigitsFeatures":
        return super().train(mode and self.body[1].weight.requires_grad)  # frozen extractors stay in eval


def train_digits_features(*, hidden: int = 256, features: int = 32, epochs: int = 50, lr: float = 3e-3,
                          batch_size: int = 128, seed: int = 0, holdout: float = 0.2) -> tuple[DigitsFeatures, float]:
    """Train the MLP on all ten classes (a stratified ``holdout`` kept out); returns it and its
    held-out accuracy."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    images, labels = digits_images()
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=holdout, stratify=labels.numpy(), random_state=seed)
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    torch.manual_seed(seed)
    model = DigitsFeatures(hidden, features)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(model.classify(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = float((model.classify(images[test_idx]).argmax(1) == labels[test_idx]).float().mean())
    return model, accuracy


def digits_features(cache_dir: str | Path, *, hidden: int = 256, features: int = 32, epochs: int = 50,
                    lr: float = 3e-3, seed: int = 0) -> DigitsFeatures:
    """The task part ``fid_features`` of the digits task: trained once, then read from
    ``<cache_dir>/fid/digits_mlp-<hash of the settings>.pt``; frozen, in eval mode."""
    settings = {"hidden": hidden, "features": features, "epochs": epochs, "lr": lr, "seed": seed, "version": 1}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir).expanduser() / "fid" / f"digits_mlp-{digest}.pt"

    def train(path: Path) -> None:
        trained, accuracy = train_digits_features(hidden=hidden, features=features, epochs=epochs, lr=lr, seed=seed)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": trained.state_dict(), "settings": settings, "heldout_accuracy": accuracy}, tmp)
        tmp.replace(path)

    build_once(path, train, complete=Path.is_file, what="the FID feature network")  # read-only once trained
    model = DigitsFeatures(hidden, features)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    model.requires_grad_(False)
    return model.eval()
