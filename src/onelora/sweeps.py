"""Sweeps that report what happened: every run logs completed / skipped / failed to the sweep's
event file, and at the end a summary says which runs failed (and the sweep exits non-zero)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

ENV = "ONELORA_SWEEP_LOG"


def log_event(status: str, run_dir: Path | str, **extra: Any) -> None:
    """Append one line to the current sweep's event file (no-op outside a sweep)."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = {"status": status, "run_dir": str(run_dir), "time": time.time(), **extra}
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        if key in os.environ:
            line[key.lower()] = os.environ[key]
    with open(path, "a") as handle:  # one short write per line: safe from parallel jobs
        handle.write(json.dumps(line, default=str) + "\n")


class SweepSummary(Callback):
    """Hydra callback (see conf/hydra/default.yaml)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)) / ".sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self.path.touch()
        os.environ[ENV] = str(self.path)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        events = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        latest = {e["run_dir"]: e for e in events}  # a requeued run counts once, by its last word
        counts = Counter(e["status"] for e in latest.values())
        print(f"\nSweep finished: {len(latest)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for event in latest.values():
            if event["status"] == "failed":
                print(f"  FAILED {event['run_dir']}: {event.get('error', '')}")
        print(f"  events: {self.path}", flush=True)
        os.environ.pop(ENV, None)
        if counts.get("failed"):
            raise SystemExit(1)
