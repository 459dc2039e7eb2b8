"""The record every run leaves behind: ``results.json`` in its run directory.

One flat-ish JSON object per run; ``reporting`` reads nothing else. Units follow the paper's
tables: metric values as the paper prints them (accuracy in %, RMSE in metres, FID,
validation loss), times in seconds, memory in bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .files import current_umask

RESULTS_NAME = "results.json"
SCHEMA_VERSION = 2

#: the keys a completed record always has (tests and the table builder rely on them)
REQUIRED_KEYS = (
    "schema",
    "status",  # "completed" | "failed" | "interrupted"
    "experiment",  # experiment config name (e.g. "fig6", "mini") or null for a single run
    "task",  # task config name (e.g. "cifar10", "digits")
    "paper",  # {"task", "source", "target"}: the row keys of ../paper/results.csv
    "dataset",  # the dataset config the task read (conf/dataset/, e.g. "kitti"), null for a task without one
    "model",  # model config name (e.g. "vit_base")
    "method",  # method name as in the paper's tables (e.g. "onelora+norms")
    "method_parts",  # e.g. ["onelora", "norms"]
    "method_options",  # the options the method ran with (its YAML's, the model's overrides, task.method_options)
    "seed",
    "metric",  # {"name", "direction", "val_key", "test_key", "best_val", "final_val", "best_epoch", "best_step",
    #             "test" (best validation round's weights), "test_final" (final weights), "extra"}
    "metrics",  # every final metric logged, name -> value
    "time",  # {"train_s", "val_s", "fit_s", "time_to_best_s", "test_s", "total_s", "attempts"}
    "memory",  # {"device": "cpu"|"cuda", "peak_bytes", "kind": "rss"|"max_allocated",
    #             "model_bytes": {"params", "trainable", "grads", "optimizer", "activations"}}
    "params",  # {"adapted_layers", "adapter_params", "head_params", "trainable_params", "total_params",
    #             "reported_params", "reported_as": the paper's count of it and which one ("adapter" | "trainable")}
    "run_dir",
    "git_commit",
    "versions",
    "config",  # the resolved Hydra config
)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(folder: str | Path) -> None:
    """Temporary files a killed writer left behind (``.results.json.*.tmp``)."""
    for path in Path(folder).glob(f".{RESULTS_NAME}.*.tmp"):
        path.unlink(missing_ok=True)


def read_results(root: str | Path) -> Iterator[dict[str, Any]]:
    """Every ``results.json`` under ``root`` (recursively), each with its path under ``_path``."""
    for path in sorted(Path(root).rglob(RESULTS_NAME)):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        record["_path"] = str(path)
        yield record
