"""Put the report together: records -> tables, plots and ``summary.md`` in one output folder.

The only entry point the CLI and tests need; it takes already loaded :class:`Run` objects so
the file and wandb sources share everything after loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onelora.reporting import paper as paper_mod
from onelora.reporting.gallery import write_gallery
from onelora.reporting.index import write_index
from onelora.reporting.plots import plot_table
from onelora.reporting.records import Run
from onelora.reporting.summary import write_summary
from onelora.reporting.tables import RunIndex, TableResult, build_ours_tables, build_paper_table, build_s1_table
from onelora.reporting.writing import PAPER_COLUMNS, write_csv, write_table


@dataclass
class Report:
    """What was built and where it went."""

    out: Path
    paper_tables: list[TableResult]
    ours_tables: list[TableResult]
    s1: TableResult | None = None
    files: list[Path] = field(default_factory=list)

    def table(self, table_id: str) -> TableResult:
        return next(t for t in self.paper_tables if t.spec and t.spec.id == table_id)


def build_report(runs: list[Run], out: str | Path, source: str = "files", plots: bool = True) -> Report:
    """Write every paper table, every ours-only table, our Table S1 (1LoRA vs random compression),
    the figures, the pictures of what the runs produced (from their saved files: depth maps,
    sample grids, answers, loss curves), ``summary.md`` and the folder's ``README.md`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = RunIndex(runs)
    paper_rows = paper_mod.load_paper_rows()
    paper_tables = [build_paper_table(spec, rows, index) for spec, rows in paper_mod.paper_tables(paper_rows)]
    ours_tables = build_ours_tables([r for r in runs if not index.matched(r)])
    s1 = build_s1_table(runs, paper_rows)

    report = Report(out, paper_tables, ours_tables, s1)
    report.files += write_table(s1, out)
    per_table: dict[str, list[str]] = {}
    for table in paper_tables + ours_tables:
        written = write_table(table, out)
        if plots:
            written.append(plot_table(table, out / f"{table.slug}.png"))
        per_table[table.slug] = [p.name for p in written]
        report.files += written
    all_rows = [r for t in paper_tables for r in t.rows]
    report.files.append(write_csv(all_rows, PAPER_COLUMNS, out / "paper_comparison.csv"))
    summary = out / "summary.md"
    summary.write_text(write_summary(paper_tables, ours_tables, per_table, len(runs), source, s1))
    report.files.append(summary)
    if plots:
        report.files += write_gallery(runs, out)
    report.files.append(write_index(out))
    return report
