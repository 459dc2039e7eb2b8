"""Writing the report's tables: Markdown as the paper prints its tables, CSV for machines.

The paper's method labels per table, its cells as printed, its marking (App. D: in Tables S2-S12
the best three of each column reporting a result, time, metric, memory and params, bold /
underlined / italic; the rule stated in each table's header), our stds with the decimals the paper
uses for the metric, the wide layout (methods x setting-metric columns) for Table 2 and the depth
transfers of ours, and Table S1's own layout (setting x compression rows, time and metric).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from onelora.reporting import stats
from onelora.reporting.paper import (
    BEST3_TABLES,
    METRIC_LABELS,
    QUOTED,
    S1_COMPRESSION,
    format_params,
    norm_metric,
    parse_params,
)
from onelora.reporting.tables import MEMORY_KINDS, TableResult, is_missing

PAPER_COLUMNS = [
    "table", "setting", "method", "label", "metric", "direction", "status",
    "ours_n", "ours_mean", "ours_std", "ours_failed", "ours_running", "ours_no_value", "ours_older_records",
    "paper_mean", "paper_std", "paper_quoted", "diff", "diff_in_paper_std", "tolerance", "agreement",
    "time_unit", "time_kind", "ours_time", "ours_time_std", "paper_time",
    "ours_memory_gb", "ours_memory_pct", "ours_memory_device", "ours_memory_kind", "paper_memory_pct",
    "paper_memory_gb", "ours_params", "ours_params_str", "ours_params_kind", "ours_trained_params", "paper_params",
    "paper_params_str",
    "params_match", "runs",
]
OURS_COLUMNS = [
    "group", "task", "model", "setting", "method", "label", "metric", "main", "direction", "status",
    "ours_n", "ours_mean", "ours_std", "ours_failed", "ours_running", "ours_no_value", "ours_older_records",
    "time_unit", "time_kind", "ours_time", "ours_time_std", "ours_memory_gb", "ours_memory_pct",
    "ours_memory_device", "ours_memory_kind", "ours_params", "ours_params_str", "ours_params_kind",
    "ours_trained_params", "runs",
]
S1_COLUMNS = [
    "task", "model", "setting", "metric", "direction",
    "ours_onelora_n", "ours_onelora_mean", "ours_onelora_std", "ours_random_n", "ours_random_mean",
    "ours_random_std", "ours_diff", "time_unit", "ours_onelora_time", "ours_random_time",
    "paper_onelora_mean", "paper_onelora_std", "paper_onelora_text", "paper_onelora_time", "paper_random_mean",
    "paper_random_std", "paper_random_text", "paper_random_time", "paper_time_unit", "paper_diff", "paper_model",
]


# ---------------------------------------------------------------- formatting
def fmt_num(x: Any, decimals: int) -> str:
    return "—" if is_missing(x) else f"{float(x):.{decimals}f}"


def fmt_mean_std(mean: Any, std: Any, decimals: int, std_decimals: int, n: int | None = None) -> str:
    """"97.71 ± 0.0854 (n=4)": the mean with ``decimals``, the std with the paper's ``std_decimals``."""
    if is_missing(mean):
        return "—"
    s = fmt_num(mean, decimals)
    if not is_missing(std):
        s += f" ± {fmt_num(std, std_decimals)}"
    if n is not None:
        s += f" (n={n})"
    return s


def _time_text(t: Any, unit: str) -> str:
    return f"{float(t):.{1 if unit == 'h' or float(t) < 100 else 0}f}"


def _memory_text(gb: Any, pct: Any) -> str:
    return f"{float(gb):.2f}" if not is_missing(pct) else f"{float(gb):.3g}"


def fmt_time(t: Any, unit: str, std: Any = None, as_printed: bool = False) -> str:
    if is_missing(t):
        return "—"
    if as_printed:  # the paper's own value: as it printed it
        return f"{float(t):g} {unit}"
    dec = 1 if unit == "h" or float(t) < 100 else 0
    s = _time_text(t, unit)
    if not is_missing(std):
        s += f" ± {float(std):.{dec}f}"
    return f"{s} {unit}"


def fmt_memory(gb: Any, pct: Any, kind: str) -> str:
    if is_missing(gb):
        return "—"
    base = kind.split(" (", 1)[0]
    what = MEMORY_KINDS.get(base, kind or "?") + kind[len(base):]
    if not is_missing(pct):
        return f"{_memory_text(gb, pct)} GB ({float(pct):.0f}% of A100 40 GB, {what})"
    return f"{_memory_text(gb, pct)} GB ({what})"


def rank_marks(values: list[Any], direction: str, decimals: int) -> list[int | None]:
    """Rank 1, 2, 3 of each value (None beyond, or for a missing value), as the paper marks a
    column: values equal at the printed precision share a rank (dense ranking)."""
    printed = sorted({round(float(v), decimals) for v in values if not is_missing(v)}, reverse=direction != "min")
    place = {v: i + 1 for i, v in enumerate(printed[:3])}
    return [None if is_missing(v) else place.get(round(float(v), decimals)) for v in values]


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
    """The paper's cell exactly as it printed it ("0.0670 ± 0.00018", "0.25 ± 0.00087", "97.0 ± 0.055")."""
    if row["paper_mean"] is None:
        return "—"
    std = row.get("paper_std_str") or ""
    text = row["paper_mean_str"] + (f" ± {std}" if std else "")
    return mark(text, rank) + (" (no std)" if row.get("paper_quoted") else "")


# ---------------------------------------------------------------- marks
def marking(table: TableResult) -> str:
    """What a table marks: "results" (every column reporting a result: the paper's Tables S2-S12, App.
    D, and our own tables), "metric" (the metric columns: Table 2) or "none" (Table S1, two values
    per setting)."""
    if table.slug in ("table_S1", "table_S1_ours"):
        return "none"
    if table.spec is not None and table.spec.id not in BEST3_TABLES:
        return "metric"
    return "results"


def marks_rule(table: TableResult) -> str:
    """The marking rule, as stated in a table's header."""
    how = "best **bold**, second <u>underlined</u>, third *italic*"
    kind = marking(table)
    if kind == "none":
        return ("Not marked: the paper marks the best three of a column in Tables S2-S12 (App. D); here each "
                "setting compares two values.")
    shared = "ours and the paper's ranked separately; values equal as printed share a place"
    if kind == "metric":
        return (f"Marks: in each metric column, {how} ({shared}); Table 2 marks no other column "
                "(its time, memory and params, from Tables S2/S3, are not part of it).")
    if not table.is_paper:
        shared = "values equal as printed share a place"
    metric = ", ".join(sorted({METRIC_LABELS.get(norm_metric(r["metric"]), r["metric"]) for r in table.rows}))
    source = "as the paper's App. D for Tables S2-S12" if table.is_paper else "as the paper marks Tables S2-S12 (App. D)"
    return (f"Marks, {source}: in each column reporting a result (time, {metric or 'the metric'}, memory, params), "
            f"{how}; lower is better for time, memory and params ({shared}; each setting and metric ranked apart).")


def _group_ranks(rows: list[dict], value, decimals: int, direction: str | None = None) -> dict[int, int | None]:
    """Best-three rank of ``value(row)`` per row (by id), within each (setting, metric) column."""
    ranks: dict[int, int | None] = {}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["metric"])].append(r)
    for group in groups.values():
        values = [value(r) for r in group]
        for r, rank in zip(group, rank_marks(values, direction or group[0]["direction"], decimals)):
            ranks[id(r)] = rank
    return ranks


def _printed_params(count: Any) -> float | None:
    """A count as the tables print it ("221.18K" -> 221180): equal printings share a place."""
    return None if is_missing(count) else parse_params(format_params(count))


def _comparable_memory(rows: list[dict]) -> set[int]:
    """Rows whose memory figure can be ranked: within a (setting, metric) column, only when every
    figure there is of the same kind (an accelerator's peak is never ranked against a CPU's RSS)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if not is_missing(r.get("ours_memory_gb")):
            groups[(r["setting"], r["metric"])].append(r)
    return {id(r) for g in groups.values() if len({r["ours_memory_kind"] for r in g}) == 1 for r in g}


def _printed(value: Any, text, *how: Any) -> float | None:
    """``value`` as its cell prints it (``text(value, *how)``), for ranking."""
    return None if is_missing(value) else float(text(value, *how))


def cost_ranks(rows: list[dict], paper: bool) -> dict[str, dict[int, int | None]]:
    """Best-three ranks of the cost columns (lower is better): time, memory, params; ours and, for a
    paper table, the paper's."""
    memory_ok = _comparable_memory(rows)
    out = {
        # ranked as printed (values that print the same share a place)
        "ours_time": _group_ranks(rows, lambda r: _printed(r.get("ours_time"), _time_text, r["time_unit"]), 12, "min"),
        "ours_memory": _group_ranks(rows, lambda r: _printed(r["ours_memory_gb"], _memory_text, r["ours_memory_pct"])
                                    if id(r) in memory_ok else None, 12, "min"),
        "ours_params": _group_ranks(rows, lambda r: _printed_params(r.get("ours_params")), 0, "min"),
    }
    if paper:
        out.update(
            paper_time=_group_ranks(rows, lambda r: r.get("paper_time"), 2, "min"),
            paper_memory=_group_ranks(rows, lambda r: r.get("paper_memory_pct"), 0, "min"),
            paper_params=_group_ranks(rows, lambda r: r.get("paper_params"), 0, "min"),
        )
    return out


def _s1_time(value: Any, unit: str) -> str:
    return "—" if is_missing(value) or value == "" else f"{value} {unit}" if isinstance(value, str) else fmt_time(value, unit)


def s1_markdown(table: TableResult) -> str:
    """Our Table S1 in the paper's layout: per setting a row for each compression (summation:
    1LoRA; random: onelora_random), its time to the best round and its metric, ours then the
    paper's (as printed), and random − summation on the random row."""
    header = ["task", "model", "setting", "compression", "time to best, ours", "ours (mean ± std, n)", "time, paper",
              "paper (as printed)", "random − summation, ours", "random − summation, paper"]
    body = []
    for r in table.rows:
        dec, sdec = r["mean_decimals"], r["std_decimals"]
        for key, name in (("onelora", S1_COMPRESSION["onelora"]), ("random", S1_COMPRESSION["onelora_random"])):
            n = r[f"ours_{key}_n"]
            ours = (fmt_mean_std(r[f"ours_{key}_mean"], r[f"ours_{key}_std"], dec, sdec) + f" (n={n})") if n else "missing"
            first = key == "onelora"
            body.append([
                r["task"] if first else "", r["model"] if first else "", r["setting"] if first else "", name,
                _s1_time(r[f"ours_{key}_time"], r["time_unit"]), ours,
                _s1_time(r[f"paper_{key}_time"], r["paper_time_unit"]), r[f"paper_{key}_text"] or "—",
                "" if first else ("—" if r["ours_diff"] is None else f"{r['ours_diff']:+.{dec}f}"),
                "" if first else ("—" if r["paper_diff"] is None else f"{r['paper_diff']:+.{dec}f}"),
            ])
    parts = [f"# {table.title}", "", marks_rule(table), ""]
    if not body:
        parts += ["No onelora_random runs yet (`python run.py -m experiment=table_s1`).", ""]
    else:
        parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


def s1_paper_layout(table: TableResult, value: str) -> list[str]:
    """The paper's Table S1 as it lays it out: dataset (setting) x compression rows, time and RMSE
    columns; ``value`` "paper" (as printed) or "ours"."""
    metric = METRIC_LABELS.get(norm_metric(table.rows[0]["metric"]), table.rows[0]["metric"]) if table.rows else ""
    unit = table.rows[0]["time_unit"] if table.rows else "min"
    header = ["dataset", "compression", f"time [{unit}]" if value == "paper" else "time to best", metric]
    body, seen = [], set()
    for r in table.rows:
        first = r["setting"] not in seen
        seen.add(r["setting"])
        compression = S1_COMPRESSION.get(r["method"], r["label"])
        if value == "paper":
            cells = [r["paper_time_str"] or "—", _paper_cell(r)]
        else:
            cells = [fmt_time(r["ours_time"], r["time_unit"], r["ours_time_std"]), _ours_cell(r, None, with_n=True)]
        body.append([r["setting"] if first else "", compression, *cells])
    return [markdown_table(header, body), ""]


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
    name = METRIC_LABELS.get(norm_metric(metric), metric).replace(" (%)", "")  # "abs_rel" -> "AbsRel"
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
        label = next(display_label(r) for r in table.rows if r["method"] == method)
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
        "ours (mean ± std, n)", "paper (as printed)", "ours − paper", "agreement",
        "time to best, ours", "time, paper", "memory, ours", "memory, paper",
        "params ours (paper's count)", "params paper", "params match", "params trained, ours",
    ]
    kind = marking(table)
    ours_ranks = _column_ranks(rows, "ours_mean", "mean_decimals") if kind != "none" else {}
    paper_ranks = _column_ranks(rows, "paper_mean", "paper_mean_decimals") if kind != "none" else {}
    cost = cost_ranks(rows, paper=True) if kind == "results" else defaultdict(dict)
    body = []
    for r in rows:
        diff = "—"
        if r["diff"] is not None:
            diff = f"{r['diff']:+.{r['mean_decimals']}f}"
            if r["diff_in_paper_std"] is not None:
                diff += f" ({r['diff_in_paper_std']:+.1f}σ)"
        mem_paper = "—" if r["paper_memory_pct"] is None else f"{r['paper_memory_pct']:.0f}% ({r['paper_memory_gb']:.1f} GB)"
        time_paper = f"{r['paper_time_str']} {r['time_unit']}" if r.get("paper_time_str") else "—"
        cells = ([r["setting"]] if wide else []) + [display_label(r)] + ([r["metric"]] if wide else [])
        cells += [
            _ours_cell(r, ours_ranks.get(id(r))), _paper_cell(r, paper_ranks.get(id(r))), diff, r["agreement"] or "—",
            _mark_cell(fmt_time(r["ours_time"], r["time_unit"], r["ours_time_std"]), cost["ours_time"].get(id(r))),
            _mark_cell(time_paper, cost["paper_time"].get(id(r))),
            _mark_cell(fmt_memory(r["ours_memory_gb"], r["ours_memory_pct"], r["ours_memory_kind"]),
                       cost["ours_memory"].get(id(r))),
            _mark_cell(mem_paper, cost["paper_memory"].get(id(r))),
            _mark_cell(r["ours_params_str"] or "—", cost["ours_params"].get(id(r))),
            _mark_cell(r["paper_params_str"] or "—", cost["paper_params"].get(id(r))), r["params_match"],
            r.get("ours_trained_params_str") or "—",
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
    parts += [marks_rule(table), ""]
    name = table.spec.name if table.spec else "paper"
    if table.spec is not None and table.spec.id == "S1":  # the paper's own layout: dataset x compression rows
        parts += [f"## Paper ({name} as printed)", ""] + s1_paper_layout(table, "paper")
        parts += ["## Ours (the same layout)", ""] + s1_paper_layout(table, "ours")
        parts += ["## Details", ""]
    elif wide:
        parts += ["## Ours", ""] + wide_markdown(table, "ours")
        parts += [f"## Paper ({name} as printed)", ""] + wide_markdown(table, "paper")
        parts += ["## Ours − paper", ""] + wide_markdown(table, "diff")
        parts += ["## Details", ""]
    parts += [markdown_table(header, body), ""]
    parts += _footer(table)
    return "\n".join(parts)


def display_label(row: dict) -> str:
    """A row's label in a table: a row the paper quotes in its text only (the head-only baseline of
    Tables S9 / S10) says so."""
    return f"{row['label']} ({QUOTED})" if row.get("paper_quoted") else row["label"]


def _mark_cell(text: str, rank: int | None) -> str:
    return text if text == "—" else mark(text, rank)


def ours_markdown(table: TableResult) -> str:
    rows = table.rows
    wide = len(table.columns) > 1
    header = (["setting"] if wide else []) + [
        "method", "metric", "ours (mean ± std, n)", "time to best", "memory", "params (paper's count)", "params kind",
        "params trained",
    ]
    ranks = _column_ranks(rows, "ours_mean", "mean_decimals")
    cost = cost_ranks(rows, paper=False)
    body = []
    for r in rows:
        cells = ([r["setting"]] if wide else []) + [
            r["label"], r["metric"] or "—", _ours_cell(r, ranks.get(id(r))),
            _mark_cell(fmt_time(r["ours_time"], r["time_unit"], r["ours_time_std"]), cost["ours_time"].get(id(r))),
            _mark_cell(fmt_memory(r["ours_memory_gb"], r["ours_memory_pct"], r["ours_memory_kind"]),
                       cost["ours_memory"].get(id(r))),
            _mark_cell(r["ours_params_str"] or "—", cost["ours_params"].get(id(r))), r["ours_params_kind"] or "—",
            r.get("ours_trained_params_str") or "—",
        ]
        body.append(cells)
    parts = [f"# {table.title}", ""]
    if rows and not wide and rows[0]["setting"]:
        parts += [f"Setting: {rows[0]['setting']}.", ""]
    parts += [marks_rule(table), ""]
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
        "Time = time to the best validation round (training + validation wall time until it; mean ± std "
        "over seeds); memory = the accelerator's peak allocation where runs had one (GB = 2^30 bytes, % of "
        "a 40 GB A100), else params + grads + optimizer + activations measured in the run, else CPU RSS "
        "(the process, not the method: not comparable, and never ranked against another kind); params = "
        "the paper's count (the model config's reported_params: the adapter alone, or everything that "
        "trains), params trained = what really trained (adapter + head: e.g. Depth Anything's DPT output "
        "convolution, a new classifier)."
    )
    if table.is_paper:
        notes.append("Paper: each cell as this paper table prints it (Table 2's trailing zeros kept: 0.0670, "
                     "0.00010; the S tables print fewer digits: 0.25, 2.97); the paper's own inconsistencies "
                     "between tables are listed in summary.md.")
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
