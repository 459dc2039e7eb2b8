"""What the analyses read from a finished run directory, without building any model.

A run directory (``results/<task>/<model>/<method>/seed<N>/``) holds ``results.json`` (the
record, with the resolved config), ``adapter/adapter.safetensors`` (the run's trainable tensors
by name: every tensor for ``full``, ``<module>.lora_A`` / ``lora_B`` for LoRA, ...) and, for
classification, ``predictions/val.npz`` (validation logits and labels of the best round's
weights). The base weights are the file ``config.model.pretrained`` names when it is a local
safetensors file (the digits task's cached backbone, a downloaded checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from onelora.reporting.paper import method_label

RESULTS = "results.json"
ADAPTER = Path("adapter") / "adapter.safetensors"
PREDICTIONS = Path("predictions") / "val.npz"


class RunDirError(FileNotFoundError):
    """A run directory lacks what an analysis needs; the message names the file and the fix."""


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``results.json``."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        raise RunDirError(f"{path} not found: pass the directory of a finished run (results/<task>/<model>/<method>/seedN)")
    return json.loads(path.read_text())


def run_label(run_dir: str | Path, record: dict[str, Any] | None = None) -> str:
    """The paper's label of the run's method ("1LoRA", "All"), else the directory's name."""
    if record is None:
        try:
            record = read_record(run_dir)
        except RunDirError:
            return Path(run_dir).name
    method = record.get("method")
    return method_label(method) if method else Path(run_dir).name


def adapter_tensors(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The run's saved trainable tensors (``adapter/adapter.safetensors``), by name."""
    path = Path(run_dir) / ADAPTER
    if not path.is_file():
        raise RunDirError(f"{path} not found: a finished run writes its trainable tensors there (save_adapter)")
    return load_file(str(path))


def base_weights_path(run_dir: str | Path, override: str | Path | None = None) -> Path:
    """The base weights the run started from: ``override``, else the record's ``pretrained_from``
    (the cached source-task weights of a pre-training task), else ``config.model.pretrained``."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise RunDirError(f"base weights {path} not found (--base)")
        return path
    record = read_record(run_dir)
    named = record.get("pretrained_from") or ((record.get("config") or {}).get("model") or {}).get("pretrained")
    if not named:
        raise RunDirError(
            f"{Path(run_dir) / RESULTS}: config.model.pretrained is empty, so the base weights are unknown; "
            "pass --base <file>.safetensors (for digits: the cached backbone .cache/pretrained/digits_vit-*.safetensors)"
        )
    path = Path(str(named))
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise RunDirError(f"{path}: expected one *.safetensors file in the directory, found {len(files)}; pass --base")
        path = files[0]
    if not path.is_file() or path.suffix != ".safetensors":
        raise RunDirError(
            f"{Path(run_dir) / RESULTS}: config.model.pretrained = {named!r} is not a local safetensors file; "
            "pass --base <file>.safetensors with the same weights"
        )
    return path


def load_base(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def match_name(name: str, base: dict[str, torch.Tensor]) -> str:
    """The base tensor for a run tensor ``name``: the same name, else the one name that differs
    only by a leading prefix ("model.blocks.0..." vs "blocks.0...")."""
    if name in base:
        return name
    hits = [k for k in base if k.endswith("." + name) or name.endswith("." + k)]
    if len(hits) != 1:
        raise RunDirError(f"base weights have {'no' if not hits else len(hits)} tensor(s) matching {name!r}")
    return hits[0]


def load_predictions(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C) float, labels (N,) int) from ``predictions/val.npz``."""
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        raise RunDirError(
            f"{path} not found: classification runs save their validation predictions there "
            "(arrays 'logits' (N, C) and 'labels' (N,)); re-run the run with a version that writes them"
        )
    with np.load(path) as data:
        missing = [k for k in ("logits", "labels") if k not in data]
        if missing:
            raise RunDirError(f"{path}: arrays {missing} missing (it has {sorted(data.files)})")
        logits, labels = np.asarray(data["logits"], dtype=np.float64), np.asarray(data["labels"]).astype(np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise RunDirError(f"{path}: logits {logits.shape} and labels {labels.shape} do not fit ((N, C) and (N,))")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise RunDirError(f"{path}: labels outside 0..{logits.shape[1] - 1}")
    return logits, labels
