"""Helpers to run experiments from tests: composed in-process, or through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import onelora  # noqa: F401  (the ${cwd:} resolver)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def config(tmp: Path, *overrides: str):
    """The composed config with every path under ``tmp`` (no user state is touched)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.root_dir={tmp}", *overrides])


def run_inprocess(tmp: Path, *overrides: str) -> dict:
    from onelora.runner import run

    return run(config(tmp, *overrides))


def run_cli(tmp: Path, *args: str, timeout: int = 600, check: bool = True, env: dict | None = None):
    full_env = {**os.environ, "ONELORA_ROOT": str(tmp), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


# the fake CIFAR-10 runs: small, fast, and with a learning rate that learns in 2 epochs
CIFAR_TINY = (
    "task=cifar10",
    "model=tiny_vit",
    "task.data.verify_checksums=false",
    "task.data.num_workers=0",
    "task.data.val_size=20",
    "task.epochs=2",
    "task.batch_size=10",
    "task.optim.lr=0.01",
    "trainer.enable_progress_bar=false",
    "torch_threads=1",
)

# the digits default with a shorter (cached) pre-training, for tests
DIGITS_FAST = ("task.pretrain.epochs=100", "trainer.enable_progress_bar=false")
