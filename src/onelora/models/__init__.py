"""Model builders: a model config -> an ``nn.Module``, with or without pretrained weights.

Each builder registers under a name that model YAMLs use as ``builder`` and is called as
``builder(model_cfg, load_weights=..., **model_args)``: ``model_args`` are what the task declares
(``task.model_args``: classes, the depth range, ...), each a keyword the builder names explicitly,
so a task and a model that do not fit fail with the name of the argument. For parameter counting
the call runs inside ``torch.device("meta")`` with ``load_weights=False``: full-size models cost
nothing.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from torch import nn

ModelBuilder = Callable[..., nn.Module]
MODEL_BUILDERS: dict[str, ModelBuilder] = {}


def register_builder(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def wrap(fn: ModelBuilder) -> ModelBuilder:
        MODEL_BUILDERS[name] = fn
        return fn

    return wrap


def model_builder(cfg: Mapping[str, Any]) -> ModelBuilder:
    """The registered builder ``cfg.builder``, or any importable function named by a dotted path."""
    _import_builders()
    name = cfg["builder"]
    if name in MODEL_BUILDERS:
        return MODEL_BUILDERS[name]
    if "." in name:
        from hydra.utils import get_method

        try:
            return get_method(name)
        except Exception as err:  # ImportError, AttributeError
            raise ValueError(f"model '{cfg.get('name')}': cannot import builder '{name}' ({err})") from None
    raise ValueError(f"model '{cfg.get('name')}': unknown builder '{name}'; available: {sorted(MODEL_BUILDERS)} "
                     "or a dotted path to a function")


def builder_arguments(cfg: Mapping[str, Any]) -> set[str]:
    """The task arguments (``task.model_args`` keys) the model's builder takes."""
    params = inspect.signature(model_builder(cfg)).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "load_weights"}


def build_model(cfg: Mapping[str, Any], *, load_weights: bool = True, **model_args: Any) -> nn.Module:
    """Build the model a config describes (``cfg.builder`` picks the builder)."""
    builder = model_builder(cfg)
    unknown = set(model_args) - builder_arguments(cfg)
    if unknown:
        raise TypeError(
            f"model '{cfg.get('name')}' ({cfg['builder']} builder) takes no argument(s) {sorted(unknown)}; "
            f"it takes {sorted(builder_arguments(cfg))}"
        )
    return builder(cfg, load_weights=load_weights, **model_args)


def _import_builders() -> None:
    """Import the builder modules (they register themselves); heavy imports stay lazy."""
    from . import builders  # noqa: F401
