"""Source-task pre-training for tasks that ship their own (the laptop-sized transfers): the model is
trained once from random init on the source task and cached, keyed by everything that shaped it, so
every later run (and every run of a sweep) fine-tunes the same weights.

Pre-training is a training run: the source run (the task's ``pretrain`` block over the task,
``method=full`` from random init, its own seed, budget and trainer, its cache key: the settings'
``RunSettings.source``) goes through the same pipeline as fine-tuning (onelora.pipeline), so
checkpoints and resuming, NaN stops, signals, progress and memory records apply to it too; it runs
in ``<cache>/pretrained/<model>-<task>-<key>/`` (CSV logs; its checkpoints until it is done). The
one place that looks the cache up and locks it is :func:`ensure_pretrained`. The saved weights leave out the model's head (``model.head`` patterns),
so fine-tuning starts from a fresh head; a model with ``head_init: source`` keeps its head's source
weights instead (a causal LM whose ``lm_head`` every method trains, conf/model/llama_mini.yaml).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from safetensors.torch import save_file

from .adapters.targeting import is_under
from .cache import build_once
from .callbacks import peak_memory
from .files import apply_umask
from .models.weights import UnreadableWeightsError, read_state_dict
from .pipeline import finish_loggers, fit, resumable
from .settings import RunSettings, head_init

log = logging.getLogger(__name__)


def pretrained_path(settings: RunSettings) -> Path:
    """Where the run's source-task weights are cached: ``<cache>/pretrained/<model>-<task>-<key>.safetensors``."""
    folder = settings.source.run_dir
    return folder.parent / f"{folder.name}.safetensors"


def ensure_pretrained(settings: RunSettings) -> Path:
    """The cached source-task weights for this run, training them first if needed (a complete
    cached copy is only read: a teammate's read-only cache serves as it is; parallel sweep jobs
    pre-train once)."""

    def pretrain(path: Path) -> None:
        if path.exists():  # ours, and damaged (a killed writer, a full disk): rebuild it
            print(f"The cached source-task weights {path} are damaged; pre-training them again", flush=True)
            path.unlink()
        _pretrain(settings.source, path)

    path = build_once(pretrained_path(settings), pretrain, complete=_readable, what="the cached source-task weights")
    log.info("Using the cached source-task weights %s", path)
    return path


def _readable(path: Path) -> bool:
    """A complete weights file; absent or damaged: False. One this user may not read raises the
    PermissionError (a teammate's file is not damaged, and is not rebuilt over)."""
    if not path.is_file():
        return False
    try:
        read_state_dict(path)
        return True
    except UnreadableWeightsError:
        return False


def _pretrain(source: RunSettings, path: Path) -> None:
    """The source run through the training pipeline, in its cache folder (where a stopped
    pre-training resumes from its last checkpoint), then its final weights saved under ``path``."""
    task, names = source.task, source.names
    budget = f"{task.epochs} epochs" if task.epochs else f"{task.max_steps} steps"
    print(f"Pre-training {names['model']} on the {task.name} source task ({budget}, once; cached at {path})",
          flush=True)
    start = time.perf_counter()
    fitted = fit(source, source.run_dir, time.time(), resumable(source, source.run_dir))
    finish_loggers(fitted.loggers)
    dropped = [] if head_init(source.model) == "source" else list(source.model.get("head") or [])  # re-initialised
    weights = {k: v.detach().cpu().contiguous() for k, v in fitted.model.state_dict().items()
               if not is_under(k.rpartition(".")[0], dropped)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(weights, str(tmp))
    apply_umask(tmp)
    tmp.replace(path)
    best, metric = fitted.best, task.metric
    info = {"settings": source.config, "metric": metric.name, "source_val": best.last, "source_best_val": best.best,
            "seconds": round(time.perf_counter() - start, 1), "global_step": fitted.trainer.global_step,
            "time": fitted.stats.times(), "memory": {**peak_memory(), "model_bytes": dict(fitted.memory.bytes)},
            "run_dir": str(source.run_dir)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
    shutil.rmtree(source.run_dir / "checkpoints", ignore_errors=True)  # the weights are saved: no resume needed
    value = "n/a" if best.last is None else f"{best.last:.4g}"
    print(f"Source-task weights ready: {metric.val_key} {value} in {info['seconds']:.0f} s", flush=True)
