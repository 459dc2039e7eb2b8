"""Runs that never lie: a record is what was trained, a broken run says so, a fault never jams a run.

Each test here failed on the runner before the task-contract redesign (issue 15)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fakes import write_cifar
from runs import CIFAR_TINY, ROOT, config, results, run_cli, run_inprocess


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data") / "cifar10", per_batch=20, test=30)


def tiny(tmp: Path, cifar_root: Path, *overrides: str) -> dict:
    return run_inprocess(tmp, *CIFAR_TINY, f"task.data.root={cifar_root}", *overrides)


def run_dir(tmp: Path, method: str = "onelora", tag: str = "") -> Path:
    return tmp / "results" / "cifar10" / "tiny_vit" / method / f"seed0{tag}"


def interrupt_after_training(tmp: Path) -> Path:
    """What a killed run leaves: its checkpoints, no record."""
    (run_dir(tmp) / "results.json").unlink()
    return run_dir(tmp) / "checkpoints" / "last.ckpt"


# -- a record is what was trained ----------------------------------------------------------------

def test_force_retrains_from_scratch_with_the_new_config(tmp_path, cifar_root):
    first = tiny(tmp_path, cifar_root)
    forced = tiny(tmp_path, cifar_root, "force=true", "method.lr=0.0001")
    assert forced["lr"] == 0.0001 and forced["global_step"] == first["global_step"] == 16
    assert forced["time"]["attempts"] == 1 and forced["fingerprint"] != first["fingerprint"]
    ckpt = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["onelora"]["fingerprint"] == forced["fingerprint"]
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0001)
    assert forced["metric"]["best_val"] != first["metric"]["best_val"] or forced["metrics"] != first["metrics"]


def test_an_interrupted_run_never_resumes_under_another_config(tmp_path, cifar_root):
    from onelora.config import ConfigError

    tiny(tmp_path, cifar_root, "method=lora")
    (run_dir(tmp_path, "lora") / "results.json").unlink()  # as if killed after its last checkpoint
    with pytest.raises(ConfigError, match="different config.*run_tag.*force=true"):
        tiny(tmp_path, cifar_root, "method=lora", "method.lr=0.0001")
    with pytest.raises(ConfigError, match="different config"):  # r=2 would die on size mismatches
        tiny(tmp_path, cifar_root, "method=lora", "method.options.r=2")
    fresh = tiny(tmp_path, cifar_root, "method=lora", "method.options.r=2", "force=true")
    assert fresh["status"] == "completed" and fresh["config"]["method"]["options"]["r"] == 2
    assert fresh["global_step"] == 16 and fresh["time"]["attempts"] == 1


def test_the_same_config_resumes_and_adds_its_time(tmp_path, cifar_root, capsys):
    tiny(tmp_path, cifar_root, "task.epochs=1")
    last = interrupt_after_training(tmp_path)
    states = torch.load(last, map_location="cpu", weights_only=False)["callbacks"]
    saved = next(s for k, s in states.items() if k.startswith("RunStats"))
    # a second attempt with one more epoch is another config; the same config resumes
    again = tiny(tmp_path, cifar_root, "task.epochs=1")
    assert "Resuming from" in capsys.readouterr().out
    assert again["time"]["attempts"] == 2
    # the first attempt's time as its checkpoint kept it, plus this attempt's (testing at least)
    assert again["time"]["total_s"] > saved["total_s"] > 0
    assert again["time"]["fit_s"] >= saved["fit_s"] > 0
    assert sorted(p.name for p in (run_dir(tmp_path) / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_diverging_run_fails_at_its_first_non_finite_loss(tmp_path, cifar_root):
    from onelora.tasks.base import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step \d+"):
        tiny(tmp_path, cifar_root, "method.lr=1e30", "task.epochs=5")
    record = results(run_dir(tmp_path))
    assert record["status"] == "failed" and "non-finite loss" in record["error"]
    assert "metric" not in record


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
        ("task.epochs=0", "task.epochs"),
    ],
)
def test_every_training_length_key_must_allow_a_step(tmp_path, override, key):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RunSettings.from_config(config(tmp_path, *CIFAR_TINY, override))


def test_a_run_that_trained_no_step_is_not_completed(tmp_path, cifar_root, monkeypatch):
    """Whatever made fit return without a step (a resumed checkpoint past the budget of a changed
    length, an empty loader a library let through), the record must not say completed."""
    import lightning as L

    monkeypatch.setattr(L.Trainer, "fit", lambda self, *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="trained 0 optimizer steps"):
        tiny(tmp_path, cifar_root)
    assert results(run_dir(tmp_path))["status"] == "failed"


# -- a fault never jams a run --------------------------------------------------------------------

def test_a_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, cifar_root):
    from onelora.config import ConfigError

    tiny(tmp_path, cifar_root)
    last = interrupt_after_training(tmp_path)
    last.write_bytes(last.read_bytes()[:100])  # truncated
    with pytest.raises(ConfigError, match=f"{last}.*damaged.*resume=false"):
        tiny(tmp_path, cifar_root)
    last.write_bytes(b"")
    with pytest.raises(ConfigError, match="resume=false"):
        tiny(tmp_path, cifar_root)
    assert tiny(tmp_path, cifar_root, "resume=false")["status"] == "completed"


def test_a_damaged_cached_backbone_is_rebuilt(tmp_path):
    from onelora.pretrain import pretrained_path
    from onelora.settings import RunSettings

    args = ("+twin=digits", "task.pretrain.epochs=2", "task.epochs=1")
    path = pretrained_path(RunSettings.from_config(config(tmp_path, *args)))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 10)
    record = run_inprocess(tmp_path, *args)
    assert record["status"] == "completed" and path.stat().st_size > 10_000


def test_a_second_launch_of_a_live_run_is_refused(tmp_path, cifar_root):
    from onelora.runlock import RunLock, RunLockedError

    with RunLock(run_dir(tmp_path)):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}.*run_tag"):
            tiny(tmp_path, cifar_root)
    assert tiny(tmp_path, cifar_root)["status"] == "completed"  # released


def test_a_lock_dies_with_its_process(tmp_path):
    from onelora.runlock import RunLock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r); from onelora.runlock import RunLock\n"
        "with RunLock(%r):\n    print('held', flush=True); time.sleep(60)" % (str(ROOT / "src"), str(tmp_path)))],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with RunLock(tmp_path):  # SIGKILL released it: a relaunch (or a SLURM requeue) gets in
        pass


def test_results_and_artefacts_respect_the_umask(tmp_path, cifar_root):
    old = os.umask(0o022)
    try:
        tiny(tmp_path, cifar_root)
    finally:
        os.umask(old)
    for path in (run_dir(tmp_path) / "results.json", run_dir(tmp_path) / "adapter" / "adapter.safetensors",
                 run_dir(tmp_path) / "adapter" / "adapter_config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path, cifar_root):
    stale = run_dir(tmp_path) / ".results.json.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("{")
    tiny(tmp_path, cifar_root)
    assert not stale.exists()


# -- bad values: one line naming the key, before any work --------------------------------------

@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("method.lr=abc", "method.lr: must be a number"),
        ("seed=abc", "seed: must be an integer"),
        ("seed=-1", "seed: must be >= 0"),
        ("task.epochs=abc", "task.epochs: must be an integer"),
        ("trainer.devices=abc", "trainer.devices: must be an integer"),
        ("trainer=ddp trainer.devices=0", "trainer.devices: must be >= 1"),
        ("task.batch_size=2.5", "task.batch_size: must be an integer"),
        ("task.optimizer._target_=torch.optim.NoSuch", "task.optimizer._target_: cannot import"),
        ("task.scheduler._target_=nosuch.schedule", "task.scheduler._target_: cannot import"),
        ("+task.data.val_fractoin=0.2", "task.data: DigitsDataModule takes no key 'val_fractoin'"),
        ("+task.module.num_clases=3", "task.module: ClassificationModule takes no key 'num_clases'"),
        ("+task.optimizer.betaz=1", "task.optimizer: AdamW takes no key 'betaz'"),
        ("model=tiny_llama", "model: 'tiny_llama' is of kind 'causal_lm'"),
        ("run_tag=../../x", "run_tag:"),
        ("run_tag=a/b", "run_tag:"),
    ],
)
def test_bad_values_name_their_key_before_any_work(tmp_path, override, key):
    from onelora.config import ConfigError
    from onelora.settings import RunSettings

    with pytest.raises(ConfigError) as err:
        RunSettings.from_config(config(tmp_path, *override.split()))
    assert key in str(err.value)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("task.data.val_fraction=1.5", "task.data: DigitsDataModule: val_fraction must be in (0, 1)"),
        ("task.optimizer.weight_decay=-1", "task.optimizer"),
    ],
)
def test_bad_values_of_built_objects_name_their_key(tmp_path, override, key):
    from onelora.config import ConfigError

    with pytest.raises(ConfigError) as err:
        run_inprocess(tmp_path, override, "task.pretrain.epochs=1")
    assert key in str(err.value)


def test_a_missing_backbone_path_is_an_error_not_ignored(tmp_path):
    from onelora.models.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=str(tmp_path / "nonexistent")):
        run_inprocess(tmp_path, f"model.pretrained={tmp_path / 'nonexistent'}")


def test_an_offline_hub_lookup_fails_at_once(tmp_path, monkeypatch):
    from onelora.models.weights import MissingWeightsError, resolve, resolve_directory

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.perf_counter()
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE"):
        resolve("someone/some-model")
    with pytest.raises(MissingWeightsError, match="huggingface-cli download someone/other"):
        resolve_directory("someone/other")
    assert time.perf_counter() - started < 5


def test_a_terminated_run_says_so_exits_non_zero_and_resumes(tmp_path):
    """SIGTERM (kill, timeout, scancel): exit status 143, a message that says a relaunch resumes, an
    'interrupted' record and a checkpoint at the step it stopped; the relaunch completes."""
    root = write_cifar(tmp_path / "cifar10", per_batch=40)
    args = [*CIFAR_TINY, f"task.data.root={root}", "task.epochs=30", "task.batch_size=2"]
    env = {**os.environ, "ONELORA_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not last.is_file():
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be terminated: make it longer"
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "relaunch" in err
    record = results(run_dir(tmp_path))
    assert record["status"] == "interrupted"
    stopped_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert stopped_at > 0
    out = run_cli(tmp_path, *args).stdout
    assert "Resuming from" in out
    done = results(run_dir(tmp_path))
    assert done["status"] == "completed" and done["time"]["attempts"] == 2
    assert done["global_step"] == 30 * (5 * 40 - 20) // 2  # every step of the budget, counted once


test_a_terminated_run_says_so_exits_non_zero_and_resumes = pytest.mark.e2e(
    test_a_terminated_run_says_so_exits_non_zero_and_resumes)


def test_a_run_terminated_while_pre_training_says_a_relaunch_starts_it_again(tmp_path, monkeypatch):
    """main said "relaunch ... to resume from <run>/checkpoints/last.ckpt" when SIGTERM came during
    pre-training, before that checkpoint existed; a relaunch pre-trains again."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from onelora import pretrain
    from onelora.pipeline import RunTerminated

    def stopped(*args, **kwargs):
        raise SIGTERMException()

    monkeypatch.setattr(pretrain, "_pretrain", stopped)
    with pytest.raises(RunTerminated, match=r"stopped by SIGTERM; relaunch the same command to start it again "
                                            r"\(no checkpoint was written yet\)"):
        run_inprocess(tmp_path, "+twin=digits")
    record = results(tmp_path / "results" / "digits" / "digits_vit" / "onelora" / "seed0")
    assert record["status"] == "interrupted" and "last.ckpt" not in record["error"]


def test_a_damaged_adapter_file_names_its_path(tmp_path):
    from adapter_cases import spec_of, tiny_vit

    from onelora.adapters import AdapterConfigError, inject, load_adapter, save_adapter

    model = tiny_vit()
    inject(model, spec_of("lora"), head=["head"])
    save_adapter(tmp_path / "adapter", model)
    weights = tmp_path / "adapter" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    fresh = tiny_vit()
    with pytest.raises(AdapterConfigError, match=f"{weights} is damaged"):
        load_adapter(tmp_path / "adapter", fresh)
    assert not any(p.requires_grad is False for p in fresh.parameters())  # untouched: nothing was injected
    (tmp_path / "adapter" / "adapter_config.json").write_text("{")
    with pytest.raises(AdapterConfigError, match="adapter_config.json is damaged"):
        load_adapter(tmp_path / "adapter", tiny_vit())
