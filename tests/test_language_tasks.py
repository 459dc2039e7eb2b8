"""The language tasks through the runner, as their tiny twins: task=metamath (MetaMathQA's json, a
tokenizer from a local directory, micro-batches with gradient accumulation, gradient checkpointing,
GSM8K exact match; also on 2 DDP processes) and task=math_mini (the laptop transfer: synthetic
problems, a trained tokenizer, cached pre-training with lm_head kept and trained); the task-level
parameter count of LLaMA-2 7B; the fsdp and deepspeed trainer configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from onelora.methods import compared_methods
from runs import config, results, run_cli, run_inprocess, twin


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One data dir and cache for the module: the twin files, the tokenizer, the pre-training."""
    return tmp_path_factory.mktemp("language_home")


def metamath(home: Path, tmp: Path, *overrides: str) -> dict:
    return run_inprocess(tmp, *twin("metamath", home / "data"), f"paths.cache_dir={home / '.cache'}", *overrides)


def math_mini(home: Path, tmp: Path, *overrides: str) -> dict:
    return run_inprocess(tmp, *twin("math_mini", home / "data"), f"paths.cache_dir={home / '.cache'}", *overrides)


def check_record(record: dict, method: str) -> None:
    metric = record["metric"]
    assert record["status"] == "completed" and record["family"] == "language", method
    assert metric["val_key"] == "val/loss" and metric["direction"] == "min"
    assert math.isfinite(metric["best_val"]) and math.isfinite(metric["test"]) and metric["test"] > 0, method


# -- task=metamath ------------------------------------------------------------------------------------

def test_metamath_twin_accumulates_micro_batches_with_checkpointing_and_gsm8k(home, tmp_path):
    none = metamath(home, tmp_path, "method=none", "mode=eval")
    record = metamath(home, tmp_path, "method=onelora")
    check_record(record, "onelora")
    # global batch 8 of micro-batches 2 on one process: 4 accumulated micro-batches per optimizer step
    assert record["batch"] == {"global": 8, "per_device": 2, "accumulate": 4, "world_size": 1}
    # 64 training records (80% of 80) / 2 per micro-batch / 4 = 8 optimizer steps per epoch, 2 epochs
    assert record["global_step"] == 16
    assert record["config"]["task"]["module"]["gradient_checkpointing"] is True  # the twin's (the task: off, as MoRA)
    assert record["config"]["trainer"]["compile"] is False  # the twin's (the task compiles, as MoRA)
    assert record["method_options"] == {"impl": "fused"}  # 1LoRA's own: the task's method_options are the LoRA family's
    assert record["params"]["adapter_params"] == 2 * (3 * 32 + 32 + 2 * 64 + 32) and record["params"]["head_params"] == 0
    assert "test/accuracy" in record["metrics"]  # GSM8K's two problems, generated greedily
    assert (Path(record["run_dir"]) / "side_by_side.md").read_text().startswith("# Generated vs reference")
    assert record["metric"]["best_val"] < none["metric"]["best_val"]  # 1LoRA lowers the random base's loss
    assert none["trained"] is False and none["params"]["trainable_params"] == 0


def test_metamath_without_its_data_names_the_file_and_how_to_get_it(home, tmp_path):
    from onelora.data.errors import MissingDataError

    with pytest.raises(MissingDataError, match=r"MetaMathQA not found: looked in .*nowhere\.json.*huggingface-cli download meta-math/MetaMathQA"):
        metamath(home, tmp_path, "method=onelora", f"task.data.path={tmp_path / 'nowhere.json'}")


def test_metamath_tokenizer_is_llama2s_unless_given(tmp_path):
    cfg = config(tmp_path, "task=metamath")
    assert cfg.task.parts.tokenizer.source == "meta-llama/Llama-2-7b-hf" == cfg.model.pretrained
    assert config(tmp_path, "task=metamath", "model=llama2_13b").task.parts.tokenizer.source == "meta-llama/Llama-2-13b-hf"
    t = config(tmp_path, "task=metamath").task
    assert (t.batch_size, t.micro_batch_size, t.epochs, t.optimizer.lr, t.optimizer.weight_decay) == (128, 4, 3, 3e-4, 0.0)
    assert (t.scheduler._target_, t.scheduler.warmup_ratio) == ("onelora.tasks.schedules.warmup_cosine", 0.03)
    assert (t.data.max_length, t.data.val_fraction, t.data.split_seed) == (512, 0.2, 42)


def test_metamath_follows_moras_script(tmp_path):
    """MoRA's train.py: no gradient checkpointing, lora_alpha 16 and lora_dropout 0.05 for its LoRA
    family (per task: conf/method/ keeps alpha 1, no dropout), the model compiled."""
    from onelora.settings import RunSettings

    cfg = config(tmp_path, "task=metamath")
    assert cfg.task.module.gradient_checkpointing is False and cfg.trainer.compile is True
    options = {m: RunSettings.from_config(config(tmp_path, "task=metamath", "mode=count", f"method={m}")).method.options
               for m in ("lora", "lora_qkv", "dora", "mora1", "mora6", "onelora", "vera")}
    for m in ("lora", "lora_qkv", "dora"):
        assert (options[m]["alpha"], options[m]["dropout"], options[m]["r"]) == (16, 0.05, 1), m
    assert options["mora1"]["dropout"] == options["mora6"]["dropout"] == 0.05 and "alpha" not in options["mora1"]
    assert "dropout" not in options["onelora"] and options["vera"] == {"r": 1, "d_initial": 0.1, "seed": 0}
    # the global method configs are unchanged: another task gets the YAML's options
    lora = RunSettings.from_config(config(tmp_path, "task=cifar10", "mode=count", "method=lora")).method.options
    assert (lora["alpha"], lora["dropout"]) == (1.0, 0.0)
    # a user changes a recipe value through the task key
    changed = config(tmp_path, "task=metamath", "mode=count", "method=lora", "task.method_options.lora.alpha=8")
    assert RunSettings.from_config(changed).method.options["alpha"] == 8


@pytest.mark.parametrize("override, key", [
    ("+task.method_options.lora.alpah=16", "task.method_options.lora.alpah"),
    ("task.method_options.lora.dropout=1.5", "task.method_options.lora.dropout"),
    ("+task.method_options.lroa={alpha: 16}", "task.method_options.lroa"),
    ("+task.method_options.mora1.alpha=16", "task.method_options.mora1.alpha"),
])
def test_task_method_options_are_checked(tmp_path, override, key):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}: "):
        RunSettings.from_config(config(tmp_path, "task=metamath", "mode=count", "method=lora", override))


@pytest.mark.parametrize("devices,nodes,micro,steps", [(8, 2, 4, 2), (4, 4, 4, 2), (4, 16, 2, 1), (1, 1, 4, 32)])
def test_metamath_accumulation_keeps_the_global_batch_of_128(tmp_path, devices, nodes, micro, steps):
    from onelora.settings import accumulation, per_device_batch

    cfg = config(tmp_path, "task=metamath", f"trainer.devices={devices}", f"trainer.num_nodes={nodes}",
                 f"task.micro_batch_size={micro}")
    assert per_device_batch(cfg, devices * nodes) == micro and accumulation(cfg, devices * nodes) == steps
    assert micro * devices * nodes * steps == 128


def test_the_llama2_7b_count_through_the_metamath_task_as_the_cli_prints_it(tmp_path, capsys):
    """`python run.py mode=count model=llama2_7b method=onelora task=metamath`: 1,359,872 (Table S6)."""
    out = run_inprocess(tmp_path, "mode=count", "model=llama2_7b", "method=onelora", "task=metamath")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["adapter_params"] == out["adapter_params"] == 1_359_872
    assert printed["head_params"] == 0  # lm_head frozen, as in the paper


# -- task=math_mini -----------------------------------------------------------------------------------

def test_math_mini_twin_pretrains_once_keeps_lm_head_and_trains_it(home, tmp_path):
    from safetensors.torch import load_file

    none = math_mini(home, tmp_path, "method=none", "mode=eval")
    head = math_mini(home, tmp_path, "method=head")
    onelora = math_mini(home, tmp_path, "method=onelora")
    for record, method in ((head, "head"), (onelora, "onelora")):
        check_record(record, method)
        assert record["params"]["head_params"] == 320 * 32  # lm_head (vocab 320 x hidden 32) trains with every method
        assert record["metric"]["best_val"] < none["metric"]["best_val"], method
        assert "test/accuracy" in record["metrics"]
    assert head["params"]["adapter_params"] == 0 and onelora["params"]["adapter_params"] == 2 * (4 * 32 + 2 * 64 + 32)
    cached = list((home / ".cache" / "pretrained").glob("tiny_llama-math_mini-*.safetensors"))
    assert len(cached) == 1 and none["pretrained_from"] == onelora["pretrained_from"] == str(cached[0])
    assert "lm_head.weight" in load_file(cached[0])  # head_init: source keeps the pre-trained lm_head
    # the un-adapted model is the source model as it is: its lm_head predicts the source's tokens, so
    # it beats a uniform guess over the 320 tokens by far
    assert none["metric"]["best_val"] < math.log(320) - 1


def test_head_init_must_be_fresh_or_source(home, tmp_path):
    from onelora.config import ConfigError

    with pytest.raises(ConfigError, match="model.head_init: must be 'fresh' or 'source', got 'kept'"):
        math_mini(home, tmp_path, "method=head", "model.head_init=kept", "run_tag=_bad")


@pytest.mark.e2e  # every method family on both twins: ~2 min of CPU
@pytest.mark.parametrize("method", [*compared_methods(), "head"])
def test_every_method_family_lowers_the_unadapted_loss(home, tmp_path, method):
    for run in (metamath, math_mini):
        none = run(home, tmp_path, "method=none", "mode=eval")
        record = run(home, tmp_path, f"method={method}")
        check_record(record, method)
        assert record["metric"]["best_val"] < none["metric"]["best_val"], (run.__name__, method)


# -- scale-out ----------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_metamath_twin_on_two_ddp_cpu_processes(home, tmp_path):
    """A real 2-process DDP run (gloo) through run.py: micro-batches of 2 on 2 processes -> accumulation
    2 for the global batch of 8; one record, written by rank 0, with the one model's count."""
    args = [*twin("metamath", home / "data"), "method=onelora", "trainer=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu", f"paths.cache_dir={home / '.cache'}"]
    run_cli(tmp_path, *args, timeout=600)
    run_dir = tmp_path / "results" / "metamath" / "tiny_llama" / "onelora" / "seed0"
    record = results(run_dir)
    check_record(record, "onelora")
    assert record["world_size"] == 2
    assert record["batch"] == {"global": 8, "per_device": 2, "accumulate": 2, "world_size": 2}
    assert record["global_step"] == 2 * 64 // 8  # 2 epochs of 64 records at 8 per optimizer step
    assert record["params"]["adapter_params"] == 2 * (3 * 32 + 32 + 2 * 64 + 32)
    assert len(list(run_dir.rglob("results.json"))) == 1


def test_trainer_fsdp_builds_lightnings_fsdp_strategy_with_orig_params(tmp_path):
    """FSDP needs CUDA (NCCL) to run: here the config composes and the strategy object builds."""
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from onelora.contract import build
    from onelora.config import plain

    cfg = config(tmp_path, "task=metamath", "trainer=fsdp")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    strategy = build(plain(cfg.trainer.strategy), "trainer.strategy")
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}  # one unit per decoder layer
    with pytest.raises(Exception, match="use_orig_params must stay true"):
        build({"_target_": "onelora.strategies.fsdp", "use_orig_params": False}, "trainer.strategy")


def test_trainer_deepspeed_without_the_package_says_how_to_install_it(tmp_path):
    import importlib.util

    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    cfg = config(tmp_path, "task=metamath", "+twin=metamath", "trainer=deepspeed", "trainer.accelerator=cpu",
                 "trainer.devices=1")
    assert cfg.trainer.strategy == "deepspeed_stage_2"
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(ConfigError, match=r"trainer.strategy: 'deepspeed_stage_2' needs DeepSpeed.*pip install -e \.\[deepspeed\]"):
        RunSettings.from_config(cfg)
