"""Source-task pre-training for tasks that ship their own (the laptop-sized transfers): the model is
trained once from random init on the source task and cached, keyed by everything that shaped it, so
every later run (and every run of a sweep) fine-tunes the same weights.

What the source run is (the task's ``pretrain`` block over the task, ``method=full``, its seed,
budget and trainer, its cache key) is settled by the settings (``RunSettings.source``,
``TaskContract.source``). The saved weights leave out the model's head (``model.head`` patterns),
so fine-tuning starts from a fresh head; a model with ``head_init: source`` keeps its head's source
weights instead (a causal LM whose ``lm_head`` every method trains, conf/model/llama_mini.yaml).
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from pathlib import Path

import lightning as L
from safetensors.torch import save_file

from .adapters import inject
from .adapters.targeting import is_under
from .callbacks import BestMetric, RunStats
from .contract import build
from .files import apply_umask
from .models import build_model
from .models.weights import UnreadableWeightsError, read_state_dict
from .settings import RunSettings, head_init

log = logging.getLogger(__name__)


def pretrained_path(settings: RunSettings) -> Path:
    """Where the run's source-task weights are cached: ``<cache>/pretrained/<model>-<task>-<key>.safetensors``."""
    folder = settings.source.run_dir
    return folder.parent / f"{folder.name}.safetensors"


def ensure_pretrained(settings: RunSettings) -> Path:
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
        _pretrain(settings.source, path)
    return path


def _pretrain(source: RunSettings, path: Path) -> None:
    task, names = source.task, source.names
    budget = f"{task.epochs} epochs" if task.epochs else f"{task.max_steps} steps"
    print(f"Pre-training {names['model']} on the {task.name} source task ({budget}, once; cached at {path})",
          flush=True)
    start = time.perf_counter()
    L.seed_everything(source.seed, workers=True, verbose=False)
    parts = task.build_parts()
    offered = {"batch_size": source.batch_per_device, "model_input": source.model.get("input"), **parts}
    data = build(task.data, f"{task.where}.data", offered)
    head = list(source.model.get("head") or [])
    model = build_model(source.model, load_weights=source.load_weights, **source.model_args)
    inject(model, source.method, target_sets=source.model["target_sets"], head=head)
    module = build(task.module, f"{task.where}.module", offered, model=model, optimizer=source.optimizer(),
                   scheduler=source.scheduler(), metric=task.metric.as_dict(), lr_scales=task.lr_scales)
    stats = RunStats(time.time())
    best = BestMetric(task.metric.as_dict(), stats)
    trainer = L.Trainer(**source.trainer.options, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[stats, best])
    trainer.fit(module, datamodule=data)
    dropped = [] if head_init(source.model) == "source" else head  # the head re-initialised by fine-tuning
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not is_under(k.rpartition(".")[0], dropped)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(weights, str(tmp))
    apply_umask(tmp)
    tmp.replace(path)
    metric = task.metric
    info = {"settings": source.config, "metric": metric.name, "source_val": best.last, "source_best_val": best.best,
            "seconds": round(time.perf_counter() - start, 1)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    value = "n/a" if best.last is None else f"{best.last:.4g}"
    print(f"Source-task weights ready: {metric.val_key} {value} in {info['seconds']:.0f} s", flush=True)
