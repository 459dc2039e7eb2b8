"""What the tests and the Makefile find instead of listing: each task's tiny twin declares what the
tests write before running it (conf/twin/*.yaml ``twin`` blocks), and the Makefile's grids and paper
models come from experiments/ (``python -m onelora.experiments``)."""

from __future__ import annotations

import inspect
import re

import pytest

import runs
from runs import CONF, ROOT, twin, twin_block

TWINS = sorted(p.stem for p in (CONF / "twin").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


@pytest.mark.parametrize("name", TWINS)
def test_every_twin_block_is_well_formed(name):
    from hydra.utils import get_method

    block = twin_block(name)
    assert set(block) <= {"write", "shared"}, f"twin/{name}.yaml: twin has keys {sorted(block)}"
    if "shared" in block:
        assert (CONF / "twin" / f"{block['shared']}.yaml").is_file()
        assert twin_block(block["shared"]).get("shared") == block["shared"]
    for call in (block.get("write") or {}).values():
        assert callable(get_method(call["_target_"])), call  # a writer of tests/ (fakes.py, depth_twins.py)


def test_the_twin_helpers_and_the_experiment_sweep_name_no_task():
    import test_experiments

    sources = [inspect.getsource(f) for f in (runs.twin, runs.twin_block, runs.write_twin_data,
                                               test_experiments.test_every_experiment_sweeps,
                                               test_experiments.grid, test_experiments.family_of)]
    for task in TASKS:  # as a string in the code (prose may say "the depth transfers": a family)
        for source in sources:
            assert not re.search(rf"""["']{task}["',]""", source), f"{task} is named in\n{source[:200]}"


def test_a_sweep_over_tasks_runs_on_the_twin_they_share(tmp_path):
    assert twin("depth_mini,depth_mini_outdoor_to_indoor", tmp_path) == [
        "task=depth_mini,depth_mini_outdoor_to_indoor", "+twin=depth_mini", f"paths.data_dir={tmp_path}"]
    with pytest.raises(AssertionError, match="share no twin"):
        twin("depth_mini,math_mini", tmp_path)
    with pytest.raises(AssertionError, match="writes data: give a data_dir"):
        twin("cifar10")


def test_a_twin_writes_its_data_where_its_task_reads_it_once(tmp_path):
    """cifar100's twin extends cifar10's: the writer's arguments are interpolated in the config the
    twin runs with (CIFAR-100's layout and 100 classes under task.data.root), written once."""
    from runs import config

    overrides = twin("cifar100", tmp_path)
    cfg = config(tmp_path, *overrides)
    root = tmp_path / "twin" / "cifar100"
    assert cfg.task.data.root == str(root) and (root / "cifar-100-python" / "meta").is_file()
    stamp = (root / "cifar-100-python" / "train").stat().st_mtime_ns
    assert twin("cifar100", tmp_path) == overrides
    assert (root / "cifar-100-python" / "train").stat().st_mtime_ns == stamp


def test_the_mini_grids_are_the_experiments_that_say_so():
    from onelora.experiments import grids, main

    pairs = grids("mini")
    launchers = {p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")} | {"basic"}
    assert pairs[0] == ("mini", "parallel") and ("mini_depth_unadapted", "local") in pairs
    assert all(launcher in launchers for _, launcher in pairs)
    assert {name for name, _ in pairs} == {p.stem for p in (ROOT / "experiments").glob("mini*.yaml")}
    main(["mini"])


def test_the_paper_models_come_with_a_task_that_runs_them(tmp_path, capsys):
    from onelora.experiments import main, paper_models
    from runs import config

    main(["paper-models"])
    pairs = [p.split(":") for p in capsys.readouterr().out.split()]
    assert len(pairs) == len(paper_models()) == 5
    for (model, task), name in zip(pairs, paper_models()):
        cfg = config(tmp_path, f"model={model}", f"task={task}", "mode=count")
        assert cfg.model.name == name and cfg.task.name == task
