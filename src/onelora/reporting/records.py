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
    method_label,
    norm_key,
    norm_method,
    norm_metric,
    setting_label,
)
from onelora.results import read_results

#: the parts of ``memory.model_bytes`` that add up to what a run holds for its method
#: (``trainable`` is a subset of ``params`` and is not added again)
MODEL_BYTES_PARTS = ("params", "grads", "optimizer", "activations")


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
        """Method as shown: the paper's label, plus ``[tag]`` for a tagged variant."""
        name = method_label(self.method)
        return f"{name} [{self.run_tag}]" if self.run_tag else name

    # ----- the metric
    @property
    def metric_name(self) -> str:
        return str(_get(self.record, "metric", "name") or "")

    @property
    def direction(self) -> str:
        return str(_get(self.record, "metric", "direction") or "")

    @property
    def best_round(self) -> bool:
        """True when the record says which validation round was best (``metric.best_epoch`` /
        ``test_final`` / ``time.time_to_best_s``): its ``metric.test`` is that round's weights'.
        Older records only have the final weights' test metric and the whole fit time."""
        m = self.record.get("metric") or {}
        t = self.record.get("time") or {}
        return any(k in m for k in ("test_final", "best_epoch")) or "time_to_best_s" in t

    def _raw_value(self, metric: str | None) -> Any:
        """The stored value for ``metric`` before any finiteness check (None when absent)."""
        m = self.record.get("metric") or {}
        if metric is None or norm_metric(m.get("name")) == norm_metric(metric):
            return m.get("test") if m.get("test") is not None else m.get("best_val")
        names = METRIC_ALIASES.get(metric, (metric,))
        extra = m.get("extra") or {}
        for name in names:
            entry = extra.get(name)
            if isinstance(entry, dict) and entry.get("test") is not None:
                return entry["test"]
            if entry is not None and not isinstance(entry, dict):
                return entry
        metrics = self.record.get("metrics") or {}
        for prefix in ("test/", ""):
            for name in names:
                if metrics.get(prefix + name) is not None:
                    return metrics[prefix + name]
        return None

    def value(self, metric: str | None = None) -> float | None:
        """The value compared with the paper's ``metric`` (paper name, e.g. "absrel"); None when
        missing or not finite (a diverged run has no value, and never falls back to another field).

        The main metric is ``metric.test`` (the best validation round's weights), else
        ``metric.best_val`` when the run had no test; another metric comes from
        ``metric.extra[name].test``, else (older records) ``metrics["test/<name>"]`` or
        ``metrics[name]`` (aliases included, e.g. "abs_rel" for "absrel").
        """
        return _finite(self._raw_value(metric))

    def value_problem(self, metric: str | None = None) -> str | None:
        """Why this completed run has no value for ``metric`` ("no value", "not finite (nan)"), or None."""
        raw = self._raw_value(metric)
        if raw is None:
            return "no value"
        return None if _finite(raw) is not None else f"not finite ({raw})"

    # ----- cost
    @property
    def time_s(self) -> float | None:
        """Time to the best validation round (``time.time_to_best_s``: training + validation wall
        time until that round), the paper's time axis. Older records: the whole fit (``fit_s``,
        else ``total_s``, else ``train_s + val_s``); :attr:`time_kind` says which."""
        t = self.record.get("time") or {}
        for k in ("time_to_best_s", "fit_s", "total_s"):
            v = _finite(t.get(k))
            if v is not None:
                return v
        parts = [_finite(t.get(k)) for k in ("train_s", "val_s")]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None

    @property
    def time_kind(self) -> str:
        """"to best" (``time_to_best_s``) or "fit" (an older record's whole fit)."""
        return "to best" if _finite(_get(self.record, "time", "time_to_best_s")) is not None else "fit"

    @property
    def memory_device(self) -> str:
        return str(_get(self.record, "memory", "device") or "")

    @property
    def memory_parts(self) -> dict[str, float]:
        """``memory.model_bytes`` the run measured: parameters, gradients, optimizer state and
        activations kept for backward (bytes; empty when the record has none)."""
        raw = _get(self.record, "memory", "model_bytes") or {}
        parts = {k: _finite(raw.get(k)) for k in MODEL_BYTES_PARTS} if isinstance(raw, dict) else {}
        return {k: v for k, v in parts.items() if v is not None}

    @property
    def memory_kind(self) -> str:
        """Which memory figure this run has, most comparable first: "cuda" (the accelerator's peak
        allocation), "model" (params + grads + optimizer + activations, measured), "rss" (CPU
        process RSS: the interpreter and libraries, not the method), "" (none; an evaluation-only
        run, ``trained: false``, trained nothing, so it has no training memory to compare)."""
        if self.record.get("trained") is False:
            return ""
        if self.memory_device == "cuda" and _finite(_get(self.record, "memory", "peak_bytes")) is not None:
            return "cuda"
        if self.memory_parts:
            return "model"
        return "rss" if _finite(_get(self.record, "memory", "peak_bytes")) is not None else ""

    @property
    def memory_bytes(self) -> float | None:
        """The figure :attr:`memory_kind` names, in bytes."""
        kind = self.memory_kind
        if kind == "model":
            return math.fsum(self.memory_parts.values())
        return _finite(_get(self.record, "memory", "peak_bytes")) if kind else None

    @property
    def reported_params_kind(self) -> str:
        """Which of our counts the paper's params column corresponds to: the record's
        ``params.reported_as``, else (older records) the model config's ``reported_params``."""
        kind = _get(self.record, "params", "reported_as") or _get(self.record, "config", "model", "reported_params")
        if isinstance(kind, dict):  # per method, with a default (conf/model/depth_anything_l_metric_*.yaml)
            kind = kind.get(str(self.record.get("method"))) or kind.get("default")
        return str(kind or "adapter")

    @property
    def reported_params(self) -> float | None:
        """The count the paper's column compares with (the record's ``params.reported_params``,
        else the count :attr:`reported_params_kind` names); 0 for an evaluation that trained nothing
        (its record still lists the parameters a training run would have trained)."""
        if self.record.get("trained") is False:
            return 0.0
        params = self.record.get("params") or {}
        if _finite(params.get("reported_params")) is not None:
            return _finite(params["reported_params"])
        key = "trainable_params" if self.reported_params_kind == "trainable" else "adapter_params"
        return _finite(params.get(key))

    @property
    def trained_params(self) -> float | None:
        """What really trained (``params.trainable_params``: adapter + head, e.g. Depth Anything's DPT
        output convolution besides the adapter the paper counts); 0 for an evaluation."""
        if self.record.get("trained") is False:
            return 0.0
        return _finite(_get(self.record, "params", "trainable_params"))


def runs_from_records(records: Iterable[dict[str, Any]]) -> list[Run]:
    """Wrap raw records (from files or wandb alike)."""
    return [Run(dict(r)) for r in records if isinstance(r, dict)]


def load_file_runs(root: str | Path) -> list[Run]:
    """Every ``results.json`` under ``root``."""
    return runs_from_records(read_results(root))
