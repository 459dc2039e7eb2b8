"""Bubble plots in the style of the paper's Figures 2-8: time to best vs best metric, area ~ parameters.

One figure per table, one row of panels per (setting, metric): our runs (mean over seeds with
std error bars on both axes), the paper's rows (drawn from the paper CSV even when we have no
runs; its std as the y error bar; a value the paper only quotes in its text, such as the
head-only baseline, as a dotted line) and the memory bars. Methods carry the paper's labels and
one colour per family; adjustText places the labels so that they do not collide. Agg backend:
works headless.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from adjustText import adjust_text  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from onelora.reporting.paper import FAMILY_COLORS, METRIC_LABELS, method_family, norm_method  # noqa: E402
from onelora.reporting.tables import MEMORY_KINDS, TableResult  # noqa: E402

MAX_AREA = 1500.0  # points^2 of the largest bubble that is not capped
MIN_AREA = 30.0
CAP_AREA = MAX_AREA * 1.3  # "All" (and any count OUTLIER x the median) is drawn at this size
OUTLIER = 20.0
#: memory parts stacked in a bar when runs measured them (bottom to top)
PART_COLORS = {"params": "0.55", "grads": "tab:cyan", "optimizer": "tab:purple", "activations": "tab:pink"}


def _ok(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _capped(method: str, count: Any, median: float) -> bool:
    """The paper caps "All": full fine-tuning's count would dwarf every other bubble."""
    return norm_method(method) == "full" or (_ok(count) and median > 0 and count > OUTLIER * median)


def bubble_areas(points: list[dict]) -> tuple[list[float], list[bool]]:
    """Marker areas (points^2) proportional to the parameter count, "All" capped; the reference
    is the largest count that is not capped, so the PEFT methods keep readable sizes."""
    counts = [p["params"] for p in points]
    positive = sorted(c for c in counts if _ok(c) and c > 0)
    median = positive[len(positive) // 2] if positive else 0.0
    capped = [_capped(p["method"], p["params"], median) for p in points]
    regular = [c for c, cap in zip(counts, capped) if _ok(c) and c > 0 and not cap]
    ref = max(regular) if regular else 1.0
    areas = []
    for c, cap in zip(counts, capped):
        if cap:
            areas.append(CAP_AREA)
        elif not _ok(c) or c <= 0:
            areas.append(MIN_AREA)  # head-only: no adapter parameters
        else:
            areas.append(max(MAX_AREA * float(c) / ref, MIN_AREA))
    return areas, capped


def _bubbles(ax, points: list[dict], title: str, xlabel: str, ylabel: str, empty: str,
             quoted: list[dict] | None = None) -> tuple[list, list[float], list[float]]:
    """Draw the bubbles with error bars; returns (label texts, xs, ys) for :func:`_place_labels`,
    which runs once the axis limits are final."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    quoted = quoted or []
    if not points and not quoted:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return [], [], []
    areas, capped = bubble_areas(points)
    texts = []
    for p, area, cap in zip(points, areas, capped):
        color = FAMILY_COLORS[method_family(p["method"])]
        ax.errorbar(p["x"], p["y"], xerr=p.get("xerr"), yerr=p.get("yerr"), fmt="none", ecolor=color,
                    elinewidth=1.0, capsize=2.5, zorder=3)
        ax.scatter(p["x"], p["y"], s=area, color=color, alpha=0.45, edgecolors="k", linewidths=0.8,
                   linestyles="--" if cap else "-", zorder=2)
        texts.append(ax.text(p["x"], p["y"], p["label"] + (" (size capped)" if cap else ""), fontsize=7, zorder=4))
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    for q in quoted:  # a value the paper quotes without time: a horizontal reference line
        color = FAMILY_COLORS[method_family(q["method"])]
        ax.axhline(q["y"], color=color, linestyle=":", linewidth=1.2)
        ax.annotate(f"{q['label']} (quoted: {q['y']:g})", (0.01, q["y"]), xycoords=("axes fraction", "data"),
                    fontsize=7, color=color, va="bottom")
    ys_all = ys + [q["y"] for q in quoted]
    errs = [p.get("yerr") or 0.0 for p in points] + [0.0] * len(quoted)
    _pad(ax.set_xlim, xs or [0.0, 1.0], [p.get("xerr") or 0.0 for p in points] or [0.0, 0.0])
    _pad(ax.set_ylim, ys_all, errs, top=0.2)
    return texts, xs, ys


def _place_labels(ax, texts: list, xs: list[float], ys: list[float]) -> None:
    """Move the labels apart (adjustText), each linked to its bubble by a thin line."""
    if texts:
        adjust_text(texts, x=xs, y=ys, ax=ax, arrowprops=dict(arrowstyle="-", color="0.4", lw=0.5),
                    expand=(1.1, 1.3), time_lim=1.0)


def _pad(setter, values: list[float], errors: list[float], top: float = 0.15) -> None:
    lo = min(v - e for v, e in zip(values, errors))
    hi = max(v + e for v, e in zip(values, errors))
    span = hi - lo or max(abs(hi), 1.0) * 0.1
    setter(lo - 0.15 * span, hi + top * span)


def _family_legend(ax, methods: list[str]) -> None:
    families = []
    for m in methods:
        if (f := method_family(m)) not in families:
            families.append(f)
    handles = [Patch(facecolor=FAMILY_COLORS[f], alpha=0.6, edgecolor="k", label=f) for f in families]
    if handles:
        ax.legend(handles=handles, fontsize=6, loc="best", framealpha=0.7)


def _memory_bars(ax, rows: list[dict], paper: bool) -> None:
    """Our memory per method by what the runs measured (the accelerator's peak; else params +
    grads + optimizer + activations, stacked; else CPU RSS, hatched and marked not comparable),
    beside the paper's (% of a 40 GB A100)."""
    kinds = sorted({r["ours_memory_kind"].split(" (", 1)[0] for r in rows if r.get("ours_memory_kind")})
    ax.set_title("memory: " + (", ".join(MEMORY_KINDS[k] for k in kinds) if kinds else "none measured"),
                 fontsize=9)
    ax.set_ylabel("GB (2^30 bytes)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    values = [r["ours_memory_gb"] for r in rows] + ([r["paper_memory_gb"] for r in rows] if paper else [])
    if not rows or not any(_ok(v) for v in values):
        ax.text(0.5, 0.5, "no memory figures", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    xs = list(range(len(rows)))
    width = 0.4 if paper else 0.7
    offset = -width / 2 if paper else 0.0
    used_parts: set[str] = set()
    for x, r in zip(xs, rows):
        if not _ok(r["ours_memory_gb"]):
            continue
        kind = r["ours_memory_kind"].split(" (", 1)[0]
        color = FAMILY_COLORS[method_family(r["method"])]
        if kind == "model" and r.get("ours_memory_parts_gb"):
            bottom = 0.0
            for part, gb in r["ours_memory_parts_gb"].items():
                ax.bar(x + offset, gb, width, bottom=bottom, color=PART_COLORS.get(part, "0.7"), edgecolor=color)
                bottom += gb
                used_parts.add(part)
        elif kind == "rss":
            ax.bar(x + offset, r["ours_memory_gb"], width, color="0.85", edgecolor=color, hatch="//")
            ax.text(x + offset, 0.0, " CPU RSS, not comparable", rotation=90, fontsize=6, ha="center", va="bottom",
                    clip_on=True)
        else:
            ax.bar(x + offset, r["ours_memory_gb"], width, color=color, alpha=0.8)
    handles = [Patch(facecolor=PART_COLORS[p], label=p) for p in PART_COLORS if p in used_parts]
    if "cuda" in kinds:
        handles.insert(0, Patch(facecolor="0.5", alpha=0.8, label="ours: accelerator peak (family colour)"))
    if "rss" in kinds:
        handles.append(Patch(facecolor="0.85", hatch="//", label="CPU RSS, not comparable"))
    if paper:
        ax.bar([x + width / 2 for x in xs], [r["paper_memory_gb"] if _ok(r["paper_memory_gb"]) else 0.0 for r in rows],
               width, color="white", edgecolor="k", hatch="..")
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="..", label="paper (% of 40 GB A100)"))
    ax.set_xticks(xs)
    ax.set_xticklabels([r["label"] for r in rows], rotation=60, ha="right", fontsize=7)
    if handles:
        ax.legend(handles=handles, fontsize=6)


def _groups(rows: list[dict]) -> list[tuple[str, str, list[dict]]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("main", True):  # ours-only tables: the main metric (depth's RMSE), as the paper's figures
            groups.setdefault((r["setting"], r["metric"]), []).append(r)
    return [(s, m, rs) for (s, m), rs in groups.items()]


def _time_label(rows: list[dict], unit: str) -> str:
    kinds = {k for r in rows for k in (r.get("time_kind") or "").split("/") if k}
    if kinds == {"fit"}:
        return f"fit wall time ({unit}; older records: no time to best)"
    label = f"time to best validation round ({unit})"
    return label + ("; some records: fit time" if "fit" in kinds else "")


def _metric_label(rows: list[dict], name: str) -> str:
    """The y axis of our panel: the best round's test metric, or the final one for older records."""
    have = [r for r in rows if r.get("ours_n")]
    older = sum(r.get("ours_older_records") or 0 for r in have)
    if have and older == sum(r["ours_n"] for r in have):
        return f"{name}\nfinal weights (older records), mean ± std"
    return f"{name}\nbest validation round, mean ± std" + (" (some: final weights)" if older else "")


def _ours_points(rows: list[dict]) -> list[dict]:
    return [
        {"x": r["ours_time"], "y": r["ours_mean"], "xerr": r["ours_time_std"], "yerr": r["ours_std"],
         "params": r["ours_params"], "method": r["method"], "label": r["label"]}
        for r in rows if _ok(r["ours_mean"]) and _ok(r["ours_time"])
    ]


def _paper_points(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    points = [
        {"x": r["paper_time"], "y": r["paper_mean"], "yerr": r["paper_std"], "params": r["paper_params"],
         "method": r["method"], "label": r["label"]}
        for r in rows if _ok(r.get("paper_mean")) and _ok(r.get("paper_time"))
    ]
    quoted = [{"y": r["paper_mean"], "method": r["method"], "label": r["label"]}
              for r in rows if _ok(r.get("paper_mean")) and not _ok(r.get("paper_time"))]
    return points, quoted


def table_figure(table: TableResult) -> plt.Figure:
    """The bubble figure for one table (paper or ours-only); the caller closes it."""
    groups = _groups(table.rows) or [("", "", [])]
    ncols = 3 if table.is_paper else 2
    fig, axes = plt.subplots(len(groups), ncols, figsize=(6.2 * ncols, 5.0 * len(groups)), squeeze=False)
    # the layout first: labels are placed in display space, so it must not change afterwards
    height = fig.get_figheight()
    fig.suptitle(table.title + "  (bubble area ∝ trainable parameters; All capped)", fontsize=11,
                 y=1 - 0.12 / height, va="top")
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.8 / height, bottom=1.3 / height,
                        wspace=0.28, hspace=1.7 / 3.0)
    for ax_row, (setting, metric, rows) in zip(axes, groups):
        unit = rows[0]["time_unit"] if rows else "min"
        name = METRIC_LABELS.get(metric, metric or "metric")
        better = {"min": "lower is better", "max": "higher is better"}.get(rows[0].get("direction") if rows else "", "")
        where = f"{setting}, " if setting else ""
        ours = _ours_points(rows)
        labels = [(ax_row[0], *_bubbles(ax_row[0], ours, f"ours: {where}{name}", _time_label(rows, unit),
                 _metric_label(rows, f"{name}{', ' + better if better else ''}"), "no runs yet"))]
        _family_legend(ax_row[0], [p["method"] for p in ours])
        if table.is_paper:
            paper, quoted = _paper_points(rows)
            labels.append((ax_row[1], *_bubbles(ax_row[1], paper, f"paper: {where}{name}", f"time ({unit}, as printed)",
                                                f"{name}{', ' + better if better else ''}\nmean ± std over 4 runs",
                                                "no paper values", quoted)))
            _family_legend(ax_row[1], [p["method"] for p in paper])
            if ours and paper:  # one y scale, so the two panels compare at a glance
                lo = min(ax_row[0].get_ylim()[0], ax_row[1].get_ylim()[0])
                hi = max(ax_row[0].get_ylim()[1], ax_row[1].get_ylim()[1])
                ax_row[0].set_ylim(lo, hi)
                ax_row[1].set_ylim(lo, hi)
        for ax, texts, xs, ys in labels:
            _place_labels(ax, texts, xs, ys)
    # the bars last: adjustText redraws the figure for every panel, and hatched bars draw slowly
    for ax_row, (_, _, rows) in zip(axes, groups):
        _memory_bars(ax_row[-1], rows, paper=table.is_paper)
    return fig


def plot_table(table: TableResult, path: Path) -> Path:
    """:func:`table_figure` as a PNG at ``path``."""
    fig = table_figure(table)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
