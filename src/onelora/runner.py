"""One experiment, end to end: config -> model -> inject -> Lightning fit/test -> results.json."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from . import __version__
from .adapters import inject, save_adapter
from .callbacks import RunStats, peak_memory
from .config import ConfigError, learning_rate, method_spec, per_device_batch, plain, validate
from .count import count
from .models import build_model
from .quiet import quiet_library_noise
from .sweeps import log_event
from .results import RESULTS_NAME, SCHEMA_VERSION, write_json_atomic

log = logging.getLogger(__name__)

#: config keys that do not change what a run computes (left out of its fingerprint)
NON_RESULT_KEYS = ("paths", "logger", "resume", "force", "hydra", "experiment_name")


def run_dir_of(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.results_dir) / cfg.run_name


def fingerprint(cfg: DictConfig) -> str:
    data = {k: v for k, v in plain(cfg).items() if k not in NON_RESULT_KEYS}
    for key in ("enable_progress_bar", "log_every_n_steps"):
        data.get("trainer", {}).pop(key, None)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RESULTS_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run (or count, or skip) the experiment ``cfg`` describes; returns its record."""
    quiet_library_noise()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.mode == "count":
        validate(cfg)
        return count(cfg)
    run_dir, started = run_dir_of(cfg), time.time()
    try:
        validate(cfg)
        done = read_record(run_dir)
        if done and done.get("status") == "completed" and not cfg.force:
            if done.get("fingerprint") == fingerprint(cfg):
                print(f"Already completed, skipping: {run_dir} (force=true to run again)", flush=True)
                log_event("skipped", run_dir)
                return done
            raise ConfigError(
                f"{run_dir} holds a completed run with a different config; set run_tag=<suffix> to keep both, "
                f"or force=true to replace it"
            )
        record = train(cfg, run_dir, started)
    except Exception as err:
        if _is_rank_zero():
            error = f"{type(err).__name__}: {err}"
            previous = read_record(run_dir)
            if not (previous and previous.get("status") == "completed"):  # never overwrite a result
                write_json_atomic(run_dir / RESULTS_NAME, base_record(cfg, run_dir, started, status="failed") | {
                    "error": error, "traceback": traceback.format_exc(limit=20)})
            log_event("failed", run_dir, error=error)
        raise
    if _is_rank_zero():
        log_event("completed", run_dir)
    return record


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


def base_record(cfg: DictConfig, run_dir: Path, started: float, status: str) -> dict[str, Any]:
    paper = plain(cfg.task.get("paper") or {})
    return {
        "schema": SCHEMA_VERSION,
        "status": status,
        "experiment": cfg.get("experiment_name"),
        "task": cfg.task.name,
        "paper": paper,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "method_parts": _parts(cfg),
        "seed": int(cfg.seed),
        "run_dir": str(run_dir),
        "fingerprint": fingerprint(cfg),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "git_commit": git_commit(),
        "versions": versions(),
        "config": plain(cfg),
        "slurm": slurm_info(),
    }


def slurm_info() -> dict[str, str] | None:
    """The SLURM job this run ran in, if any (job id, array task, node)."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT")
    info = {k.lower().removeprefix("slurm_"): os.environ[k] for k in keys if k in os.environ}
    return info or None


def _parts(cfg: DictConfig) -> list[str] | None:
    try:
        return method_spec(cfg).parts
    except Exception:  # an invalid method is recorded as failed, with the error
        return None


def train(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model_cfg = plain(cfg.model)
    data = instantiate(cfg.task.data, batch_size=per_device_batch(cfg), model_input=model_cfg.get("input"))
    data.prepare_data()  # a missing dataset stops the run here, before any weights are fetched
    if cfg.task.get("pretrain"):
        from .pretrain import ensure_pretrained

        model_cfg["pretrained"] = str(ensure_pretrained(cfg))
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_model(model_cfg, num_classes=cfg.task.get("num_classes"), load_weights=True)
    report = inject(model, method_spec(cfg), target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [])
    module = instantiate(
        cfg.task.module,
        model=model,
        optim={**plain(cfg.task.optim), "lr": learning_rate(cfg)},
        schedule=plain(cfg.task.get("schedule")),
        metric=plain(cfg.task.metric),
    )
    stats = RunStats()
    trainer, loggers = build_trainer(cfg, run_dir, stats)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if cfg.resume and last.is_file() else None
    if ckpt_path:
        print(f"Resuming from {ckpt_path}", flush=True)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test_metrics = trainer.test(module, datamodule=data, verbose=False)[0] if _has_test(data) else {}

    record = base_record(cfg, run_dir, started, status="completed")
    metric = plain(cfg.task.metric)
    record.update(
        metric={
            "name": metric["name"],
            "direction": metric.get("direction", "max"),
            "best_val": module.best_val,
            "final_val": module.last_val,
            "test": test_metrics.get(metric.get("test_key", f"test/{metric['name']}")),
        },
        metrics={**fit_metrics, **{k: float(v) for k, v in test_metrics.items()}},
        time={**stats.times(), "total_s": round(time.time() - started, 3)},
        memory=peak_memory(),
        params={k: v for k, v in report.summary().items() if k != "method"},
        lr=learning_rate(cfg),
        world_size=trainer.world_size,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    if trainer.is_global_zero:
        save_adapter(run_dir / "adapter", model, target_sets=model_cfg["target_sets"],
                     extra={"model": cfg.model.name, "task": cfg.task.name, "seed": int(cfg.seed)})
        write_json_atomic(run_dir / RESULTS_NAME, record)
        for logger in loggers:
            if logger.__class__.__name__ == "WandbLogger":
                logger.experiment.summary["results"] = json.loads(json.dumps(record, default=str))
        print_summary(record)
    _finish_wandb(loggers)
    return record


def _has_test(data: Any) -> bool:
    return type(data).test_dataloader is not L.LightningDataModule.test_dataloader


def build_trainer(cfg: DictConfig, run_dir: Path, stats: RunStats) -> tuple[L.Trainer, list[Any]]:
    t = plain(cfg.trainer)
    # logs/version_N/metrics.csv: one version per attempt, so a resumed run keeps the earlier logs
    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="logs")]
    wandb_cfg = cfg.logger.get("wandb")
    if wandb_cfg:
        from lightning.pytorch.loggers import WandbLogger

        w = plain(wandb_cfg)
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]  # same run after a requeue
        loggers.append(WandbLogger(
            project=w["project"], entity=w.get("entity"), name=w.get("name"), group=w.get("group"),
            tags=list(w.get("tags") or []), mode=w.get("mode", "offline"), save_dir=str(run_dir),
            id=run_id, resume="allow", config=plain(cfg),
        ))
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        save_last=True,  # Lightning writes last.ckpt only alongside a top-k save: keep the latest one
        save_top_k=1,
        every_n_epochs=1,
        every_n_train_steps=t.pop("checkpoint_every_n_train_steps", None),
    )
    plugins = []
    if SLURMEnvironment.detect():
        # submitit's signal + requeue is the one mechanism; Lightning's would requeue a second time
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = L.Trainer(
        **t,
        plugins=plugins or None,
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=[checkpoint, stats],
        deterministic=bool(cfg.deterministic) or None,
        enable_model_summary=False,
    )
    return trainer, loggers


def _finish_wandb(loggers: list[Any]) -> None:
    if any(logger.__class__.__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()


def print_summary(record: dict[str, Any]) -> None:
    m, t, p, mem = record["metric"], record["time"], record["params"], record["memory"]
    value = m["test"] if m["test"] is not None else m["best_val"]
    where = "test" if m["test"] is not None else "best val"
    lines = [
        f"{record['task']} | {record['model']} | {record['method']} | seed {record['seed']}",
        f"  {m['name']} ({where}): {value:.4g}   best val: {m['best_val']:.4g}",
        f"  time: train {t['train_s']:.1f} s + val {t['val_s']:.1f} s  (whole run {t['total_s']:.1f} s)",
        f"  peak memory ({mem['device']}, {mem['kind']}): {mem['peak_bytes'] / 2**20:.0f} MiB",
        f"  trainable parameters: {p['adapter_params']:,} adapter + {p['head_params']:,} head "
        f"(of {p['total_params']:,}; {p['adapted_layers']} adapted layers)",
        f"  results: {record['run_dir']}/{RESULTS_NAME}",
    ]
    print("\n".join(lines), flush=True)


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
