"""The dataset config group (conf/dataset/): a task is a recipe that composes with a dataset, the
paper's settings are one-word tasks that pick both, a swap or a data-key override lands where it
should, and a recipe on data of another family stops before any work with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runs import CONF, config, run_inprocess

DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
#: the paper's named settings: (task, recipe, dataset, model)
NAMED = [
    ("nyu_to_kitti", "depth", "kitti", "depth_anything_l_metric_indoor"),
    ("kitti_to_nyu", "depth", "nyu", "depth_anything_l_metric_outdoor"),
    ("nyu_to_diode_outdoor", "depth", "diode_outdoor", "depth_anything_l_metric_indoor"),
    ("kitti_to_diode_outdoor", "depth", "diode_outdoor", "depth_anything_l_metric_outdoor"),
    ("cifar10", "classification", "cifar10", "vit_base"),
    ("cifar100", "classification", "cifar100", "vit_base"),
]


def plain(node):
    return OmegaConf.to_container(node, resolve=True)


@pytest.mark.parametrize(("task", "recipe", "dataset", "model"), NAMED, ids=[n[0] for n in NAMED])
def test_a_named_setting_is_the_recipe_on_its_dataset_and_model(tmp_path, task, recipe, dataset, model):
    """`task=nyu_to_kitti` is `task=depth dataset=kitti model=depth_anything_l_metric_indoor`, but
    for its name and the paper's source: the recipe is written once."""
    named = config(tmp_path, f"task={task}")
    generic = config(tmp_path, f"task={recipe}", f"dataset={dataset}", f"model={model}")
    assert named.model.name == generic.model.name and plain(named.trainer) == plain(generic.trainer)
    a, b = plain(named.task), plain(generic.task)
    assert (a.pop("name"), b.pop("name")) == (task, dataset)  # a recipe's run is named after its dataset
    if recipe == "depth":
        assert (a["paper"].pop("source"), b["paper"].pop("source")) == (task.split("_to_")[0].upper(), None)
    assert a == b


def test_the_depth_transfers_keep_no_recipe_of_their_own():
    """The four depth transfers name their dataset, model and paper row, nothing of the recipe."""
    for task in ("nyu_to_kitti", "kitti_to_nyu", "nyu_to_diode_outdoor", "kitti_to_diode_outdoor"):
        raw = OmegaConf.load(CONF / "task" / f"{task}.yaml")
        assert set(raw.task) == {"name", "paper"}, task
        assert "depth" in raw.defaults


def test_a_dataset_swap_and_a_data_key_override(tmp_path):
    swapped = config(tmp_path, "task=nyu_to_kitti", "dataset=nyu").task
    assert swapped.data.root == str(tmp_path / "data" / "nyu") and swapped.data.dataset == "nyu"
    assert swapped.data.train_list.endswith("nyudepthv2_train_files_with_gt.txt")
    # the metric's range and crop and the model's output scale follow the dataset
    assert (swapped.model_args.max_depth, swapped.module.max_depth, swapped.module.eval_crop) == (10.0, 10.0, "eigen")
    assert swapped.data.input_size == [392, 518] and swapped.epochs == 5  # the recipe's keys stay
    # a command-line key beats both the dataset's and the recipe's
    over = config(tmp_path, "task=nyu_to_kitti", "dataset=nyu", "task.data.root=/elsewhere", "task.data.num_workers=0",
                  "task.dataset.max_depth=20").task
    assert (over.data.root, over.data.num_workers, over.data.dataset) == ("/elsewhere", 0, "nyu")
    assert over.model_args.max_depth == over.module.max_depth == 20
    # a recipe's own key overrides the dataset's; the laptop transfer's source has a dataset of its own
    mini = config(tmp_path, "task=depth_mini_outdoor_to_indoor").task
    assert (mini.dataset.name, mini.pretrain.dataset.name) == ("synthetic_depth_indoor", "synthetic_depth_outdoor")
    assert (mini.model_args.max_depth, mini.pretrain.model_args.max_depth) == (10.0, 80.0)
    assert (mini.data.root.domain, mini.pretrain.data.root.domain) == ("indoor", "outdoor")


@pytest.mark.parametrize(("overrides", "dataset", "family"), [
    (("task=depth", "dataset=cifar10", "model=depth_anything_l_metric_indoor"), "cifar10", "depth"),
    (("task=classification", "dataset=kitti", "model=vit_base"), "kitti", "classification"),
    (("task=nyu_to_kitti", "dataset=metamath"), "metamath", "depth"),
])
def test_a_recipe_on_data_of_another_family_stops_with_one_line(tmp_path, overrides, dataset, family):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError) as err:
        RunSettings.from_config(config(tmp_path, *overrides))
    message = str(err.value)
    assert message.startswith(f"dataset: '{dataset}' holds ") and f"is a {family} recipe" in message
    assert "\n" not in message and not (tmp_path / "results").exists()


def test_a_recipe_without_a_dataset_says_which_it_takes(tmp_path):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError, match=r"dataset: task 'depth' is a recipe.*dataset=<name> \(diode_outdoor, kitti, nyu"):
        RunSettings.from_config(config(tmp_path, "task=depth", "model=depth_anything_l_metric_indoor"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_declares_what_it_is_and_its_data_module_takes_its_keys(dataset):
    from onelora.contract import check_keys

    raw = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml")
    assert set(raw) == {"dataset", "data"}, dataset  # written into the task (`# @package task`)
    facts = raw.dataset
    assert facts.name == dataset and facts.family in ("classification", "depth", "generation", "language")
    assert facts.paper_name
    if facts.family == "depth":
        assert 0 < facts.min_depth < facts.max_depth and facts.eval_crop in ("eigen", "garg")
    if facts.family in ("classification", "generation"):
        assert facts.classes > 1
    check_keys(raw.data, f"dataset {dataset}")  # every key is one its data module takes


@pytest.mark.slow  # ~10 s; the default tier runs the named twin (test_depth_transfer), whose record says its dataset too
def test_a_recipe_runs_on_a_dataset_and_records_it(tmp_path):
    """`task=depth dataset=kitti model=...` as a run (the depth twin's tiny model and data)."""
    from depth_twins import write_depth_twin

    write_depth_twin("nyu_to_kitti", tmp_path / "data" / "twin" / "kitti")  # the twin reads twin/<task name>
    record = run_inprocess(tmp_path, "task=depth", "dataset=kitti", "+twin=depth", "method=onelora", "task.epochs=1")
    assert record["status"] == "completed" and record["task"] == "kitti" and record["dataset"] == "kitti"
    assert record["paper"] == {"task": "depth", "source": None, "target": "KITTI"}
    assert Path(record["run_dir"]) == tmp_path / "results" / "kitti" / "tiny_depth_anything" / "onelora" / "seed0"
    assert record["config"]["task"]["module"]["max_depth"] == 80.0 and record["metric"]["test"] > 0
