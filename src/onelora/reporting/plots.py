"""Bubble plots in the style of the paper's Figures 2-8: time to best vs best metric, area ~ parameters.

One figure per table, one row of panels per (setting, metric): our runs (mean over seeds; the
metric's std over seeds as an error bar, the time's as a light band so that it never hides the
data), the paper's rows (drawn from the paper CSV even when we have no runs; its std as the y
error bar; a value the paper only quotes in its text, such as the head-only baseline, as a dotted
line) and the memory bars. A method that trained nothing (the un-adapted model, no time to plot)
is a dashed horizontal line. Methods carry the paper's labels and one colour per family.

Readable with many methods: when a panel would hold more than :data:`MANY` methods (and each half
:data:`MIN_HALF` of its own) it is split in two rows, the PEFT baselines and 1LoRA with its
combinations (the 1LoRA family), each with the reference methods (head-only, full fine-tuning,
the un-adapted model; plain 1LoRA among the baselines) on the same axes, the bubbles a third the
size (area still ∝ parameters, "All" capped); a reference far from the compared methods is marked
at the axis edge with its value instead of squeezing them into a strip; the time axis turns
logarithmic when the times span more than :data:`LOG_TIME_RATIO`; one legend for the figure;
adjustText places the labels off each other and off the bubbles (a fixed number of iterations, so
the same records give the same figure). Agg backend: works headless.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from adjustText import adjust_text  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from onelora.reporting.paper import FAMILY_COLORS, METRIC_LABELS, method_family, norm_method  # noqa: E402
from onelora.reporting.tables import MEMORY_KINDS, TableResult  # noqa: E402

MAX_AREA = 1500.0  # points^2 of the largest bubble that is not capped
MIN_AREA = 30.0
CAP_AREA = MAX_AREA * 1.3  # "All" (and any count OUTLIER x the median) is drawn at this size
OUTLIER = 20.0
#: memory parts stacked in a bar when runs measured them (bottom to top)
PART_COLORS = {"params": "0.55", "grads": "tab:cyan", "optimizer": "tab:purple", "activations": "tab:pink"}
#: a panel with more methods than this is split: PEFT baselines | 1LoRA and its combinations
MANY = 10
#: methods a half must hold besides the shared ones for a panel to be split
MIN_HALF = 3
#: the two halves of a split panel
HALVES = ("PEFT baselines", "1LoRA and its combinations")
#: families drawn in both halves of a split panel: the anchors every method is read against
REFERENCE_FAMILIES = ("Un-adapted", "Head", "All")
#: the time axis is logarithmic when the slowest method's time exceeds the fastest's this many times
LOG_TIME_RATIO = 10.0
#: adjustText iterations: a fixed count (not its default time limit), so a figure is reproducible
LABEL_ITERATIONS = 200
PANEL_SIZE = (6.2, 5.0)  # inches per panel (width, height)


def _ok(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _capped(method: str, count: Any, median: float) -> bool:
    """The paper caps "All": full fine-tuning's count would dwarf every other bubble."""
    return norm_method(method) == "full" or (_ok(count) and median > 0 and count > OUTLIER * median)


def bubble_areas(points: list[dict], max_area: float = MAX_AREA) -> tuple[list[float], list[bool]]:
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
            areas.append(max_area * CAP_AREA / MAX_AREA)
        elif not _ok(c) or c <= 0:
            areas.append(MIN_AREA)  # head-only: no adapter parameters
        else:
            areas.append(max(max_area * float(c) / ref, MIN_AREA))
    return areas, capped


def halves_of(method: str) -> tuple[str, ...]:
    """The halves of a split panel a method is drawn in: the reference families in both, the
    1LoRA family with its combinations, every other method (and plain 1LoRA, which they are
    compared with) among the PEFT baselines."""
    family = method_family(method)
    if family in REFERENCE_FAMILIES:
        return HALVES
    if family != "1LoRA":
        return HALVES[:1]
    return HALVES if norm_method(method) == "onelora" else HALVES[1:]


def split_panels(*point_sets: list[dict]) -> list[tuple[str, list[list[dict]]]]:
    """The panel rows the bubbles of one (setting, metric) are drawn in, each point set (ours,
    the paper's) split alike: one row, or two (:data:`HALVES`) when more than :data:`MANY`
    methods would share a panel and each half has at least :data:`MIN_HALF` of its own (a table
    of baselines with one 1LoRA variant stays whole). Returns ``[(half name or "", [points of
    each set])]``."""
    methods = {p["method"] for points in point_sets for p in points}
    own = [sum(halves_of(m) == (half,) for m in methods) for half in HALVES]
    if len(methods) <= MANY or min(own) < MIN_HALF:
        return [("", list(point_sets))]
    return [(half, [[p for p in points if half in halves_of(p["method"])] for points in point_sets])
            for half in HALVES]


def _log_time(xs: list[float]) -> bool:
    positive = [x for x in xs if x > 0]
    return len(positive) > 1 and max(positive) / min(positive) > LOG_TIME_RATIO


def _bubbles(ax, points: list[dict], lines: list[dict], title: str, xlabel: str, ylabel: str, empty: str,
             max_area: float = MAX_AREA, log_x: bool = False, focus: bool = False) -> dict[str, list]:
    """Draw the bubbles (metric std as error bars, time std as a light band) and the reference
    ``lines`` (a value without a time: quoted by the paper, or a run that trained nothing).

    With ``focus`` (a crowded panel) the y range covers the methods compared; a reference
    (head-only, full fine-tuning) far outside it would squeeze them into a strip, so it is left off
    the scale and marked at the edge by :func:`_mark_off_scale`; a line (a value without a time) far
    from every bubble is left off the scale in any panel. Returns what :func:`_finish_panel` needs
    once the axis limits are final: the label texts with their bubbles' positions and sizes, and
    the references."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    drawn: dict[str, list] = {"texts": [], "xs": [], "ys": [], "refs": [], "bubbles": []}
    if not points and not lines:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return drawn
    if log_x:
        ax.set_xscale("log")
    areas, capped = bubble_areas(points, max_area)
    for p, area, cap in zip(points, areas, capped):
        color = FAMILY_COLORS[method_family(p["method"])]
        if _ok(p.get("xerr")) and p["xerr"] > 0:  # the time's spread: a band, behind everything
            lo = max(p["x"] - p["xerr"], p["x"] / 10 if log_x else 0.0)  # no time below zero
            ax.hlines(p["y"], lo, p["x"] + p["xerr"], colors=color, linewidths=3.0, alpha=0.25, zorder=1)
        ax.errorbar(p["x"], p["y"], yerr=p.get("yerr"), fmt="none", ecolor=color, elinewidth=1.0, capsize=2.5,
                    zorder=3)
        ax.scatter(p["x"], p["y"], s=area, color=color, alpha=0.45, edgecolors="k", linewidths=0.8,
                   linestyles="--" if cap else "-", zorder=2)
        drawn["bubbles"].append((p["x"], p["y"], area))
        text = ax.text(p["x"], p["y"], p["label"] + (" (size capped)" if cap else ""), fontsize=7, zorder=4)
        if _reference(p):
            drawn["refs"].append({**p, "color": color, "text": text})
        else:
            drawn["texts"].append(text)
            drawn["xs"].append(p["x"])
            drawn["ys"].append(p["y"])
    for q in lines:
        color = FAMILY_COLORS[method_family(q["method"])]
        ax.axhline(q["y"], color=color, linestyle=q.get("style", ":"), linewidth=1.2)
        text = ax.annotate(f"{q['label']} ({q['note']}: {q['y']:.4g})", (0.01, q["y"]),
                           xycoords=("axes fraction", "data"), fontsize=7, color=color, va="bottom")
        drawn["refs"].append({**q, "x": None, "color": color, "text": text})
    core = [p for p in points if not _reference(p)] or points
    refs = [p for p in points if _reference(p)]
    shown = core + [r for r in refs if not focus or _near(r["y"], [p["y"] for p in core])]
    # a value without a time (un-adapted, quoted) far from every bubble: marked at the edge, always
    shown += [q for q in lines if _near(q["y"], [p["y"] for p in points])]
    if shown:
        _pad(ax.set_ylim, [p["y"] for p in shown], [p.get("yerr") or 0.0 for p in shown], top=0.2)
    if points:
        _pad(ax.set_xlim, [p["x"] for p in points], [p.get("xerr") or 0.0 for p in points], log=log_x, floor=0.0)
    return drawn


def _reference(point: dict) -> bool:
    return method_family(point["method"]) in REFERENCE_FAMILIES


def _near(y: float, values: list[float]) -> bool:
    """Whether a reference at ``y`` is on the scale of ``values``: no farther from their range
    than the range is wide (else drawing it would squeeze them into a strip)."""
    if not values:
        return True
    lo, hi = min(values), max(values)
    span = max(hi - lo, 1e-12 + 0.05 * max(abs(lo), abs(hi)))
    return lo - span <= y <= hi + span


def _mark_off_scale(ax, refs: list[dict]) -> None:
    """A reference outside the final y range: its label moves to the edge it lies beyond, with its
    value and an arrow, so the reader still sees where it is."""
    lo, hi = ax.get_ylim()
    for r in refs:
        if lo <= r["y"] <= hi:
            continue
        above = r["y"] > hi
        arrow = "↑" if above else "↓"
        err = f" ± {r['yerr']:.3g}" if _ok(r.get("yerr")) and r.get("yerr") else ""
        r["text"].set_visible(False)
        x = 0.99 if r["x"] is None else r["x"]
        coords = ("axes fraction", "axes fraction") if r["x"] is None else ("data", "axes fraction")
        note = f"{r['note']}, " if r.get("note") else ""
        ax.annotate(f"{arrow} {r['label']}: {r['y']:.4g}{err} ({note}off scale)", (x, 0.99 if above else 0.01),
                    xycoords=coords, fontsize=7, color=r["color"], ha="right" if r["x"] is None else "center",
                    va="top" if above else "bottom", fontweight="bold", clip_on=False)


def _finish_panel(ax, drawn: dict[str, list]) -> None:
    """Once the limits are final: references off the scale marked at its edge, then the bubbles'
    labels moved apart (adjustText, a fixed number of iterations), each linked to its bubble by a
    thin line."""
    _mark_off_scale(ax, drawn["refs"])
    on_scale = [r for r in drawn["refs"] if r["x"] is not None and r["text"].get_visible()]
    texts = drawn["texts"] + [r["text"] for r in on_scale]
    if texts:
        adjust_text(texts, x=drawn["xs"] + [r["x"] for r in on_scale], y=drawn["ys"] + [r["y"] for r in on_scale],
                    objects=_bubble_boxes(ax, drawn["bubbles"]) or None, ax=ax, expand=(1.1, 1.3),
                    arrowprops=dict(arrowstyle="-", color="0.4", lw=0.5), iter_lim=LABEL_ITERATIONS)


def _bubble_boxes(ax, bubbles: list[tuple[float, float, float]]) -> list[Bbox]:
    """Each bubble's bounding box in data units (what adjustText's ``objects`` takes), so that the
    labels keep off the bubbles as well as off each other."""
    to_data = ax.transData.inverted()
    boxes = []
    for x, y, area in bubbles:
        cx, cy = ax.transData.transform((x, y))
        r = math.sqrt(area / math.pi) * ax.figure.dpi / 72.0  # points -> pixels
        (x0, y0), (x1, y1) = to_data.transform([(cx - r, cy - r), (cx + r, cy + r)])
        boxes.append(Bbox.from_extents(x0, y0, x1, y1))
    return boxes


def _pad(setter, values: list[float], errors: list[float], top: float = 0.15, log: bool = False,
         floor: float | None = None) -> None:
    """Limits around ``values ± errors`` with a margin; ``floor``: none below it (time is never
    negative) but a hair of margin."""
    if log:
        positive = [v for v in values if v > 0]
        lo, hi = min(positive), max(v + e for v, e in zip(values, errors))
        setter(lo / 1.6, hi * 1.4)
        return
    lo = min(v - e for v, e in zip(values, errors))
    hi = max(v + e for v, e in zip(values, errors))
    span = hi - lo or max(abs(hi), 1.0) * 0.1
    low = lo - 0.15 * span
    if floor is not None and low < floor <= min(values):
        low = floor - 0.03 * span
    setter(low, hi + top * span)


def _family_legend(fig, methods: list[str], bands: bool, top: float) -> None:
    """One legend for the figure, under its title: the families' colours, the band's meaning."""
    families = []
    for m in methods:
        if (f := method_family(m)) not in families:
            families.append(f)
    handles: list = [Patch(facecolor=FAMILY_COLORS[f], alpha=0.6, edgecolor="k", label=f) for f in families]
    if bands:
        handles.append(Line2D([], [], color="0.5", alpha=0.35, linewidth=3.0, label="time: ± std over seeds"))
    if handles:
        fig.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, top), ncol=len(handles),
                   frameon=False, handlelength=1.5, columnspacing=1.2)


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


def _time_label(rows: list[dict], unit: str, log: bool) -> str:
    kinds = {k for r in rows for k in (r.get("time_kind") or "").split("/") if k}
    scale = ", log scale" if log else ""
    if kinds == {"fit"}:
        return f"fit wall time ({unit}{scale}; older records: no time to best)"
    label = f"time to best validation round ({unit}{scale})"
    return label + ("; some records: fit time" if "fit" in kinds else "")


def _metric_label(rows: list[dict], name: str) -> str:
    """The y axis of our panel: the best round's test metric, or the final one for older records."""
    have = [r for r in rows if r.get("ours_n")]
    older = sum(r.get("ours_older_records") or 0 for r in have)
    if have and older == sum(r["ours_n"] for r in have):
        return f"{name}\nfinal weights (older records), mean ± std"
    return f"{name}\nbest validation round, mean ± std" + (" (some: final weights)" if older else "")


def _ours_points(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Bubbles, and reference lines for methods that trained nothing (no time: the un-adapted model)."""
    have = [r for r in rows if _ok(r["ours_mean"]) and _ok(r["ours_time"])]
    points = [
        {"x": r["ours_time"], "y": r["ours_mean"], "xerr": r["ours_time_std"], "yerr": r["ours_std"],
         "params": r["ours_params"], "method": r["method"], "label": r["label"]}
        for r in have if r["ours_time"] > 0
    ]
    lines = [{"y": r["ours_mean"], "method": r["method"], "label": r["label"], "note": "no training", "style": "--"}
             for r in have if r["ours_time"] <= 0]
    return points, lines


def _paper_points(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    points = [
        {"x": r["paper_time"], "y": r["paper_mean"], "yerr": r["paper_std"], "params": r["paper_params"],
         "method": r["method"], "label": r["label"]}
        for r in rows if _ok(r.get("paper_mean")) and _ok(r.get("paper_time"))
    ]
    quoted = [{"y": r["paper_mean"], "method": r["method"], "label": r["label"], "note": "quoted"}
              for r in rows if _ok(r.get("paper_mean")) and not _ok(r.get("paper_time"))]
    return points, quoted


def table_figure(table: TableResult) -> plt.Figure:
    """The bubble figure for one table (paper or ours-only); the caller closes it."""
    groups = _groups(table.rows) or [("", "", [])]
    plans = []  # per group: its rows, our lines, and the panel rows [(half, our points, paper points)]
    for setting, metric, rows in groups:
        ours, ours_lines = _ours_points(rows)
        paper, quoted = _paper_points(rows) if table.is_paper else ([], [])
        plans.append((setting, metric, rows, ours_lines, quoted, split_panels(ours, paper)))
    n_panel_rows = sum(len(plan[-1]) for plan in plans)
    ncols = 3 if table.is_paper else 2
    width, height = PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * n_panel_rows
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(n_panel_rows, ncols, left=0.9 / width, right=0.98, top=1 - 1.05 / height,
                            bottom=1.6 / height, wspace=0.28, hspace=1.7 / 3.0,
                            width_ratios=[1.3] * (ncols - 1) + [1.0])  # the bubbles get the room
    # the layout first: labels are placed in display space, so it must not change afterwards
    fig.suptitle(table.title + "  (bubble area ∝ trainable parameters; All capped)", fontsize=11,
                 y=1 - 0.12 / height, va="top")
    labels, bars, legend, bands = [], [], [], False
    row0 = 0
    for setting, metric, rows, ours_lines, quoted, halves in plans:
        unit = rows[0]["time_unit"] if rows else "min"
        name = METRIC_LABELS.get(metric, metric or "metric")
        better = {"min": "lower is better", "max": "higher is better"}.get(rows[0].get("direction") if rows else "", "")
        where = f"{setting}, " if setting else ""
        yname = f"{name}{', ' + better if better else ''}"
        many = len(halves) > 1
        max_area = MAX_AREA / 3 if many else MAX_AREA  # a crowded panel: smaller bubbles, the same rule
        ours_log = _log_time([p["x"] for _, (pts, _) in halves for p in pts])
        paper_log = _log_time([p["x"] for _, (_, pts) in halves for p in pts])
        timed = [r for r in rows if _ok(r.get("ours_time")) and r["ours_time"] > 0]  # the bubbles' rows
        pairs = []
        for i, (half, (ours, paper)) in enumerate(halves):
            suffix = f" — {half}" if half else ""
            ax = fig.add_subplot(grid[row0 + i, 0])
            labels.append((ax, _bubbles(ax, ours, ours_lines, f"ours: {where}{name}{suffix}",
                                        _time_label(timed, unit, ours_log), _metric_label(rows, yname),
                                        "no runs yet", max_area, ours_log, many)))
            legend += [p["method"] for p in ours] + [q["method"] for q in ours_lines]
            bands = bands or any(_ok(p.get("xerr")) and p["xerr"] > 0 for p in ours)
            pair = [ax]
            if table.is_paper:
                pax = fig.add_subplot(grid[row0 + i, 1])
                labels.append((pax, _bubbles(pax, paper, quoted, f"paper: {where}{name}{suffix}",
                                             f"time ({unit}, as printed{', log scale' if paper_log else ''})",
                                             f"{yname}\nmean ± std over 4 runs", "no paper values", max_area,
                                             paper_log, many)))
                legend += [p["method"] for p in paper] + [q["method"] for q in quoted]
                pair.append(pax)
            pairs.append((pair, bool(ours or ours_lines), bool(paper or quoted)))
        # one y scale for every panel of the group, so they compare at a glance; one x scale per column
        drawn = [ax for pair, has_ours, has_paper in pairs
                 for ax, has in zip(pair, (has_ours, has_paper)) if has]
        if len(drawn) > 1:
            lo = min(ax.get_ylim()[0] for ax in drawn)
            hi = max(ax.get_ylim()[1] for ax in drawn)
            for ax in drawn:
                ax.set_ylim(lo, hi)
        for column in range(len(pairs[0][0])):
            axes = [pair[column] for pair, *has in pairs if has[column] and pair[column].collections]
            if len(axes) > 1:
                lo = min(ax.get_xlim()[0] for ax in axes)
                hi = max(ax.get_xlim()[1] for ax in axes)
                for ax in axes:
                    ax.set_xlim(lo, hi)
        bars.append((fig.add_subplot(grid[row0:row0 + len(halves), -1]), rows))
        row0 += len(halves)
    _family_legend(fig, legend, bands, top=1 - 0.45 / height)
    for ax, drawn in labels:
        _finish_panel(ax, drawn)
    # the bars last: adjustText redraws the figure for every panel, and hatched bars draw slowly
    for ax, rows in bars:
        _memory_bars(ax, rows, paper=table.is_paper)
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
