"""FID through torchmetrics: the digits feature extractor, real-vs-real references, sample counts,
and the Inception path (torch-fidelity's weights from a local file, clear errors otherwise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from onelora.data.digits import digits_images
from onelora.metrics import fid as fid_module
from onelora.metrics.fid import (
    INCEPTION_FILE,
    INCEPTION_URL,
    DigitsFeatures,
    InceptionFeatures,
    digits_features,
    fid_metric,
    frechet_distance,
    inception_features,
    resolve_inception_weights,
)


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> DigitsFeatures:
    return digits_features(tmp_path_factory.mktemp("cache"))


def halves(labels_from: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.model_selection import train_test_split

    images, labels = digits_images()
    keep = (labels >= labels_from) & (labels < labels_from + 5)
    a, b = train_test_split(np.arange(int(keep.sum())), test_size=0.5, stratify=labels[keep].numpy(), random_state=0)
    return images[keep][a], images[keep][b]


def test_digits_features_are_trained_once_and_cached(tmp_path, monkeypatch):
    model = digits_features(tmp_path)
    saved = list((tmp_path / "fid").glob("digits_mlp-*.pt"))
    assert len(saved) == 1 and torch.load(saved[0], weights_only=True)["heldout_accuracy"] > 0.95
    assert isinstance(model.num_features, int) and model.num_features == 32
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    images, labels = digits_images()
    assert model(images[:7]).shape == (7, 32)
    assert (model.classify(images).argmax(1) == labels).float().mean() > 0.97

    class TrainedAgain(Exception):
        pass

    def train(**settings):
        raise TrainedAgain

    monkeypatch.setattr(fid_module, "train_digits_features", train)
    again = digits_features(tmp_path)
    assert torch.equal(again(images[:7]), model(images[:7]))
    assert len(list((tmp_path / "fid").glob("*.pt"))) == 1
    with pytest.raises(TrainedAgain):  # other settings: another cache file
        digits_features(tmp_path, features=16)


def test_fid_references_on_digits(features):
    train, test = halves(5)
    source, _ = halves(0)
    n = 440
    assert frechet_distance(train, train, features) == pytest.approx(0.0, abs=1e-3)
    floor = frechet_distance(train, test, features, num_samples=n)  # two real samples of one distribution
    apart = frechet_distance(source, test, features, num_samples=n)  # digits 0-4 vs 5-9
    assert 0.5 < floor < 10
    assert apart > 30 * floor and apart > 100


def test_sample_count_handling(features):
    train, test = halves(5)
    assert frechet_distance(train, test, features, num_samples=100) == pytest.approx(
        frechet_distance(train[:100], test[:100], features), rel=1e-6)
    # batches (an iterable) give the same value as one tensor
    assert frechet_distance(list(train.split(64)), list(test.split(50)), features, num_samples=300) == pytest.approx(
        frechet_distance(train[:300], test[:300], features), rel=1e-6)
    # fewer samples, a larger bias: counts must be equal to compare
    assert frechet_distance(train, test, features, num_samples=60) > frechet_distance(train, test, features, num_samples=440)
    with pytest.raises(ValueError, match=r"needs 500 real images \(num_samples\), got 448"):
        frechet_distance(torch.cat([train, test]), test, features, num_samples=500)
    with pytest.raises(ValueError, match=r"needs 500 generated images \(num_samples\), got 448"):
        frechet_distance(train, torch.cat([train, test]), features, num_samples=500)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(train[:1], test[:1], features)


def test_the_metric_needs_an_integer_num_features():
    with pytest.raises(TypeError, match="integer `num_features`"):
        fid_metric(nn.Linear(64, 8))


# -- the Inception path (torch-fidelity is not installed here) ------------------------------------


class FakeInception(nn.Module):
    """Stands in for torchmetrics' NoTrainInceptionV3: checks its input is uint8 RGB, as the real one does."""

    def __init__(self, weights_path):
        super().__init__()
        self.weights_path = weights_path
        self.seen: torch.Tensor | None = None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        assert pixels.dtype == torch.uint8 and pixels.shape[1] == 3
        self.seen = pixels
        flat = pixels.float().flatten(1)
        return torch.cat([flat.mean(1, keepdim=True), flat.std(1, keepdim=True)], 1).repeat(1, 1024)


def test_inception_needs_torch_fidelity(monkeypatch):
    monkeypatch.setattr(fid_module, "torch_fidelity_available", lambda: False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install torch-fidelity==0\.4\.0"):
        inception_features()


def test_inception_weights_from_a_local_file(tmp_path, monkeypatch):
    weights = tmp_path / INCEPTION_FILE
    weights.write_bytes(b"weights")
    monkeypatch.setattr(fid_module, "torch_fidelity_available", lambda: True)
    monkeypatch.setattr(fid_module, "_torchmetrics_inception", FakeInception)
    module = inception_features(str(weights))
    assert isinstance(module, InceptionFeatures) and module.num_features == 2048
    assert module.inception.weights_path == weights
    monkeypatch.setenv(fid_module.FID_WEIGHTS_ENV, str(tmp_path))  # a directory holding the file
    assert inception_features().inception.weights_path == weights
    # images in [-1, 1] become uint8 as DiT's sample_ddp.py makes them; 1 channel is repeated
    levels = torch.tensor([0, 1, 128, 254, 255], dtype=torch.float32)
    images = (levels / 255 * 2 - 1).view(1, 1, 1, 5)  # what ToTensor + Normalize(0.5) give for these pixels
    module(images)
    assert module.inception.seen.shape == (1, 3, 1, 5) and module.inception.seen[0, 2, 0].tolist() == levels.tolist()
    # the same torchmetrics FID as the digits task (its 2048 x 2048 compute is left out: seconds on a CPU)
    metric = fid_metric(module)
    metric.update(torch.rand(4, 3, 4, 4) * 2 - 1, real=True)
    assert metric.real_features_num_samples == 4 and metric.real_features_sum.shape == (2048,)


def test_missing_inception_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(fid_module.FID_WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/absent\.pth.*{INCEPTION_URL}"):
        resolve_inception_weights(str(tmp_path / "absent.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    hub_file = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE
    with pytest.raises(FileNotFoundError, match=rf"network is unreachable.*put it at {hub_file}.*fid_features\.weights"):
        resolve_inception_weights()
    hub_file.write_bytes(b"weights")  # once it is in torch.hub's cache, no network is needed
    assert resolve_inception_weights() == hub_file


def test_pooled_pixels_by_hand():
    from onelora.metrics.fid import PooledPixels

    features = PooledPixels(side=2)
    assert features.num_features == 12
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0, :2, :2] = 1.0  # red, top-left quadrant
    image[0, 2, 2:, :] = -1.0  # blue, bottom half
    assert features(image).tolist() == [[1.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0.0, 0.0, -1.0, -1.0]]
    metric = fid_metric(features)  # the torchmetrics FID path takes it as it takes Inception
    metric.update(torch.rand(8, 3, 16, 16) * 2 - 1, real=True)
    metric.update(torch.rand(8, 3, 16, 16) * 2 - 1, real=False)
    assert math.isfinite(float(metric.compute()))
    with pytest.raises(ValueError, match="expected 3-channel images, got 1"):
        features(torch.zeros(1, 1, 4, 4))
