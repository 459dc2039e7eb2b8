"""Turning the composed Hydra config into checked settings, before any work starts.

Bad values fail here with a message that names the key, not an hour into a run.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .adapters import ADAPTER_KINDS, MethodSpec


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def plain(cfg: Any) -> Any:
    """OmegaConf node -> plain Python containers (resolved)."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def method_settings(cfg: DictConfig) -> dict[str, Any]:
    """The method config with the model's ``method_overrides`` for it applied (paper quirks)."""
    method = dict(plain(cfg.method))
    overrides = plain(cfg.model.get("method_overrides") or {}) or {}
    return {**method, **(overrides.get(method["name"]) or {})}


def method_spec(cfg: DictConfig) -> MethodSpec:
    return MethodSpec.from_config(method_settings(cfg))


def learning_rate(cfg: DictConfig) -> float:
    """``method.lr`` if set, else the task's ``optim.lr_per_method[method]``, else ``optim.lr``."""
    if cfg.method.get("lr") is not None:
        return float(cfg.method.lr)
    per_method = cfg.task.optim.get("lr_per_method") or {}
    return float(per_method.get(cfg.method.name, cfg.task.optim.lr))


def world_size(cfg: DictConfig) -> int:
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    devices = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else devices
    if devices in ("auto", -1, "-1"):
        devices = max(1, torch.cuda.device_count())
    return int(devices) * int(nodes)


def per_device_batch(cfg: DictConfig) -> int:
    """The task's ``batch_size`` is the global batch: split it over devices x nodes."""
    total, world = int(cfg.task.batch_size), world_size(cfg)
    if total % world:
        raise ConfigError(f"task.batch_size={total} is not divisible by devices x nodes = {world}")
    return total // world


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: DictConfig) -> None:
    """Fail fast on values that cannot work."""
    _check(cfg.mode in ("train", "count"), "mode", f"must be 'train' or 'count', got {cfg.mode!r}")
    method = method_settings(cfg)
    linear = method.get("linear")
    _check(
        linear is None or linear in ADAPTER_KINDS,
        "method.linear",
        f"unknown adapter {linear!r}; available: {', '.join(sorted(ADAPTER_KINDS))}",
    )
    options = method.get("options") or {}
    if "r" in options:
        _check(int(options["r"]) >= 1, "method.options.r", f"rank must be >= 1, got {options['r']}")
    if "dropout" in options:
        _check(0 <= float(options["dropout"]) < 1, "method.options.dropout", f"must be in [0, 1), got {options['dropout']}")
    target_sets = cfg.model.get("target_sets") or {}
    for key in ("targets", "gamma_targets"):
        name = method.get(key)
        if name and (linear or method.get("bias") or method.get("gamma")):
            _check(name in target_sets, f"method.{key}", f"model '{cfg.model.name}' has no target set {name!r}; it has {list(target_sets)}")
    method_spec(cfg)  # the adapter layer's own checks
    if cfg.mode == "count":
        return
    lr = learning_rate(cfg)
    _check(lr > 0, "method.lr / task.optim.lr", f"learning rate must be > 0, got {lr}")
    _check(float(cfg.task.optim.get("weight_decay", 0)) >= 0, "task.optim.weight_decay", "must be >= 0")
    _check(int(cfg.task.epochs) >= 1, "task.epochs", f"must be >= 1, got {cfg.task.epochs}")
    _check(int(cfg.task.batch_size) >= 1, "task.batch_size", f"must be >= 1, got {cfg.task.batch_size}")
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda"):
        _check(
            torch.cuda.is_available(),
            "trainer.accelerator",
            "'gpu' was asked for but no CUDA GPU is visible here; use trainer=default (or trainer=cpu)",
        )
    if "bf16" in str(cfg.trainer.precision) and accelerator in ("gpu", "cuda"):
        _check(torch.cuda.is_bf16_supported(), "trainer.precision", "bf16 is not supported by this GPU; use 16-mixed or 32-true")
    per_device_batch(cfg)
