"""The experiment spine end to end: config -> model -> inject -> Lightning -> results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fakes import write_cifar
from runs import CIFAR_TINY, DIGITS_FAST, config, results, run_cli, run_inprocess


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data") / "cifar10", per_batch=20, test=30)


def tiny_run(tmp: Path, cifar_root: Path, *overrides: str) -> dict:
    return run_inprocess(tmp, *CIFAR_TINY, f"task.data.root={cifar_root}", *overrides)


@pytest.mark.parametrize("method", ["onelora", "lora", "vera", "bitfit", "difffit", "onelora_bias_norms"])
def test_cifar_run_writes_a_complete_record(tmp_path, cifar_root, method):
    from onelora.count import count
    from onelora.results import REQUIRED_KEYS
    from onelora.settings import RunSettings

    record = tiny_run(tmp_path, cifar_root, f"method={method}")
    run_dir = tmp_path / "results" / "cifar10" / "tiny_vit" / record["method"] / "seed0"
    on_disk = results(run_dir)
    assert on_disk == json.loads(json.dumps(record, default=str))
    for key in REQUIRED_KEYS:
        assert key in on_disk, key
    assert on_disk["status"] == "completed"
    assert (on_disk["task"], on_disk["model"], on_disk["seed"]) == ("cifar10", "tiny_vit", 0)
    assert on_disk["paper"] == {"task": "classification", "source": "ImageNet-21k", "target": "CIFAR10"}
    assert on_disk["run_dir"] == str(run_dir)
    metric = on_disk["metric"]
    assert metric["name"] == "accuracy" and metric["direction"] == "max"
    assert (metric["val_key"], metric["test_key"]) == ("val/accuracy", "test/accuracy")
    for key in ("best_val", "final_val", "test", "test_final"):
        assert 0.0 <= metric[key] <= 100.0
    assert metric["best_val"] >= metric["final_val"] and metric["val_rounds"] == 2
    assert metric["best_epoch"] in (0, 1) and metric["best_step"] == 8 * (metric["best_epoch"] + 1)
    assert on_disk["metrics"]["test/accuracy"] == metric["test"]
    assert on_disk["metrics"]["final:test/accuracy"] == metric["test_final"]
    t = on_disk["time"]
    assert t["fit_s"] > 0 and t["train_s"] > 0 and t["val_s"] >= 0 and t["test_s"] > 0
    assert 0 < t["time_to_best_s"] <= t["fit_s"] and t["total_s"] >= t["fit_s"] and t["attempts"] == 1
    assert on_disk["memory"]["device"] == "cpu" and on_disk["memory"]["peak_bytes"] > 2**20
    measured = on_disk["memory"]["model_bytes"]
    assert measured["trainable"] == 4 * on_disk["params"]["trainable_params"] == measured["grads"]
    assert measured["optimizer"] == 2 * measured["trainable"] + 4 * len(ckpt_optimizer_state(run_dir))  # AdamW: m, v, step
    assert measured["activations"] > 0
    assert on_disk["lr"] == 0.01 and on_disk["world_size"] == 1 and on_disk["global_step"] == 16
    assert "torch" in on_disk["versions"] and on_disk["config"]["method"]["name"] == record["method"]
    # the parameter report equals the meta-device count of the same config
    counted = count(RunSettings.from_config(config(tmp_path, *CIFAR_TINY, f"method={method}", "mode=count")))
    assert on_disk["params"] == {k: v for k, v in counted.items() if k not in ("model", "method")}
    assert on_disk["params"]["head_params"] == 32 * 10 + 10
    # adapter-only artefacts: the best round's adapter, and checkpoints with only the trainable tensors
    assert (run_dir / "adapter" / "adapter.safetensors").is_file()
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=False)
        assert sum(v.numel() for v in ckpt["state_dict"].values()) <= on_disk["params"]["trainable_params"] + 4096
        assert all(not k.endswith("base_layer.weight") for k in ckpt["state_dict"])
        assert ckpt["onelora"]["fingerprint"] == on_disk["fingerprint"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert list((run_dir / "logs").glob("version_*/metrics.csv"))


def ckpt_optimizer_state(run_dir: Path) -> list:
    """The parameter entries of AdamW's state in the last checkpoint (one 'step' scalar each)."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return list(ckpt["optimizer_states"][0]["state"])


def test_the_record_reports_the_best_rounds_weights_not_the_last(tmp_path, cifar_root):
    """The paper reports the best mean evaluation metric: the test metric of the best validation
    round's weights (and its adapter), the final weights' test metric beside it."""
    from onelora.adapters import load_adapter
    from onelora.models import build_model

    record = tiny_run(tmp_path, cifar_root, "method=lora", "task.epochs=4", "task.optimizer.lr=0.05")
    run_dir = Path(record["run_dir"])
    rows = [r for r in csv_rows(run_dir) if r.get("val/accuracy")]
    vals = [float(r["val/accuracy"]) for r in rows]
    m = record["metric"]
    assert len(vals) == 4 and m["best_val"] == max(vals) and m["final_val"] == vals[-1]
    assert m["best_epoch"] == vals.index(max(vals))
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == m["best_epoch"]
    # the saved adapter is the best round's: it reproduces metric.test, not the final weights' score
    torch.manual_seed(0)
    model = build_model(record["config"]["model"], num_classes=10, load_weights=False)
    load_adapter(run_dir / "adapter", model)
    saved = {k: v for k, v in best["state_dict"].items()}
    for name, tensor in model.named_parameters():
        if tensor.requires_grad:
            assert torch.equal(tensor, saved[f"model.{name}"]), name


def csv_rows(run_dir: Path) -> list[dict]:
    import csv

    rows = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(path) as handle:
            rows += list(csv.DictReader(handle))
    return rows


def test_saved_adapter_reproduces_the_trained_model(tmp_path, cifar_root):
    from onelora.adapters import load_adapter
    from onelora.models import build_model

    record = tiny_run(tmp_path, cifar_root, "method=dora")
    cfg = record["config"]
    torch.manual_seed(0)
    fresh = build_model(cfg["model"], num_classes=10, load_weights=False)
    torch.manual_seed(0)
    other = build_model(cfg["model"], num_classes=10, load_weights=False)
    load_adapter(Path(record["run_dir"]) / "adapter", fresh)
    load_adapter(Path(record["run_dir"]) / "adapter", other)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh(x).logits, other(x).logits)


def test_same_seed_gives_the_same_metrics(tmp_path, cifar_root):
    first = tiny_run(tmp_path, cifar_root, "method=onelora", "run_tag=_a")
    second = tiny_run(tmp_path, cifar_root, "method=onelora", "run_tag=_b")
    other_seed = tiny_run(tmp_path, cifar_root, "method=onelora", "seed=1")
    assert first["metrics"]["val/loss"] == second["metrics"]["val/loss"]
    assert first["metric"] == second["metric"]
    assert first["metrics"]["val/loss"] != other_seed["metrics"]["val/loss"]


def test_completed_runs_are_skipped_and_changed_configs_refused(tmp_path, cifar_root, capsys):
    from onelora.config import ConfigError

    first = tiny_run(tmp_path, cifar_root, "method=bitfit")
    again = tiny_run(tmp_path, cifar_root, "method=bitfit")
    assert "Already completed, skipping" in capsys.readouterr().out
    assert again["finished_at"] == first["finished_at"]
    with pytest.raises(ConfigError, match="different config.*run_tag"):
        tiny_run(tmp_path, cifar_root, "method=bitfit", "task.optimizer.lr=0.02")


def test_a_failed_run_leaves_a_failed_record(tmp_path, cifar_root):
    with pytest.raises(Exception):
        tiny_run(tmp_path, cifar_root, "method=onelora", "task.data.dataset=cifar100")
    record = results(tmp_path / "results" / "cifar10" / "tiny_vit" / "onelora" / "seed0")
    assert record["status"] == "failed" and "cifar100" in record["error"]


# -- the embedded default --------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_home(tmp_path_factory) -> Path:
    """A home whose cache holds the (shortened) digits pre-training, shared by the digits tests."""
    return tmp_path_factory.mktemp("digits_home")


def test_embedded_default_beats_chance_and_the_head_only_baseline(digits_home):
    onelora = run_inprocess(digits_home, *DIGITS_FAST, "method=onelora")
    head = run_inprocess(digits_home, *DIGITS_FAST, "method=head")
    lora = run_inprocess(digits_home, *DIGITS_FAST, "method=lora")
    chance = 100 / 5
    assert onelora["metric"]["test"] > chance + 30
    assert onelora["metric"]["test"] > head["metric"]["test"]
    assert lora["metric"]["test"] > head["metric"]["test"]
    assert head["params"]["adapter_params"] == 0 and head["params"]["head_params"] == 64 * 5 + 5
    cached = list((digits_home / ".cache" / "pretrained").glob("*.safetensors"))
    assert len(cached) == 1 and cached[0].with_suffix(".json").is_file()


@pytest.mark.e2e
def test_run_py_with_no_arguments_runs_the_default(digits_home):
    first = run_cli(digits_home, *DIGITS_FAST, "seed=1").stdout  # pre-trains unless a test before did
    assert "digits | digits_vit | onelora | seed 1" in first
    assert "accuracy (test, best validation round)" in first and "results:" in first
    record = results(digits_home / "results" / "digits" / "digits_vit" / "onelora" / "seed1")
    assert record["status"] == "completed"
    again = run_cli(digits_home, *DIGITS_FAST, "seed=1")
    assert "Already completed, skipping" in again.stdout
    other = run_cli(digits_home, *DIGITS_FAST, "seed=2").stdout
    assert "Pre-training" not in other and "seed 2" in other  # the cached backbone is reused
