"""Wall time and peak memory of a run, measured the same way for every method."""

from __future__ import annotations

import resource
import time
from typing import Any

import lightning as L
import torch


def peak_memory() -> dict[str, Any]:
    """GPU: the most memory tensors ever held (max allocated); CPU: the process's peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"device": "cuda", "kind": "max_allocated", "peak_bytes": int(torch.cuda.max_memory_allocated())}
    return {"device": "cpu", "kind": "rss", "peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


class RunStats(L.Callback):
    """Training and validation wall time, summed over resumes (kept in the checkpoint)."""

    def __init__(self) -> None:
        self.fit_s = 0.0
        self.val_s = 0.0
        self._fit_start: float | None = None
        self._val_start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._fit_start is not None:
            self.fit_s += time.perf_counter() - self._fit_start
            self._fit_start = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            self.val_s += time.perf_counter() - self._val_start
            self._val_start = None

    def times(self) -> dict[str, float]:
        fit = self.fit_s + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)
        return {"fit_s": round(fit, 3), "train_s": round(fit - self.val_s, 3), "val_s": round(self.val_s, 3)}

    def state_dict(self) -> dict[str, Any]:
        now = self.times()
        return {"fit_s": now["fit_s"], "val_s": self.val_s}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fit_s = float(state_dict.get("fit_s", 0.0))
        self.val_s = float(state_dict.get("val_s", 0.0))
