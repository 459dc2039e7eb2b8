#!/usr/bin/env python
"""End-to-end check of a SLURM cluster through submitit (what onelora's SLURM launcher uses).

    python slurm/check_cluster.py                 # against slurm/local_cluster.sh's cluster
    python slurm/check_cluster.py --no-cancel     # skip the scancel check
    python slurm/check_cluster.py --partition gpu --account my_account   # a real cluster

Runs, each with a deadline so that a broken cluster fails instead of hanging:
  1. one job returning 42;
  2. a 2x2 job array (map_array over a 2x2 grid), every task returning 42;
  3. a sleeping job that gets scancel'ed: submitit must report it (UncompletedJobError).

Exit status 0 when all pass, 1 otherwise. If SLURM_CONF is unset and the local cluster's config
exists (slurm/.state or $ONELORA_SLURM_STATE), that config is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def answer(a: int = 0, b: int = 0) -> int:
    return 42 + 0 * (a + b)


def sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return "not cancelled"


def _local_conf() -> Path:
    state = Path(os.environ.get("ONELORA_SLURM_STATE", HERE / ".state")).resolve()
    return state / "etc" / "slurm.conf"


def _setup_env() -> None:
    if not os.environ.get("SLURM_CONF"):
        conf = _local_conf()
        if conf.is_file():
            os.environ["SLURM_CONF"] = str(conf)
    print(f"SLURM_CONF={os.environ.get('SLURM_CONF', '(unset: slurm default)')}", flush=True)
    missing = [b for b in ("sbatch", "sacct", "scancel") if shutil.which(b) is None]
    if missing:
        sys.exit(f"FAIL: {', '.join(missing)} not on PATH (install: slurm/local_cluster.sh install)")


def _preflight(partition: str) -> str | None:
    """An error message if the controller is unreachable or the partition unknown, else None."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-p", partition, "-o", "%P %a %D %T"],
            capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 60s"
    if out.returncode != 0:
        return f"sinfo failed: {(out.stderr or out.stdout).strip()}"
    if not out.stdout.strip():
        return f"partition {partition!r} not found (sinfo shows no such partition)"
    print(f"sinfo: {' | '.join(out.stdout.split(chr(10))).strip(' |')}", flush=True)
    return None


def _result_with_deadline(job, deadline_s: float):
    """job.result(), but raise TimeoutError instead of waiting past the deadline."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = job.result()
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(deadline_s)
    if t.is_alive():
        state = job.state
        job.cancel(check=False)  # leave nothing queued behind
        raise TimeoutError(f"job {job.job_id} not done after {deadline_s:.0f}s (state: {state}; cancelled it)")
    if "error" in box:
        raise box["error"]
    return box["result"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--folder",
        help="submitit folder; on a real cluster it must be on a filesystem the nodes share "
        "(default: a temporary dir under /tmp, removed on success)",
    )
    p.add_argument("--partition", default=os.environ.get("ONELORA_SLURM_PARTITION", "debug"))
    p.add_argument("--account", default=os.environ.get("ONELORA_SLURM_ACCOUNT") or None)
    p.add_argument("--deadline", type=float, default=120, help="seconds allowed per check")
    p.add_argument("--no-array", action="store_true")
    p.add_argument("--no-cancel", action="store_true")
    args = p.parse_args()

    _setup_env()
    error = _preflight(args.partition)
    if error:
        print(f"FAIL: {error}")
        return 1
    import submitit

    tmp = None
    folder = args.folder
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="onelora-slurm-check-")
        folder = tmp
    folder = str(Path(folder) / "%j")

    executor = submitit.AutoExecutor(folder=folder)
    if executor.cluster != "slurm":
        print(f"FAIL: submitit picked cluster {executor.cluster!r}, not slurm (is sbatch on PATH?)")
        return 1
    params = dict(slurm_partition=args.partition, timeout_min=5, cpus_per_task=1, mem_gb=1)
    if args.account:
        params["slurm_account"] = args.account
    executor.update_parameters(**params)

    failures = []

    def check(name: str, fn) -> None:
        t0 = time.monotonic()
        try:
            detail = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failures.append(name)
            print(f"FAIL {name} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}", flush=True)
        else:
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s){': ' + detail if detail else ''}", flush=True)

    def single() -> str:
        job = executor.submit(answer)
        result = _result_with_deadline(job, args.deadline)
        if result != 42:
            raise AssertionError(f"job {job.job_id} returned {result!r}, expected 42")
        return f"job {job.job_id} returned 42"

    def array() -> str:
        a, b = zip(*[(i, j) for i in range(2) for j in range(2)])
        jobs = executor.map_array(answer, a, b)
        results = [_result_with_deadline(j, args.deadline) for j in jobs]
        if results != [42] * 4:
            raise AssertionError(f"array {jobs[0].job_id} returned {results!r}")
        return f"array {jobs[0].job_id.split('_')[0]} ({len(jobs)} tasks) returned 42 each"

    def cancel() -> str:
        job = executor.submit(sleeper, 600)
        t_end = time.monotonic() + args.deadline
        # mode="force": a fresh sacct call each time, instead of submitit's backoff
        while (state := job.watcher.get_state(job.job_id, mode="force")) != "RUNNING":
            if state not in ("UNKNOWN", "PENDING", "CONFIGURING", "REQUEUED"):
                raise AssertionError(f"job {job.job_id} ended before it could be cancelled: {state}")
            if time.monotonic() > t_end:
                job.cancel(check=False)
                raise TimeoutError(f"job {job.job_id} never started (state: {state})")
            time.sleep(0.5)
        job.cancel(check=True)
        t_cancel = time.monotonic()
        try:
            result = _result_with_deadline(job, args.deadline)
        except submitit.core.utils.UncompletedJobError:
            return (
                f"job {job.job_id} cancelled, submitit raised UncompletedJobError "
                f"{time.monotonic() - t_cancel:.1f}s later (state {job.state})"
            )
        raise AssertionError(f"cancelled job {job.job_id} returned {result!r}")

    check("single job", single)
    if not args.no_array:
        check("2x2 array", array)
    if not args.no_cancel:
        check("scancel is reported", cancel)

    if failures:
        print(f"FAILED: {', '.join(failures)} (submitit logs in {Path(folder).parent})")
        return 1
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
