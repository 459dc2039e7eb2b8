"""The methods' answers to the same held-out math problems, beside the reference (Markdown).

Each language run writes ``side_by_side.json`` (``LanguageModule.artifacts``: the same problems for
every run of a task, drawn with ``side_by_side_seed`` from the fixed validation split) with the best
round's weights; this puts several runs' answers into one table: per problem the reference's final
answer and each method's (✓ when it matches), then every full solution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

SIDE_BY_SIDE_FILE = "side_by_side.json"
PROBLEMS = 5  # problems in the table


def _cell(text: Any) -> str:
    return str(text if text is not None else "").strip().replace("|", "\\|").replace("\n", "<br>")


def load_answers(run_dir: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(run_dir) / SIDE_BY_SIDE_FILE).read_text())


def answers_markdown(methods: Sequence[tuple[str, list[dict[str, Any]]]], title: str, problems: int = PROBLEMS) -> str:
    """``methods``: (column label, that run's side-by-side rows). The problems are the first run's
    that every run answered, in its order, at most ``problems``."""
    queries = [row["query"] for row in methods[0][1]]
    answered = [{row["query"]: row for row in rows} for _, rows in methods]
    common = [q for q in queries if all(q in by_query for by_query in answered)][:problems]
    reference = {row["query"]: row for row in methods[0][1]}
    lines = [f"# {title}", ""]
    if not common:
        return "\n".join(lines + ["No problem was answered by every run.", ""])
    header = ["#", "problem", "reference", *[label for label, _ in methods]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, query in enumerate(common, 1):
        cells = [str(i), _cell(query), f"**{_cell(reference[query]['reference_answer'])}**"]
        for by_query in answered:
            row = by_query[query]
            cells.append(f"{_cell(row['generated_answer']) or '(none)'} {'✓' if row['correct'] else '✗'}")
        lines.append("| " + " | ".join(cells) + " |")
    correct = [sum(bool(by_query[q]["correct"]) for q in common) for by_query in answered]
    lines += ["| | correct | | " + " | ".join(f"{c} of {len(common)}" for c in correct) + " |", ""]
    lines += ["Each method's final answer (the number after \"The answer is:\"; \"(none)\" when it gave no "
              "such line), ✓ when it equals the reference's. The full solutions follow.", ""]
    for i, query in enumerate(common, 1):
        lines += [f"## Problem {i}", "", f"> {_cell(query)}", "", "| | solution |", "|---|---|",
                  f"| reference | {_cell(reference[query]['reference'])} |"]
        lines += [f"| {label} | {_cell(by_query[query]['generated'])} |" for (label, _), by_query in zip(methods, answered)]
        lines.append("")
    return "\n".join(lines)
