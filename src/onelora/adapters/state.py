"""Adapter-only checkpoints: the trainable tensors in safetensors, the method in a small JSON.

A fresh model with the same base weights plus these two files reproduces the adapted model's
outputs exactly: ``load_adapter`` injects the saved method if the model is not adapted yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import apply_umask
from .base import AdapterConfigError
from .inject import AdapterReport, adapted_layers, count_parameters, inject, trainable_state
from .spec import MethodSpec

WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"


def save_adapter(
    directory: str | Path,
    model: nn.Module,
    *,
    target_sets: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``adapter.safetensors`` and ``adapter_config.json`` into ``directory``; returns it."""
    spec: MethodSpec | None = getattr(model, "onelora_method", None)
    if spec is None:
        raise AdapterConfigError("save_adapter: this model was not adapted with onelora.adapters.inject")
    _refuse_merged(model, "save_adapter")
    if target_sets is None:  # the sets the model was adapted with: a fresh model must select the same layers
        target_sets = getattr(model, "onelora_target_sets", None)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in trainable_state(model).items()}
    save_file(tensors, str(directory / WEIGHTS_NAME))
    apply_umask(directory / WEIGHTS_NAME)
    config = {
        "method": spec.to_dict(),
        "target_sets": _plain(target_sets) if target_sets is not None else None,
        "head": list(getattr(model, "onelora_head", [])),
        "module_sets": _plain(getattr(model, "onelora_module_sets", {})),
        "tensors": len(tensors),
        **dict(extra or {}),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str))
    return directory


def load_adapter(directory: str | Path, model: nn.Module, *, strict: bool = True) -> AdapterReport:
    """Load an adapter written by ``save_adapter`` into ``model`` (injecting the method if needed)."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"adapter file {path} not found (written by save_adapter / a run's checkpoint)")
    try:
        config = json.loads(config_path.read_text())
        saved = MethodSpec.from_config(config["method"])
    except (ValueError, KeyError, TypeError) as err:  # truncated or hand-edited
        raise AdapterConfigError(f"adapter file {config_path} is damaged ({type(err).__name__}: {err}); "
                                 "write it again with save_adapter (a run writes it at its end)") from None
    try:  # read before the model is touched: a damaged file leaves it as it was
        tensors = load_file(str(weights_path))
    except Exception as err:  # safetensors' own error names no file
        raise AdapterConfigError(f"adapter file {weights_path} is damaged ({type(err).__name__}: {err}); "
                                 "write it again with save_adapter (a run writes it at its end)") from None
    current: MethodSpec | None = getattr(model, "onelora_method", None)
    _refuse_merged(model, "load_adapter")
    if current is None:
        inject(model, saved, target_sets=config.get("target_sets") or None, head=config.get("head") or [],
               module_sets=config.get("module_sets") or {})
    else:  # the same update, however it is computed (1LoRA's impl=fused / autograd) loads
        differences = current.update_differences(saved)
        if differences:
            raise AdapterConfigError(
                f"adapter {directory} does not fit this model: the model is adapted with '{current.name}', the "
                f"checkpoint holds '{saved.name}', and they differ in {'; '.join(differences)} (model vs checkpoint)")
    own = trainable_state(model)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if strict and (missing or unexpected):
        raise AdapterConfigError(f"adapter {directory}: missing tensors {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, value in tensors.items():
            if name in own:
                if own[name].shape != value.shape:
                    raise AdapterConfigError(f"adapter tensor {name}: shape {tuple(value.shape)} != {tuple(own[name].shape)}")
                own[name].copy_(value.to(own[name].dtype))
    return count_parameters(model, config.get("head") or [])


def _refuse_merged(model: nn.Module, what: str) -> None:
    """A merged layer's bias is already scaled by gamma (and its weight holds the update): saving or
    loading adapter tensors then would apply them twice."""
    merged = [name for name, layer in adapted_layers(model) if layer.merged]
    if merged:
        raise AdapterConfigError(f"{what}: layers {merged[:3]} are merged; call unmerge(model) first")


def _plain(value: Any) -> Any:
    """OmegaConf containers and tuples to JSON-able dicts and lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return value
