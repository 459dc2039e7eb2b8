"""Small statistics the report needs: mean ± std over seeds, the agreement rule, Spearman's rho.

Kept apart from the tables so the rule that decides "agrees with the paper" is stated once
and tested on its own.
"""

from __future__ import annotations

import math
from typing import Sequence

#: ours agrees with the paper if |ours - paper| <= max(N_STD * paper std, REL_TOL * |paper|,
#: half a unit in the last digit the paper printed). The paper's stds over 4 seeds are often
#: tiny (0.0005 RMSE) and do not cover hardware/library differences, hence the relative floor;
#: the printing floor covers values the paper rounded (val_loss "0.17").
N_STD = 2.0
REL_TOL = 0.01

AGREE = "agrees"
BETTER = "better"  # disagrees, ours better than the paper
WORSE = "worse"  # disagrees, ours worse than the paper


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 or None when n < 2, n)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = math.fsum(vals) / n
    if n < 2:
        return mean, None, n
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, math.sqrt(var), n


def _nan(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def tolerance(paper_mean: float, paper_std: float | None, printed_decimals: int | None) -> float:
    """The agreement tolerance for one paper value (see ``N_STD``/``REL_TOL``)."""
    tol = REL_TOL * abs(paper_mean)
    if not _nan(paper_std):
        tol = max(tol, N_STD * float(paper_std))
    if printed_decimals is not None:
        tol = max(tol, 0.5 * 10.0 ** (-printed_decimals))
    return tol


def agreement(
    ours: float | None,
    paper_mean: float | None,
    paper_std: float | None,
    printed_decimals: int | None,
    direction: str,
) -> str | None:
    """``AGREE``, ``BETTER`` or ``WORSE`` (ours vs the paper); None when either is missing."""
    if _nan(ours) or _nan(paper_mean):
        return None
    diff = float(ours) - float(paper_mean)
    if abs(diff) <= tolerance(float(paper_mean), paper_std, printed_decimals) + 1e-12:
        return AGREE
    higher_is_better = direction != "min"
    return BETTER if (diff > 0) == higher_is_better else WORSE


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson on average ranks); None if n < 3 or a side is constant."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = _ranks(list(x)), _ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)
