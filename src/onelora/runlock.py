"""One process per run directory: an exclusive lock that a crashed or killed process releases.

The same run launched twice would train twice into one folder (the second resuming from the live
run's checkpoint). The lock is an ``fcntl`` lock on ``<run_dir>/.lock``: the kernel drops it when
its process dies, so a SLURM requeue of the job gets in (it waits a little for the old attempt of
the same job to go), and a second launch says who holds it and exits non-zero.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any


class RunLockedError(RuntimeError):
    """Another live process is running this run."""


def _holder() -> dict[str, Any]:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if "SLURM_JOB_ID" in os.environ:
        info["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return info


class RunLock:
    """``with RunLock(run_dir): ...``; raises :class:`RunLockedError` if another process holds it."""

    def __init__(self, run_dir: str | Path, requeue_wait_s: float = 120.0):
        self.path = Path(run_dir) / ".lock"
        self.requeue_wait_s = requeue_wait_s
        self._handle: Any = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        deadline = None
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._read(handle)
                same_job = holder.get("slurm_job") and holder.get("slurm_job") == os.environ.get("SLURM_JOB_ID")
                if same_job:  # a requeued attempt of this job: the old one is on its way out
                    deadline = deadline or time.time() + self.requeue_wait_s
                    if time.time() < deadline:
                        time.sleep(1.0)
                        continue
                handle.close()
                who = ", ".join(f"{k} {v}" for k, v in holder.items()) or "another process"
                raise RunLockedError(
                    f"{self.path.parent} is being run by {who}; wait for it to finish (or stop it), "
                    "or set run_tag=<suffix> to run a second copy"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_holder()))
        handle.flush()
        self._handle = handle
        return self

    @staticmethod
    def _read(handle: Any) -> dict[str, Any]:
        try:
            handle.seek(0)
            return json.loads(handle.read() or "{}")
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
