"""The paper's numbers (Table 2 and Tables S1-S12), read from the CSVs shipped as package data.

Everything the report compares against comes from here, so the comparison never depends on a
checkout of ``/work/shared``. The paper prints parameter counts as strings ("331.78K"); they are
parsed into numbers here, and our counts are formatted the same way so the two can be compared
as printed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from io import StringIO
from typing import Callable, Iterator, Mapping

import pandas as pd

from onelora.methods import family_colors, method_table

RESULTS_CSV = "paper_results.csv"
TABLE2_CSV = "paper_table2.csv"  # Table 2 as printed: RMSE and AbsRel, mean and std, both settings

#: the A100's memory the paper's percentages refer to (bytes; "40GB" = 40 GiB of HBM)
A100_BYTES = 40 * 2**30

#: paper table ids in the order the report lists them
TABLE_ORDER = ("2", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12")


@dataclass(frozen=True)
class TableSpec:
    """What a paper table is about: the report's heading and the figure it belongs to."""

    id: str
    title: str
    figure: str | None = None

    @property
    def name(self) -> str:
        return f"Table {self.id}"

    @property
    def slug(self) -> str:
        return f"table_{self.id}"


TABLES: dict[str, TableSpec] = {
    "2": TableSpec("2", "Depth Anything ViT-L: RMSE and AbsRel, KITTI ↔ NYU"),
    "S1": TableSpec("S1", "Depth Anything: 1LoRA vs a random compression vector (ablation)"),
    "S2": TableSpec("S2", "Depth Anything ViT-L, KITTI → NYU", "2a"),
    "S3": TableSpec("S3", "Depth Anything ViT-L, NYU → KITTI", "2b"),
    "S4": TableSpec("S4", "Depth Anything ViT-L, KITTI → DIODE outdoor", "2c"),
    "S5": TableSpec("S5", "Depth Anything ViT-L, NYU → DIODE outdoor", "2d"),
    "S6": TableSpec("S6", "LLaMA-2 7B on MetaMathQA (validation loss)", "3"),
    "S7": TableSpec("S7", "LLaMA-2 13B on MetaMathQA (validation loss)", "4"),
    "S8": TableSpec("S8", "DiT-XL/2, ImageNet → Food-101 (FID)", "5"),
    "S9": TableSpec("S9", "ViT-Base, ImageNet-21k → CIFAR-10", "6"),
    "S10": TableSpec("S10", "ViT-Base, ImageNet-21k → CIFAR-100", "7"),
    "S11": TableSpec("S11", "Depth Anything: 1LoRA combined with BitFit/DiffFit parts, NYU → KITTI", "10"),
    "S12": TableSpec("S12", "ViT-Base: 1LoRA combined with BitFit/DiffFit parts, CIFAR-10", "8"),
}

#: the head-only (linear probe) accuracy the paper quotes in its text (Sec. 4.4: "CIFAR10 (90%) and
#: CIFAR100 (66%)"), shown in these tables as a row the paper's table does not have: no std, time,
#: memory or parameter count was printed for it
HEAD_BASELINE = {"S9": 90.0, "S10": 66.0}
#: how the report marks a quoted row's label
QUOTED = "quoted in the paper's text, not a row of its table"

#: App. D: "We report tables (from S2 to S12) [...]. For each column reporting a result, we highlight
#: the best value in bold, the second best in underlined and the third in italic": every column with a
#: result (time, the metric, memory, params) is marked in these tables, ours and the paper's alike
BEST3_TABLES = ("S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12")
#: Table S1's "compression" column, as printed
S1_COMPRESSION = {"onelora": "summation", "onelora_random": "random"}

#: notes printed under a table: where a number comes from, and the paper's own inconsistencies
TABLE_NOTES: dict[str, list[str]] = {
    "2": [
        "Paper: Table 2's own printed RMSE and AbsRel (mean ± std over 4 runs), not rebuilt from "
        "Tables S2/S3, which differ in a few cells (LoRA NYU → KITTI RMSE 2.353 here, 2.253 in S3; "
        "All KITTI → NYU 0.210 vs 0.211; DoRA NYU → KITTI 2.345 vs 2.346).",
        "Table 2 prints no time, memory or parameter count: those columns and the bubble plot's x axis "
        "take Tables S2/S3's (the same runs).",
    ],
    "S8": ["The paper's DiT results are single runs (no std); time in hours.",
           "Our Food-101 runs of methods the paper has no row for (the un-adapted model, mode=eval; head-only; "
           "full fine-tuning) are in ours_food101_generation_dit_xl_2 (the same task and model)."],
    "S9": ["The paper's parameter counts for ViT-Base are 4x one model's (likely summed over 4 "
           "data-parallel ranks); 'yes (x4)' in the params-match column marks that case.",
           "Head: the head-only baseline the paper quotes in its text (90%; no std, time, memory or params)."],
    "S10": ["Parameter counts: see Table S9 (4x one model's).",
            "Head: the head-only baseline the paper quotes in its text (66%; no std, time, memory or params)."],
    "S11": ["Captioned KITTI → NYU in the paper, but its values equal NYU → KITTI (Table S3); "
            "matched here as NYU → KITTI."],
    "S12": ["Parameter counts: see Table S9 (4x one model's)."],
}

class _MethodMapping(Mapping[str, str]):
    """A read-only view of the method table (``onelora.methods``), read when used: a method's YAML
    is the one place its label and colour are kept."""

    def __init__(self, items: Callable[[], dict[str, str]]):
        self._items = items

    def __getitem__(self, key: str) -> str:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


#: the colour of methods no family claims
OTHER_COLOR = "tab:cyan"

#: our method labels, keyed by the normalised method name (``describe.label`` of conf/method/*.yaml)
METHOD_LABELS: Mapping[str, str] = _MethodMapping(
    lambda: {norm_method(m.name): m.label for m in method_table().values()})
#: one colour per method family in every plot (``describe.family`` / ``describe.color``), and "other"
FAMILY_COLORS: Mapping[str, str] = _MethodMapping(lambda: {**family_colors(), "other": OTHER_COLOR})


def _info(method: object):
    """The method table's entry for a (normalised) run name, or None."""
    key = norm_method(method)
    return next((m for m in method_table().values() if norm_method(m.name) == key), None)


#: decimals the paper prints a metric's means with at least (the CSVs lost trailing zeros:
#: Table 2's "0.25" is its 0.250, "0.067" its 0.0670)
MEAN_DECIMALS = {"accuracy": 1, "rmse": 3, "absrel": 4, "val_loss": 2, "fid": 4}
#: decimals the paper prints a std with, per metric (the most frequent in its tables; FID has no std)
STD_DECIMALS = {"accuracy": 4, "rmse": 5, "absrel": 5, "val_loss": 6, "fid": 4}
#: decimals for our means: the paper's, one more where it rounds coarsely (accuracy, val_loss)
OURS_DECIMALS = {"accuracy": 2, "rmse": 3, "absrel": 4, "val_loss": 3, "fid": 2}


def method_label(method: object, table: str | None = None) -> str:
    """The label of a method: "onelora+norms" -> "1LoRA (norms)", "full" -> "All"; in ``table`` (a
    paper table id, "S11") the paper's own label there where the method's YAML gives one
    (``describe.paper_label``). A combination no YAML names is its base's label with the parts
    ("lora+bias" -> "LoRA (bias)"); a name no YAML knows is returned as given."""
    info = _info(method)
    if info is not None:
        return info.label_in(table)
    base, *parts = norm_method(method).split("+")
    info = _info(base) if parts else None
    if info is not None:
        return f"{info.label_in(table)} ({'+'.join(parts)})"
    return str(method or "")


def method_family(method: object) -> str:
    """The family a method is coloured by (``describe.family``; a combination's is its base's;
    "other" for a name no YAML knows)."""
    info = _info(method) or _info(norm_method(method).split("+", 1)[0])
    return info.family if info is not None else "other"


#: metric display names
METRIC_LABELS = {
    "accuracy": "accuracy (%)",
    "rmse": "RMSE",
    "absrel": "AbsRel",
    "val_loss": "validation loss",
    "fid": "FID",
}

#: which way is better for each metric the tables show (an extra metric need not go the way of the
#: run's own: math_mini selects on validation loss and also reports accuracy)
METRIC_DIRECTIONS = {"accuracy": "max", "rmse": "min", "absrel": "min", "val_loss": "min", "fid": "min"}

#: paper metric name -> names our records may use for it (``metric.name`` or ``metrics`` keys)
METRIC_ALIASES = {
    "absrel": ("abs_rel", "absrel"),
    "accuracy": ("accuracy", "acc"),
    "rmse": ("rmse",),
    "val_loss": ("val_loss", "loss"),
    "fid": ("fid",),
}

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}


def parse_params(text: object) -> float | None:
    """"331.78K" -> 331780.0, "343.19M" -> 343190000.0, "1,359,872" -> 1359872.0; blank -> None."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().replace(",", "").replace("_", "")
    if not s:
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([KMBG]?)", s, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"not a parameter count: {text!r}")
    return float(m.group(1)) * _SUFFIX.get(m.group(2).upper(), 1.0)


def format_params(n: float | int | None) -> str:
    """Format a count like the paper prints it: 221184 -> "221.18K", 1359872 -> "1.36M"."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    n = float(n)
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:  # as the paper: 995,328 -> "995.33K", not "1.00M"
            return f"{n / scale:.2f}{suffix}"
    return f"{int(round(n))}"


def printed_decimals(text: object) -> int | None:
    """Decimals the paper printed a value with ("97.0" -> 1, "0.238" -> 3, "9e-05" -> 5); None if blank."""
    if text is None:
        return None
    s = str(text).strip()
    if not s or s.lower() == "nan":
        return None
    try:
        exponent = Decimal(s).as_tuple().exponent
    except InvalidOperation:
        return None
    return max(0, -int(exponent))


def paper_value_decimals(text: object, metric: str) -> int:
    """Decimals a paper value was printed with: its own, at least the metric's (lost zeros back)."""
    return max(printed_decimals(text) or 0, MEAN_DECIMALS.get(norm_metric(metric), 0))


def norm_key(text: object) -> str:
    """Normalise a dataset/task name for matching: "CIFAR-10" == "cifar10", None == ""."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return re.sub(r"[^0-9a-z]+", "", str(text).lower())


def norm_method(method: object) -> str:
    """Canonical method name: lower case; combination parts after the first sorted
    ("onelora+norms+bias" -> "onelora+bias+norms", the paper's order)."""
    if method is None:
        return ""
    parts = [p.strip() for p in str(method).lower().split("+") if p.strip()]
    if not parts:
        return ""
    return "+".join([parts[0], *sorted(parts[1:])])


def norm_metric(name: object) -> str:
    """Map a record's metric name onto the paper's ("test/abs_rel" -> "absrel")."""
    if name is None:
        return ""
    base = str(name).lower().rsplit("/", 1)[-1]
    for paper_name, aliases in METRIC_ALIASES.items():
        if base == paper_name or base in aliases:
            return paper_name
    return base


def setting_label(source: object, target: object) -> str:
    """"NYU → KITTI", or only the target when the paper gives no source (MetaMathQA)."""
    src = "" if source is None or (isinstance(source, float) and math.isnan(source)) else str(source)
    tgt = "" if target is None or (isinstance(target, float) and math.isnan(target)) else str(target)
    return f"{src} → {tgt}" if src else tgt


def _read_csv(name: str) -> pd.DataFrame:
    text = resources.files("onelora").joinpath("data", name).read_text()
    # everything as text first: the printed decimals matter for the agreement tolerance
    return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)


def _num(s: str) -> float:
    return float(s) if s not in ("", None) else math.nan


def _paper_row(r: pd.Series, **over) -> dict:
    row = {
        "table": r["table"],
        "figure": (r.get("figure") or None),
        "task": r["task"],
        "source": r["source"],
        "target": r["target"],
        "setting": setting_label(r["source"], r["target"]),
        "model": r["model"],
        "method": r["method"],
        "metric": r["metric"],
        "direction": r.get("direction") or "min",
        "mean": _num(r["mean"]),
        "std": _num(r["std"]),
        # the cells as printed: Table 2's text columns ("0.0670", "0.00010"), else the CSV's values,
        # which keep the S tables' own printing ("0.25", "97.0": those tables drop trailing zeros)
        "mean_str": r.get("mean_text") or r["mean"],
        "std_str": r.get("std_text") or r["std"],
        "time": _num(r.get("time", "")),
        "time_str": r.get("time", ""),
        "time_unit": r.get("time_unit") or "min",
        "memory_pct": _num(r.get("memory_pct", "")),
        "params_str": r.get("params", ""),
        "params": parse_params(r.get("params", "")),
        "quoted": False,
    }
    row.update(over)
    return row


def load_paper_rows() -> pd.DataFrame:
    """One row per (table, setting, method, metric), in the paper's row order.

    Columns: table, figure, task, source, target, setting, model, method, metric, direction,
    mean, std, mean_str, std_str (the cells as printed), time, time_str, time_unit, memory_pct,
    params_str, params, quoted, order.
    Table 2's RMSE and AbsRel are Table 2's own printed numbers (``paper_table2.csv``), never
    rebuilt from Tables S2/S3 (the two disagree in a few cells); only its time, memory and
    parameter columns, which Table 2 does not print, come from S2/S3 (the same runs) so that
    its bubble plot has an x axis. The head-only baseline the paper quotes in its text is added
    to Tables S9 and S10 as a row with ``quoted=True`` (no std, time, memory or params).
    """
    rows = [_paper_row(r) for _, r in _read_csv(RESULTS_CSV).iterrows()]
    by_key = {(row["table"], row["source"], row["target"], row["method"]): row for row in rows}
    s_table = {(row["source"], row["target"]): row["table"] for row in rows if row["table"] in ("S2", "S3")}
    table2 = []
    for _, r in _read_csv(TABLE2_CSV).iterrows():
        cost = by_key[(s_table[(r["source"], r["target"])], r["source"], r["target"], r["method"])]
        table2.append(
            _paper_row(
                r, table="2", figure=None, direction="min", time=cost["time"], time_str=cost["time_str"],
                time_unit=cost["time_unit"],
                memory_pct=cost["memory_pct"], params_str=cost["params_str"], params=cost["params"],
            )
        )
    # Table 2 in the paper's layout: setting by setting, RMSE rows then AbsRel rows, methods in its order
    table2.sort(key=lambda r: (r["setting"] != "KITTI → NYU", r["metric"] != "rmse"))
    rows = _with_head_baseline(rows)
    out = pd.DataFrame(table2 + rows)
    out["order"] = range(len(out))
    return out


def _with_head_baseline(rows: list[dict]) -> list[dict]:
    """Tables S9 / S10 plus the head-only row the paper quotes in its text, first in each."""
    out = []
    for table, value in HEAD_BASELINE.items():
        template = next(r for r in rows if r["table"] == table)
        out.append(
            dict(
                template, method="head", mean=value, std=math.nan, mean_str=f"{value:g}", std_str="",
                time=math.nan, time_str="", memory_pct=math.nan, params_str="", params=None, quoted=True,
            )
        )
    firsts = {}
    for i, r in enumerate(rows):
        firsts.setdefault(r["table"], i)
    result = list(rows)
    for head in sorted(out, key=lambda h: -firsts[h["table"]]):
        result.insert(firsts[head["table"]], head)
    return result


#: the paper's inconsistencies no number in its tables shows (its text, captions and counts)
PAPER_TEXT_INCONSISTENCIES = (
    "The paper fine-tunes \"an ImageNet-21k pre-trained DiT-XL-2-256x256\" (Sec. 4.3); the public "
    "DiT-XL/2-256 checkpoint is trained on ImageNet-1k (its class table has 1,000 rows). We use the public "
    "one (docs/generation.md says what to set for a 21k checkpoint).",
    "Figure 10 / Table S11 is captioned KITTI → NYU, but its values are those of NYU → KITTI (Table S3): "
    "matched here as NYU → KITTI.",
    "DiffFit's parameter count is d + norms for Depth Anything (321.54K) but 2d + norms for ViT-Base "
    "(817.15K = 4 x 204,288) and LLaMA (with a vector on lm_head, 1.66M / 2.58M, which 1LoRA's and BitFit's "
    "counts exclude): reproduced as per-model method_overrides.",
    "The ViT-Base parameter counts (Tables S9, S10, S12) are 4x one model's (likely summed over 4 "
    "data-parallel ranks); ours are one model's ('yes (x4)' in the params-match column).",
)


def _printed(value: str) -> tuple[Decimal, int] | None:
    try:
        number = Decimal(str(value).strip().lstrip("±"))
    except InvalidOperation:
        return None
    return number, max(0, -int(number.as_tuple().exponent))


def _differ(a: str, b: str) -> bool:
    """Two printings of one number differ: unequal at the coarser of their precisions."""
    pa, pb = _printed(a), _printed(b)
    if pa is None or pb is None:
        return False
    places = Decimal(1).scaleb(-min(pa[1], pb[1]))
    return pa[0].quantize(places) != pb[0].quantize(places)


def paper_inconsistencies(rows: pd.DataFrame | None = None) -> list[str]:
    """Where the paper prints one run's numbers twice and the two disagree (Table 2 vs S2/S3, S1 vs
    S2-S5, S9 vs S12, S11 vs S3, ...: the same model, setting, method and metric in two tables,
    unequal at the coarser printed precision), then :data:`PAPER_TEXT_INCONSISTENCIES`. Each table of ours shows
    its own paper table's numbers as printed, never one rebuilt from another."""
    rows = load_paper_rows() if rows is None else rows
    rows = rows[~rows["quoted"]]
    out = []
    for (_, setting, method, metric), group in rows.groupby(["model", "setting", "method", "metric"], sort=False):
        printed = list(group.itertuples())
        for i, a in enumerate(printed):
            for b in printed[i + 1:]:
                what = [f"{name} {x} vs {y}" for name, x, y in (("mean", a.mean_str, b.mean_str), ("std", a.std_str, b.std_str))
                        if x and y and _differ(x, y)]
                if what:
                    out.append(f"{method_label(method)} {setting} {METRIC_LABELS.get(metric, metric)}: Table {a.table} "
                               f"prints {a.mean_str} ± {a.std_str}, Table {b.table} {b.mean_str} ± {b.std_str} "
                               f"({'; '.join(what)}).")
    return out + list(PAPER_TEXT_INCONSISTENCIES)


def paper_tables(rows: pd.DataFrame | None = None) -> list[tuple[TableSpec, pd.DataFrame]]:
    """Every paper table with its rows (``load_paper_rows()`` unless given), in ``TABLE_ORDER``."""
    rows = load_paper_rows() if rows is None else rows
    return [(TABLES[t], rows[rows["table"] == t].reset_index(drop=True)) for t in TABLE_ORDER]
