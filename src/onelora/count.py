"""``mode=count``: exact parameter counts of a full-size model on the meta device (no weights)."""

from __future__ import annotations

import json
from typing import Any, Mapping

import torch

from .adapters import MethodSpec, inject
from .models import build_model


def count_parameters_of(model_cfg: Mapping[str, Any], method: MethodSpec, model_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameter report of ``method`` on the model ``model_cfg`` builds (with the task's ``model_args``)."""
    with torch.device("meta"):
        model = build_model(model_cfg, load_weights=False, **dict(model_args or {}))
    report = inject(model, method, target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [],
                    module_sets=model_cfg.get("module_sets") or {})
    return {k: v for k, v in report.summary().items() if k != "method"}


def count(settings: Any) -> dict[str, Any]:
    """Print and return the count for a run's settings (model, method, the task's model_args)."""
    out = {"model": settings.names["model"], "method": settings.names["method"]}
    out.update(count_parameters_of(settings.model, settings.method, settings.model_args))
    print(json.dumps(out), flush=True)
    return out
