"""Runs that outlive one process: SIGKILL + resume, DDP on 2 CPU processes, wandb offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fakes import write_cifar
from runs import CIFAR_TINY, ROOT, results, run_cli

pytestmark = pytest.mark.e2e  # subprocess runs of run.py: make test-e2e


def test_a_killed_run_resumes_from_its_last_epoch(tmp_path):
    root = write_cifar(tmp_path / "cifar10", per_batch=200)  # 490 steps an epoch: slow enough to kill mid-run
    args = [*CIFAR_TINY, f"task.data.root={root}", "method=onelora", "task.epochs=8", "task.batch_size=2"]
    run_dir = tmp_path / "results" / "cifar10" / "tiny_vit" / "onelora" / "seed0"
    env = {**os.environ, "ONELORA_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, map_location="cpu", weights_only=False)["epoch"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < 7, "the run had nearly finished when it was killed: make its epochs longer"
    assert not (run_dir / "results.json").exists()

    out = run_cli(tmp_path, *args).stdout
    assert f"Resuming from {last}" in out
    record = results(run_dir)
    assert record["status"] == "completed"
    import csv

    attempts = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(path) as handle:
            attempts.append({int(float(r["epoch"])) for r in csv.DictReader(handle) if r.get("val/accuracy")})
    assert len(attempts) == 2
    before, after = attempts
    assert killed_at >= 1 and max(before) >= killed_at - 1
    assert min(after) >= killed_at - 1 and max(after) == 7  # resumed, not restarted from epoch 0
    assert record["time"]["attempts"] == 2


def test_ddp_on_two_cpu_processes_writes_one_record_with_one_models_count(tmp_path):
    root = write_cifar(tmp_path / "cifar10")
    args = [*CIFAR_TINY, f"task.data.root={root}", "method=lora", "trainer=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu", "task.batch_size=10"]
    run_cli(tmp_path, *args, timeout=600)
    run_dir = tmp_path / "results" / "cifar10" / "tiny_vit" / "lora" / "seed0"
    record = results(run_dir)
    assert record["status"] == "completed" and record["world_size"] == 2
    single = run_cli(tmp_path, "mode=count", "task=cifar10", "model=tiny_vit", "method=lora").stdout
    import json

    counted = json.loads(single.strip().splitlines()[-1])
    assert record["params"]["trainable_params"] == counted["trainable_params"]  # counted once, not per rank
    assert len(list(run_dir.rglob("results.json"))) == 1


def test_wandb_offline_logs_the_run_with_its_record(tmp_path):
    root = write_cifar(tmp_path / "cifar10")
    run_cli(tmp_path, *CIFAR_TINY, f"task.data.root={root}", "method=vera", "task.epochs=1", "logger=wandb")
    run_dir = tmp_path / "results" / "cifar10" / "tiny_vit" / "vera" / "seed0"
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    log = next(offline[0].glob("*.wandb")).read_bytes()
    for needle in (b"cifar10/tiny_vit/vera/seed0", b"cifar10/tiny_vit/vera", b"fingerprint", b"trainable_params"):
        assert needle in log, needle
    assert results(run_dir)["status"] == "completed"
