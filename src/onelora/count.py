"""``mode=count``: exact parameter counts of a full-size model on the meta device (no weights), and
the count the paper's tables print beside what really trains."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, Mapping, Sequence

import torch

from .adapters import MethodSpec, inject
from .config import ConfigError
from .models import build_model

#: what a model's ``reported_params`` may say the paper's parameter column counts
REPORTED_KINDS = ("adapter", "trainable")


def reported_kind(model_cfg: Mapping[str, Any], method: str) -> str:
    """Which count the paper's tables print for ``method`` on this model: ``model.reported_params``,
    ``adapter`` or ``trainable``, or a mapping of method name to either with a ``default``."""
    kind = model_cfg.get("reported_params") or "adapter"
    if isinstance(kind, Mapping):
        kind = kind.get(method) or kind.get("default") or "adapter"
    if kind not in REPORTED_KINDS:
        raise ConfigError(f"model.reported_params: must be one of {', '.join(REPORTED_KINDS)} (or a mapping of "
                          f"method name to one, with a default), got {kind!r}")
    return str(kind)


def reported_params(params: Mapping[str, Any], model_cfg: Mapping[str, Any], method: MethodSpec) -> dict[str, Any]:
    """The count the paper's tables print for ``method`` on this model (``reported_params``) and
    which count that is (``reported_as``, :func:`reported_kind`): the adapter alone (ViT, Depth
    Anything, LLaMA: whatever else trains, such as the DPT output convolution of Depth Anything's
    metric models or a new classifier) or everything that trains (DiT: its re-initialised class
    table included). ``trainable_params`` stays what really trains."""
    kind = reported_kind(model_cfg, method.name)
    return {"reported_params": int(params["trainable_params" if kind == "trainable" else "adapter_params"]),
            "reported_as": kind}


def count_parameters_of(model_cfg: Mapping[str, Any], method: MethodSpec, model_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameter report of ``method`` on the model ``model_cfg`` builds (with the task's
    ``model_args``), with the paper's count of it (:func:`reported_params`)."""
    key = json.dumps([model_cfg, dict(model_args or {})], sort_keys=True, default=_plain)
    model = copy.deepcopy(_meta_model(key))
    report = inject(model, method, target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [],
                    module_sets=model_cfg.get("module_sets") or {})
    out = {k: v for k, v in report.summary().items() if k != "method"}
    return {**out, **reported_params(out, model_cfg, method)}


def _plain(value: Any) -> Any:
    """JSON for config nodes (OmegaConf's are Mappings and Sequences, not dicts and lists)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence):
        return list(value)
    return str(value)


@lru_cache(maxsize=4)
def _meta_model(key: str) -> torch.nn.Module:
    """The un-adapted model on the meta device, built once per process for its config: a sweep of
    methods over one model (``make count-paper``) copies it (ms) instead of building it again (s)."""
    model_cfg, model_args = json.loads(key)
    with torch.device("meta"):
        return build_model(model_cfg, load_weights=False, **model_args)


def count(settings: Any) -> dict[str, Any]:
    """Print and return the count for a run's settings (model, method, the task's model_args)."""
    out = {"model": settings.names["model"], "method": settings.names["method"]}
    out.update(count_parameters_of(settings.model, settings.method, settings.model_args))
    print(json.dumps(out), flush=True)
    return out
