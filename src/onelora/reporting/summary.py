"""``summary.md``: per paper table, what we have, where we agree with the paper, how we rank.

Only statements that follow from the numbers in the tables: counts, the agreement rule's
verdicts, and rank correlations; nothing is claimed for rows we have no runs for.
"""

from __future__ import annotations

from onelora.reporting import stats
from onelora.reporting.paper import paper_inconsistencies
from onelora.reporting.tables import TableResult
from onelora.reporting.writing import fmt_num, markdown_table


def _ranking(rows: list[dict], key: str, direction: str) -> list[str]:
    """Method names, best first."""
    ordered = sorted(rows, key=lambda r: r[key], reverse=direction != "min")
    return [r["label"] for r in ordered]


def ranking_lines(rows: list[dict]) -> list[str]:
    """Per (setting, metric): our ranking vs the paper's over methods we have, and Spearman's rho."""
    lines = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["metric"]), []).append(r)
    for (setting, metric), group in groups.items():
        have = [r for r in group if r["ours_mean"] is not None and r["paper_mean"] is not None]
        if not have:
            continue
        direction = group[0]["direction"]
        where = f"{setting}, {metric}"
        ours_rank = " > ".join(_ranking(have, "ours_mean", direction))
        paper_rank = " > ".join(_ranking(have, "paper_mean", direction))
        if len(have) >= 3:
            rho = stats.spearman([r["ours_mean"] for r in have], [r["paper_mean"] for r in have])
            corr = "undefined (ties)" if rho is None else f"{rho:+.2f}"
            tail = f"Spearman ρ = {corr} over {len(have)} methods."
        else:
            tail = f"Only {len(have)} method(s) with runs: no rank correlation."
        lines.append(f"- Ranking ({where}; best first): ours {ours_rank}; paper {paper_rank}. {tail}")
    return lines


def _verdict_line(r: dict) -> str:
    dec = r["mean_decimals"]
    sigma = "" if r["diff_in_paper_std"] is None else f", {r['diff_in_paper_std']:+.1f} paper std"
    where = f"{r['setting']} " if r["setting"] else ""
    return (
        f"{where}{r['label']} {r['metric']}: ours {fmt_num(r['ours_mean'], dec)} (n={r['ours_n']}) vs paper "
        f"{r['paper_mean_str']}, diff {r['diff']:+.3g}{sigma}, tolerance {r['tolerance']:.3g}"
    )


def table_section(table: TableResult, files: list[str]) -> list[str]:
    rows = table.rows
    have = [r for r in rows if r["status"] == "ok"]
    missing = [r for r in rows if r["status"] != "ok"]
    agree = [r for r in have if r["agreement"] == stats.AGREE]
    better = [r for r in have if r["agreement"] == stats.BETTER]
    worse = [r for r in have if r["agreement"] == stats.WORSE]
    out = [f"## {table.title}", ""]
    out.append(f"- Files: {', '.join(files)}.")
    out.append(f"- Paper rows: {len(rows)}; with our runs: {len(have)}; missing: {len(missing)}.")
    if not have:
        out.append("- No runs yet: nothing to compare.")
    if agree:
        out.append(f"- Agrees with the paper ({len(agree)}):")
        out += [f"  - {_verdict_line(r)}" for r in agree]
    if better or worse:
        out.append(f"- Disagrees with the paper ({len(better) + len(worse)}):")
        out += [f"  - {_verdict_line(r)} (ours {r['agreement']})" for r in better + worse]
    matched = [r for r in have if r["params_match"] != "n/a"]
    if matched:
        mismatched = [r for r in matched if r["params_match"] == "no"]
        x4 = sum(r["params_match"] == "yes (x4)" for r in matched)
        line = f"- Parameter counts as printed: {len(matched) - len(mismatched)} of {len(matched)} match"
        if x4:
            line += f" ({x4} of them as 4x ours, the paper's data-parallel sum)"
        if mismatched:
            line += "; differ: " + ", ".join(
                f"{r['label']} (ours {r['ours_params_str']} vs paper {r['paper_params_str']})" for r in mismatched
            )
        out.append(line + ".")
    if table.problems:
        out.append(f"- Runs not averaged: {_problem_counts(table)} (listed in {table.slug}.md).")
    out += ranking_lines(rows)
    out.append("")
    return out


def _problem_counts(table: TableResult) -> str:
    """"1 failed, 2 completed, metric not finite (nan)": the runs a table could not average, by reason."""
    counts: dict[str, int] = {}
    for p in table.problems:
        counts[p.reason] = counts.get(p.reason, 0) + 1
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))


def overview(paper_tables: list[TableResult]) -> str:
    body = []
    for t in paper_tables:
        have = [r for r in t.rows if r["status"] == "ok"]
        body.append([
            t.spec.name if t.spec else t.title,
            len(t.rows),
            len(have),
            sum(r["agreement"] == stats.AGREE for r in have),
            sum(r["agreement"] in (stats.BETTER, stats.WORSE) for r in have),
            len(t.rows) - len(have),
            len(t.problems),
        ])
    return markdown_table(
        ["table", "paper rows", "with runs", "agree", "disagree", "missing", "runs not averaged"], body
    )


def write_summary(
    paper_tables: list[TableResult],
    ours_tables: list[TableResult],
    files: dict[str, list[str]],
    n_records: int,
    source: str,
    s1: TableResult | None = None,
) -> str:
    """The text of ``summary.md``; ``files`` maps a table slug to the files written for it;
    ``s1`` is our Table S1 (1LoRA vs random compression), summarised at the end."""
    lines = [
        "# 1LoRA reproduction: our runs vs the paper",
        "",
        f"Source: {source}; records read: {n_records}.",
        "",
        "Ours: the test metric of the best validation round's weights (metric.test), mean over completed "
        "seeds with a finite value; failed, running, interrupted and non-finite runs are never averaged, "
        "only counted and listed. Agreement rule: ours agrees with "
        f"the paper when |ours − paper| ≤ max({stats.N_STD:g} × the paper's std, {stats.REL_TOL:.0%} of the "
        "paper's value, half a unit of the paper's last printed digit). The relative floor is there because "
        "the paper's stds over 4 seeds are often far below any hardware/library difference; the printing "
        "floor because the paper rounds some values (val_loss 0.17). Otherwise the row is 'better' or "
        "'worse' than the paper in the metric's direction. Rankings compare methods that have our runs; "
        "Spearman's ρ is given when at least 3 do.",
        "",
        overview(paper_tables),
        "",
        *inconsistency_lines(),
    ]
    for t in paper_tables:
        lines += table_section(t, files.get(t.slug, []))
    lines += ["# Runs without a paper counterpart", ""]
    if not ours_tables:
        lines += ["None.", ""]
    for t in ours_tables:
        have = [r for r in t.rows if r["status"] == "ok"]
        n_runs = sum(r["ours_n"] for r in t.rows)
        lines.append(
            f"- {t.title}: {len(t.rows)} method row(s), {len(have)} with completed runs ({n_runs} runs); "
            f"runs not averaged: {len(t.problems)}{' (' + _problem_counts(t) + ')' if t.problems else ''}. "
            f"Files: {', '.join(files.get(t.slug, []))}."
        )
    lines.append("")
    if s1 is not None:
        lines += ["# Table S1 of ours: 1LoRA vs a random compression vector (table_S1_ours.md)", ""]
        lines += [s1_line(r) for r in s1.rows] or ["No onelora_random runs yet.", ""]
        lines.append("")
    return "\n".join(lines)


def inconsistency_lines() -> list[str]:
    """The paper's own inconsistencies, so that a reader comparing its tables is not surprised."""
    return [
        "## The paper's own inconsistencies",
        "",
        "Where the paper prints the same runs in two tables with different numbers, and what its text says "
        "that its tables or the public code do not bear out. Each of our tables sets ours beside that "
        "table's own printed numbers, never beside numbers rebuilt from another table.",
        "",
        *[f"- {line}" for line in paper_inconsistencies()],
        "",
    ]


def s1_line(r: dict) -> str:
    """One setting of our Table S1: which compression scored better, by how much, and the paper's."""
    dec = r["mean_decimals"]
    ours = ("no 1LoRA runs" if r["ours_diff"] is None else
            f"1LoRA {fmt_num(r['ours_onelora_mean'], dec)} (n={r['ours_onelora_n']}) vs random "
            f"{fmt_num(r['ours_random_mean'], dec)} (n={r['ours_random_n']}), random − 1LoRA {r['ours_diff']:+.{dec}f}")
    paper = "no paper row" if r["paper_diff"] is None else f"paper random − 1LoRA {r['paper_diff']:+.{dec}f}"
    return f"- {r['setting']} ({r['task']}, {r['model']}, {r['metric']}): {ours}; {paper}."
