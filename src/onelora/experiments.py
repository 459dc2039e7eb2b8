"""The experiment grids of ``experiments/`` as the Makefile reads them, so it keeps no list of its own.

- ``python -m onelora.experiments mini``: the laptop grids ``make reproduce-mini`` runs, as
  ``experiment:launcher`` pairs in file-name order: every experiment that sets
  ``reproduce: {target: mini, launcher: <launcher>}``.
- ``python -m onelora.experiments paper-models``: the paper's full-size models, each with a task it
  runs on, as ``model:task`` pairs (``make count-paper``): for every model the paper prints
  parameter counts of (``onelora/data/paper_results.csv``), the model and task an experiment picks
  (``override /model``, ``override /task``; else the task's own model), the first one by file name.
"""

from __future__ import annotations

import csv
import sys
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from .methods import PROJECT_CONF


def experiment_files(conf: Path = PROJECT_CONF) -> list[str]:
    return sorted(p.stem for p in (conf / "experiment").glob("*.yaml"))


def grids(target: str, conf: Path = PROJECT_CONF) -> list[tuple[str, str]]:
    """(experiment, launcher) of every experiment whose ``reproduce.target`` is ``target``."""
    out = []
    for name in experiment_files(conf):
        reproduce = OmegaConf.load(conf / "experiment" / f"{name}.yaml").get("reproduce") or {}
        if reproduce.get("target") == target:
            out.append((name, str(reproduce.get("launcher") or "local")))
    return out


def paper_models() -> list[str]:
    """The models the paper prints parameter counts of (its tables' ``model`` column)."""
    text = resources.files("onelora").joinpath("data", "paper_results.csv").read_text()
    return list(dict.fromkeys(r["model"] for r in csv.DictReader(text.splitlines()) if r["params"]))


def paper_model_tasks(conf: Path = PROJECT_CONF) -> list[tuple[str, str]]:
    """(model config, task) per paper model: those of the first experiment that runs it."""
    wanted, found = paper_models(), {}
    for name in experiment_files(conf):
        task = _choice(conf, "experiment", name, "task")
        model = _choice(conf, "experiment", name, "model") or (task and _choice(conf, "task", task, "model"))
        if not (task and model):
            continue
        model_name = OmegaConf.load(conf / "model" / f"{model}.yaml").get("name")
        if model_name in wanted:
            found.setdefault(model_name, (model, task))
    missing = [m for m in wanted if m not in found]
    if missing:
        raise SystemExit(f"no experiment runs the paper's model(s) {missing}: add one to experiments/")
    return [found[m] for m in wanted]


def _choice(conf: Path, group: str, name: str, chosen: str) -> str | None:
    """The option a config file picks for the group ``chosen`` (``- override /<chosen>: <option>``
    in its defaults list), looked up through the same-group files it extends."""
    for entry in OmegaConf.load(conf / group / f"{name}.yaml").get("defaults") or []:
        if OmegaConf.is_dict(entry):
            for key, value in entry.items():
                if str(key).removeprefix("override ").strip("/") == chosen:
                    return str(value)
        elif str(entry) != "_self_" and (conf / group / f"{entry}.yaml").is_file():
            if (found := _choice(conf, group, str(entry), chosen)) is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else ""
    if what == "mini":
        print(" ".join(f"{name}:{launcher}" for name, launcher in grids("mini")))
    elif what == "paper-models":
        print(" ".join(f"{model}:{task}" for model, task in paper_model_tasks()))
    else:
        raise SystemExit("usage: python -m onelora.experiments mini|paper-models")


if __name__ == "__main__":  # pragma: no cover
    main()
