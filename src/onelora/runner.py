"""One experiment, end to end: settings -> the training pipeline (task parts and data -> model ->
inject -> Lightning fit; onelora.pipeline) -> test of the best and the final weights -> results.json.
The runner knows no task: it reads only the settings and the task contract (docs/task_contract.md)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from . import __version__
from .adapters import save_adapter
from .callbacks import peak_memory
from .config import ConfigError
from .count import count, reported_params
from .pipeline import RunTerminated, finish_loggers, fit, resumable
from .quiet import quiet_library_noise
from .results import RESULTS_NAME, SCHEMA_VERSION, remove_stale_temporaries, write_json_atomic
from .runlock import RunLock
from .settings import RunSettings
from .sweeps import log_event

log = logging.getLogger(__name__)

#: what a forced re-run clears (the logs stay, one version per attempt)
RUN_ARTEFACTS = ("checkpoints", "adapter", "predictions", "artifacts", RESULTS_NAME)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RESULTS_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def rank() -> int:
    """This process's global rank (Lightning's DDP children set RANK; SLURM tasks SLURM_PROCID)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ and (key != "SLURM_PROCID" or int(os.environ.get("SLURM_NTASKS", "1")) > 1):
            return int(os.environ[key])
    return 0


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run (or count, or skip) the experiment ``cfg`` describes; returns its record. The config is
    read here once, into the settings; nothing below reads it again."""
    quiet_library_noise()
    settings = RunSettings.from_config(cfg)
    if settings.mode == "count":
        return count(settings)
    if settings.mode == "plan":
        from .plan import plan

        return plan(settings)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    run_dir, started = settings.run_dir, time.time()
    if rank() != 0:  # DDP / multi-task SLURM workers: rank 0 holds the lock and decides
        return train(settings, run_dir, started, resume_from=resumable(settings, run_dir, check=False))
    with RunLock(run_dir):
        remove_stale_temporaries(run_dir)
        done = read_record(run_dir)
        if done and done.get("status") == "completed" and not settings.force:
            if done.get("fingerprint") == settings.fingerprint:
                print(f"Already completed, skipping: {run_dir} (force=true to run again)", flush=True)
                log_event("skipped", run_dir)
                return done
            raise ConfigError(
                f"{run_dir} holds a completed run with a different config; set run_tag=<suffix> to keep both, "
                f"or force=true to replace it"
            )
        if settings.force:
            for name in RUN_ARTEFACTS:
                path = run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        try:
            record = train(settings, run_dir, started, resume_from=resumable(settings, run_dir))
        except BaseException as err:
            if isinstance(err, SIGTERMException):  # stopped outside fit (set-up, testing)
                err = RunTerminated("SIGTERM", 143)
            terminated = isinstance(err, RunTerminated)
            status = "interrupted" if terminated else "failed"
            if terminated:  # from its checkpoint (the source run's, when pre-training was stopped), if one was written
                last = Path(err.checkpoint or run_dir / "checkpoints" / "last.ckpt")
                error = (f"stopped by {err}; relaunch the same command to "
                         + (f"resume from {last}" if last.is_file() else "start it again (no checkpoint was written yet)"))
            else:
                error = f"{type(err).__name__}: {err}"
            previous = read_record(run_dir)
            if not (previous and previous.get("status") == "completed"):  # never overwrite a result
                write_json_atomic(run_dir / RESULTS_NAME, base_record(settings, run_dir, started, status=status) | {
                    "error": error, "traceback": traceback.format_exc(limit=20)})
            log_event(status, run_dir, error=error)
            if terminated:
                raise RunTerminated(f"run {run_dir} {error}", err.exit_status) from None
            raise
    log_event("completed", run_dir)
    return record


def base_record(settings: RunSettings, run_dir: Path, started: float, status: str) -> dict[str, Any]:
    task, names = settings.task, settings.names
    return {
        "schema": SCHEMA_VERSION,
        "status": status,
        "experiment": settings.experiment,
        "task": names["task"],
        "family": task.family,
        "dataset": (task.dataset or {}).get("name"),
        "paper": task.paper,
        "model": names["model"],
        "method": names["method"],
        "method_parts": settings.method.parts,
        # the options the method ran with: its YAML's, the model's overrides, the task's method_options
        "method_options": dict(settings.method.options),
        "seed": settings.seed,
        "run_dir": str(run_dir),
        "fingerprint": settings.fingerprint,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "git_commit": git_commit(),
        "versions": versions(),
        "config": settings.config,
        "slurm": slurm_info(),
    }


def slurm_info() -> dict[str, str] | None:
    """The SLURM job this run ran in, if any (job id, array task, node)."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT")
    info = {k.lower().removeprefix("slurm_"): os.environ[k] for k in keys if k in os.environ}
    return info or None


def train(settings: RunSettings, run_dir: Path, started: float, resume_from: str | None) -> dict[str, Any]:
    """Fit (the pipeline), then test the best validation round's and the final weights, and record."""
    task, evaluating = settings.task, settings.mode == "eval"
    fitted = fit(settings, run_dir, started, resume_from)
    trainer, module, data, best = fitted.trainer, fitted.module, fitted.data, fitted.best
    test_started = time.perf_counter()
    final = _test(trainer, module, data, None) if task.test_final or evaluating else {}
    best_path = None if evaluating else fitted.best_checkpoint.best_model_path or None  # none when no validation round ran
    at_best = _test(trainer, module, data, best_path) if best_path or not final else final
    test_s = time.perf_counter() - test_started

    record = base_record(settings, run_dir, started, status="completed")
    metric = task.metric
    record.update(
        metric={
            **metric.as_dict(),
            **best.summary(),
            "test": at_best.get(metric.test_key),
            "test_final": final.get(metric.test_key),
            "extra": {name: {"test": at_best.get(key), "test_final": final.get(key)} for name, key in metric.extra.items()},
        },
        metrics={**fitted.metrics, **at_best, **{f"final:{k}": v for k, v in final.items()}},
        time={**fitted.stats.times(), "time_to_best_s": best.time_to_best_s, "test_s": round(test_s, 3)},
        memory={**peak_memory(), "model_bytes": dict(fitted.memory.bytes)},
        params=trained_params(settings, fitted.report.summary(), evaluating),
        lr=settings.lr,
        batch={"global": int(task.batch_size), "per_device": settings.batch_per_device,
               "accumulate": settings.accumulate, "world_size": trainer.world_size},
        pretrained_from=fitted.weights_from,  # the base weights (a hub id, a file, the cached source-task weights)
        trained=not evaluating,  # mode=eval: evaluated as loaded, no training
        world_size=trainer.world_size,
        global_step=trainer.global_step,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    if trainer.is_global_zero:
        if hasattr(module, "artifacts"):  # predictions, sample grids, answers: from the best weights
            module.weights_step = None if evaluating else best.best_step if best_path else trainer.global_step
            module.artifacts(run_dir, data)
        if not evaluating:
            save_adapter(run_dir / "adapter", fitted.model, target_sets=settings.model["target_sets"],
                         extra={"model": settings.names["model"], "task": task.name, "seed": settings.seed,
                                "weights": "best validation round" if best_path else "final"})
        record["time"]["total_s"] = fitted.stats.times()["total_s"]
        write_json_atomic(run_dir / RESULTS_NAME, record)
        for logger in fitted.loggers:
            if logger.__class__.__name__ == "WandbLogger":
                logger.experiment.summary["results"] = json.loads(json.dumps(record, default=str))
        print_summary(record)
    finish_loggers(fitted.loggers)
    return record


def trained_params(settings: RunSettings, summary: dict[str, Any], evaluating: bool) -> dict[str, Any]:
    """The record's ``params``: what trains (adapter + head = ``trainable_params``) and, beside it,
    the count the paper's tables print (``reported_params``, ``reported_as``: e.g. the adapter alone
    where the model's own output layer trains too; ``onelora.count.reported_params``). An evaluation
    trains nothing, whatever the method would have trained."""
    params = {k: v for k, v in summary.items() if k != "method"}
    params.update(reported_params(params, settings.model, settings.method))
    if evaluating:
        params.update({k: 0 for k in ("adapter_params", "head_params", "trainable_params", "reported_params")})
    return params


def _test(trainer: L.Trainer, module: L.LightningModule, data: Any, ckpt_path: str | None) -> dict[str, float]:
    if type(data).test_dataloader is L.LightningDataModule.test_dataloader:  # the task has no test split
        return {}
    out = trainer.test(module, datamodule=data, ckpt_path=ckpt_path, verbose=False)
    return {k: float(v) for k, v in (out[0] if out else {}).items()}


def print_summary(record: dict[str, Any]) -> None:
    m, t, p, mem = record["metric"], record["time"], record["params"], record["memory"]
    value = m["test"] if m["test"] is not None else m["best_val"]
    where = "test, best validation round" if m["test"] is not None else "best val"
    best_at = f" (epoch {m['best_epoch']}, {t['time_to_best_s']:.1f} s)" if m.get("best_epoch") is not None else ""
    final = f"   final weights: {m['test_final']:.4g}" if m.get("test_final") is not None else ""
    lines = [
        f"{record['task']} | {record['model']} | {record['method']} | seed {record['seed']}",
        f"  {m['name']} ({where}): {_fmt(value)}   best val: {_fmt(m['best_val'])}{best_at}{final}",
        f"  time: train {t['train_s']:.1f} s + val {t['val_s']:.1f} s  (whole run {t['total_s']:.1f} s)",
        f"  peak memory ({mem['device']}, {mem['kind']}): {mem['peak_bytes'] / 2**20:.0f} MiB",
        f"  trainable parameters: {p['adapter_params']:,} adapter + {p['head_params']:,} head = "
        f"{p['trainable_params']:,} trained (of {p['total_params']:,}; {p['adapted_layers']} adapted layers)"
        + (f"; the paper's count: {p['reported_params']:,} ({p.get('reported_as', 'adapter')})"
           if p.get("reported_params") is not None and p["reported_params"] != p["trainable_params"] else ""),
        f"  results: {record['run_dir']}/{RESULTS_NAME}",
    ]
    print("\n".join(lines), flush=True)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode:
            return None
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "onelora": __version__}
    for package in ("torch", "lightning", "transformers", "timm", "hydra-core", "torchvision", "diffusers"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out


