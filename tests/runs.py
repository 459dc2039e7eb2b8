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


# the tiny twins (conf/twin/<task>.yaml): the task's code paths at test size
CIFAR_TINY = ("task=cifar10", "+twin=cifar10")
DIGITS_FAST = ("+twin=digits",)


#: tasks whose twins are one shared file (a sweep over several of them uses that one)
SHARED_TWINS = {
    "nyu_to_kitti": "depth", "kitti_to_nyu": "depth", "kitti_to_diode_outdoor": "depth", "nyu_to_diode_outdoor": "depth",
    "depth_mini": "depth_mini", "depth_mini_outdoor_to_indoor": "depth_mini",
}


def twin(task: str, data_dir: Path) -> list[str]:
    """Overrides that run ``task`` as its tiny twin, with the twin's data written under ``data_dir``
    in the dataset's real on-disk layout. Add a case here when a task needs data written.

    ``task`` may be a comma-separated sweep ("kitti_to_nyu,nyu_to_kitti") of tasks sharing one twin."""
    from depth_twins import TARGETS, write_depth_twin
    from fakes import write_cifar, write_food101, write_tiny_vae

    tasks = task.split(",")
    if len(tasks) > 1:
        shared = {SHARED_TWINS.get(t) for t in tasks}
        assert len(shared) == 1 and None not in shared, f"tasks {tasks} share no twin"
        for name in tasks:
            twin(name, data_dir)
        return [f"task={task}", f"+twin={shared.pop()}", f"paths.data_dir={data_dir}"]
    if task in ("cifar10", "cifar100"):
        classes = 10 if task == "cifar10" else 100
        write_cifar(data_dir / "twin" / task, classes=classes)
        return [f"task={task}", f"+twin={task}", f"paths.data_dir={data_dir}"]
    if task in TARGETS:
        write_depth_twin(task, data_dir / "twin" / task)
    if task in SHARED_TWINS:  # depth: the twin's data (or the synthetic generator's) under data_dir
        return [f"task={task}", f"+twin={task}", f"paths.data_dir={data_dir}"]
    if task == "food101_generation":  # Food-101 as it ships, and a tiny random VAE in diffusers' format
        home = data_dir / "twin" / task
        if not (home / "vae" / "config.json").is_file():
            write_food101(home)
            write_tiny_vae(home / "vae")
        return [f"task={task}", f"+twin={task}", f"paths.data_dir={data_dir}"]
    if task == "metamath":  # MetaMathQA's json, GSM8K's test jsonl and a tokenizer directory
        write_metamath_twin(data_dir / "twin" / task)
        return [f"task={task}", f"+twin={task}", f"paths.data_dir={data_dir}"]
    return [f"task={task}", f"+twin={task}"]


def write_metamath_twin(home: Path, count: int = 80) -> Path:
    """``MetaMathQA-395K.json`` (synthetic problems of all four types, MetaMathQA's record format),
    ``gsm8k_test.jsonl`` (GSM8K's ``question`` / ``answer ... #### X``) and ``tokenizer/``: a byte-level
    BPE trained on the json and written with ``save_pretrained``, so the task's real
    ``pretrained_tokenizer`` path loads it as it would LLaMA-2's local directory."""
    from onelora.data.synthetic.math import problems
    from onelora.data.tokenizers import trained_tokenizer

    if (home / "tokenizer" / "tokenizer_config.json").is_file():
        return home
    home.mkdir(parents=True, exist_ok=True)
    records = problems(["add", "sub", "mul", "two_step"], count, seed=7)
    (home / "MetaMathQA-395K.json").write_text(json.dumps(records))
    gsm8k = [{"question": r["query"], "answer": r["response"].replace("The answer is: ", "#### ")}
             for r in problems(["add", "mul"], 4, seed=8)]
    (home / "gsm8k_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm8k))
    tokenizer = trained_tokenizer(home / "MetaMathQA-395K.json", home / ".tokenizer_cache", vocab_size=320)
    tokenizer.save_pretrained(str(home / "tokenizer"))
    return home
