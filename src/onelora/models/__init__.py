"""Model builders: a model config -> an ``nn.Module``, with or without pretrained weights.

Each builder registers under a name that model YAMLs use as ``builder``. Builders are called as
``builder(model_cfg, num_classes=..., load_weights=...)``; for parameter counting the call runs
inside ``torch.device("meta")`` with ``load_weights=False``, so full-size models cost nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

ModelBuilder = Callable[..., nn.Module]
MODEL_BUILDERS: dict[str, ModelBuilder] = {}


def register_builder(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def wrap(fn: ModelBuilder) -> ModelBuilder:
        MODEL_BUILDERS[name] = fn
        return fn

    return wrap


def build_model(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """Build the model a config describes (``cfg.builder`` picks the builder)."""
    _import_builders()
    name = cfg["builder"]
    if name not in MODEL_BUILDERS:
        raise ValueError(f"model '{cfg.get('name')}': unknown builder '{name}'; available: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](cfg, num_classes=num_classes, load_weights=load_weights)


def _import_builders() -> None:
    """Import the builder modules (they register themselves); heavy imports stay lazy."""
    from . import builders  # noqa: F401
