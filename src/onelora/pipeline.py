"""The one training pipeline: settings -> task parts and data -> model (weights, adapters) -> module
-> Lightning Trainer -> fit (or, for ``mode=eval``, one validation round). Every training run goes
through it: a fine-tuning run (``runner.train`` then tests it and writes its record) and a
source-task pre-training (``pretrain``, a run of ``method=full`` with its own budget, in its cache
folder). So checkpoints and resuming, the stop at a non-finite loss, SIGTERM / Ctrl-C, progress,
timing and memory records are the same for both."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment

from .adapters import AdapterReport, inject
from .callbacks import BestMetric, CompileModel, LastCheckpoint, ModelMemory, RunIdentity, RunStats
from .config import ConfigError
from .contract import build
from .models import build_model
from .settings import RunSettings


class RunTerminated(RuntimeError):
    """The run was stopped by a signal (SIGTERM: kill, timeout, scancel; SIGINT: Ctrl-C); a relaunch
    resumes it from ``checkpoint``. ``exit_status`` is what the shell reports for that signal (143, 130)."""

    def __init__(self, message: str, exit_status: int, checkpoint: Path | None = None):
        super().__init__(message)
        self.exit_status = exit_status
        self.checkpoint = checkpoint


@dataclass
class Fitted:
    """What a fit leaves: the trainer and the objects it trained, and the callbacks' records."""

    trainer: L.Trainer
    loggers: list[Any]
    data: Any
    model: torch.nn.Module
    module: L.LightningModule
    report: AdapterReport
    weights_from: str | None  # the base weights: a hub id, a file, the cached source-task weights
    stats: RunStats
    best: BestMetric
    memory: ModelMemory
    best_checkpoint: ModelCheckpoint
    metrics: dict[str, float]  # the logged metrics after the fit (or the validation round)


def fit(settings: RunSettings, run_dir: Path, started: float, resume_from: str | None) -> Fitted:
    """Build everything the settings describe and train it (``mode=eval``: validate it once)."""
    task = settings.task
    L.seed_everything(settings.seed, workers=True, verbose=False)
    if settings.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    parts = task.build_parts()
    offered = {"batch_size": settings.batch_per_device, "model_input": settings.model.get("input"), **parts}
    data = build(task.data, f"{task.where}.data", offered)
    data.prepare_data()  # a missing dataset stops the run here, before any weights are fetched
    model, report, weights_from = prepare_model(settings)
    module = build(task.module, f"{task.where}.module", offered, model=model, optimizer=settings.optimizer(),
                   scheduler=settings.scheduler(), metric=task.metric.as_dict(), lr_scales=task.lr_scales)
    stats = RunStats(started)
    best = BestMetric(task.metric.as_dict(), stats)
    memory = ModelMemory()
    stopper = LastCheckpoint(run_dir / "checkpoints" / "last.ckpt", settings.trainer.checkpoint_every_n_train_steps)
    trainer, loggers, best_checkpoint = build_trainer(settings, run_dir, [stats, best, memory, stopper])
    if settings.mode == "eval":  # the weights as they are (the un-adapted source model): one validation round
        metrics = {k: float(v) for k, v in (trainer.validate(module, datamodule=data, verbose=False) or [{}])[0].items()}
        best.best = best.last = metrics.get(task.metric.val_key)
    else:
        if resume_from:
            print(f"Resuming from {resume_from}", flush=True)
        try:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        except BaseException:
            if stopper.signal:  # SIGTERM or Ctrl-C: a checkpoint is saved, a relaunch resumes
                raise RunTerminated(stopper.signal, 130 if "SIGINT" in stopper.signal else 143, stopper.path) from None
            raise
        if trainer.global_step == 0:
            raise RuntimeError("trained 0 optimizer steps (check trainer.max_steps / limit_train_batches and the "
                               "training set's size): the weights are the initial ones, so there is no result")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return Fitted(trainer, loggers, data, model, module, report, weights_from, stats, best, memory, best_checkpoint,
                  metrics)


def prepare_model(settings: RunSettings) -> tuple[torch.nn.Module, AdapterReport, str | None]:
    """The task's model with the run's weights (pre-trained first if the run has a source run),
    adapted by the run's method; and where those weights came from."""
    spec = dict(settings.model)
    if settings.source is not None:
        from .pretrain import ensure_pretrained

        spec["pretrained"] = str(ensure_pretrained(settings))
        L.seed_everything(settings.seed, workers=True, verbose=False)
    try:
        model = build_model(spec, load_weights=settings.load_weights, **settings.model_args)
    except TypeError as err:
        raise ConfigError(f"{settings.task.where}.model_args: {err}") from None
    report = inject(model, settings.method, target_sets=spec["target_sets"], head=spec.get("head") or [],
                    module_sets=spec.get("module_sets") or {})
    return model, report, spec.get("pretrained")


def resumable(settings: RunSettings, run_dir: Path, check: bool = True) -> str | None:
    """``checkpoints/last.ckpt`` if the run should continue from it; refuses one from another config."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (settings.resume and last.is_file()):
        return None
    if not check:
        return str(last)
    try:
        saved = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # empty, truncated, not a checkpoint
        raise ConfigError(
            f"resume: cannot read the checkpoint {last} ({type(err).__name__}: {str(err)[:120]}); it is damaged. "
            "Relaunch with resume=false to start over (or delete it)"
        ) from None
    found = (saved.get("onelora") or {}).get("fingerprint") if isinstance(saved, dict) else None
    if found != settings.fingerprint:
        raise ConfigError(
            f"resume: {last} was written by a run with a different config; set run_tag=<suffix> to keep both, "
            "or force=true to start this one afresh"
        )
    return str(last)


def build_loggers(settings: RunSettings, run_dir: Path) -> list[Any]:
    """The run's loggers (``logger.*``, each a ``_target_``), given the run dir and a stable id."""
    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]  # the same wandb run after a requeue
    loggers = [build(node, f"logger.{name}", {"save_dir": str(run_dir), "id": run_id})
               for name, node in settings.loggers.items() if node]
    for logger in loggers:
        if logger.__class__.__name__ == "WandbLogger":
            logger.experiment.config.update(settings.config, allow_val_change=True)
    return loggers


def build_trainer(settings: RunSettings, run_dir: Path, callbacks: list[Any]) -> tuple[L.Trainer, list[Any], ModelCheckpoint]:
    options = dict(settings.trainer.options)
    if isinstance(options.get("strategy"), dict):  # a strategy object from its `_target_` (trainer=fsdp)
        options["strategy"] = build(options["strategy"], "trainer.strategy")
    loggers = build_loggers(settings, run_dir)
    metric = settings.task.metric
    best = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor=metric.val_key,
                           mode=metric.direction, save_top_k=1, enable_version_counter=False,
                           auto_insert_metric_name=False)
    extra = [build(node, f"callbacks.{name}", {}) for name, node in settings.callbacks.items() if node]
    plugins = []
    if SLURMEnvironment.detect():
        # submitit's signal + requeue is the one mechanism; Lightning's would requeue a second time
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = L.Trainer(
        **options,
        plugins=plugins or None,
        default_root_dir=str(run_dir),
        logger=loggers or False,
        callbacks=[best, *callbacks, RunIdentity(settings.fingerprint), *extra,
                   *([CompileModel(settings.trainer.compile)] if settings.trainer.compile else [])],
        deterministic=settings.deterministic or None,
        enable_model_summary=False,
    )
    return trainer, loggers, best


def finish_loggers(loggers: list[Any]) -> None:
    if any(logger.__class__.__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()
