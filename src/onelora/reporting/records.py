"""Our runs, as the report sees them: one :class:`Run` per ``results.json`` record.

The record schema lives in :mod:`onelora.results`; this module is the only place that knows
which of its fields feed the comparison (the metric value, wall time, peak memory, the
parameter count the paper's column corresponds to), so tables and plots never dig into raw
records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from onelora.reporting.paper import (
    METRIC_ALIASES,
    norm_key,
    norm_method,
    norm_metric,
    setting_label,
)
from onelora.results import read_results


def _finite(x: Any) -> float | None:
    """A float, or None for missing / non-numeric / NaN / inf values (a diverged run has no value)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


@dataclass
class Run:
    """One run's record with the fields the report compares."""

    record: dict[str, Any] = field(repr=False)

    # ----- identity
    @property
    def path(self) -> str:
        return str(self.record.get("_path") or self.record.get("run_dir") or "?")

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "unknown")

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def experiment(self) -> str | None:
        return self.record.get("experiment")

    @property
    def task(self) -> str | None:
        return self.record.get("task")

    @property
    def model(self) -> str:
        return str(self.record.get("model") or "")

    @property
    def method(self) -> str:
        return str(self.record.get("method") or "")

    @property
    def seed(self) -> Any:
        return self.record.get("seed")

    @property
    def run_tag(self) -> str:
        """A variant tag (``run_tag`` in the config): tagged runs are never averaged with untagged ones."""
        tag = self.record.get("run_tag")
        if tag is None:
            tag = _get(self.record, "config", "run_tag")
        return str(tag or "")

    @property
    def paper(self) -> dict[str, Any]:
        return self.record.get("paper") or {}

    @property
    def setting(self) -> str:
        p = self.paper
        return setting_label(p.get("source"), p.get("target"))

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """The normalised (task, source, target, model, method) a paper row is matched on."""
        p = self.paper
        return (
            norm_key(p.get("task")),
            norm_key(p.get("source")),
            norm_key(p.get("target")),
            norm_key(self.model),
            norm_method(self.method),
        )

    @property
    def label(self) -> str:
        """Method name as shown: the method, plus ``[tag]`` for a tagged variant."""
        return f"{self.method} [{self.run_tag}]" if self.run_tag else self.method

    # ----- the metric
    @property
    def metric_name(self) -> str:
        return str(_get(self.record, "metric", "name") or "")

    @property
    def direction(self) -> str:
        return str(_get(self.record, "metric", "direction") or "")

    def value(self, metric: str | None = None) -> float | None:
        """The value compared with the paper's ``metric`` (paper name, e.g. "absrel").

        The run's main metric is ``metric.test`` when present, else ``metric.best_val``; any
        other metric comes from ``metrics`` under ``test/<name>`` or ``<name>`` (aliases
        included, e.g. "abs_rel" for "absrel").
        """
        m = self.record.get("metric") or {}
        if metric is None or norm_metric(m.get("name")) == norm_metric(metric):
            test = _finite(m.get("test"))
            return test if test is not None else _finite(m.get("best_val"))
        metrics = self.record.get("metrics") or {}
        names = METRIC_ALIASES.get(metric, (metric,))
        for prefix in ("test/", ""):
            for name in names:
                v = _finite(metrics.get(prefix + name))
                if v is not None:
                    return v
        return None

    # ----- cost
    @property
    def time_s(self) -> float | None:
        """Wall time of fitting (train + validation loops): ``fit_s``, else ``total_s``, else
        ``train_s + val_s``. That is what the paper's time column measures most closely."""
        t = self.record.get("time") or {}
        for k in ("fit_s", "total_s"):
            v = _finite(t.get(k))
            if v is not None:
                return v
        parts = [_finite(t.get(k)) for k in ("train_s", "val_s")]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None

    @property
    def memory_bytes(self) -> float | None:
        return _finite(_get(self.record, "memory", "peak_bytes"))

    @property
    def memory_device(self) -> str:
        return str(_get(self.record, "memory", "device") or "")

    @property
    def reported_params_kind(self) -> str:
        """Which of our counts the paper's params column corresponds to (model config)."""
        kind = _get(self.record, "config", "model", "reported_params")
        return str(kind or "adapter")

    @property
    def reported_params(self) -> float | None:
        params = self.record.get("params") or {}
        key = "trainable_params" if self.reported_params_kind == "trainable" else "adapter_params"
        return _finite(params.get(key))


def runs_from_records(records: Iterable[dict[str, Any]]) -> list[Run]:
    """Wrap raw records (from files or wandb alike)."""
    return [Run(dict(r)) for r in records if isinstance(r, dict)]


def load_file_runs(root: str | Path) -> list[Run]:
    """Every ``results.json`` under ``root``."""
    return runs_from_records(read_results(root))
