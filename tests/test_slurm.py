"""Sweeps through a real SLURM (the local one-node cluster of slurm/local_cluster.sh).

Run with `make test-slurm`, which installs and starts the cluster and exports SLURM_CONF.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runs import DIGITS_FAST, results, run_cli

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    if not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None:
        pytest.fail("no SLURM here: run `make test-slurm` (starts slurm/local_cluster.sh and exports SLURM_CONF)")
    subprocess.run(["sinfo"], check=True, capture_output=True, timeout=30)
    return tmp_path_factory.mktemp("slurm_home")


def sacct_states(job_id: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,State"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|") for line in out.strip().splitlines())


def test_a_2x2_digits_sweep_runs_as_a_slurm_array(home):
    proc = run_cli(home, "-m", "hydra/launcher=slurm_cpu", "experiment=mini", "method=onelora,lora", "seed=0,1",
                   *DIGITS_FAST, timeout=900)
    assert "Sweep finished: 4 runs: 4 completed" in proc.stdout
    records = [results(home / "results" / "digits" / "digits_vit" / m / f"seed{s}")
               for m in ("onelora", "lora") for s in (0, 1)]
    assert all(r["status"] == "completed" and r["experiment"] == "mini" for r in records)
    slurm = [r["slurm"] for r in records]
    assert len({s["job_id"] for s in slurm}) == 4
    assert len({s["array_job_id"] for s in slurm}) == 1
    assert sorted(s["array_task_id"] for s in slurm) == ["0", "1", "2", "3"]
    deadline = time.time() + 60  # sacct may lag the result files by a few seconds
    while set((states := sacct_states(slurm[0]["array_job_id"])).values()) != {"COMPLETED"} and time.time() < deadline:
        time.sleep(2)
    assert set(states.values()) == {"COMPLETED"}, states

    again = run_cli(home, "-m", "hydra/launcher=slurm_cpu", "experiment=mini", "method=onelora,lora", "seed=0,1",
                    *DIGITS_FAST, timeout=900)
    assert "4 skipped" in again.stdout


def test_a_preempted_run_is_requeued_and_resumes_from_its_checkpoint(home):
    """SIGUSR2 is what SLURM sends before a time-out or a preemption (submitit asks for it
    signal_delay_s ahead): submitit requeues the job and the rerun resumes in the same run
    directory from last.ckpt. We send it ourselves once an epoch is checkpointed."""
    import sys
    import time

    import torch

    from runs import ROOT

    run_dir = home / "results" / "digits" / "digits_vit" / "vera" / "seed7"
    args = ["-m", "hydra/launcher=slurm_cpu", "experiment=mini", "method=vera", "seed=7", "task.epochs=200", *DIGITS_FAST]
    env = {**os.environ, "ONELORA_ROOT": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last, deadline = run_dir / "checkpoints" / "last.ckpt", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                if torch.load(last, map_location="cpu", weights_only=False)["epoch"] >= 1:
                    break
            except Exception:  # being written
                pass
        time.sleep(0.5)
    assert proc.poll() is None and last.is_file(), "the job ended (or never checkpointed) before the signal"
    running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-n", "onelora", "-o", "%i"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert len(running) == 1, running
    job_id = running[0]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    assert "1 completed" in out
    record = results(run_dir)
    assert record["status"] == "completed" and record["metric"]["test"] is not None
    assert int(record["slurm"].get("restart_count", 0)) >= 1
    assert len(sorted((run_dir / "logs").glob("version_*"))) >= 2
    outputs = "".join(p.read_text() for p in (home / "results" / ".submitit" / job_id).glob("*_log.out"))
    assert f"Resuming from {last}" in outputs


def test_a_two_task_ddp_job_trains_the_metamath_twin(home):
    """Multi-process data parallel through SLURM as on a GPU cluster (tasks per node = devices): one
    job of 2 tasks, each a DDP rank on the CPU (gloo); Lightning reads the ranks from SLURM's
    environment (no re-launch of sys.argv), rank 0 writes the one record."""
    from runs import twin

    args = ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.tasks_per_node=2", "trainer=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu", "method=onelora", "seed=3", *twin("metamath", home / "data")]
    proc = run_cli(home, *args, timeout=900)
    assert "Sweep finished: 1 runs: 1 completed" in proc.stdout
    run_dir = home / "results" / "metamath" / "tiny_llama" / "onelora" / "seed3"
    record = results(run_dir)
    assert record["status"] == "completed" and record["world_size"] == 2
    assert record["batch"] == {"global": 8, "per_device": 2, "accumulate": 2, "world_size": 2}
    assert record["slurm"]["job_id"] and len(list(run_dir.rglob("results.json"))) == 1
