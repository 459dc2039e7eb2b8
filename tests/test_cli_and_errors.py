"""What a user sees at the command line: choices, dry-run composition, and the promised errors."""

from __future__ import annotations


import pytest

from onelora.methods import method_files
from fakes import write_cifar
from runs import CIFAR_TINY, CONF, config, is_recipe, parent_task, run_cli, run_inprocess, task_choice

METHODS = method_files()
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def test_help_lists_the_config_groups_and_their_options(tmp_path):
    out = run_cli(tmp_path, "--help").stdout
    for group in ("method", "model", "task", "dataset", "trainer", "logger"):
        assert f"{group}:" in out
    for option in ("onelora", "lora", "vera", "dora", "mora1", "vit_base", "cifar100", "digits", "kitti", "nyu_to_kitti"):
        assert option in out


def test_an_unknown_choice_lists_the_available_ones(tmp_path):
    proc = run_cli(tmp_path, "method=nonexistent", check=False)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "Could not find 'method/nonexistent'" in message
    assert "onelora" in message and "mora6" in message


@pytest.mark.parametrize("task", [pytest.param(t, marks=pytest.mark.slow) if parent_task(t) else t for t in TASKS])
def test_every_method_composes_with_every_task(tmp_path, task):
    """A dry-run sweep: count every method on the task's model on the meta device, then compose and
    validate it as a run would (train mode, so every object the task builds is checked). A task that
    extends another (cifar10 -> classification, kitti_to_nyu -> depth) composes in the slow tier: the
    default tier composes its parent, with the dataset and model of a task that uses it."""
    from onelora.adapters.base import AdapterConfigError
    from onelora.count import count_parameters_of
    from onelora.settings import RunSettings

    chosen = task_choice(task)  # a recipe (task=depth) with the dataset and model of a task that uses it
    for method in METHODS:
        counting = config(tmp_path, *chosen, f"method={method}", "mode=count")
        try:
            out = count_parameters_of(*(lambda s: (s.model, s.method, s.model_args))(RunSettings.from_config(counting)))
        except AdapterConfigError as err:  # DiT's LayerNorms carry no parameters: nothing to train
            assert "trains norms, but DiT has none" in str(err), err
            counting.mode = "train"
            assert RunSettings.from_config(counting).method.norms
            continue
        # 'none' on a model that gets no new head trains nothing: it is an evaluation (mode=eval)
        cfg = counting.copy()  # the same composition, validated as a run would be (train mode)
        cfg.mode = "eval" if method == "none" and out["head_params"] == 0 else "train"
        settings = RunSettings.from_config(cfg)
        # a recipe's runs are named after their dataset, a named task's after itself
        assert cfg.task.name == (cfg.task.dataset.name if is_recipe(task) else task) and settings.lr > 0
        if method == "none":  # nothing but a task head the model gets new (a classifier's, DiT's class table)
            assert out["adapter_params"] == 0
        elif method == "head":  # the head, or where the model keeps its own output, the probe modules
            assert out["trainable_params"] > 0 and (out["adapter_params"] == 0 or out["head_params"] == 0)
        else:
            assert out["adapter_params"] > 0, method
        assert out["adapted_layers"] > 0 or not settings.method.wraps_linears


def test_the_count_command_prints_one_json_line(tmp_path):
    import json

    out = run_cli(tmp_path, "mode=count", "model=vit_base", "method=onelora", "task=cifar10").stdout
    line = json.loads(out.strip().splitlines()[-1])
    assert not (tmp_path / "results").exists()  # counting writes no run directory
    assert list(line) == ["model", "method", "adapted_layers", "adapter_params", "head_params",
                          "trainable_params", "total_params", "reported_params", "reported_as"]
    assert line["adapter_params"] == 82_944 and line["adapted_layers"] == 72 and line["head_params"] == 7_690
    # the paper's count (the classifier excluded) beside what trains (the classifier included)
    assert (line["reported_params"], line["reported_as"], line["trainable_params"]) == (82_944, "adapter", 82_944 + 7_690)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("method.lr=-1", "method.lr"),
        ("task.optimizer.lr=0", "task.optimizer.lr"),
        ("method=lora method.options.r=0", "method.options.r"),
        ("method=lora method.options.dropout=1.5", "method.options.dropout"),
        ("task.epochs=0", "task.epochs"),
        ("method.linear=nope", "method.linear"),
        ("method=lora_qkv task=cifar10 model=tiny_vit", None),  # composes: tiny_vit defines qkv
        ("method.targets=attention_only", "method.targets"),
        ("trainer.devices=3", "task.batch_size"),
        ("trainer.precision=nonsense", "trainer.precision"),  # main: Lightning's ValueError at Trainer()
        ("trainer.precision=16-mixed", None),
        ("torch_threads=-1", "torch_threads"),  # main: torch's RuntimeError
        ("resume=maybe", "resume"),  # main: a truthy string, accepted silently
        ("task=cifar10 +twin=cifar10 task.data.num_workers=-1", "task.data.num_workers"),  # main: the DataLoader's ValueError, after pre-training
        ("logger=wandb logger.wandb.mode=bogus", "logger.wandb.mode"),
    ],
)
def test_bad_values_fail_fast_naming_the_key(tmp_path, override, key):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    cfg = config(tmp_path, *override.split())
    if key is None:
        RunSettings.from_config(cfg)
        return
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RunSettings.from_config(cfg)


def test_a_bad_precision_lists_the_allowed_values(tmp_path):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError) as err:
        RunSettings.from_config(config(tmp_path, "trainer.precision=nonsense"))
    assert str(err.value).startswith("trainer.precision: must be one of ")
    assert "32-true" in str(err.value) and "bf16-mixed" in str(err.value) and str(err.value).endswith("got 'nonsense'")


def test_transformer_engine_precision_needs_its_package(tmp_path):
    """main: ModuleNotFoundError from Lightning when the trainer was built."""
    import importlib.util

    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("Transformer Engine is installed here")
    with pytest.raises(ConfigError, match="trainer.precision: 'transformer-engine' needs NVIDIA Transformer Engine"):
        RunSettings.from_config(config(tmp_path, "trainer.precision=transformer-engine"))


def test_wandb_online_without_a_login_says_how_to_log_in(tmp_path, monkeypatch):
    """main: wandb's UsageError traceback when the trainer was built (after data, weights, pre-training)."""
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    online = ("logger=wandb", "logger.wandb.mode=online")
    with pytest.raises(ConfigError) as err:
        RunSettings.from_config(config(tmp_path, *online))
    assert str(err.value) == (
        "logger.wandb.mode: 'online' needs a W&B login and none was found: run `wandb login` once (or set "
        "WANDB_API_KEY), or leave logger.wandb.mode at its default, offline (runs land in the run dir; `wandb sync` "
        "them later)")
    RunSettings.from_config(config(tmp_path, "logger=wandb"))  # offline, the default: no login needed
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    RunSettings.from_config(config(tmp_path, *online))


def test_gpu_trainer_without_a_gpu_says_so(tmp_path):
    import torch

    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="trainer.accelerator.*no CUDA GPU"):
        RunSettings.from_config(config(tmp_path, "trainer=gpu"))


def test_missing_dataset_names_the_path_and_how_to_get_it(tmp_path):
    from onelora.data.errors import MissingDataError

    with pytest.raises(MissingDataError) as err:
        run_inprocess(tmp_path, *CIFAR_TINY, "method=onelora")
    message = str(err.value)
    assert str(tmp_path / "data" / "twin" / "cifar10") in message
    assert "cifar-10-batches-py" in message and "task.data.download=true" in message


def test_missing_weights_name_the_hub_id_the_place_and_how_to_get_them(tmp_path, monkeypatch):
    from onelora.models.weights import MissingWeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = write_cifar(tmp_path / "cifar10")
    with pytest.raises(MissingWeightsError) as err:
        run_inprocess(tmp_path, *CIFAR_TINY, f"task.data.root={root}", "model.pretrained=google/vit-base-patch16-224-in21k")
    message = str(err.value)
    assert "google/vit-base-patch16-224-in21k" in message
    assert "huggingface-cli download" in message and "model.pretrained" in message

    with pytest.raises(MissingWeightsError, match=str(tmp_path / "no_such_dir")):
        run_inprocess(tmp_path, *CIFAR_TINY, f"task.data.root={root}", f"model.pretrained={tmp_path / 'no_such_dir'}", "run_tag=_x")


def test_cli_errors_are_short_and_name_the_problem(tmp_path):
    proc = run_cli(tmp_path, *CIFAR_TINY, "method.lr=-1", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "onelora: error: method.lr: must be > 0, got -1"
