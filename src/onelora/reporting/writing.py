"""Writing the report's tables: Markdown as the paper prints its tables, CSV for machines.

The paper's method labels, its marking of each metric column (best bold, second underlined,
third italic), our stds with the decimals the paper uses for the metric, and the wide layout
(methods x setting-metric columns) for tables with several settings or metrics (Table 2, S1,
the depth transfers of ours).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from onelora.reporting import stats
from onelora.reporting.paper import METRIC_LABELS, norm_metric
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
    "ours_random_std", "ours_diff", "paper_onelora_mean", "paper_onelora_std", "paper_random_mean",
    "paper_random_std", "paper_diff", "paper_model",
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


def fmt_time(t: Any, unit: str, std: Any = None, as_printed: bool = False) -> str:
    if is_missing(t):
        return "—"
    if as_printed:  # the paper's own value: as it printed it
        return f"{float(t):g} {unit}"
    dec = 1 if unit == "h" or float(t) < 100 else 0
    s = f"{float(t):.{dec}f}"
    if not is_missing(std):
        s += f" ± {float(std):.{dec}f}"
    return f"{s} {unit}"


def fmt_memory(gb: Any, pct: Any, kind: str) -> str:
    if is_missing(gb):
        return "—"
    base = kind.split(" (", 1)[0]
    what = MEMORY_KINDS.get(base, kind or "?") + kind[len(base):]
    if not is_missing(pct):
        return f"{float(gb):.2f} GB ({float(pct):.0f}% of A100 40 GB, {what})"
    return f"{float(gb):.3g} GB ({what})"


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
    if row["paper_mean"] is None:
        return "—"
    text = fmt_mean_std(row["paper_mean"], row["paper_std"], row["paper_mean_decimals"], row["paper_std_decimals"])
    return mark(text, rank) + (" (quoted, no std)" if row.get("paper_quoted") else "")


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
