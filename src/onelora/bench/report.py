"""The benchmark's outputs: ``bench.json`` (records), a Markdown report and PNG charts, and the
check of the issue's targets against the measured ratios."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MB = 1e6

# ------------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------------


def _find(records: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in records if r["key"] == key), None)


def _time_ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """(ratio of medians, median of per-round ratios) of a's step time to b's, same group."""
    from .timing import paired_ratio

    med = a["step_time_ms"] / b["step_time_ms"]
    return med, paired_ratio(a["step_times_ms"], b["step_times_ms"])


def _cpu_note(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a.get("device") != "cpu" or not b.get("cpu_time_ms"):
        return ""
    return f"process CPU time ratio {a['cpu_time_ms'] / b['cpu_time_ms']:.3f}"


def check_targets(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of issue 5 that this group's methods allow checking: value, limit, met."""
    out: list[dict[str, Any]] = []
    one, bit, lora = _find(group, "onelora"), _find(group, "bitfit"), _find(group, "lora")

    def add(
        name: str,
        value: float,
        limit: float,
        strict: bool = False,
        note: str = "",
        paired: float | None = None,
        applies: bool = True,
    ):
        met = value < limit if strict else value <= limit
        out.append(
            {
                "target": name,
                "value": value,
                "paired": paired,
                "limit": limit,
                "op": "<" if strict else "<=",
                "met": bool(met),
                "applies": applies,
                "note": note,
            }
        )

    if one and bit:
        add("1LoRA activation bytes / BitFit's", one["saved_bytes"] / bit["saved_bytes"], 1.01)
        med, paired = _time_ratio(one, bit)
        add("1LoRA step time / BitFit's", med, 1.05, paired=paired, note=_cpu_note(one, bit))
    if one and lora:
        vit_b = one["model"] == "vit_base"
        add(
            "1LoRA activation bytes / LoRA r=1's",
            one["saved_bytes"] / lora["saved_bytes"],
            0.65,
            note="" if vit_b else "a ViT-B target: informative on this model",
            applies=vit_b,
        )
        med, paired = _time_ratio(one, lora)
        add("1LoRA step time / our LoRA r=1's", med, 1.0, strict=True, paired=paired, note=_cpu_note(one, lora))
    for kind in ("lora", "vera", "dora"):
        ours, theirs = _find(group, kind), _find(group, f"peft_{kind}")
        if not (ours and theirs):
            continue
        name = {"lora": "LoRA", "vera": "VeRA", "dora": "DoRA"}[kind]
        med, paired = _time_ratio(ours, theirs)
        add(f"our {name} step time / peft's", med, 1.02, paired=paired, note=_cpu_note(ours, theirs))
        add(f"our {name} activation bytes / peft's", ours["saved_bytes"] / theirs["saved_bytes"], 1.02)
        add(f"our {name} peak memory / peft's", ours["peak_bytes"] / theirs["peak_bytes"], 1.02)
        if kind == "dora":
            add(f"our {name} activation bytes / peft's (<= half)", ours["saved_bytes"] / theirs["saved_bytes"], 0.5)
            if bit:
                extra = (ours["saved_bytes"] - bit["saved_bytes"]) / max(theirs["saved_bytes"] - bit["saved_bytes"], 1)
                add(
                    "our DoRA activation bytes above BitFit's / peft's above BitFit's",
                    extra,
                    0.5,
                    note="informative: the part each DoRA adds to BitFit's floor",
                    applies=False,
                )
    return out


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:,.1f}"


def variant_views(group: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(variant, records)`` for each variant in the group (eager first), the records' keys
    without the variant's suffix, so the targets read the compiled methods as the eager ones."""
    out = []
    for variant in ("eager", "compiled"):
        view = [dict(r, key=r["key"].removesuffix(f"@{variant}")) for r in group if r.get("variant", "eager") == variant]
        if view:
            out.append((variant, view))
    return out


def compiled_table(group: list[dict[str, Any]]) -> str:
    """Per method with a compiled variant: eager and compiled step time and activations."""
    eager = {r["key"]: r for r in group if r.get("variant", "eager") == "eager"}
    rows = []
    for r in group:
        if r.get("variant") != "compiled":
            continue
        e = eager.get(r["key"].removesuffix("@compiled"))
        if e is None:
            continue
        rows.append(
            f"| {e['label']} | {e['step_time_ms']:,.1f} | {r['step_time_ms']:,.1f} | {_fmt(r.get('step_time_ms_vs_eager'), 3)} "
            f"({_fmt(r.get('step_time_vs_eager_paired'), 3)}) | {_fmt(e.get('step_time_ms_vs_bitfit'), 3)} | "
            f"{_fmt(r.get('step_time_ms_vs_bitfit'), 3)} | {_mb(e['saved_bytes'])} | {_mb(r['saved_bytes'])} | "
            f"{_fmt(r.get('compile_s'), 1)} |"
        )
    if not rows:
        return ""
    return (
        "| method | eager ms | compiled ms | compiled / eager (paired) | eager x BitFit | compiled x compiled BitFit | "
        "eager saved MB | compiled saved MB | compile + first step s |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )


def groups_of(records: list[dict[str, Any]], kind: str) -> list[list[dict[str, Any]]]:
    seen: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("group") == kind:
            seen.setdefault((r["model"], r["batch"]), []).append(r)
    return list(seen.values())


def main_table(group: list[dict[str, Any]]) -> str:
    head = (
        "| method | impl | step ms | x frozen | x BitFit | x BitFit (paired) | CPU-time x BitFit | saved MB | x BitFit | "
        "trainable params | train+grad+optim MB | peak MB | x BitFit |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = []
    for r in group:
        tgo = r["trainable_bytes"] + r["grad_bytes"] + r["optimizer_bytes"]
        rows.append(
            f"| {r['label']} | {r['impl']} | {r['step_time_ms']:,.0f} | {_fmt(r.get('step_time_ms_vs_frozen'))} | "
            f"{_fmt(r.get('step_time_ms_vs_bitfit'))} | {_fmt(r.get('step_time_vs_bitfit_paired'))} | "
            f"{_fmt(r.get('cpu_time_ms_vs_bitfit')) if r.get('device') == 'cpu' else '-'} | "
            f"{_mb(r['saved_bytes'])} | {_fmt(r.get('saved_bytes_vs_bitfit'))} | {r['trainable_params']:,} | "
            f"{_mb(tgo)} | {_mb(r['peak_bytes'])} | {_fmt(r.get('peak_bytes_vs_bitfit'))} |"
        )
    return head + "\n".join(rows) + "\n"


def peft_table(group: list[dict[str, Any]]) -> str:
    rows = []
    for kind, name in (("lora", "LoRA r=1"), ("vera", "VeRA r=1"), ("dora", "DoRA r=1")):
        ours, theirs = _find(group, kind), _find(group, f"peft_{kind}")
        if not (ours and theirs):
            continue
        med, paired = _time_ratio(ours, theirs)
        rows.append(
            f"| {name} | {med:.3f} ({paired:.3f}) | {ours['saved_bytes'] / theirs['saved_bytes']:.3f} | "
            f"{ours['packed_bytes'] / max(theirs['packed_bytes'], 1):.3f} | {ours['peak_bytes'] / theirs['peak_bytes']:.3f} | "
            f"{ours['trainable_params']:,} / {theirs['trainable_params']:,} |"
        )
    if not rows:
        return ""
    return (
        "| method | step time ours/peft (paired) | saved bytes ours/peft | packed bytes ours/peft | "
        "peak ours/peft | trainable ours / peft |\n| --- | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )


def _verdict(t: dict[str, Any]) -> str:
    if not t.get("applies", True):
        return "(yes)" if t["met"] else "(no)"
    return "met" if t["met"] else "**not met**"


def targets_table(targets: list[dict[str, Any]]) -> str:
    rows = []
    for t in targets:
        paired = "" if t["paired"] is None else f" (paired {t['paired']:.3f})"
        rows.append(
            f"| {t['target']} | {t['value']:.3f}{paired} | {t['op']} {t['limit']} | "
            f"{_verdict(t)} | {t['note']} |"
        )
    return "| target | measured | limit | | note |\n| --- | ---: | --- | --- | --- |\n" + "\n".join(rows) + "\n"


def scaling_table(records: list[dict[str, Any]], axis: str) -> str:
    """Rows: methods; columns: the scaling points (model or batch); cells: saved MB, ms."""
    points = []
    for r in records:
        p = (r["model"], r["batch"])
        if p not in points:
            points.append(p)
    if axis == "batch":
        points.sort(key=lambda p: p[1])
        names = [f"batch {b}" for _, b in points]
    else:
        width = {r["model"]: r["width"] for r in records}
        points.sort(key=lambda p: width[p[0]])
        names = [m for m, _ in points]
    methods = []
    for r in records:
        if r["key"] not in [m[0] for m in methods]:
            methods.append((r["key"], r["label"]))
    cell = {(r["key"], r["model"], r["batch"]): r for r in records}
    lines = ["| method | " + " | ".join(f"{n}: saved MB (x BitFit) / peak MB / ms (x BitFit)" for n in names) + " |"]
    lines.append("| --- |" + " ---: |" * len(points))
    for key, label in methods:
        cells = []
        for model, batch in points:
            r = cell.get((key, model, batch))
            cells.append(
                "-"
                if r is None
                else f"{_mb(r['saved_bytes'])} ({_fmt(r.get('saved_bytes_vs_bitfit'))}) / {_mb(r['peak_bytes'])} / "
                f"{r['step_time_ms']:,.0f} ({_fmt(r.get('step_time_ms_vs_bitfit'))})"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rounds = sorted({r["rounds"] for r in records})
    lines.append(f"\nTimed rounds per point: {', '.join(map(str, rounds))} (scaling times are indicative; saved bytes are exact).")
    return "\n".join(lines) + "\n"


def merged_table(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        rows.append(
            f"| {r['method']} | {r['state']} | {r['infer_time_ms']:,.1f} | {r['infer_time_vs_base']:.3f} | "
            f"{_fmt(r['infer_time_vs_base_paired'], 3)} | {_fmt(r['merged_vs_unmerged_max_rel_diff'], 7) if r['state'] == 'merged' else ''} |"
        )
    return (
        "| method | model state | eval forward ms | x base | x base (paired) | max rel. diff merged vs unmerged |\n"
        "| --- | --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )


def machine_lines(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        f"- machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), device {m['device']}",
        f"- torch {m['torch']} ({m['torch_threads']} intra-op threads, {m['torch_interop_threads']} inter-op), "
        f"transformers {m['transformers']}, peft {m['peft']}, python {m['python']}",
        f"- load average at start {m['load_start']}, at end {m.get('load_end')}",
        f"- command: `{meta['command']}`; profile `{meta['profile']}`; dtype {meta['dtype']}; "
        f"took {meta.get('duration_s', 0):.0f} s",
    ]
    return "\n".join(lines) + "\n"


def markdown(records: list[dict[str, Any]], merged: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    parts = ["# Speed and memory benchmark\n", machine_lines(meta)]
    parts.append(
        "\nStep = zero_grad + forward + backward + AdamW step, random-init models, every method also trains "
        "the head. `x frozen` / `x BitFit`: ratios to the frozen base (head only) and to BitFit from the same "
        "run; `paired`: the median over rounds of the per-round ratio. Saved MB: distinct storages autograd "
        "keeps for backward at the end of forward, parameters and buffers excluded. Peak: the method's "
        "model + optimizer state + the step's peak rise (GPU: max allocated; CPU: process peak RSS).\n"
    )
    for group in groups_of(records, "main") + groups_of(records, "autocast"):
        r0 = group[0]
        mixed = f", {r0['autocast']} autocast ({r0['device'].upper()})" if r0.get("autocast") else ""
        parts.append(
            f"\n## {r0['model']}, batch {r0['batch']} ({r0['tokens_per_sample']} tokens per sample){mixed}, "
            f"{r0['rounds']} rounds\n\n"
        )
        if mixed:
            parts.append(
                f"Mixed precision: the model stays {r0['dtype']}, its forward pass and loss run under "
                f"`torch.autocast('{r0['device']}', dtype=torch.{r0['autocast']})` (Lightning's `bf16-mixed`); ratios "
                "are to BitFit under the same autocast, in the same run.\n\n"
            )
        parts.append(main_table(group))
        ct = compiled_table(group)
        if ct:
            parts.append("\nCompiled (`torch.compile`) against eager, in the same rounds; a compiled method's "
                         "ratios are to the compiled BitFit:\n\n" + ct)
        for variant, view in variant_views(group):
            pt = peft_table(view)
            what = " (compiled)" if variant == "compiled" else ""
            if pt:
                parts.append(f"\nOurs vs peft on the same model and targets{what}:\n\n" + pt)
            parts.append(f"\nTargets{what}:\n\n" + targets_table(check_targets(view)))
    batch = [r for r in records if r.get("group") in ("scale_batch",)]
    if batch:
        parts.append(f"\n## Scaling with the batch ({batch[0]['model']})\n\n" + scaling_table(batch, "batch"))
    width = [r for r in records if r.get("group") in ("scale_width",)]
    if width:
        parts.append(f"\n## Scaling with the width (ViT-Ti/S/B, batch {width[0]['batch']})\n\n" + scaling_table(width, "width"))
    if merged:
        parts.append(
            f"\n## Merged inference ({merged[0]['model']}, batch {merged[0]['batch']}, eval forward, "
            f"{merged[0]['rounds']} rounds)\n\n" + merged_table(merged)
        )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------
# charts
# ------------------------------------------------------------------------------------------------


def charts(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    mains = groups_of(records, "main")
    if mains:
        fig, axes = plt.subplots(len(mains), 3, figsize=(17, 4.2 * len(mains)), squeeze=False)
        for row, group in zip(axes, mains):
            labels = [r["label"] for r in group]
            colors = ["tab:orange" if r["impl"] == "peft" else "tab:blue" for r in group]
            for ax, field, title in zip(
                row,
                ("step_time_ms_vs_bitfit", "saved_bytes_vs_bitfit", "peak_bytes_vs_bitfit"),
                ("step time", "activations kept for backward", "peak memory"),
            ):
                values = [r.get(field) or 0 for r in group]
                ax.barh(range(len(group)), values, color=colors)
                ax.axvline(1.0, color="k", lw=0.8, ls="--")
                ax.set_yticks(range(len(group)), labels, fontsize=8)
                ax.invert_yaxis()
                ax.set_title(f"{group[0]['model']} batch {group[0]['batch']}: {title} (x BitFit)", fontsize=9)
                for i, v in enumerate(values):
                    ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
        fig.tight_layout()
        path = out_dir / "bench.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    scaling = [(g, [r for r in records if r.get("group") == g]) for g in ("scale_batch", "scale_width")]
    scaling = [(g, rs) for g, rs in scaling if rs]
    if scaling:
        fig, axes = plt.subplots(len(scaling), 3, figsize=(17, 4.2 * len(scaling)), squeeze=False)
        for row, (g, rs) in zip(axes, scaling):
            keys = list(dict.fromkeys(r["key"] for r in rs))
            for key in keys:
                pts = [r for r in rs if r["key"] == key]
                xs = [r["batch"] if g == "scale_batch" else r["width"] for r in pts]
                idx = sorted(range(len(xs)), key=lambda i: xs[i])
                style = "--" if key.startswith("peft_") else "-"
                row[0].plot([xs[i] for i in idx], [pts[i]["saved_bytes"] / MB for i in idx], style, marker="o", label=pts[0]["label"])
                row[1].plot([xs[i] for i in idx], [pts[i]["peak_bytes"] / MB for i in idx], style, marker="o", label=pts[0]["label"])
                row[2].plot([xs[i] for i in idx], [pts[i]["step_time_ms"] for i in idx], style, marker="o", label=pts[0]["label"])
            xlabel = "batch" if g == "scale_batch" else "width (hidden size)"
            for ax, ylabel in zip(row, ("activations kept for backward (MB)", "peak memory (MB)", "step time (ms, median)")):
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.grid(alpha=0.3)
            row[0].legend(fontsize=7)
            row[0].set_title(f"{rs[0]['model'] if g == 'scale_batch' else 'ViT family'}: memory", fontsize=9)
            row[1].set_title("peak memory", fontsize=9)
            row[2].set_title("step time", fontsize=9)
        fig.tight_layout()
        path = out_dir / "bench_scaling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write(records: list[dict[str, Any]], merged: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "inference": out_dir / "bench_inference.json",
             "meta": out_dir / "bench_meta.json", "markdown": out_dir / "bench.md"}
    paths["json"].write_text(json.dumps(records, indent=1))
    paths["inference"].write_text(json.dumps(merged, indent=1))
    targets = {}
    for kind in ("main", "autocast"):
        for g in groups_of(records, kind):
            name = f"{g[0]['model']}@{g[0]['batch']}" + (f"+autocast_{g[0]['autocast']}" if kind == "autocast" else "")
            for variant, view in variant_views(g):
                targets[name + ("+compiled" if variant == "compiled" else "")] = check_targets(view)
    paths["meta"].write_text(json.dumps({**meta, "targets": targets}, indent=1))
    paths["markdown"].write_text(markdown(records, merged, meta))
    for i, p in enumerate(charts(records, out_dir)):
        paths[f"png{i}"] = p
    return paths
