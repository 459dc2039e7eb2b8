"""A task that exists only in tests: regression on synthetic data, added as new files only (this
module, a model YAML and a task YAML in a config folder of the test's own), to show that the
runner, pre-training and the CLI need no change for a new task."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from onelora.tasks.base import FineTuneModule


def build_mlp(cfg, *, in_features: int, load_weights: bool = True) -> nn.Module:
    hidden = int(cfg["arch"]["hidden"])
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(in_features, hidden))
    model.add_module("act", nn.GELU())
    model.add_module("fc2", nn.Linear(hidden, hidden))
    model.add_module("act2", nn.GELU())
    model.add_module("out", nn.Linear(hidden, 1))
    if load_weights and cfg.get("pretrained"):
        from onelora.models.weights import load_into, load_state

        load_into(model, load_state(cfg["pretrained"]), head=list(cfg.get("head") or []))
    return model


class RegressionData(L.LightningDataModule):
    def __init__(self, *, n: int, in_features: int, shift: float, seed: int, batch_size: int):
        super().__init__()
        self.n, self.in_features, self.shift, self.seed, self.batch_size = n, in_features, shift, seed, batch_size

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.n, self.in_features, generator=g) + self.shift
        w = torch.linspace(-1, 1, self.in_features)[:, None]
        y = torch.tanh(x @ w) + 0.5 * x[:, :1]
        cut = [int(self.n * 0.6), int(self.n * 0.8)]
        self.sets = [TensorDataset(x[a:b], y[a:b]) for a, b in zip([0, *cut], [*cut, self.n])]

    def train_dataloader(self):
        return DataLoader(self.sets[0], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.sets[1], batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.sets[2], batch_size=64)


class RegressionModule(FineTuneModule):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/mse", F.mse_loss(self.model(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/mse", F.mse_loss(self.model(x), y))
