"""Source-task pre-training for tasks that ship their own (the laptop-sized transfers): the model is
trained once from random init on the source task and cached, keyed by everything that shaped it, so
every later run (and every run of a sweep) fine-tunes the same weights.

A task's ``pretrain`` block is read through the task contract, as the task itself: its ``data``,
``module``, ``model_args`` and ``parts`` are merged over the task's own; ``optimizer``,
``scheduler``, ``epochs``, ``max_steps``, ``batch_size``, ``lr_scales`` and ``seed`` replace them.
The saved weights leave out the model's head (``model.head`` patterns), so fine-tuning starts from
a fresh head; a model with ``head_init: source`` keeps its head's source weights instead (a causal
LM whose ``lm_head`` every method trains, conf/model/llama_mini.yaml).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from .adapters import MethodSpec, inject
from .adapters.targeting import is_under
from .callbacks import BestMetric, RunStats
from .config import ConfigError, as_int, plain
from .files import apply_umask
from .contract import MetricSpec, TaskContract, build
from .models import build_model
from .models.weights import UnreadableWeightsError, read_state_dict

log = logging.getLogger(__name__)

MERGED = ("data", "module", "model_args", "parts")
REPLACED = ("optimizer", "scheduler", "epochs", "max_steps", "batch_size", "lr_scales", "metric", "dataset")
#: settings that say where things are, not what is trained (left out of the cache key)
PLACES = ("num_workers", "root", "cache_dir", "data_dir", "persistent_workers", "pin_memory")


def pretrain_task(task: DictConfig) -> DictConfig:
    """The task as pre-training sees it: ``task.pretrain`` merged over the task."""
    pre = task.pretrain
    unknown = set(pre) - set(MERGED) - set(REPLACED) - {"seed", "val_every_n_epochs", "val_check_interval"}
    if unknown:
        raise ConfigError(f"task.pretrain: unknown key(s) {sorted(unknown)}; it takes "
                          f"{sorted(MERGED + REPLACED)}, seed, val_every_n_epochs and val_check_interval")
    merged = {k: v for k, v in plain(task).items() if k not in ("pretrain", "lr_per_method")}
    pre = plain(pre)
    for key in MERGED:
        if pre.get(key) is not None:
            merged[key] = plain(OmegaConf.merge(merged.get(key) or {}, pre[key]))
    if "epochs" in pre or "max_steps" in pre:  # pre-training's own budget, not fine-tuning's
        merged.pop("epochs", None)
        merged.pop("max_steps", None)
    for key in REPLACED:
        if key in pre:
            merged[key] = pre[key]
    return OmegaConf.create(merged)


#: task keys that shape fine-tuning or reporting only, never the pre-trained weights
NOT_PRETRAINING = ("resources", "test_final", "paper", "family", "name", "time_budget")


def _without_places(value: Any) -> Any:
    """Drop where-things-are keys; a generated place (a ``_target_`` that writes synthetic data)
    is a setting and stays."""
    if isinstance(value, dict):
        return {k: _without_places(v) for k, v in value.items()
                if k not in PLACES or (isinstance(v, dict) and "_target_" in v)}
    if isinstance(value, list):
        return [_without_places(v) for v in value]
    return value


def pretrain_settings(model_cfg: dict[str, Any], task: DictConfig) -> dict[str, Any]:
    model = {k: model_cfg.get(k) for k in ("builder", "timm_name", "arch", "input", "head", "dtype")}
    if model_cfg.get("head_init"):  # only when set: the other models' cached weights keep their keys
        model["head_init"] = head_init(model_cfg)  # checked here, before pre-training, not after it
    return {
        "model": model,
        "task": _without_places({k: v for k, v in plain(pretrain_task(task)).items() if k not in NOT_PRETRAINING}),
        "seed": plain(task.pretrain.get("seed", 0)),
    }


def head_init(model_cfg: dict[str, Any]) -> str:
    """``fresh`` (default): fine-tuning re-initialises the model's head; ``source``: it starts from
    the pre-trained head (which still trains with every method)."""
    value = model_cfg.get("head_init") or "fresh"
    if value not in ("fresh", "source"):
        raise ConfigError(f"model.head_init: must be 'fresh' or 'source', got {value!r}")
    return value


def pretrained_path(settings: Any) -> Path:
    key_data = pretrain_settings(settings.model, settings.task.cfg)
    key = hashlib.sha1(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = f"{settings.cfg.model.name}-{settings.cfg.task.name}-{key}.safetensors"
    return Path(settings.cfg.paths.cache_dir) / "pretrained" / name


def ensure_pretrained(settings: Any, offered: dict[str, Any]) -> Path:
    """The cached source-task weights for this run, training them first if needed."""
    path = pretrained_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # parallel sweep jobs pre-train once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            try:
                read_state_dict(path)
                log.info("Using the cached source-task weights %s", path)
                return path
            except UnreadableWeightsError:  # ours, and damaged (a killed writer, a full disk): rebuild it
                print(f"The cached source-task weights {path} are damaged; pre-training them again", flush=True)
                path.unlink()
        _pretrain(settings, offered, path)
    return path


def _pretrain(settings: Any, offered: dict[str, Any], path: Path) -> None:
    cfg = settings.cfg
    task_cfg = pretrain_task(settings.task.cfg)
    contract = TaskContract(task_cfg, MetricSpec.from_config(plain(task_cfg.metric), "task.pretrain.metric"))
    epochs, max_steps = task_cfg.get("epochs"), task_cfg.get("max_steps")
    budget = f"{epochs} epochs" if epochs else f"{max_steps} steps"
    print(f"Pre-training {cfg.model.name} on the {cfg.task.name} source task ({budget}, once; cached at {path})",
          flush=True)
    start = time.perf_counter()
    L.seed_everything(as_int(settings.task.cfg.pretrain.get("seed", 0), "task.pretrain.seed", minimum=0),
                      workers=True, verbose=False)
    parts = {**offered, **contract.build_parts()}
    parts["batch_size"] = as_int(task_cfg.batch_size, "task.pretrain.batch_size", minimum=1)
    data = build(task_cfg.data, "task.pretrain.data", parts)
    model_cfg = dict(settings.model, pretrained=None)
    head = list(model_cfg.get("head") or [])
    model = build_model(model_cfg, load_weights=False, **contract.model_args)
    inject(model, MethodSpec(name="full", full=True), target_sets=model_cfg["target_sets"], head=head)
    module = build(task_cfg.module, "task.pretrain.module", parts, model=model,
                   optimizer=build(task_cfg.optimizer, "task.pretrain.optimizer"),
                   scheduler=build(task_cfg.scheduler, "task.pretrain.scheduler") if task_cfg.get("scheduler") else None,
                   metric=contract.metric.as_dict(), lr_scales=plain(task_cfg.get("lr_scales") or {}))
    stats = RunStats(time.time())
    best = BestMetric(contract.metric.as_dict(), stats)
    # validation rounds: every N steps (step budgets), else every N epochs (a tenth of the epochs)
    interval = settings.task.cfg.pretrain.get("val_check_interval")
    every = None if interval else task_cfg.get("val_every_n_epochs") or max(1, int(epochs or 1) // 10)
    trainer = L.Trainer(
        max_epochs=int(epochs) if epochs else -1,
        max_steps=int(max_steps) if max_steps else -1,
        accelerator=cfg.trainer.accelerator,
        precision=cfg.trainer.precision,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=every,
        val_check_interval=interval,
        enable_progress_bar=bool(cfg.trainer.get("enable_progress_bar", True)),
        callbacks=[stats, best],
    )
    trainer.fit(module, datamodule=data)
    dropped = [] if head_init(model_cfg) == "source" else head  # the head re-initialised by fine-tuning
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not is_under(k.rpartition(".")[0], dropped)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(weights, str(tmp))
    apply_umask(tmp)
    tmp.replace(path)
    metric = contract.metric
    info = {"settings": pretrain_settings(settings.model, settings.task.cfg), "metric": metric.name,
            "source_val": best.last, "source_best_val": best.best, "seconds": round(time.perf_counter() - start, 1)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    value = "n/a" if best.last is None else f"{best.last:.4g}"
    print(f"Source-task weights ready: {metric.val_key} {value} in {info['seconds']:.0f} s", flush=True)
