"""The task contract (docs/task_contract.md): a task is new files only, every object is built from
config, the metric is declared once, the method is parsed once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fakes import write_cifar
from runs import CIFAR_TINY, CONF, config, results, run_inprocess, task_choice

TOY_MODEL = """
name: toy_mlp
kind: regressor
builder: toy_task.build_mlp
pretrained: null
arch: {hidden: 32}
head: ['out']
module_sets: {probe: []}
target_sets:
  linear: {include: [all-linear]}
method_overrides: {}
reported_params: adapter
"""

TOY_TASK = """
# @package _global_
defaults:
  - override /model: toy_mlp
task:
  name: toy
  family: regression
  model_kind: regressor
  paper: {task: regression, source: toy-shift0, target: toy-shift2}
  model_args: {in_features: 8}
  data: {_target_: toy_task.RegressionData, n: 400, in_features: 8, shift: 1.5, seed: 1}
  module: {_target_: toy_task.RegressionModule}
  metric: {name: mse, direction: min, val_key: val/mse, test_key: test/mse}
  epochs: 6
  batch_size: 32
  optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 1.0e-2}
  scheduler: null
  torch_threads: 1
  pretrain:
    data: {shift: 0.0, seed: 0}
    epochs: 8
    optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 1.0e-2}
trainer: {enable_progress_bar: false}
"""


def make_toy_home(home: Path) -> tuple[Path, str]:
    """A config folder of the test's own, holding the new task and model (no file of ours edited)."""
    (home / "conf" / "model").mkdir(parents=True)
    (home / "conf" / "task").mkdir(parents=True)
    (home / "conf" / "model" / "toy_mlp.yaml").write_text(TOY_MODEL)
    (home / "conf" / "task" / "toy.yaml").write_text(TOY_TASK)
    return home, f"hydra.searchpath=[file://{home / 'conf'}]"


@pytest.fixture(scope="module")
def toy_home(tmp_path_factory) -> tuple[Path, str]:
    return make_toy_home(tmp_path_factory.mktemp("toy"))


def test_a_new_task_is_new_files_only(toy_home):
    home, searchpath = toy_home
    records = {m: run_inprocess(home, searchpath, "task=toy", f"method={m}") for m in ("head", "onelora", "lora", "full")}
    for method, record in records.items():
        m = record["metric"]
        assert record["status"] == "completed" and record["family"] == "regression"
        assert (m["name"], m["direction"], m["val_key"], m["test_key"]) == ("mse", "min", "val/mse", "test/mse")
        rows = [r for r in csv_rows(Path(record["run_dir"])) if r.get("val/mse")]
        vals = [float(r["val/mse"]) for r in rows]
        assert m["best_val"] == pytest.approx(min(vals)) and m["best_epoch"] == vals.index(min(vals))
        assert m["test"] > 0 and m["test_final"] > 0
    # pre-trained once (on the unshifted source), then fine-tuned from those weights by every method
    cached = list((home / ".cache" / "pretrained").glob("toy_mlp-toy-*.safetensors"))
    assert len(cached) == 1
    assert records["onelora"]["params"]["adapter_params"] == 32 + 32  # fc1, fc2 (out is the head)
    assert records["full"]["metric"]["test"] < records["head"]["metric"]["test"]


def test_pretraining_is_a_training_run_of_its_own(tmp_path, monkeypatch):
    """The source task runs through the fine-tuning pipeline: a run of method=full in its cache folder
    with CSV logs, a memory and time record, checkpoints while it trains, and a stop by a signal that
    a relaunch resumes from its own checkpoint."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from onelora.callbacks import LastCheckpoint
    from onelora.pipeline import RunTerminated

    home, searchpath = make_toy_home(tmp_path)
    stop_at = {"epoch": 3}
    original = LastCheckpoint.on_train_epoch_end

    def stop_pretraining(self, trainer, pl_module):  # SIGTERM at an epoch's end, as Lightning raises it
        original(self, trainer, pl_module)
        if "pretrained" in str(self.path) and trainer.current_epoch + 1 == stop_at["epoch"]:
            raise SIGTERMException()

    monkeypatch.setattr(LastCheckpoint, "on_train_epoch_end", stop_pretraining)
    with pytest.raises(RunTerminated) as stopped:
        run_inprocess(home, searchpath, "task=toy", "method=lora")
    folder = next((home / ".cache" / "pretrained").glob("toy_mlp-toy-*/"))
    last = folder / "checkpoints" / "last.ckpt"
    assert stopped.value.exit_status == 143 and str(last) in str(stopped.value)  # says where it resumes from
    record = results(home / "results" / "toy" / "toy_mlp" / "lora" / "seed0")
    assert record["status"] == "interrupted" and str(last) in record["error"]
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == stop_at["epoch"] - 1
    assert not list(folder.parent.glob("*.safetensors"))  # no weights until the source run is done

    stop_at["epoch"] = None
    done = run_inprocess(home, searchpath, "task=toy", "method=lora")
    assert done["status"] == "completed"
    info = json.loads(Path(done["pretrained_from"]).with_suffix(".json").read_text())
    steps_per_epoch = 240 // 32 + 1  # 60% of 400 samples, batch 32
    assert info["global_step"] == 8 * steps_per_epoch  # the source task's own budget, each step once
    assert info["time"]["attempts"] == 2 and info["memory"]["model_bytes"]["params"] > 0
    rows = [r for r in csv_rows(folder) if r.get("val/mse")]
    assert len(rows) == 8  # a validation round per epoch over both attempts, in the source run's logs
    assert not (folder / "checkpoints").exists()  # its checkpoints go once the weights are saved


def csv_rows(run_dir: Path) -> list[dict]:
    import csv

    rows = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(path) as handle:
            rows += list(csv.DictReader(handle))
    return rows


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data") / "cifar10", per_batch=20, test=30)


def test_any_torch_optimizer_and_scheduler_by_config(tmp_path, cifar_root):
    record = run_inprocess(
        tmp_path, *CIFAR_TINY, f"task.data.root={cifar_root}", "method=lora",
        "task.optimizer._target_=torch.optim.SGD", "~task.optimizer.weight_decay", "+task.optimizer.momentum=0.9",
        "~task.scheduler", "+task.scheduler={_target_: torch.optim.lr_scheduler.OneCycleLR, _partial_: true, pct_start: 0.5}",
    )
    ckpt = torch.load(Path(record["run_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert "dampening" in group and "betas" not in group  # SGD (its momentum cycled by OneCycleLR), not AdamW
    schedule = ckpt["lr_schedulers"][0]
    assert schedule["total_steps"] == 16 and schedule["_schedule_phases"]  # OneCycleLR, given total_steps
    assert group["lr"] < 0.01 / 10  # annealed at the end of its cycle (max_lr = the method's lr)


def test_lr_scales_give_parameter_groups_their_own_rates(tmp_path, cifar_root):
    from onelora.runner import run

    cfg = config(tmp_path, *CIFAR_TINY, f"task.data.root={cifar_root}", "method=full", "task.scheduler=null")
    OmegaConf.set_struct(cfg, False)
    cfg.task.lr_scales = {r"vit\..*": 0.02}  # as a task YAML writes it (regex keys do not fit the CLI grammar)
    record = run(cfg)
    ckpt = torch.load(Path(record["run_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    lrs = sorted(g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"])
    assert lrs == pytest.approx([0.01 * 0.02, 0.01])  # the encoder at lr / 50, the classifier at lr


def test_the_method_is_parsed_once_per_run(tmp_path, cifar_root, monkeypatch):
    from onelora.adapters import spec

    calls = []
    original = spec.MethodSpec.from_config.__func__
    monkeypatch.setattr(spec.MethodSpec, "from_config", classmethod(lambda cls, c: calls.append(1) or original(cls, c)))
    run_inprocess(tmp_path, *CIFAR_TINY, f"task.data.root={cifar_root}", "method=lora", "task.epochs=1")
    assert len(calls) == 1


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF / "task").glob("*.yaml")))
def test_every_task_declares_the_contract_and_its_classes_reject_unknown_keys(tmp_path, task):
    from onelora.contract import TaskContract, accepted_names, target_of

    cfg = config(tmp_path, *task_choice(task))
    contract = TaskContract.from_config(cfg.task)
    contract.check()
    assert contract.metric.direction in ("max", "min") and cfg.task.family and cfg.task.model_kind
    for key in ("data", "module"):
        names, any_name = accepted_names(target_of(cfg.task[key], f"task.{key}"))
        assert not any_name, f"task {task}: {key} swallows unknown keys in **kwargs"


def test_library_noise_filters_are_added_once_per_process():
    import logging

    from onelora.quiet import quiet_library_noise

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    quiet_library_noise()
    before = len(logger.filters)
    for _ in range(3):
        quiet_library_noise()
    assert len(logger.filters) == before


def test_lightnings_restore_notices_are_dropped_and_the_runs_own_lines_kept(caplog):
    """Every test of a best round restores a checkpoint; its notices must not flood a sweep's log."""
    import logging

    from onelora.quiet import quiet_library_noise

    quiet_library_noise()
    connector = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    with caplog.at_level(logging.INFO):
        connector.info("`weights_only` was not set, defaulting to `False`.")
        connector.info("Restoring states from the checkpoint path at /x/best.ckpt")
        connector.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]


def test_the_runner_pretraining_and_cli_name_no_task():
    """The done-when of the contract: no task-specific branch in the generic code."""
    src = Path(__file__).resolve().parents[1] / "src" / "onelora"
    for name in ("runner.py", "pipeline.py", "pretrain.py", "cli.py", "settings.py", "contract.py"):
        text = (src / name).read_text().lower()
        for word in ("accuracy", "classification", "num_classes", "digits", "cifar", "depth", "fid", "tokenizer"):
            assert word not in text, f"{name} mentions {word!r}"


def test_the_runner_and_pretraining_read_no_raw_config():
    """The settings read the config once (RunSettings.from_config); the runner, the training pipeline
    and pre-training take typed settings and never look at the raw config again, nor re-resolve it."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "onelora"
    for name in ("runner.py", "pipeline.py", "pretrain.py"):
        text = (src / name).read_text()
        uses = [line.strip() for line in text.splitlines() if re.search(r"\bcfg\b", line)]
        # the one way in: run(cfg) hands the composed config to the settings
        assert all(re.search(r"def run\(cfg: DictConfig\)|RunSettings\.from_config\(cfg\)|``cfg``", u)
                   for u in uses), (name, uses)
        for raw in ("plain(", "OmegaConf", ".cfg", "to_container", "HydraConfig"):
            assert raw not in text, f"{name} reads the raw config: {raw}"


def test_a_tiny_twin_exists_for_every_task():
    twins = {p.stem for p in (CONF / "twin").glob("*.yaml")}
    tasks = {p.stem for p in (CONF / "task").glob("*.yaml")}
    assert tasks <= twins, f"tasks without a tiny twin in conf/twin: {sorted(tasks - twins)}"
    assert all(OmegaConf.load(CONF / "twin" / f"{t}.yaml") is not None for t in tasks)


def test_results_of_a_contract_run_carry_time_to_best(tmp_path, cifar_root):
    record = run_inprocess(tmp_path, *CIFAR_TINY, f"task.data.root={cifar_root}", "method=bitfit")
    on_disk = results(Path(record["run_dir"]))
    assert on_disk["time"]["time_to_best_s"] <= on_disk["time"]["fit_s"]
    assert on_disk["metric"]["test"] is not None and on_disk["metric"]["test_final"] is not None


def test_head_only_trains_the_models_probe_modules_where_it_has_no_task_head(tmp_path):
    """method=head: a classifier's head; Depth Anything's DPT output layers; LLaMA's lm_head."""
    from onelora.count import count_parameters_of
    from onelora.settings import method_settings
    from onelora.adapters import MethodSpec, AdapterConfigError

    for model, expected in (("depth_anything_l", 36_929), ("llama2_7b", 131_072_000)):
        cfg = config(tmp_path, f"model={model}", "method=head")
        out = count_parameters_of(cfg.model, MethodSpec.from_config(method_settings(cfg)))
        assert out["adapter_params"] == expected and out["head_params"] == 0, (model, out)
    cfg = config(tmp_path, "model=depth_anything_l", "method=head", "~model.module_sets")
    with pytest.raises(AdapterConfigError, match="module set 'probe'"):
        count_parameters_of(cfg.model, MethodSpec.from_config(method_settings(cfg)))


def test_eval_mode_records_the_model_as_loaded(toy_home):
    """mode=eval (the un-adapted source model of a transfer): validated and tested, not trained,
    and the record says so."""
    from onelora.config import ConfigError

    home, searchpath = toy_home
    whole = ("~model.head", "+model.head=[]", "run_tag=_whole")  # pre-trained with its output layer, kept
    record = run_inprocess(home, searchpath, "task=toy", "method=none", "mode=eval", *whole)
    m = record["metric"]
    assert record["status"] == "completed" and record["trained"] is False and record["global_step"] == 0
    assert record["method"] == "unadapted" and record["params"]["trainable_params"] == 0
    assert m["best_val"] == m["final_val"] > 0 and m["test"] == m["test_final"] > 0 and m["best_epoch"] is None
    assert not (Path(record["run_dir"]) / "adapter").exists()
    trained = run_inprocess(home, searchpath, "task=toy", "method=full", *whole)
    assert trained["metric"]["test"] < m["test"]  # fine-tuning the pre-trained model helps on the shifted target
    with pytest.raises(ConfigError, match="trains nothing.*mode=eval"):
        run_inprocess(home, searchpath, "task=toy", "method=none", *whole)


def test_the_pretraining_key_ignores_fine_tuning_only_settings(tmp_path):
    """Editing the fine-tuning budget, resources or test settings must not re-train the source model;
    editing the pre-training must."""
    from onelora.contract import TaskContract
    from onelora.pretrain import pretrained_path
    from onelora.settings import RunSettings

    def key(*overrides):
        return pretrained_path(RunSettings.from_config(config(tmp_path, *overrides))).name

    base = key()
    assert key("task.epochs=3", "task.resources.timeout_min=99", "+task.test_final=false") == base
    assert key("task.pretrain.epochs=151") != base
    assert key("task.pretrain.optimizer.lr=0.001") != base
    # the key is derived from the composed model: any builder setting counts (a new builder's own key
    # too), how adapters attach does not (the weights are the same for every method)
    assert key("+model.some_builder_option=1") != base and key("model.arch.depth=3") != base
    assert key("method=lora", "model.target_sets.qkv.include=[blocks]", "seed=3") == base
    # a step-budget pre-training does not inherit the fine-tuning epochs
    cfg = config(tmp_path, "~task.pretrain.epochs", "+task.pretrain.max_steps=50")
    pre = TaskContract.from_config(cfg.task).source()
    assert pre.epochs is None and pre.max_steps == 50


@pytest.mark.parametrize(("devices", "micro", "accumulate"), [(1, 4, 32), (2, 4, 16), (4, 2, 16), (16, 4, 2)])
def test_gradient_accumulation_keeps_the_total_batch_on_any_cluster(tmp_path, devices, micro, accumulate):
    """MoRA's total batch of 128 from devices x nodes x micro-batch x accumulation, whatever the cluster."""
    from onelora.settings import accumulation, per_device_batch

    cfg = config(tmp_path, "task.batch_size=128", f"+task.micro_batch_size={micro}", f"trainer.devices={devices}")
    assert per_device_batch(cfg, devices) == micro and accumulation(cfg, devices) == accumulate
    assert devices * micro * accumulate == 128


def test_an_indivisible_micro_batch_names_the_key(tmp_path):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError, match="task.micro_batch_size"):
        RunSettings.from_config(config(tmp_path, "task.batch_size=128", "+task.micro_batch_size=3"))


def test_a_micro_batch_run_accumulates(tmp_path, cifar_root):
    record = run_inprocess(tmp_path, *CIFAR_TINY, f"task.data.root={cifar_root}", "method=lora", "+task.micro_batch_size=5")
    assert record["batch"] == {"global": 10, "per_device": 5, "accumulate": 2, "world_size": 1}
    assert record["global_step"] == 16  # 80 images / 5 per micro-batch / 2 per step x 2 epochs
