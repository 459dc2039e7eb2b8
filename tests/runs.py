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


# the tiny twins (conf/twin/<task>.yaml): the task's code paths at test size
CIFAR_TINY = ("task=cifar10", "+twin=cifar10")
DIGITS_FAST = ("+twin=digits",)


def twin(task: str, data_dir: Path) -> list[str]:
    """Overrides that run ``task`` as its tiny twin, with the twin's data written under ``data_dir``
    in the dataset's real on-disk layout. Add a case here when a task needs data written."""
    from fakes import write_cifar

    if task in ("cifar10", "cifar100"):
        classes = 10 if task == "cifar10" else 100
        write_cifar(data_dir / "twin" / task, classes=classes)
        return [f"task={task}", f"+twin={task}", f"paths.data_dir={data_dir}"]
    return [f"task={task}", f"+twin={task}"]
