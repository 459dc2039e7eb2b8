"""The report's pictures of what the runs produced, built from the files each run saved beside its
``results.json`` (file source only: wandb records have no run folder here).

Per (task, model) of our runs, with one run per method (its lowest seed with the file; a tagged
variant is a method of its own), in the tables' method order:

- depth: ``depth_examples_<task>_<model>.png``, the methods' predictions and errors side by side
  on the same test images (:mod:`onelora.figures.depth_maps`), each titled with that run's test
  RMSE / AbsRel;
- generation: ``samples_<task>_<model>.png``, the methods' sample grids for the same class labels
  and noise (:mod:`onelora.figures.samples`), each with its test FID;
- language: ``answers_<task>_<model>.md``, the methods' answers to the same held-out problems
  beside the reference (:mod:`onelora.reporting.answers`), and ``loss_curves_<task>_<model>.png``,
  their training and validation losses (:mod:`onelora.reporting.curves`, every seed).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from matplotlib.figure import Figure

from onelora.reporting.records import Run
from onelora.reporting.tables import method_rank, slug_of

LANGUAGE_FAMILIES = ("language",)  # record["family"] values whose runs get answers and loss curves


def run_dir(run: Run) -> Path | None:
    """The folder a run saved its files in: where its ``results.json`` was read (else the record's
    ``run_dir``); None when neither exists here."""
    for candidate in (run.record.get("_path"), run.record.get("run_dir")):
        if candidate:
            path = Path(candidate)
            path = path.parent if path.name.endswith(".json") else path
            if path.is_dir():
                return path
    return None


def _method_key(run: Run) -> str:
    return run.method + (f" [{run.run_tag}]" if run.run_tag else "")


def _seed_order(run: Run) -> tuple[int, str]:
    seed = run.seed
    return (int(seed) if isinstance(seed, (int, float)) else 1 << 30, str(seed))


def groups_with(runs: Iterable[Run], filename: str, all_seeds: bool = False) -> dict[tuple[str, str], list[list[Run]]]:
    """(task, model) -> per method, in the tables' order, its completed runs that saved
    ``filename`` (their lowest seed first; only that one unless ``all_seeds``)."""
    by_group: dict[tuple[str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        folder = run_dir(run) if run.completed else None
        if folder is not None and (folder / filename).exists():
            by_group[(run.task or "none", run.model or "none")][_method_key(run)].append(run)
    out = {}
    for group, methods in sorted(by_group.items()):
        ordered = [sorted(methods[m], key=_seed_order) for m in sorted(methods, key=method_rank)]
        out[group] = ordered if all_seeds else [rs[:1] for rs in ordered]
    return out


def _name(prefix: str, group: tuple[str, str], ext: str) -> str:
    return f"{prefix}_{slug_of(f'{group[0]}_{group[1]}')}.{ext}"


def _seeds_note(runs: list[Run]) -> str:
    seeds = sorted({str(r.seed) for r in runs})
    return f"seed {seeds[0]} of each method" if len(seeds) == 1 else "one seed per method (in its title)"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def depth_comparisons(runs: Iterable[Run]) -> Iterator[tuple[str, Figure]]:
    from onelora.figures.depth_maps import EXAMPLES_FILE, comparison_figure, load_examples

    for group, methods in groups_with(runs, EXAMPLES_FILE).items():
        shown = [rs[0] for rs in methods]
        exs = [load_examples(run_dir(r) / EXAMPLES_FILE) for r in shown]
        keep = [i for i, ex in enumerate(exs) if np.array_equal(ex["indices"], exs[0]["indices"])]
        shown, exs = [shown[i] for i in keep], [exs[i] for i in keep]
        mixed = len({str(r.seed) for r in shown}) > 1
        columns = [(f"{r.label}{f' (seed {r.seed})' if mixed else ''}\n"
                    f"RMSE {_fmt(r.value('rmse'), '.3f')} · AbsRel {_fmt(r.value('absrel'), '.4f')}", ex)
                   for r, ex in zip(shown, exs)]
        title = (f"{shown[0].setting or group[0]} ({group[0]} · {group[1]}): each method's prediction and |error| on "
                 f"the same test images, {_seeds_note(shown)}\n"
                 "titles: that run's test RMSE (m) / AbsRel over the whole test set (best validation round's weights)")
        yield _name("depth_examples", group, "png"), comparison_figure(columns, title)


def sample_comparisons(runs: Iterable[Run]) -> Iterator[tuple[str, Figure]]:
    from onelora.figures.samples import SAMPLES_FILE, comparison_figure, load_samples

    for group, methods in groups_with(runs, SAMPLES_FILE).items():
        shown = [rs[0] for rs in methods]
        samples = [load_samples(run_dir(r) / SAMPLES_FILE) for r in shown]
        same = all(s["seed"] == samples[0]["seed"] and np.array_equal(s["labels"], samples[0]["labels"])
                   for s in samples)
        noise = (f"the same class labels and noise (sample seed {samples[0]['seed']}): the grids differ only by "
                 "the method" if same else "NOT the same labels or noise (sample seeds "
                 f"{sorted({s['seed'] for s in samples})}): the grids are not comparable image by image")
        panels = [(r.label, f"test FID {_fmt(r.value('fid'), '.2f')} (seed {r.seed})", s)
                  for r, s in zip(shown, samples)]
        title = (f"{shown[0].setting or group[0]} ({group[0]} · {group[1]}): one row per class label, "
                 f"{noise}\nbest validation round's weights (EMA); FID under each grid")
        side = samples[0]["images"].shape[1]
        cut = 8 if side <= 32 else 4  # large images (DiT-XL's 256 px): fewer, so each stays visible
        yield _name("samples", group, "png"), comparison_figure(panels, title, rows=cut, columns=cut)


def language_pictures(runs: Iterable[Run]) -> Iterator[tuple[str, Figure | str]]:
    from onelora.reporting.answers import SIDE_BY_SIDE_FILE, answers_markdown, load_answers
    from onelora.reporting.curves import loss_curves_figure

    runs = [r for r in runs if r.record.get("family") in LANGUAGE_FAMILIES]
    for group, methods in groups_with(runs, SIDE_BY_SIDE_FILE).items():
        shown = [rs[0] for rs in methods]
        title = (f"Answers to the same held-out problems: {shown[0].setting or group[0]} ({group[0]} · {group[1]}), "
                 f"{_seeds_note(shown)}, best validation round's weights")
        yield _name("answers", group, "md"), answers_markdown([(r.label, load_answers(run_dir(r))) for r in shown],
                                                               title)
    for group, methods in groups_with(runs, "logs", all_seeds=True).items():
        first = methods[0][0]
        val_key = str((first.record.get("metric") or {}).get("val_key") or "val/loss")
        curves = [(rs[0].method, rs[0].label, [run_dir(r) for r in rs]) for rs in methods]
        title = f"Loss curves: {first.setting or group[0]} ({group[0]} · {group[1]})"
        yield _name("loss_curves", group, "png"), loss_curves_figure(
            curves, title, val_key=val_key, val_name=f"validation {val_key.split('/')[-1]}")


#: every picture builder, in the order the report runs them: each yields (file name, figure or Markdown)
BUILDERS: tuple[Callable[[Iterable[Run]], Iterator[tuple[str, Figure | str]]], ...] = (
    depth_comparisons, sample_comparisons, language_pictures)


def write_gallery(runs: list[Run], out: str | Path) -> list[Path]:
    """Every picture above that the runs' saved files allow, in ``out``."""
    from onelora.figures.figtools import save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for build in BUILDERS:
        for name, content in build(runs):
            if isinstance(content, str):
                (out / name).write_text(content)
                written.append(out / name)
            else:
                written.append(save_figure(content, out / name))
    return written
