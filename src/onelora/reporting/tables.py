"""Comparison tables: our runs aggregated over seeds, side by side with the paper's rows.

A run belongs to a paper row when its normalised (paper.task, paper.source, paper.target,
model, method) equals the row's; the experiment name does not matter, so one CIFAR-10 1LoRA
run counts in every table that prints that row (S9 and S12 share rows, as the paper does).
Runs with a ``run_tag`` are variants and are never averaged into a paper row. Everything that
matches no paper row goes into "ours only" tables grouped by (paper task, model).
Rows without runs say "missing"; failed, running and non-finite runs are counted and listed,
never averaged.

Markdown follows the paper: its method labels, the best / second / third value of each metric
column in bold / underlined / italic, stds with the paper's decimals, and tables with several
settings or metrics (Table 2, S1) in the paper's wide layout (methods x setting-metric columns).
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from onelora.reporting import stats
from onelora.reporting.paper import (
    A100_BYTES,
    METRIC_LABELS,
    OURS_DECIMALS,
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

#: methods in the order "ours only" tables list them (others follow alphabetically)
METHOD_ORDER = (
    "head", "onelora", "onelora_random", "lora", "lora_qkv", "vera", "dora", "mora1", "mora6",
    "bitfit", "gamma", "difffit", "norms", "onelora+bias", "onelora+gamma", "onelora+norms",
    "onelora+bias+gamma", "onelora+bias+norms", "onelora+gamma+norms",
    "onelora+bias+gamma+norms", "full",
)

#: settings in the order the paper's Table 2 prints them; others follow alphabetically
SETTING_ORDER = ("KITTI → NYU", "NYU → KITTI", "KITTI → DIODE_outdoor", "NYU → DIODE_outdoor")

#: how each memory figure is named in tables and plots
MEMORY_KINDS = {
    "cuda": "accelerator peak",
    "model": "params + grads + optimizer + activations",
    "rss": "CPU RSS, not comparable",
}

PAPER_COLUMNS = [
    "table", "setting", "method", "label", "metric", "direction", "status",
    "ours_n", "ours_mean", "ours_std", "ours_failed", "ours_running", "ours_no_value", "ours_older_records",
    "paper_mean", "paper_std", "paper_quoted", "diff", "diff_in_paper_std", "tolerance", "agreement",
    "time_unit", "time_kind", "ours_time", "ours_time_std", "paper_time",
    "ours_memory_gb", "ours_memory_pct", "ours_memory_device", "ours_memory_kind", "paper_memory_pct",
    "paper_memory_gb", "ours_params", "ours_params_str", "ours_params_kind", "paper_params", "paper_params_str",
    "params_match", "runs",
]
OURS_COLUMNS = [
    "group", "task", "model", "setting", "method", "label", "metric", "main", "direction", "status",
    "ours_n", "ours_mean", "ours_std", "ours_failed", "ours_running", "ours_no_value", "ours_older_records",
    "time_unit", "time_kind", "ours_time", "ours_time_std", "ours_memory_gb", "ours_memory_pct",
    "ours_memory_device", "ours_memory_kind", "ours_params", "ours_params_str", "ours_params_kind", "runs",
]
S1_COLUMNS = [
    "task", "model", "setting", "metric", "direction",
    "ours_onelora_n", "ours_onelora_mean", "ours_onelora_std", "ours_random_n", "ours_random_mean",
    "ours_random_std", "ours_diff", "paper_onelora_mean", "paper_onelora_std", "paper_random_mean",
    "paper_random_std", "paper_diff", "paper_model",
]


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


# ---------------------------------------------------------------- formatting
def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any, decimals: int) -> str:
    return "—" if _isnan(x) else f"{float(x):.{decimals}f}"


def fmt_mean_std(mean: Any, std: Any, decimals: int, std_decimals: int, n: int | None = None) -> str:
    """"97.71 ± 0.0854 (n=4)": the mean with ``decimals``, the std with the paper's ``std_decimals``."""
    if _isnan(mean):
        return "—"
    s = fmt_num(mean, decimals)
    if not _isnan(std):
        s += f" ± {fmt_num(std, std_decimals)}"
    if n is not None:
        s += f" (n={n})"
    return s


def time_in(seconds: float | None, unit: str) -> float | None:
    if seconds is None:
        return None
    return seconds / 3600.0 if unit == "h" else seconds if unit == "s" else seconds / 60.0


def fmt_time(t: Any, unit: str, std: Any = None, as_printed: bool = False) -> str:
    if _isnan(t):
        return "—"
    if as_printed:  # the paper's own value: as it printed it
        return f"{float(t):g} {unit}"
    dec = 1 if unit == "h" or float(t) < 100 else 0
    s = f"{float(t):.{dec}f}"
    if not _isnan(std):
        s += f" ± {float(std):.{dec}f}"
    return f"{s} {unit}"


def fmt_memory(gb: Any, pct: Any, kind: str) -> str:
    if _isnan(gb):
        return "—"
    base = kind.split(" (", 1)[0]
    what = MEMORY_KINDS.get(base, kind or "?") + kind[len(base):]
    if not _isnan(pct):
        return f"{float(gb):.2f} GB ({float(pct):.0f}% of A100 40 GB, {what})"
    return f"{float(gb):.3g} GB ({what})"


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


def rank_marks(values: list[Any], direction: str, decimals: int) -> list[int | None]:
    """Rank 1, 2, 3 of each value (None beyond, or for a missing value), as the paper marks a
    column: values equal at the printed precision share a rank (dense ranking)."""
    printed = sorted({round(float(v), decimals) for v in values if not _isnan(v)}, reverse=direction != "min")
    place = {v: i + 1 for i, v in enumerate(printed[:3])}
    return [None if _isnan(v) else place.get(round(float(v), decimals)) for v in values]


def mark(text: str, rank: int | None) -> str:
    """The paper's marking: best bold, second underlined, third italic (Markdown + HTML <u>)."""
    if rank == 1:
        return f"**{text}**"
    if rank == 2:
        return f"<u>{text}</u>"
    if rank == 3:
        return f"*{text}*"
    return text


def _not_averaged(row: dict) -> str:
    extra = []
    if row["ours_failed"]:
        extra.append(f"{row['ours_failed']} failed")
    if row["ours_running"]:
        extra.append(f"{row['ours_running']} running")
    if row["ours_no_value"]:
        extra.append(f"{row['ours_no_value']} without a finite value")
    return f" ({', '.join(extra)})" if extra else ""


def _ours_cell(row: dict, rank: int | None = None, with_n: bool = True) -> str:
    if row["status"] == "missing":
        return "missing" + _not_averaged(row)
    text = fmt_mean_std(row["ours_mean"], row["ours_std"], row["mean_decimals"], row["std_decimals"])
    return mark(text, rank) + (f" (n={row['ours_n']})" if with_n else "") + _not_averaged(row)


def _paper_cell(row: dict, rank: int | None = None) -> str:
    if row["paper_mean"] is None:
        return "—"
    text = fmt_mean_std(row["paper_mean"], row["paper_std"], row["paper_mean_decimals"], row["paper_std_decimals"])
    return mark(text, rank) + (" (quoted, no std)" if row.get("paper_quoted") else "")


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
            "label": method_label(p["method"]),
            "metric": p["metric"],
            "direction": p["direction"],
            "paper_mean_decimals": mean_dec,
            "paper_std_decimals": printed_decimals(p["std_str"]) or 0,  # each std as the paper printed it
            "mean_decimals": mean_decimals(p["metric"]),
            "std_decimals": std_decimals(p["metric"]),
        }
        row.update(_ours_fields(agg, p["time_unit"]))
        paper_mean = None if _isnan(p["mean"]) else float(p["mean"])
        paper_std = None if _isnan(p["std"]) else float(p["std"])
        mean = row["ours_mean"]
        diff = None if mean is None or paper_mean is None else mean - paper_mean
        row.update(
            {
                "paper_mean": paper_mean,
                "paper_std": paper_std,
                "paper_mean_str": p["mean_str"],
                "paper_quoted": bool(p.get("quoted", False)),
                "diff": diff,
                "diff_in_paper_std": (diff / paper_std) if diff is not None and paper_std else None,
                "tolerance": None if paper_mean is None else stats.tolerance(paper_mean, paper_std, mean_dec),
                "agreement": stats.agreement(mean, paper_mean, paper_std, mean_dec, p["direction"]),
                "paper_time": None if _isnan(p["time"]) else float(p["time"]),
                "paper_memory_pct": None if _isnan(p["memory_pct"]) else float(p["memory_pct"]),
                "paper_params": p["params"] if not _isnan(p["params"]) else None,
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
def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z._+-]+", "_", text).strip("_") or "runs"


def _method_rank(method: str) -> tuple[int, str]:
    base = norm_method(method.split(" [", 1)[0])
    try:
        return METHOD_ORDER.index(base), method
    except ValueError:
        return len(METHOD_ORDER), method


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
        for setting, method in sorted(by_method, key=lambda k: (_setting_rank(k[0]), _method_rank(k[1]))):
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
                    # an extra metric (AbsRel) is an error measure like the main one (RMSE) it comes with
                    "direction": direction,
                    "mean_decimals": mean_decimals(metric),
                    "std_decimals": std_decimals(metric),
                }
                row.update(_ours_fields(agg, unit))
                rows.append(row)
                problems.extend(Problem(f"{setting} {label} {metric}", r, why) for r, why in agg.problems)
        slug = "ours_" + _slug(f"{name_task}_{model}")
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
        rows.append({
            "task": task, "model": model, "setting": setting, "metric": metric, "direction": first.direction,
            "ours_onelora_n": on, "ours_onelora_mean": om, "ours_onelora_std": osd,
            "ours_random_n": rn, "ours_random_mean": rm, "ours_random_std": rsd,
            "ours_diff": None if om is None or rm is None else rm - om,
            "paper_onelora_mean": None if p_one is None else float(p_one["mean"]),
            "paper_onelora_std": None if p_one is None else float(p_one["std"]),
            "paper_random_mean": None if p_rand is None else float(p_rand["mean"]),
            "paper_random_std": None if p_rand is None else float(p_rand["std"]),
            "paper_diff": None if p_one is None or p_rand is None else float(p_rand["mean"]) - float(p_one["mean"]),
            "paper_model": "" if p_one is None else p_one["model"],
            "mean_decimals": mean_decimals(metric), "std_decimals": std_decimals(metric),
        })
    notes = [
        "Ours: every task/model/setting with onelora_random runs (experiment table_s1), its 1LoRA runs "
        "beside it; 'random − 1LoRA' > 0 means the random vector scored higher (better for accuracy, "
        "worse for an error such as RMSE).",
        "Paper: Table S1's row for the same source → target setting, when there is one; its model may "
        "differ from ours (paper_model).",
    ]
    return TableResult(None, "Table S1 (ours): 1LoRA vs a random compression vector", "table_S1_ours",
                       rows, problems, notes)


def s1_markdown(table: TableResult) -> str:
    header = ["task", "model", "setting", "metric", "ours 1LoRA", "ours 1LoRA (random c)", "ours random − 1LoRA",
              "paper 1LoRA", "paper 1LoRA (random c)", "paper random − 1LoRA"]
    body = []
    for r in table.rows:
        dec, sdec = r["mean_decimals"], r["std_decimals"]
        ranks = rank_marks([r["ours_onelora_mean"], r["ours_random_mean"]], r["direction"], dec)
        pranks = rank_marks([r["paper_onelora_mean"], r["paper_random_mean"]], r["direction"], dec)
        body.append([
            r["task"], r["model"], r["setting"], r["metric"],
            mark(fmt_mean_std(r["ours_onelora_mean"], r["ours_onelora_std"], dec, sdec), ranks[0])
            + (f" (n={r['ours_onelora_n']})" if r["ours_onelora_n"] else "missing"),
            mark(fmt_mean_std(r["ours_random_mean"], r["ours_random_std"], dec, sdec), ranks[1])
            + f" (n={r['ours_random_n']})",
            "—" if r["ours_diff"] is None else f"{r['ours_diff']:+.{dec}f}",
            mark(fmt_mean_std(r["paper_onelora_mean"], r["paper_onelora_std"], dec, sdec), pranks[0]),
            mark(fmt_mean_std(r["paper_random_mean"], r["paper_random_std"], dec, sdec), pranks[1]),
            "—" if r["paper_diff"] is None else f"{r['paper_diff']:+.{dec}f}",
        ])
    parts = [f"# {table.title}", ""]
    if not body:
        parts += ["No onelora_random runs yet (`python run.py -m experiment=table_s1`).", ""]
    else:
        parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


# ---------------------------------------------------------------- writing
def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _column_ranks(rows: list[dict], key: str, decimals_key: str) -> dict[int, int | None]:
    """Best-three rank of ``key`` per row (by id), within each (setting, metric) column."""
    ranks: dict[int, int | None] = {}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["metric"])].append(r)
    for group in groups.values():
        decimals = max(r[decimals_key] for r in group)
        for r, rank in zip(group, rank_marks([r[key] for r in group], group[0]["direction"], decimals)):
            ranks[id(r)] = rank
    return ranks


def _column_header(setting: str, metric: str, show_setting: bool) -> str:
    name = METRIC_LABELS.get(metric, metric).replace(" (%)", "")
    return f"{setting} {name}" if show_setting and setting else name


def wide_markdown(table: TableResult, value: str) -> list[str]:
    """The paper's layout: one row per method, one column per (setting, metric); ``value`` is
    "ours", "paper" or "diff"."""
    columns = table.columns
    show_setting = len({s for s, _ in columns}) > 1
    ours_ranks = _column_ranks(table.rows, "ours_mean", "mean_decimals")
    paper_ranks = _column_ranks(table.rows, "paper_mean", "paper_mean_decimals") if table.is_paper else {}
    methods: list[str] = []
    for r in table.rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    cells = {(r["method"], r["setting"], r["metric"]): r for r in table.rows}
    body = []
    for method in methods:
        line = []
        for setting, metric in columns:
            r = cells.get((method, setting, metric))
            if r is None:
                line.append("")
            elif value == "ours":
                line.append(_ours_cell(r, ours_ranks.get(id(r)), with_n=True))
            elif value == "paper":
                line.append(_paper_cell(r, paper_ranks.get(id(r))))
            else:
                line.append(_diff_cell(r))
        label = next(r["label"] for r in table.rows if r["method"] == method)
        body.append([label, *line])
    header = ["method"] + [_column_header(s, m, show_setting) for s, m in columns]
    return [markdown_table(header, body), ""]


def _diff_cell(r: dict) -> str:
    if r.get("diff") is None:
        return "—"
    text = f"{r['diff']:+.{r['mean_decimals']}f}"
    if r["diff_in_paper_std"] is not None:
        text += f" ({r['diff_in_paper_std']:+.1f}σ)"
    return f"{text}, {r['agreement']}"


def paper_markdown(table: TableResult) -> str:
    rows = table.rows
    wide = len(table.columns) > 1
    header = (["setting"] if wide else []) + ["method"] + (["metric"] if wide else [])
    header += [
        "ours (mean ± std, n)", "paper (mean ± std)", "ours − paper", "agreement",
        "time to best, ours", "time, paper", "memory, ours", "memory, paper",
        "params ours", "params paper", "params match",
    ]
    ours_ranks = _column_ranks(rows, "ours_mean", "mean_decimals")
    paper_ranks = _column_ranks(rows, "paper_mean", "paper_mean_decimals")
    body = []
    for r in rows:
        diff = "—"
        if r["diff"] is not None:
            diff = f"{r['diff']:+.{r['mean_decimals']}f}"
            if r["diff_in_paper_std"] is not None:
                diff += f" ({r['diff_in_paper_std']:+.1f}σ)"
        mem_paper = "—" if r["paper_memory_pct"] is None else f"{r['paper_memory_pct']:.0f}% ({r['paper_memory_gb']:.1f} GB)"
        cells = ([r["setting"]] if wide else []) + [r["label"]] + ([r["metric"]] if wide else [])
        cells += [
            _ours_cell(r, ours_ranks.get(id(r))), _paper_cell(r, paper_ranks.get(id(r))), diff, r["agreement"] or "—",
            fmt_time(r["ours_time"], r["time_unit"], r["ours_time_std"]),
            fmt_time(r["paper_time"], r["time_unit"], as_printed=True),
            fmt_memory(r["ours_memory_gb"], r["ours_memory_pct"], r["ours_memory_kind"]), mem_paper,
            r["ours_params_str"] or "—", r["paper_params_str"] or "—", r["params_match"],
        ]
        body.append(cells)
    parts = [f"# {table.title}", ""]
    if table.spec is not None and table.spec.figure:
        parts += [f"Paper figure: {table.spec.figure}.", ""]
    if rows:
        directions = {r["metric"]: r["direction"] for r in rows}
        what = "; ".join(f"{METRIC_LABELS.get(m, m)}: {'lower' if d == 'min' else 'higher'} is better"
                         for m, d in directions.items())
        parts += [f"Setting: {rows[0]['setting']}; {what}." if not wide else f"{what}.", ""]
    if wide:
        parts += ["## Ours", ""] + wide_markdown(table, "ours")
        parts += [f"## Paper ({table.spec.name if table.spec else 'paper'} as printed)", ""] + wide_markdown(table, "paper")
        parts += ["## Ours − paper", ""] + wide_markdown(table, "diff")
        parts += ["## Details", ""]
    parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


def ours_markdown(table: TableResult) -> str:
    rows = table.rows
    wide = len(table.columns) > 1
    header = (["setting"] if wide else []) + [
        "method", "metric", "ours (mean ± std, n)", "time to best", "memory", "params", "params kind",
    ]
    ranks = _column_ranks(rows, "ours_mean", "mean_decimals")
    body = []
    for r in rows:
        cells = ([r["setting"]] if wide else []) + [
            r["label"], r["metric"] or "—", _ours_cell(r, ranks.get(id(r))),
            fmt_time(r["ours_time"], r["time_unit"], r["ours_time_std"]),
            fmt_memory(r["ours_memory_gb"], r["ours_memory_pct"], r["ours_memory_kind"]),
            r["ours_params_str"] or "—", r["ours_params_kind"] or "—",
        ]
        body.append(cells)
    parts = [f"# {table.title}", ""]
    if rows and not wide and rows[0]["setting"]:
        parts += [f"Setting: {rows[0]['setting']}.", ""]
    if wide:
        parts += ["## In the paper's layout", ""] + wide_markdown(table, "ours") + ["## Details", ""]
    parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


def _footer(table: TableResult) -> list[str]:
    parts: list[str] = []
    if table.problems:
        parts += [f"## Runs not averaged ({len(table.problems)})", ""]
        parts += [
            markdown_table(
                ["row", "why", "seed", "record", "error"],
                [[p.row, p.reason, p.run.seed, p.run.path, str(p.run.record.get("error") or "")[:200]]
                 for p in table.problems],
            ),
            "",
        ]
    notes = list(table.notes)
    if table.is_paper:
        notes.append(
            f"Agreement: |ours − paper| ≤ max({stats.N_STD:g} × paper std, {stats.REL_TOL:.0%} of the "
            "paper value, half a unit of the paper's last printed digit); otherwise 'better'/'worse'."
        )
    older = sum(r.get("ours_older_records", 0) or 0 for r in table.rows)
    notes.append(
        "Ours: mean ± sample std (ddof=1) over seeds of the test metric of the best validation round's "
        "weights (metric.test), completed runs with a finite value only; never averaged: failed, running or "
        "interrupted runs and non-finite metrics (listed above). Our stds with as many decimals as the "
        "paper prints this metric's stds; the paper's values as it printed them."
    )
    notes.append(
        "Marking, as the paper: best of each metric column **bold**, second <u>underlined</u>, third *italic* "
        "(ours and the paper's ranked separately; values equal at the printed precision share a place)."
    )
    notes.append(
        "Time = time to the best validation round (training + validation wall time until it; mean ± std "
        "over seeds); memory = the accelerator's peak allocation where runs had one (GB = 2^30 bytes, % of "
        "a 40 GB A100), else params + grads + optimizer + activations measured in the run, else CPU RSS "
        "(the process, not the method: not comparable); params = the count the model config selects."
    )
    if older:
        notes.append(
            f"{older} averaged record(s) predate the best-round fields: for them the final weights' test "
            "metric and the whole fit time are used."
        )
    parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return parts


def write_table(table: TableResult, out: Path) -> list[Path]:
    """``<slug>.md`` and ``<slug>.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{table.slug}.md"
    if table.slug == "table_S1_ours":
        md.write_text(s1_markdown(table))
        columns = S1_COLUMNS
    else:
        md.write_text(paper_markdown(table) if table.is_paper else ours_markdown(table))
        columns = PAPER_COLUMNS if table.is_paper else OURS_COLUMNS
    path_csv = out / f"{table.slug}.csv"
    write_csv(table.rows, columns, path_csv)
    return [md, path_csv]


def write_csv(rows: list[dict], columns: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path
