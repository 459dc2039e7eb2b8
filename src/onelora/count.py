"""``mode=count``: exact parameter counts of a full-size model on the meta device (no weights)."""

from __future__ import annotations

import json
from typing import Any

import torch
from omegaconf import DictConfig

from .adapters import inject
from .config import method_spec, plain
from .models import build_model


def count(cfg: DictConfig) -> dict[str, Any]:
    model_cfg = plain(cfg.model)
    with torch.device("meta"):
        model = build_model(model_cfg, num_classes=cfg.task.get("num_classes"), load_weights=False)
    report = inject(model, method_spec(cfg), target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [])
    out = {"model": cfg.model.name, "method": cfg.method.name}
    out.update({k: v for k, v in report.summary().items() if k != "method"})
    print(json.dumps(out), flush=True)
    return out
