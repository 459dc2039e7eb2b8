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


def is_recipe(task: str) -> bool:
    """A task that reads a dataset it does not pick (``task.dataset: ???``): task=depth, task=classification."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF / "task" / f"{task}.yaml").get("task")
    return node is not None and "dataset" in node.keys() and OmegaConf.is_missing(node, "dataset")


def task_choice(task: str) -> list[str]:
    """``task=<task>``, and for a recipe the dataset and model of the first named task that uses it
    (task=depth -> dataset=diode_outdoor model=depth_anything_l_metric_outdoor, as kitti_to_diode_outdoor)."""
    from omegaconf import OmegaConf

    if not is_recipe(task):
        return [f"task={task}"]
    for path in sorted((CONF / "task").glob("*.yaml")):
        defaults = OmegaConf.load(path).get("defaults") or []
        if task in defaults:
            picks = [f"{k.split()[-1].lstrip('/')}={v}" for d in defaults if OmegaConf.is_dict(d) for k, v in d.items()
                     if k.split()[-1].lstrip("/") in ("dataset", "model")]
            return [f"task={task}", *picks]
    raise AssertionError(f"no named task uses the recipe {task}")


def parent_task(task: str) -> str | None:
    """The task file ``task`` extends (its first default names another task: cifar10 -> classification,
    kitti_to_nyu -> depth), or None."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(CONF / "task" / f"{task}.yaml").get("defaults") or []
    first = defaults[0] if defaults else None
    return first if isinstance(first, str) and (CONF / "task" / f"{first}.yaml").is_file() else None


# the tiny twins (conf/twin/<task>.yaml): the task's code paths at test size
CIFAR_TINY = ("task=cifar10", "+twin=cifar10")
DIGITS_FAST = ("+twin=digits",)


def twin_block(task: str) -> dict:
    """The ``twin`` block of conf/twin/<task>.yaml (with the files it extends), as written."""
    from omegaconf import OmegaConf

    def load(name: str):
        own = OmegaConf.load(CONF / "twin" / f"{name}.yaml")
        parents = [p for p in (own.get("defaults") or []) if isinstance(p, str) and p != "_self_"]
        return OmegaConf.merge(*(load(p) for p in parents), own)

    return OmegaConf.to_container(load(task).get("twin") or OmegaConf.create({}))


def write_twin_data(task: str, data_dir: Path) -> None:
    """Call the twin's ``twin.write`` entries (``_target_`` and keyword arguments, interpolated in
    the config the twin runs with, e.g. ``${task.data.root}``), once per ``data_dir``."""
    from hydra.utils import instantiate

    marker = Path(data_dir) / "twin" / f".{task}.written"
    if not twin_block(task).get("write") or marker.is_file():
        return
    cfg = config(Path(data_dir) / ".compose", f"task={task}", f"+twin={task}", f"paths.data_dir={data_dir}")
    for call in cfg.twin.write.values():
        instantiate(call)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def twin(task: str, data_dir: Path | None = None) -> list[str]:
    """Overrides that run ``task`` as its tiny twin (conf/twin/<task>.yaml). Its ``twin`` block says
    what comes first: ``write``, the calls that write the twin's data in the dataset's real layout
    (under ``data_dir``, given as ``paths.data_dir``: also where a twin's generator writes), and
    ``shared``, the twin file a sweep over several tasks runs on. No task is named here.

    ``task`` may be a comma-separated sweep ("a,b") of tasks sharing one twin."""
    tasks = task.split(",")
    name = task
    if len(tasks) > 1:
        shared = {twin_block(t).get("shared") for t in tasks}
        assert len(shared) == 1 and None not in shared, f"tasks {tasks} share no twin"
        name = shared.pop()
    if data_dir is None:
        assert not any(twin_block(t).get("write") for t in tasks), f"the twin of {task} writes data: give a data_dir"
        return [f"task={task}", f"+twin={name}"]
    for t in tasks:
        write_twin_data(t, data_dir)
    return [f"task={task}", f"+twin={name}", f"paths.data_dir={data_dir}"]


def unprivileged_prefix() -> list[str]:
    """A command prefix under which file permissions apply as they do to an ordinary user: nothing
    for a non-root user; for root, ``setpriv`` without the capabilities that bypass permissions
    (root still owns root's files: a test makes the files another user's with ``chown``). Skips the
    test where neither is possible."""
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all", "--"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without setpriv (util-linux) to drop the permission-bypassing capabilities")
    return prefix


def make_foreign(path: Path, *, writable: bool = False) -> None:
    """``path`` (a tree) as another user left it with umask 0022 (files 644, folders 755), or, run
    as an ordinary user, the same tree with every write bit removed (``writable``: folders 777)."""
    folders = 0o777 if writable else 0o755 if os.geteuid() == 0 else 0o555
    files = 0o644 if os.geteuid() == 0 else 0o444
    for item in [Path(path), *Path(path).rglob("*")]:
        if os.geteuid() == 0:
            os.chown(item, 65534, 65534)  # nobody
        os.chmod(item, folders if item.is_dir() else files)
