"""The paper's grids planned (``make plan``: reports/plan.md and .json) and its memory claims checked.

Every grid of the paper (Table 2, S1-S12; ``experiments/``) is planned run by run, composed as
``python run.py -m experiment=<grid> mode=plan`` would compose it, on the trainer its launch command
names (vision and DiT: ``trainer=gpu``, bf16-mixed; LLaMA: ``trainer=deepspeed``, ZeRO-2 as MoRA
trained). Seeds change nothing a plan sees, so each (task, method) is traced once and counted once per
seed. Records are cached under ``<cache>/plan/`` by a key of the composed config, the library
versions and onelora's source, so a second ``make plan`` only reads them.

The paper's memory claims: Tables S2-S12 give each run's GPU memory as a % of a 40 GB A100
(``results.csv``'s ``memory_pct``); each row is set beside the plan of the same run, with what
separates them. The text's claim that for LLaMA-2 13B only 1LoRA, BitFit, DiffFit and LoRA-QKV fit
2 samples per GPU is checked on MoRA's recipe (no activation checkpointing, ZeRO-2, bf16; LoRA-family
dropout 0.05 as a variant).
"""

from __future__ import annotations

import csv
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import GIB

ROOT = Path(__file__).resolve().parents[3]
CONF = ROOT / "conf"
#: the paper's grids, in the order of its tables: (label, experiment)
GRIDS = (
    ("Table 2 / S2 / S3: depth, KITTI <-> NYU", "table2"),
    ("Table S1: 1LoRA vs a random compression vector", "table_s1"),
    ("Tables S4 / S5: depth -> DIODE outdoor", "fig2cd"),
    ("Table S6: LLaMA-2 7B on MetaMathQA", "table_s6"),
    ("Table S7: LLaMA-2 13B on MetaMathQA", "table_s7"),
    ("Table S8: DiT-XL/2 on Food-101", "fig5"),
    ("Table S9: ViT-B/16 on CIFAR-10", "fig6"),
    ("Table S10: ViT-B/16 on CIFAR-100", "fig7"),
    ("Table S11: 1LoRA's combinations, NYU -> KITTI", "fig10"),
    ("Table S12: 1LoRA's combinations, CIFAR-10", "fig8"),
)
#: the trainer each family's launch command names (README, docs/*.md)
TRAINERS = {"classification": "trainer=gpu", "depth": "trainer=gpu", "generation": "trainer=gpu",
            "language": "trainer=deepspeed"}
#: results.csv's tables -> the task that reproduces them
PAPER_TASKS = {"S2": "kitti_to_nyu", "S3": "nyu_to_kitti", "S4": "kitti_to_diode_outdoor", "S5": "nyu_to_diode_outdoor",
               "S6": "metamath", "S7": "metamath", "S8": "food101_generation", "S9": "cifar10", "S10": "cifar100",
               "S11": "nyu_to_kitti", "S12": "cifar10"}
PAPER_EXPERIMENT = {"S6": "table_s6", "S7": "table_s7"}
#: MoRA's recipe for LLaMA-2 (the paper's runs): no activation checkpointing
MORA = ("task.module.gradient_checkpointing=false", "task.method_options=null")  # our method configs, no dropout
MORA_DROPOUT = 0.05
#: the paper's text: at 13B with 2 samples per GPU only these fit a 40 GB A100
PAPER_FITS_13B = ("onelora", "bitfit", "difffit", "lora_qkv")
CLAIM_METHODS_13B = ("onelora", "bitfit", "difffit", "lora_qkv", "lora", "vera", "mora1", "mora6")
CARD = "a100_40gb"  # the paper's card


def method_file(name: str) -> str:
    """results.csv's method names -> conf/method file names (``onelora+bias+norms`` -> ``onelora_bias_norms``)."""
    return name.replace("+", "_")


# ------------------------------------------------------------------------------------------------
# composing and planning runs
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """One run to plan: the overrides that compose it, and how many seeds the grid runs it with."""

    grid: str
    task: str
    method: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]

    @property
    def key(self) -> tuple[str, ...]:
        return self.overrides


def grid_runs(experiment: str, conf: Path = CONF, extra: Sequence[str] = ()) -> list[RunSpec]:
    """The runs ``python run.py -m experiment=<experiment>`` sweeps, one per (task, method)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.load(conf / "experiment" / f"{experiment}.yaml")
    params = OmegaConf.to_container(raw.get("hydra", {}).get("sweeper", {}).get("params", {})) or {}
    default_task = next((list(d.values())[0] for d in raw.get("defaults", []) if isinstance(d, Mapping)
                         and "override /task" in d), None)
    split = lambda v: [s.strip() for s in str(v).split(",") if s.strip()]  # noqa: E731
    tasks = split(params.get("task", default_task))
    methods = split(params["method"])
    seeds = tuple(int(s) for s in split(params.get("seed", "0")))
    from ..settings import _declared

    out = []
    for task in tasks:
        family = _declared("task", task, "family")  # a named setting's recipe says it
        trainer = TRAINERS.get(family, "trainer=gpu")
        for method in methods:
            out.append(RunSpec(experiment, task, method, seeds,
                               (f"experiment={experiment}", f"task={task}", f"method={method}", trainer, *extra)))
    return out


def compose(overrides: Sequence[str], conf: Path = CONF) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import onelora  # noqa: F401  (the resolvers)

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose("config", overrides=["mode=plan", *overrides])


def run_plan(overrides: Sequence[str], cache_dir: str | None) -> Any:
    from ..settings import RunSettings
    from .core import RunPlan

    cfg = compose([*overrides, f"plan.cache_dir={cache_dir if cache_dir else 'null'}"])
    return RunPlan.from_settings(RunSettings.from_config(cfg))


def _record_or_key(job: tuple[tuple[str, ...], str | None]) -> tuple[str, Any]:
    """("record", record) if the run's trace is known (this process or the cache), ("trace", key) if
    it must be traced, ("error", message) if the run cannot be planned."""
    import torch

    from .core import TRACES

    overrides, cache_dir = job
    torch.set_num_threads(1)
    try:
        run = run_plan(overrides, cache_dir)
        key = run.trace_key(run.micro_batch)
        if TRACES.get(key, cache_dir) is None:
            return "trace", key
        record = run.record(largest=False)
        record["overrides"] = list(overrides)
        return "record", record
    except Exception as err:  # one config's failure is reported, not fatal to the others
        return "error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _trace_one(job: tuple[tuple[str, ...], str | None]) -> tuple[str, dict[str, Any] | str]:
    import torch

    overrides, cache_dir = job
    torch.set_num_threads(1)
    try:
        run = run_plan(overrides, cache_dir)
        return run.trace_key(run.micro_batch), run.trace().to_dict()
    except Exception as err:
        return "", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _map(function, jobs_list, jobs):
    if jobs > 1 and len(jobs_list) > 1:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(function, jobs_list, chunksize=max(1, len(jobs_list) // (8 * jobs))))
    return [function(job) for job in jobs_list]


def plan_all(configs: Iterable[Sequence[str]], *, cache_dir: str | None, jobs: int = 1,
             log=print) -> dict[tuple[str, ...], Any]:
    """Records (or error strings) for every config, in ``jobs`` processes: composed and planned from
    known traces; each trace not known yet (this process, ``cache_dir``) is traced once, then those
    runs are planned."""
    from .core import TRACES, StepTrace

    started = time.time()
    configs = list(dict.fromkeys(tuple(c) for c in configs))
    out: dict[tuple[str, ...], Any] = {}
    waiting: dict[str, list[tuple[str, ...]]] = {}
    for overrides, (kind, value) in zip(configs, _map(_record_or_key, [(c, cache_dir) for c in configs], jobs)):
        if kind == "trace":
            waiting.setdefault(value, []).append(overrides)
        else:
            out[overrides] = value
    log(f"plan: {len(configs)} runs, {len(configs) - len(out)} waiting for {len(waiting)} traces "
        f"({jobs} process{'es' if jobs > 1 else ''})")
    tracing = [(group[0], cache_dir) for group in waiting.values()]
    for (key, result), (overrides, _) in zip(_map(_trace_one, tracing, jobs), tracing):
        if isinstance(result, dict):
            TRACES.put(key, StepTrace(**result), None)  # this process; the workers wrote the cache
        else:
            for other in next(g for g in waiting.values() if g[0] == overrides):
                out[other] = result
            log(f"plan: FAILED {' '.join(overrides)}: {result}")
    rest = [c for group in waiting.values() for c in group if c not in out]
    for overrides, (kind, value) in zip(rest, _map(_record_or_key, [(c, cache_dir) for c in rest], jobs)):
        out[overrides] = value if kind != "trace" else f"not traced: {value}"
    log(f"plan: {len(configs)} runs planned in {time.time() - started:.0f} s")
    return {c: out[c] for c in configs}


# ------------------------------------------------------------------------------------------------
# the paper's memory claims
# ------------------------------------------------------------------------------------------------

def paper_rows(path: Path | None = None) -> list[dict[str, str]]:
    """The rows of Tables S2-S12 that print a GPU memory (the package's copy of results.csv)."""
    from importlib import resources

    text = path.read_text() if path else (resources.files("onelora.data") / "paper_results.csv").read_text()
    return [row for row in csv.DictReader(text.splitlines()) if row.get("memory_pct")]


def claim_configs(row: Mapping[str, str], *, mora: bool = False) -> tuple[str, ...]:
    """The composed overrides of the run a results.csv row reports (our configs; ``mora``: MoRA's
    recipe for the LLaMA rows)."""
    table, task, method = row["table"], PAPER_TASKS[row["table"]], method_file(row["method"])
    experiment = PAPER_EXPERIMENT.get(table)
    family = "language" if task == "metamath" else None
    trainer = TRAINERS["language"] if family == "language" else TRAINERS["depth"]
    head = (f"experiment={experiment}",) if experiment else ()
    extra = MORA if mora and family == "language" else ()
    if experiment:
        return (*head, f"task={task}", f"method={method}", trainer, *extra)
    return (f"task={task}", f"method={method}", trainer, *extra)


def compare(paper_pct: float, planned_bytes: float, card_gib: float = 40.0, tolerance: float = 0.1) -> dict[str, Any]:
    """The paper's memory (a % of a ``card_gib`` card) beside the plan's per-GPU bytes: the gap in GiB
    and a verdict (agree: within ``tolerance`` of the paper's figure or 1 GiB; else plan lower /
    higher)."""
    paper = paper_pct / 100 * card_gib
    planned = planned_bytes / GIB
    gap = paper - planned
    agree = abs(gap) <= max(1.0, tolerance * paper)
    verdict = "agree" if agree else ("plan lower" if gap > 0 else "plan higher")
    return {"paper_pct": paper_pct, "paper_gib": round(paper, 2), "planned_gib": round(planned, 2),
            "planned_pct": round(100 * planned / card_gib, 1), "gap_gib": round(gap, 2), "verdict": verdict}


def fits_set(records: Mapping[str, Mapping[str, Any]], card: str = CARD) -> set[str]:
    return {method for method, r in records.items() if r["cards"][card]["fits"]}


def relative_reading(records: Mapping[str, Mapping[str, Any]], paper_base_pct: float, base: str = "onelora",
                     card_gib: float = 40.0) -> dict[str, float]:
    """Each method's planned excess over ``base``, added to the paper's own figure for ``base``: what
    the paper's accounting (whatever it includes beyond tensors) would show for the others (GiB)."""
    base_gib = records[base]["bytes"]["peak_per_gpu"] / GIB
    paper_base = paper_base_pct / 100 * card_gib
    return {m: round(paper_base + r["bytes"]["peak_per_gpu"] / GIB - base_gib, 2) for m, r in records.items()}
