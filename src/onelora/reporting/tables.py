"""Comparison tables: our runs aggregated over seeds, side by side with the paper's rows.

A run belongs to a paper row when its normalised (paper.task, paper.source, paper.target,
model, method) equals the row's; the experiment name does not matter, so one CIFAR-10 1LoRA
run counts in every table that prints that row (S9 and S12 share rows, as the paper does).
Runs with a ``run_tag`` are variants and are never averaged into a paper row. Everything that
matches no paper row goes into "ours only" tables grouped by (paper task, model).
Rows without runs say "missing"; failed, running and non-finite runs are counted and listed,
never averaged. :mod:`onelora.reporting.writing` turns the tables into Markdown and CSV.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from onelora.methods import method_table
from onelora.reporting import stats
from onelora.reporting.paper import (
    A100_BYTES,
    METRIC_DIRECTIONS,
    OURS_DECIMALS,
    S1_COMPRESSION,
    STD_DECIMALS,
    TABLE_NOTES,
    TableSpec,
    format_params,
    method_label,
    norm_key,
    norm_method,
    norm_metric,
    paper_value_decimals,
    printed_decimals,
)
from onelora.reporting.records import Run

GIB = 2**30

class _MethodOrder(Sequence[str]):
    """The normalised method names in the method table's order (``describe.order``), read when used."""

    def _names(self) -> list[str]:
        return [norm_method(m.name) for m in method_table().values()]

    def __getitem__(self, index):  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


#: methods in the order "ours only" tables list them (others follow alphabetically)
METHOD_ORDER: Sequence[str] = _MethodOrder()

#: settings in the order the paper's Table 2 prints them; others follow alphabetically
SETTING_ORDER = ("KITTI → NYU", "NYU → KITTI", "KITTI → DIODE_outdoor", "NYU → DIODE_outdoor")

#: how each memory figure is named in tables and plots
MEMORY_KINDS = {
    "cuda": "accelerator peak",
    "model": "params + grads + optimizer + activations",
    "rss": "CPU RSS, not comparable",
}


# ---------------------------------------------------------------- aggregation over seeds
@dataclass
class Problem:
    """A run a row could not average, and why."""

    row: str
    run: Run
    reason: str


@dataclass
class Aggregate:
    """Our runs for one row: completed ones with a finite value averaged, the rest only listed."""

    values: list[float] = field(default_factory=list)
    used: list[Run] = field(default_factory=list)
    failed: list[tuple[Run, str]] = field(default_factory=list)
    running: list[tuple[Run, str]] = field(default_factory=list)
    no_value: list[tuple[Run, str]] = field(default_factory=list)

    @property
    def stats(self) -> tuple[float | None, float | None, int]:
        return stats.mean_std(self.values)

    @property
    def time(self) -> tuple[float | None, float | None]:
        """(mean, std) of the time to the best validation round (or fit time, older records)."""
        mean, std, _ = stats.mean_std([t for r in self.used if (t := r.time_s) is not None])
        return mean, std

    @property
    def time_kind(self) -> str:
        return "/".join(sorted({r.time_kind for r in self.used if r.time_s is not None}))

    @property
    def older_records(self) -> int:
        """Runs whose record predates the best-round fields (final weights' metric, fit time)."""
        return sum(not r.best_round for r in self.used)

    @property
    def memory(self) -> tuple[float | None, str, dict[str, float]]:
        """(mean bytes, kind, mean parts) over the runs with the most comparable kind of figure;
        runs with another kind are left out of the mean, never mixed in."""
        for kind in MEMORY_KINDS:
            runs = [r for r in self.used if r.memory_kind == kind]
            if runs:
                mean = math.fsum(r.memory_bytes for r in runs) / len(runs)
                parts = {k: math.fsum(r.memory_parts.get(k, 0.0) for r in runs) / len(runs)
                         for k in runs[0].memory_parts} if kind == "model" else {}
                label = kind if len(runs) == len(self.used) else f"{kind} ({len(runs)} of {len(self.used)} runs)"
                return mean, label, parts
        return None, "", {}

    @property
    def memory_device(self) -> str:
        return "/".join(sorted({r.memory_device for r in self.used if r.memory_device}))

    @property
    def params(self) -> float | None:
        vals = [r.reported_params for r in self.used if r.reported_params is not None]
        return vals[0] if vals else None

    @property
    def params_consistent(self) -> bool:
        return len({r.reported_params for r in self.used if r.reported_params is not None}) <= 1

    @property
    def trained_params(self) -> float | None:
        """What really trained (adapter + head), beside the paper's count (:attr:`params`)."""
        vals = [r.trained_params for r in self.used if r.trained_params is not None]
        return vals[0] if vals else None

    @property
    def params_kind(self) -> str:
        return "/".join(sorted({r.reported_params_kind for r in self.used}))

    @property
    def problems(self) -> list[tuple[Run, str]]:
        return self.failed + self.running + self.no_value


def aggregate(runs: Iterable[Run], metric: str | None) -> Aggregate:
    """Split ``runs`` by status; average the completed ones that have a finite value for ``metric``.

    Never averaged: failed runs, running ones, any other status (interrupted, unknown), and
    completed runs whose value is missing or not finite (a diverged run's NaN)."""
    agg = Aggregate()
    for run in runs:
        if run.status == "running":
            agg.running.append((run, "running"))
        elif not run.completed:
            agg.failed.append((run, run.status))
        elif (problem := run.value_problem(metric)) is not None:
            agg.no_value.append((run, f"completed, metric {problem}"))
        else:
            agg.values.append(run.value(metric))
            agg.used.append(run)
    return agg


def is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def time_in(seconds: float | None, unit: str) -> float | None:
    if seconds is None:
        return None
    return seconds / 3600.0 if unit == "h" else seconds if unit == "s" else seconds / 60.0


def params_match(ours: float | None, paper_str: str | None) -> str:
    """"yes" if our count prints as the paper's, "yes (x4)" if 4x ours does (the ViT tables
    sum 4 data-parallel ranks), "no" otherwise, "n/a" if either is missing."""
    if ours is None or not paper_str:
        return "n/a"
    if format_params(ours) == paper_str:
        return "yes"
    if format_params(4 * ours) == paper_str:
        return "yes (x4)"
    return "no"


def mean_decimals(metric: str) -> int:
    """Decimals for our means of ``metric`` (``OURS_DECIMALS``; 4 for a metric the paper lacks)."""
    return OURS_DECIMALS.get(norm_metric(metric), 4)


def std_decimals(metric: str) -> int:
    """Decimals for our stds: as the paper prints this metric's stds (``STD_DECIMALS``)."""
    return STD_DECIMALS.get(norm_metric(metric), 4)


def _memory_fields(agg: Aggregate) -> dict[str, Any]:
    mem, kind, parts = agg.memory
    return {
        "ours_memory_gb": None if mem is None else mem / GIB,
        "ours_memory_pct": (100.0 * mem / A100_BYTES) if mem is not None and kind.startswith("cuda") else None,
        "ours_memory_device": agg.memory_device,
        "ours_memory_kind": kind,
        "ours_memory_parts_gb": {k: v / GIB for k, v in parts.items()},
    }


def _ours_fields(agg: Aggregate, time_unit: str) -> dict[str, Any]:
    mean, std, n = agg.stats
    t_mean, t_std = agg.time
    params = agg.params
    return {
        "status": "ok" if n else "missing",
        "ours_n": n,
        "ours_mean": mean,
        "ours_std": std,
        "ours_failed": len(agg.failed),
        "ours_running": len(agg.running),
        "ours_no_value": len(agg.no_value),
        "ours_older_records": agg.older_records,
        "time_unit": time_unit,
        "time_kind": agg.time_kind,
        "ours_time": time_in(t_mean, time_unit),
        "ours_time_std": time_in(t_std, time_unit),
        **_memory_fields(agg),
        "ours_params": params,
        "ours_params_str": format_params(params) + ("" if agg.params_consistent else " (differs across seeds)"),
        "ours_params_kind": agg.params_kind,
        "ours_trained_params": agg.trained_params,
        "ours_trained_params_str": format_params(agg.trained_params),
        "runs": ";".join(r.path for r in agg.used),
    }


# ---------------------------------------------------------------- paper tables
class RunIndex:
    """Untagged runs by paper key; remembers which runs a paper row took.

    A paper row without a source (MetaMathQA: "math,,MetaMathQA") matches runs of any source.
    """

    def __init__(self, runs: Iterable[Run]):
        self.by_key: dict[tuple, list[Run]] = defaultdict(list)
        for run in runs:
            if not run.run_tag:
                self.by_key[run.key].append(run)
        self._used: set[int] = set()

    def lookup(self, key: tuple[str, str, str, str, str]) -> list[Run]:
        task, source, target, model, method = key
        if source:
            hits = list(self.by_key.get(key, []))
        else:
            hits = [
                run
                for (t, _s, g, m, me), runs in self.by_key.items()
                if (t, g, m, me) == (task, target, model, method)
                for run in runs
            ]
        self._used.update(id(r) for r in hits)
        return hits

    def matched(self, run: Run) -> bool:
        return id(run) in self._used


def paper_key(row: pd.Series | dict) -> tuple[str, str, str, str, str]:
    return (
        norm_key(row["task"]),
        norm_key(row["source"]),
        norm_key(row["target"]),
        norm_key(row["model"]),
        norm_method(row["method"]),
    )


@dataclass
class TableResult:
    """One report table: its rows (numeric + formatted) and the runs it could not average."""

    spec: TableSpec | None
    title: str
    slug: str
    rows: list[dict[str, Any]]
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)

    @property
    def is_paper(self) -> bool:
        return self.spec is not None

    @property
    def columns(self) -> list[tuple[str, str]]:
        """The (setting, metric) columns of the paper's wide layout, in order of appearance."""
        seen: list[tuple[str, str]] = []
        for r in self.rows:
            if (r["setting"], r["metric"]) not in seen:
                seen.append((r["setting"], r["metric"]))
        return seen


def build_paper_table(spec: TableSpec, paper_rows: pd.DataFrame, index: RunIndex) -> TableResult:
    """Rows of one paper table, each with our aggregate next to the paper's numbers."""
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for _, p in paper_rows.iterrows():
        runs = index.lookup(paper_key(p))
        agg = aggregate(runs, p["metric"])
        mean_dec = paper_value_decimals(p["mean_str"], p["metric"])
        row: dict[str, Any] = {
            "table": spec.id,
            "setting": p["setting"],
            "method": p["method"],
            "label": method_label(p["method"], spec.id),  # the paper's label in this table
            "metric": p["metric"],
            "direction": p["direction"],
            "paper_mean_decimals": mean_dec,
            "paper_std_decimals": printed_decimals(p["std_str"]) or 0,  # each std as the paper printed it
            "mean_decimals": mean_decimals(p["metric"]),
            "std_decimals": std_decimals(p["metric"]),
        }
        row.update(_ours_fields(agg, p["time_unit"]))
        paper_mean = None if is_missing(p["mean"]) else float(p["mean"])
        paper_std = None if is_missing(p["std"]) else float(p["std"])
        mean = row["ours_mean"]
        diff = None if mean is None or paper_mean is None else mean - paper_mean
        row.update(
            {
                "paper_mean": paper_mean,
                "paper_std": paper_std,
                "paper_mean_str": p["mean_str"],
                "paper_std_str": p["std_str"],
                "paper_time_str": p.get("time_str") or "",
                "paper_quoted": bool(p.get("quoted", False)),
                "diff": diff,
                "diff_in_paper_std": (diff / paper_std) if diff is not None and paper_std else None,
                "tolerance": None if paper_mean is None else stats.tolerance(paper_mean, paper_std, mean_dec),
                "agreement": stats.agreement(mean, paper_mean, paper_std, mean_dec, p["direction"]),
                "paper_time": None if is_missing(p["time"]) else float(p["time"]),
                "paper_memory_pct": None if is_missing(p["memory_pct"]) else float(p["memory_pct"]),
                "paper_params": p["params"] if not is_missing(p["params"]) else None,
                "paper_params_str": p["params_str"] or "",
                "params_match": params_match(row["ours_params"], p["params_str"]),
            }
        )
        row["paper_memory_gb"] = (
            None if row["paper_memory_pct"] is None else row["paper_memory_pct"] / 100.0 * A100_BYTES / GIB
        )
        rows.append(row)
        label = f"{p['setting']} {row['label']} {p['metric']}"
        problems.extend(Problem(label, run, reason) for run, reason in agg.problems)
    return TableResult(spec, f"{spec.name}: {spec.title}", spec.slug, rows, problems, TABLE_NOTES.get(spec.id, []))


# ---------------------------------------------------------------- ours-only tables
def slug_of(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._+-]+", "_", text).strip("_") or "runs"


def method_rank(method: str) -> tuple[int, str]:
    """Methods in the method table's order (``describe.order``); others after them, by name."""
    base = norm_method(method.split(" [", 1)[0])
    order = list(METHOD_ORDER)
    return (order.index(base) if base in order else len(order)), method


def _setting_rank(setting: str) -> tuple[int, str]:
    return (SETTING_ORDER.index(setting), setting) if setting in SETTING_ORDER else (len(SETTING_ORDER), setting)


def _extra_metrics(runs: Iterable[Run]) -> list[str]:
    """The ``metric.extra`` names the runs recorded (e.g. abs_rel for depth), sorted."""
    names: set[str] = set()
    for run in runs:
        extra = (run.record.get("metric") or {}).get("extra") or {}
        names.update(str(k) for k in extra)
    return sorted(names)


def build_ours_tables(runs: Iterable[Run]) -> list[TableResult]:
    """Tables for runs no paper row took, one per (paper task, model), one row per setting x
    method x metric (the main metric and every ``metric.extra`` one, e.g. depth's AbsRel).

    Not split by experiment: grids share runs (a run already done for one grid is skipped, not
    repeated, by the next), so the same task/model/method/seed belongs in one row. The depth
    transfers of one model land in one table whose wide layout is Table 2's."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(norm_key(run.paper.get("task")) or run.task or "none", run.model or "none")].append(run)
    tables = []
    for (family, model), group in sorted(groups.items()):
        tasks = sorted({r.task or "none" for r in group})
        name_task = tasks[0] if len(tasks) == 1 else family
        by_method: dict[tuple[str, str], list[Run]] = defaultdict(list)
        for run in group:
            key = norm_method(run.method) + (f" [{run.run_tag}]" if run.run_tag else "")
            by_method[(run.setting, key)].append(run)
        rows, problems = [], []
        name = f"task {', '.join(tasks)} · model {model}"
        # seconds for small runs (the digits grids), minutes as the paper otherwise
        times = [t for r in group if (t := r.time_s) is not None]
        unit = "s" if times and max(times) < 120 else "min"
        for setting, method in sorted(by_method, key=lambda k: (_setting_rank(k[0]), method_rank(k[1]))):
            mruns = by_method[(setting, method)]
            main = next((r.metric_name for r in mruns if r.metric_name), "")
            direction = next((r.direction for r in mruns if r.direction), "")
            for metric in [main, *_extra_metrics(mruns)]:
                agg = aggregate(mruns, None if metric == main else metric)
                label = mruns[0].label
                row = {
                    "group": name,
                    "task": ",".join(sorted({r.task or "" for r in mruns})),
                    "model": model,
                    "setting": setting,
                    "method": method,
                    "label": label,
                    "metric": metric,
                    "main": metric == main,
                    # an extra metric goes its own known way (accuracy: up), else the main one's (AbsRel as RMSE)
                    "direction": direction if metric == main else METRIC_DIRECTIONS.get(norm_metric(metric), direction),
                    "mean_decimals": mean_decimals(metric),
                    "std_decimals": std_decimals(metric),
                }
                row.update(_ours_fields(agg, unit))
                rows.append(row)
                problems.extend(Problem(f"{setting} {label} {metric}", r, why) for r, why in agg.problems)
        slug = "ours_" + slug_of(f"{name_task}_{model}")
        tables.append(TableResult(None, f"Ours only: {name}", slug, rows, problems))
    return tables


# ---------------------------------------------------------------- Table S1 of ours
def build_s1_table(runs: Iterable[Run], paper_rows: pd.DataFrame) -> TableResult:
    """1LoRA vs a random compression vector (Table S1) for every task/model/setting where we ran
    ``onelora_random``, beside the paper's S1 row of the same setting (whatever its model)."""
    by_setting: dict[tuple[str, str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        method = norm_method(run.method)
        if method in ("onelora", "onelora_random") and not run.run_tag:
            by_setting[(run.task or "", run.model, run.setting)][method].append(run)
    paper_s1 = paper_rows[paper_rows["table"] == "S1"]
    paper_by_setting = {
        (norm_key(r["source"]), norm_key(r["target"]), r["method"]): r for _, r in paper_s1.iterrows()
    }
    rows, problems = [], []
    for (task, model, setting), methods in sorted(by_setting.items()):
        if "onelora_random" not in methods:
            continue
        first = (methods.get("onelora_random") or methods.get("onelora"))[0]
        metric = first.metric_name
        src, tgt = norm_key(first.paper.get("source")), norm_key(first.paper.get("target"))
        ones, rand = aggregate(methods.get("onelora", []), None), aggregate(methods["onelora_random"], None)
        problems += [Problem(f"{setting} {r.label}", r, why) for r, why in ones.problems + rand.problems]
        (om, osd, on), (rm, rsd, rn) = ones.stats, rand.stats
        p_one, p_rand = paper_by_setting.get((src, tgt, "onelora")), paper_by_setting.get((src, tgt, "onelora_random"))
        times = [t for r in methods.get("onelora", []) + methods["onelora_random"] if (t := r.time_s) is not None]
        unit = "s" if times and max(times) < 120 else "min"  # as the ours-only tables: seconds for small runs
        row = {
            "task": task, "model": model, "setting": setting, "metric": metric, "direction": first.direction,
            "ours_onelora_n": on, "ours_onelora_mean": om, "ours_onelora_std": osd,
            "ours_random_n": rn, "ours_random_mean": rm, "ours_random_std": rsd,
            "ours_diff": None if om is None or rm is None else rm - om,
            "time_unit": unit,
            "ours_onelora_time": time_in(ones.time[0], unit), "ours_random_time": time_in(rand.time[0], unit),
            "paper_model": "" if p_one is None else p_one["model"],
            "paper_time_unit": "" if p_one is None else p_one["time_unit"],
            "mean_decimals": mean_decimals(metric), "std_decimals": std_decimals(metric),
        }
        for name, paper_row in (("onelora", p_one), ("random", p_rand)):  # the paper's cells, as printed
            row.update({f"paper_{name}_mean": None if paper_row is None else float(paper_row["mean"]),
                        f"paper_{name}_std": None if paper_row is None else float(paper_row["std"]),
                        f"paper_{name}_text": "" if paper_row is None else f"{paper_row['mean_str']} ± {paper_row['std_str']}",
                        f"paper_{name}_time": None if paper_row is None else paper_row["time_str"]})
        row["paper_diff"] = (None if p_one is None or p_rand is None
                             else float(p_rand["mean"]) - float(p_one["mean"]))
        rows.append(row)
    notes = [
        f"The paper's layout: one row per setting and compression ({S1_COMPRESSION['onelora']}: 1LoRA's "
        f"all-ones vector; {S1_COMPRESSION['onelora_random']}: a fixed random vector, onelora_random), "
        "the time to the best validation round and the metric beside it.",
        "Ours: every task/model/setting with onelora_random runs (experiment table_s1), its 1LoRA runs "
        "beside it; 'random − summation' > 0 means the random vector scored higher (better for accuracy, "
        "worse for an error such as RMSE).",
        "Paper: Table S1's row for the same source → target setting, when there is one (as printed); its "
        "model may differ from ours (paper_model).",
    ]
    return TableResult(None, "Table S1 (ours): 1LoRA vs a random compression vector", "table_S1_ours",
                       rows, problems, notes)

