"""``README.md`` of the report folder: the page a reader starts from (any Git host renders it).

It lists every table and figure in the folder with one line each and embeds the key pictures
(the bubble plots of our runs, the methods' depth maps, sample grids and loss curves, the
analyses). It is written from the folder's contents alone, so whichever command wrote last
(``python -m onelora.reporting``, ``python -m onelora.analysis``) leaves it complete; a table's
line takes the title of its Markdown file.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

INDEX_NAME = "README.md"


@dataclass(frozen=True)
class Kind:
    """A kind of file in the report folder: how to recognise it, where it is listed, what it is."""

    pattern: str  # a regex on the file's stem
    section: str
    description: str  # "{title}" is the stem's Markdown title (else the stem), "{name}" the part after the prefix
    heading: str = ""  # a key picture's heading (the same fields); "": not a key picture


SECTIONS = ("Overview", "Our runs without a paper counterpart", "What the methods produce", "The paper's tables",
            "Analyses", "Benchmarks", "Other files")
KINDS = (
    Kind(r"summary", "Overview", "what we have for every paper table, where we agree with the paper, how the "
                                 "methods rank (start here for the numbers)"),
    Kind(r"paper_comparison", "Overview", "every paper row with our mean beside it, one CSV for machines"),
    Kind(r"table_S1_ours", "The paper's tables", "{title}, wherever we ran both"),
    Kind(r"table_(?P<name>.+)", "The paper's tables", "{title}: ours beside the paper's rows, with its bubble plot",
         "{title}"),
    Kind(r"ours_(?P<name>.+)", "Our runs without a paper counterpart",
         "{title}: mean ± std over seeds, time to best, memory, parameters; bubble plot (area ∝ parameters)",
         "{title}"),
    Kind(r"depth_examples_(?P<name>.+)", "What the methods produce",
         "depth ({name}): each method's prediction and absolute error on the same test images, RMSE / AbsRel in "
         "the titles", "Depth: {name}"),
    Kind(r"samples_(?P<name>.+)", "What the methods produce",
         "generation ({name}): each method's samples for the same class labels and noise, FID under each",
         "Generation: {name}"),
    Kind(r"loss_curves_(?P<name>.+)", "What the methods produce",
         "language ({name}): training and validation loss of every method, mean over seeds", "Language: {name}"),
    Kind(r"answers_(?P<name>.+)", "What the methods produce",
         "language ({name}): the methods' answers to the same held-out problems beside the reference"),
    Kind(r"pca_alignment_(?P<name>.+)", "Analyses",
         "{title} on {name}: how the compression vectors align with full fine-tuning's update directions",
         "{title} on {name}"),
    Kind(r"calibration_(?P<name>.+)", "Analyses", "{title} on {name}: error distribution and reliability diagrams",
         "{title} on {name}"),
    Kind(r"memory_(?P<name>.+)", "Analyses", "{title}"),
    Kind(r"bench(?P<name>.*)", "Benchmarks", "speed and memory of every method side by side with peft"),
)
#: the sections of the key pictures, in order, and their headings
KEY_SECTIONS = {
    "Our runs without a paper counterpart": "The methods compared: metric, time to best, parameters, memory",
    "What the methods produce": "What the methods produce, side by side",
    "The paper's tables": "The paper's tables we have runs for",
    "Analyses": "Analyses",
}
#: how a table's files are shown, in order
EXTENSIONS = ("md", "csv", "png", "json")


def _title(folder: Path, stem: str) -> str:
    """The first Markdown heading of ``<stem>.md`` (without '#'), else the stem."""
    path = folder / f"{stem}.md"
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return stem


def _has_runs(folder: Path, stem: str) -> bool:
    """Whether a paper table's CSV has a row with our runs (its plot is then worth a look)."""
    path = folder / f"{stem}.csv"
    if not path.is_file():
        return False
    with open(path, newline="") as handle:
        return any(row.get("status") == "ok" for row in csv.DictReader(handle))


def _kind(stem: str) -> tuple[int, Kind | None, str]:
    """(its place in :data:`KINDS`, the kind, the name after the prefix) of a file's stem."""
    for place, kind in enumerate(KINDS):
        match = re.fullmatch(kind.pattern, stem)
        if match:
            return place, kind, (match.groupdict().get("name") or stem)
    return len(KINDS), None, stem


def _order(stem: str) -> tuple:
    """Paper tables in their order (2, S1, ..., S12), everything else by name."""
    match = re.fullmatch(r"table_(S?)(\d+)(.*)", stem)
    return (0, match.group(1), int(match.group(2)), match.group(3)) if match else (1, stem)


def index_markdown(folder: str | Path) -> str:
    folder = Path(folder)
    stems: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != INDEX_NAME and not path.name.startswith("."):
            stems.setdefault(path.stem, []).append(path.suffix.lstrip("."))
    listed: dict[str, list[str]] = {s: [] for s in SECTIONS}
    key: list[tuple[int, str, str, str]] = []  # (kind's place, stem, heading, caption)
    overview = {i for i, k in enumerate(KINDS) if k.section == "Overview"}
    for stem in sorted(stems, key=lambda st: (_kind(st)[0] if _kind(st)[0] in overview else -1, _order(st))):
        place, kind, name = _kind(stem)
        title = _title(folder, stem)
        exts = sorted(stems[stem], key=lambda e: (EXTENSIONS.index(e) if e in EXTENSIONS else len(EXTENSIONS), e))
        links = " · ".join(f"[{stem}.{e}]({stem}.{e})" for e in exts)
        description = (kind.description if kind else "{title}").format(title=title, name=name)
        listed[kind.section if kind else "Other files"].append(f"- {links}: {description}")
        shown = kind is not None and kind.heading and (not stem.startswith("table_") or _has_runs(folder, stem))
        if "png" in stems[stem] and shown:  # a paper table's plot only once we have runs in it
            heading = kind.heading.format(title=re.sub(r"^Ours only: ", "", title), name=name)
            caption = description.removeprefix(title + ": ")
            key.append((place, stem, heading, f"{caption[:1].upper()}{caption[1:]} ({links})"))
    lines = [
        "# Reports",
        "",
        "What the report commands wrote here (`make reproduce-mini` runs every family's laptop transfer, then "
        "`python -m onelora.reporting` and `make analysis`; `make reproduce-tables` rebuilds the tables and "
        "pictures from the runs' files). Start with the pictures below, then [summary.md](summary.md) for the "
        "numbers; every file is listed after them.",
        "",
    ]
    if key:
        lines += ["## Key pictures", ""]
        for section in KEY_SECTIONS:
            shown = sorted((k for k in key if KINDS[k[0]].section == section), key=lambda k: k[0])
            if shown:
                lines += [f"### {KEY_SECTIONS[section]}", ""]
            for _, stem, heading, caption in shown:  # stable: by name within a kind
                lines += [f"#### {heading}", "", f"{caption}.", "", f"![{heading}]({stem}.png)", ""]
    lines += ["## Every table and figure", ""]
    for section in SECTIONS:
        if listed[section]:
            lines += [f"### {section}", "", *listed[section], ""]
    return "\n".join(lines)


def write_index(folder: str | Path) -> Path:
    """(Re)write ``<folder>/README.md`` from what the folder holds now."""
    path = Path(folder) / INDEX_NAME
    path.write_text(index_markdown(folder))
    return path
