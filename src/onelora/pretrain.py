"""Source-task pre-training for tasks that ship their own (the digits default): the backbone is
trained once from random init on the source split and cached, keyed by every setting that
shapes it, so the second run (and every run of a sweep) starts from the same weights."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors.torch import save_file

from .adapters import MethodSpec, inject
from .config import plain
from .models import build_model

log = logging.getLogger(__name__)


def pretrain_settings(cfg: DictConfig) -> dict[str, Any]:
    model = plain(cfg.model)
    return {
        "model": {k: model.get(k) for k in ("builder", "timm_name", "arch", "input")},
        "task": cfg.task.name,
        "data": {k: v for k, v in plain(cfg.task.data).items() if k not in ("num_workers",)},
        "num_classes": cfg.task.num_classes,
        "pretrain": plain(cfg.task.pretrain),
    }


def pretrained_path(cfg: DictConfig) -> Path:
    settings = pretrain_settings(cfg)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.paths.cache_dir) / "pretrained" / f"{cfg.model.name}-{cfg.task.name}-{key}.safetensors"


def ensure_pretrained(cfg: DictConfig) -> Path:
    """The cached source-task backbone for this config, training it first if needed."""
    path = pretrained_path(cfg)
    if path.is_file():
        log.info("Using the cached source-task backbone %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # parallel sweep jobs pre-train once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            _pretrain(cfg, path)
    return path


def _pretrain(cfg: DictConfig, path: Path) -> None:
    pre = cfg.task.pretrain
    print(f"Pre-training the {cfg.model.name} backbone on the {cfg.task.name} source split "
          f"({pre.epochs} epochs, once; cached at {path})", flush=True)
    start = time.perf_counter()
    L.seed_everything(int(pre.seed), workers=True, verbose=False)
    model_cfg = dict(plain(cfg.model), pretrained=None)
    head = list(model_cfg.get("head") or [])
    model = build_model(model_cfg, num_classes=cfg.task.num_classes, load_weights=False)
    inject(model, MethodSpec(name="full", full=True), target_sets=model_cfg["target_sets"], head=head)
    data = instantiate(cfg.task.data, **plain(pre.data), batch_size=int(pre.batch_size), model_input=model_cfg.get("input"))
    module = instantiate(
        cfg.task.module, model=model, optim=plain(pre.optim), schedule=plain(pre.schedule), metric=plain(cfg.task.metric)
    )
    trainer = L.Trainer(
        max_epochs=int(pre.epochs),
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(1, int(pre.epochs) // 10),
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=data)
    backbone = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                if not any(k == h or k.startswith(h + ".") for h in head)}
    tmp = path.with_suffix(".tmp")
    save_file(backbone, str(tmp))
    tmp.replace(path)
    info = {"settings": pretrain_settings(cfg), "source_val_accuracy": module.last_val,
            "seconds": round(time.perf_counter() - start, 1)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    print(f"Source-task backbone ready: validation accuracy {module.last_val:.1f}% "
          f"in {info['seconds']:.0f} s", flush=True)
