"""Wall-clock timing: warm-up, then rounds in interleaved order (A B C ... A B C ...), medians.

Drift (other jobs on a shared machine, thermal state, a neighbour's burst) then hits every method
alike; the median of each method's rounds is its time, and the ratios of medians taken from the
same rounds are what the report compares.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) one call of ``fn`` takes, device work included.

    The process CPU time (all threads) is a second view for shared CPUs: other jobs stretch the
    wall clock of a step far more than the CPU time it consumes."""
    synchronize(device)
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    rounds: int,
    device: torch.device,
    budget_s: float | None = None,
    min_rounds: int = 2,
) -> tuple[list[list[float]], list[list[float]]]:
    """``rounds`` rounds, each calling every fn once in order; per-fn lists of wall and CPU seconds.

    With ``budget_s``, stops early (after at least ``min_rounds`` complete rounds) once the time
    spent would exceed the budget, so a loaded machine still finishes on time.
    """
    times: list[list[float]] = [[] for _ in fns]
    cpu_times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    for r in range(rounds):
        for i, fn in enumerate(fns):
            wall, cpu = timed(fn, device)
            times[i].append(wall)
            cpu_times[i].append(cpu)
        spent = time.perf_counter() - start
        if budget_s is not None and r + 1 >= min_rounds and spent * (r + 2) / (r + 1) > budget_s:
            break
    return times, cpu_times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[r] / b[r]: the ratio within each round, where drift cancels."""
    pairs = [x / y for x, y in zip(a, b) if y > 0]
    return statistics.median(pairs) if pairs else float("nan")
