"""Comparison tables: our runs aggregated over seeds, side by side with the paper's rows.

A run belongs to a paper row when its normalised (paper.task, paper.source, paper.target,
model, method) equals the row's; the experiment name does not matter, so one CIFAR-10 1LoRA
run counts in every table that prints that row (S9 and S12 share rows, as the paper does).
Runs with a ``run_tag`` are variants and are never averaged into a paper row. Everything that
matches no paper row goes into "ours only" tables grouped by task/model.
Rows without runs say "missing"; failed and running runs are counted and listed, never
averaged.
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
    TABLE_NOTES,
    TableSpec,
    format_params,
    norm_key,
    norm_method,
    printed_decimals,
)
from onelora.reporting.records import Run

GIB = 2**30

#: decimals for our means, per metric (at least as many as the paper printed)
DECIMALS = {"accuracy": 2, "rmse": 3, "absrel": 4, "val_loss": 4, "fid": 2}

#: methods in the order "ours only" tables list them (others follow alphabetically)
METHOD_ORDER = (
    "head", "onelora", "onelora_random", "lora", "lora_qkv", "vera", "dora", "mora1", "mora6",
    "bitfit", "gamma", "difffit", "norms", "onelora+bias", "onelora+gamma", "onelora+norms",
    "onelora+bias+gamma", "onelora+bias+norms", "onelora+gamma+norms",
    "onelora+bias+gamma+norms", "full",
)

PAPER_COLUMNS = [
    "table", "setting", "method", "metric", "direction", "status",
    "ours_n", "ours_mean", "ours_std", "ours_failed", "ours_running", "ours_no_value",
    "paper_mean", "paper_std", "diff", "diff_in_paper_std", "tolerance", "agreement",
    "time_unit", "ours_time", "paper_time",
    "ours_memory_gb", "ours_memory_pct", "ours_memory_device", "paper_memory_pct", "paper_memory_gb",
    "ours_params", "ours_params_str", "ours_params_kind", "paper_params", "paper_params_str",
    "params_match", "runs",
]
OURS_COLUMNS = [
    "group", "experiment", "task", "model", "setting", "method", "metric", "direction", "status",
    "ours_n", "ours_mean", "ours_std", "ours_failed", "ours_running", "ours_no_value",
    "time_unit", "ours_time", "ours_memory_gb", "ours_memory_pct", "ours_memory_device",
    "ours_params", "ours_params_str", "ours_params_kind", "runs",
]


# ---------------------------------------------------------------- aggregation over seeds
@dataclass
class Aggregate:
    """Our runs for one row: completed ones averaged, the rest only counted and listed."""

    values: list[float] = field(default_factory=list)
    used: list[Run] = field(default_factory=list)
    failed: list[Run] = field(default_factory=list)
    running: list[Run] = field(default_factory=list)
    no_value: list[Run] = field(default_factory=list)

    @property
    def stats(self) -> tuple[float | None, float | None, int]:
        return stats.mean_std(self.values)

    def _mean_of(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.used]
        vals = [v for v in vals if v is not None]
        return math.fsum(vals) / len(vals) if vals else None

    @property
    def time_s(self) -> float | None:
        return self._mean_of("time_s")

    @property
    def memory_bytes(self) -> float | None:
        return self._mean_of("memory_bytes")

    @property
    def memory_device(self) -> str:
        devices = sorted({r.memory_device for r in self.used if r.memory_device})
        return "/".join(devices)

    @property
    def params(self) -> float | None:
        vals = [r.reported_params for r in self.used if r.reported_params is not None]
        return vals[0] if vals else None

    @property
    def params_consistent(self) -> bool:
        return len({r.reported_params for r in self.used if r.reported_params is not None}) <= 1

    @property
    def params_kind(self) -> str:
        kinds = sorted({r.reported_params_kind for r in self.used})
        return "/".join(kinds)

    @property
    def problems(self) -> list[Run]:
        return self.failed + self.running + self.no_value


def aggregate(runs: Iterable[Run], metric: str | None) -> Aggregate:
    """Split ``runs`` by status; average the completed ones that have a value for ``metric``."""
    agg = Aggregate()
    for run in runs:
        if run.status == "failed":
            agg.failed.append(run)
        elif run.status == "running":
            agg.running.append(run)
        elif not run.completed:
            agg.failed.append(run)  # unknown status: not trusted, reported with the failures
        else:
            value = run.value(metric)
            if value is None:
                agg.no_value.append(run)
            else:
                agg.values.append(value)
                agg.used.append(run)
    return agg


# ---------------------------------------------------------------- formatting
def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any, decimals: int) -> str:
    return "—" if _isnan(x) else f"{float(x):.{decimals}f}"


def fmt_std(x: Any) -> str:
    return f"{float(x):.2g}"


def fmt_mean_std(mean: Any, std: Any, decimals: int, n: int | None = None) -> str:
    if _isnan(mean):
        return "—"
    s = fmt_num(mean, decimals)
    if not _isnan(std):
        s += f" ± {fmt_std(std)}"
    if n is not None:
        s += f" (n={n})"
    return s


def time_in(seconds: float | None, unit: str) -> float | None:
    if seconds is None:
        return None
    return seconds / 3600.0 if unit == "h" else seconds if unit == "s" else seconds / 60.0


def fmt_time(t: Any, unit: str, as_printed: bool = False) -> str:
    if _isnan(t):
        return "—"
    if as_printed:  # the paper's own value: as it printed it
        return f"{float(t):g} {unit}"
    return f"{float(t):.1f} {unit}" if unit == "h" or float(t) < 100 else f"{float(t):.0f} {unit}"


def fmt_memory(gb: Any, pct: Any, device: str) -> str:
    if _isnan(gb):
        return "—"
    if not _isnan(pct):
        return f"{float(gb):.2f} GB ({float(pct):.0f}%)"
    return f"{float(gb):.2f} GB ({device or '?'})"


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


def value_decimals(metric: str, paper_str: str | None = None) -> int:
    dec = DECIMALS.get(metric, 4)
    printed = printed_decimals(paper_str)
    return max(dec, printed + 1) if printed is not None else dec


def _ours_cell(row: dict, decimals: int) -> str:
    extra = []
    if row["ours_failed"]:
        extra.append(f"{row['ours_failed']} failed")
    if row["ours_running"]:
        extra.append(f"{row['ours_running']} running")
    if row["ours_no_value"]:
        extra.append(f"{row['ours_no_value']} without value")
    tail = f" ({', '.join(extra)})" if extra else ""
    if row["status"] == "missing":
        return "missing" + tail
    return fmt_mean_std(row["ours_mean"], row["ours_std"], decimals, row["ours_n"]) + tail


def _ours_fields(agg: Aggregate, time_unit: str) -> dict[str, Any]:
    mean, std, n = agg.stats
    mem = agg.memory_bytes
    device = agg.memory_device
    params = agg.params
    return {
        "status": "ok" if n else "missing",
        "ours_n": n,
        "ours_mean": mean,
        "ours_std": std,
        "ours_failed": len(agg.failed),
        "ours_running": len(agg.running),
        "ours_no_value": len(agg.no_value),
        "time_unit": time_unit,
        "ours_time": time_in(agg.time_s, time_unit),
        "ours_memory_gb": None if mem is None else mem / GIB,
        "ours_memory_pct": (100.0 * mem / A100_BYTES) if mem is not None and device == "cuda" else None,
        "ours_memory_device": device,
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
    problems: list[tuple[str, Run]]  # (row label, run)
    notes: list[str] = field(default_factory=list)

    @property
    def is_paper(self) -> bool:
        return self.spec is not None


def build_paper_table(spec: TableSpec, paper_rows: pd.DataFrame, index: RunIndex) -> TableResult:
    """Rows of one paper table, each with our aggregate next to the paper's numbers."""
    rows: list[dict[str, Any]] = []
    problems: list[tuple[str, Run]] = []
    for _, p in paper_rows.iterrows():
        runs = index.lookup(paper_key(p))
        agg = aggregate(runs, p["metric"])
        row: dict[str, Any] = {
            "table": spec.id,
            "setting": p["setting"],
            "method": p["method"],
            "metric": p["metric"],
            "direction": p["direction"],
        }
        row.update(_ours_fields(agg, p["time_unit"]))
        paper_mean = None if _isnan(p["mean"]) else float(p["mean"])
        paper_std = None if _isnan(p["std"]) else float(p["std"])
        dec_printed = printed_decimals(p["mean_str"])
        mean = row["ours_mean"]
        diff = None if mean is None or paper_mean is None else mean - paper_mean
        row.update(
            {
                "paper_mean": paper_mean,
                "paper_std": paper_std,
                "paper_mean_str": p["mean_str"],
                "diff": diff,
                "diff_in_paper_std": (diff / paper_std) if diff is not None and paper_std else None,
                "tolerance": None if paper_mean is None else stats.tolerance(paper_mean, paper_std, dec_printed),
                "agreement": stats.agreement(mean, paper_mean, paper_std, dec_printed, p["direction"]),
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
        label = f"{p['setting']} {p['method']} {p['metric']}"
        problems.extend((label, r) for r in agg.problems)
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


def build_ours_tables(runs: Iterable[Run]) -> list[TableResult]:
    """Tables for runs no paper row took, one per task/model, one row per method.

    Not split by experiment: grids share runs (a run already done for one grid is skipped, not
    repeated, by the next), so the same task/model/method/seed belongs in one row."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[("all", run.task or "none", run.model or "none")].append(run)
    tables = []
    for (exp, task, model), group in sorted(groups.items()):
        by_method: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
        for run in group:
            by_method[(run.setting, run.label, run.metric_name)].append(run)
        rows, problems = [], []
        name = f"task {task} · model {model}"
        # seconds for small runs (the digits grids), minutes as the paper otherwise
        times = [t for r in group if (t := r.time_s) is not None]
        unit = "s" if times and max(times) < 120 else "min"
        for setting, label, metric in sorted(by_method, key=lambda k: (k[0], _method_rank(k[1]), k[2])):
            mruns = by_method[(setting, label, metric)]
            agg = aggregate(mruns, None)
            row = {
                "group": name,
                "experiment": exp,
                "task": task,
                "model": model,
                "setting": setting,
                "method": label,
                "metric": metric,
                "direction": next((r.direction for r in mruns if r.direction), ""),
            }
            row.update(_ours_fields(agg, unit))
            rows.append(row)
            problems.extend((f"{setting} {label}", r) for r in agg.problems)
        slug = "ours_" + _slug(f"{task}_{model}")
        tables.append(TableResult(None, f"Ours only: {name}", slug, rows, problems))
    return tables


# ---------------------------------------------------------------- writing
def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _multi(rows: list[dict], key: str) -> bool:
    return len({r[key] for r in rows}) > 1


def paper_markdown(table: TableResult) -> str:
    rows = table.rows
    show_setting, show_metric = _multi(rows, "setting"), _multi(rows, "metric")
    header = (["setting"] if show_setting else []) + ["method"] + (["metric"] if show_metric else [])
    header += [
        "ours (mean ± std, n)", "paper (mean ± std)", "ours − paper", "agreement",
        "time ours", "time paper", "memory ours", "memory paper",
        "params ours", "params paper", "params match",
    ]
    body = []
    for r in rows:
        dec = value_decimals(r["metric"], r.get("paper_mean_str"))
        diff = "—"
        if r["diff"] is not None:
            diff = f"{r['diff']:+.3g}"
            if r["diff_in_paper_std"] is not None:
                diff += f" ({r['diff_in_paper_std']:+.1f}σ)"
        paper = "—" if r["paper_mean"] is None else r["paper_mean_str"]
        if r["paper_std"] is not None:
            paper += f" ± {r['paper_std']:.3g}"
        mem_paper = "—" if r["paper_memory_pct"] is None else f"{r['paper_memory_pct']:.0f}% ({r['paper_memory_gb']:.1f} GB)"
        cells = ([r["setting"]] if show_setting else []) + [r["method"]] + ([r["metric"]] if show_metric else [])
        cells += [
            _ours_cell(r, dec), paper, diff, r["agreement"] or "—",
            fmt_time(r["ours_time"], r["time_unit"]), fmt_time(r["paper_time"], r["time_unit"], as_printed=True),
            fmt_memory(r["ours_memory_gb"], r["ours_memory_pct"], r["ours_memory_device"]), mem_paper,
            r["ours_params_str"] or "—", r["paper_params_str"] or "—", r["params_match"],
        ]
        body.append(cells)
    parts = [f"# {table.title}", ""]
    if table.spec is not None and table.spec.figure:
        parts += [f"Paper figure: {table.spec.figure}.", ""]
    if not show_setting and rows:
        parts += [f"Setting: {rows[0]['setting']}; metric: {rows[0]['metric']} "
                  f"({'lower' if rows[0]['direction'] == 'min' else 'higher'} is better).", ""]
    parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


def ours_markdown(table: TableResult) -> str:
    rows = table.rows
    show_setting = _multi(rows, "setting")
    header = (["setting"] if show_setting else []) + [
        "method", "metric", "ours (mean ± std, n)", "time", "memory", "params", "params kind",
    ]
    body = []
    for r in rows:
        dec = value_decimals(r["metric"])
        cells = ([r["setting"]] if show_setting else []) + [
            r["method"], r["metric"] or "—", _ours_cell(r, dec), fmt_time(r["ours_time"], r["time_unit"]),
            fmt_memory(r["ours_memory_gb"], r["ours_memory_pct"], r["ours_memory_device"]),
            r["ours_params_str"] or "—", r["ours_params_kind"] or "—",
        ]
        body.append(cells)
    parts = [f"# {table.title}", ""]
    if rows and not show_setting and rows[0]["setting"]:
        parts += [f"Setting: {rows[0]['setting']}.", ""]
    parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


def _footer(table: TableResult) -> list[str]:
    parts: list[str] = []
    if table.problems:
        parts += ["## Runs not averaged", ""]
        parts += [
            markdown_table(
                ["row", "status", "seed", "record", "error"],
                [
                    [label, run.status if run.status != "completed" else "completed, no metric value",
                     run.seed, run.path, str(run.record.get("error") or "")[:200]]
                    for label, run in table.problems
                ],
            ),
            "",
        ]
    notes = list(table.notes)
    if table.is_paper:
        notes.append(
            f"Agreement: |ours − paper| ≤ max({stats.N_STD:g} × paper std, {stats.REL_TOL:.0%} of the "
            "paper value, half a unit of the paper's last printed digit); otherwise 'better'/'worse'."
        )
    notes.append(
        "Ours: mean ± sample std (ddof=1) over seeds, completed runs only; value = metric.test, else "
        "metric.best_val. Time = fit wall time; memory = peak, GB = 2^30 bytes, % of a 40 GB A100 "
        "(cuda only); params = the count the model config selects (adapter or trainable)."
    )
    parts += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return parts


def write_table(table: TableResult, out: Path) -> list[Path]:
    """``<slug>.md`` and ``<slug>.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{table.slug}.md"
    md.write_text(paper_markdown(table) if table.is_paper else ours_markdown(table))
    path_csv = out / f"{table.slug}.csv"
    write_csv(table.rows, PAPER_COLUMNS if table.is_paper else OURS_COLUMNS, path_csv)
    return [md, path_csv]


def write_csv(rows: list[dict], columns: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path
