"""``python -m onelora.bench``: every method side by side with peft, in time and memory.

Profiles:
- default (``make bench``): sized for a 2-core CPU, about 6 minutes: ViT-B/16 at batch 2 and a
  4-block LLaMA-style stack (width 512, sequence 512) at batch 1 with every method; the same two
  under bf16 autocast (mixed precision: CPU autocast here, CUDA autocast on a GPU) with BitFit,
  1LoRA, LoRA, DoRA and peft's LoRA / DoRA; scaling over batch sizes (ViT-B, batch 1 / 2 / 4) and
  widths (ViT-Ti / S / B at batch 2) for the main methods; merged inference on ViT-B.
- ``--paper-sizes``: the paper's shapes and more steps, for a GPU: ViT-B/16 at batch 32, two blocks of
  LLaMA-2 7B's shapes at batch 4 (both also under autocast), scaling over batch 8..64 and the three
  ViT widths at batch 32.
- ``--quick``: tiny models and one round, for tests (seconds).

``--groups`` runs a part of a profile, e.g. ``--groups autocast --models vit`` measures only the
mixed-precision runs of ViT-B.

``--compile`` adds each method's compiled variant (``torch.compile`` of its model, Inductor unless
``--compile-backend`` says otherwise) beside the eager one in the main and autocast runs, timed in
the same interleaved rounds; ``--compile-methods`` picks which methods (default: both 1LoRAs, LoRA,
DoRA and peft's LoRA; BitFit, the reference of the ratios, always). Compiling costs tens of seconds
per model on a CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import core, inference, memory, methods, report
from .models import SHAPES

#: the methods the scaling runs cover (every method runs in the main groups)
SCALING_METHODS = ["frozen", "bitfit", "onelora", "lora", "dora", "full"]
#: the methods the mixed-precision (autocast) runs cover
AUTOCAST_METHODS = ["frozen", "bitfit", "onelora", "onelora_listing", "lora", "dora", "peft_lora", "peft_dora"]
#: the methods that get a compiled variant with --compile (unless --compile-methods says otherwise)
COMPILE_METHODS = ["onelora", "onelora_listing", "lora", "dora", "peft_lora"]
#: the parts of a profile, in the order they run
GROUPS = ("main", "autocast", "scale_batch", "scale_width", "merged")

PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        "main": {"vit": ("vit_base", 2), "llama": ("llama_cpu", 1)},
        "autocast": {"vit": ("vit_base", 2), "llama": ("llama_cpu", 1)},
        "scale_batch": ("vit_base", [1, 4]),  # batch 2 comes from the main run
        "scale_width": (["vit_tiny", "vit_small"], 2),  # ViT-B at batch 2 comes from the main run
        "merged": ("vit_base", 1),
        "warmup": 0,  # the measured step is the timed steps' warm-up
        "rounds": 3,
        "scaling_rounds": 2,
        "merged_rounds": 3,
        "budget_s": 480.0,
    },
    "paper": {
        "main": {"vit": ("vit_base", 32), "llama": ("llama7b_layers", 4)},
        "autocast": {"vit": ("vit_base", 32), "llama": ("llama7b_layers", 4)},
        "scale_batch": ("vit_base", [8, 16, 64]),
        "scale_width": (["vit_tiny", "vit_small"], 32),
        "merged": ("vit_base", 32),
        "warmup": 3,
        "rounds": 20,
        "scaling_rounds": 10,
        "merged_rounds": 20,
        "budget_s": None,
    },
    "quick": {
        "main": {"vit": ("vit_micro", 2), "llama": ("llama_micro", 2)},
        "autocast": {"vit": ("vit_micro", 2)},
        "scale_batch": ("vit_micro", [1]),
        "scale_width": ([], 2),
        "merged": ("vit_micro", 2),
        "warmup": 0,
        "rounds": 1,
        "scaling_rounds": 1,
        "merged_rounds": 1,
        "budget_s": None,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m onelora.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny models, one round (tests)")
    size.add_argument("--paper-sizes", action="store_true", help="paper-sized shapes and more steps (for a GPU)")
    p.add_argument("--out", default="reports", help="output folder (bench.json, bench.md, bench.png, ...)")
    p.add_argument("--models", default="vit,llama", help="main model families, comma-separated: vit, llama")
    p.add_argument("--methods", default="", help=f"comma-separated method keys (default all): {', '.join(methods.by_key())}")
    p.add_argument("--batch", type=int, default=None, help="batch size of the main runs (overrides the profile)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per method in the main runs")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per method before the measured step")
    p.add_argument("--groups", default=",".join(GROUPS), help=f"the parts of the profile to run, comma-separated: {', '.join(GROUPS)}")
    p.add_argument("--no-scaling", action="store_true", help="skip the batch and width scaling runs")
    p.add_argument("--no-merged", action="store_true", help="skip the merged-inference run")
    p.add_argument("--no-autocast", action="store_true", help="skip the mixed-precision (autocast) runs")
    p.add_argument("--autocast-dtype", default="bfloat16", choices=["bfloat16", "float16"],
                   help="the autocast dtype of the mixed-precision runs")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all CPUs)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--budget-s", type=float, default=None, help="time budget in seconds (timed rounds stop early)")
    p.add_argument("--compile", action="store_true",
                   help="also run each method of --compile-methods compiled (torch.compile), beside its eager run")
    p.add_argument("--compile-methods", default=",".join(COMPILE_METHODS),
                   help="comma-separated method keys that get a compiled variant with --compile")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled variants")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode of the compiled variants (default, reduce-overhead, max-autotune, ...)")
    return p.parse_args(argv)


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("transformers", "peft"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    return {
        "cpu": cpu or "unknown",
        "logical_cpus": os.cpu_count(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    start = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    profile_name = "quick" if args.quick else "paper" if args.paper_sizes else "default"
    prof = PROFILES[profile_name]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu":
        memory.configure_cpu_allocator()
    selected = methods.select([k.strip() for k in args.methods.split(",") if k.strip()])
    compiled: list = []
    compile_options: dict[str, Any] = {}
    if args.compile:
        wanted = [k.strip() for k in args.compile_methods.split(",") if k.strip()]
        methods.select(wanted)  # unknown keys fail here
        compiled = [m for m in selected if m.key in set(wanted) | {"bitfit"}]  # ratios need the compiled BitFit
        compile_options = {"backend": args.compile_backend, **({"mode": args.compile_mode} if args.compile_mode else {})}
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    groups = {g.strip() for g in args.groups.split(",") if g.strip()}
    if groups - set(GROUPS):
        raise SystemExit(f"unknown group(s) {sorted(groups - set(GROUPS))}; choose from {', '.join(GROUPS)}")
    groups -= {"scale_batch", "scale_width"} if args.no_scaling else set()
    groups -= {"merged"} if args.no_merged else set()
    groups -= {"autocast"} if args.no_autocast else set()
    autocast = getattr(torch, args.autocast_dtype)
    if "autocast" in groups and dtype != torch.float32:
        log_skip = f"the model runs in {args.dtype} already"
        groups.discard("autocast")
    else:
        log_skip = ""
    warmup = prof["warmup"] if args.warmup is None else args.warmup
    rounds = prof["rounds"] if args.rounds is None else args.rounds
    budget = args.budget_s if args.budget_s is not None else prof["budget_s"]
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    # the runs, each with a weight: its expected share of the time budget
    plan: list[tuple[str, str, int, list, int, float]] = []  # (group, shape, batch, methods, rounds, weight)
    for family in families:
        if family not in prof["main"]:
            raise SystemExit(f"unknown model family {family!r}; choose from {sorted(prof['main'])}")
    if "main" in groups:
        for family in families:
            name, batch = prof["main"][family]
            plan.append(("main", name, args.batch or batch, selected, rounds, 4.0 if family == "vit" else 1.0))
    autocast_methods = [m for m in selected if m.key in AUTOCAST_METHODS]
    if "autocast" in groups:
        for family in [f for f in families if f in prof["autocast"]]:
            name, batch = prof["autocast"][family]
            plan.append(("autocast", name, args.batch or batch, autocast_methods, rounds, 1.6 if family == "vit" else 0.4))
    scale_methods = [m for m in selected if m.key in SCALING_METHODS]
    if "vit" in families:
        name, batches = prof["scale_batch"]
        for b in batches if "scale_batch" in groups else []:
            plan.append(("scale_batch", name, b, scale_methods, prof["scaling_rounds"], 0.4 * b / max(prof["main"]["vit"][1], 1)))
        names, b = prof["scale_width"]
        for n in names if "scale_width" in groups else []:
            plan.append(("scale_width", n, b, scale_methods, prof["scaling_rounds"], 0.05 if "tiny" in n else 0.15))
    if "merged" in groups:
        plan.append(("merged", prof["merged"][0], prof["merged"][1], [], prof["merged_rounds"], 0.4))

    log(f"onelora.bench: profile {profile_name}, device {device}, {torch.get_num_threads()} threads, dtype {args.dtype}, "
        f"{len(selected)} methods, groups {', '.join(g for g in GROUPS if g in groups)}, budget {budget} s")
    if log_skip:
        log(f"skipping the autocast runs: {log_skip}")
    records: list[dict[str, Any]] = []
    merged: list[dict[str, Any]] = []
    skipped: list[str] = []
    for i, (group, name, batch, ms, r, weight) in enumerate(plan):
        elapsed = time.perf_counter() - start
        share = None
        if budget is not None:
            left = budget - elapsed
            if left < 0.1 * budget and group not in ("main", "autocast"):
                skipped.append(f"{group} {name} batch {batch}")
                log(f"[{elapsed:.0f} s] skipping {group} {name} batch {batch}: out of the time budget")
                continue
            share = max(left, 0.0) * weight / sum(p[5] for p in plan[i:])
        log(f"[{elapsed:.0f} s] {group}: {name} batch {batch}")
        if group == "merged":
            wanted = [m.method for m in selected if methods.mergeable(m)]
            merged = inference.run_merged(
                SHAPES[name], batch, wanted, device=device, dtype=dtype, rounds=r, budget_s=share, log=log
            )
            continue
        recs = core.run_group(
            SHAPES[name], batch, ms, device=device, dtype=dtype, warmup=warmup, rounds=r, budget_s=share,
            autocast=autocast if group == "autocast" else None, log=log,
            compiled=[m for m in compiled if m in ms] if group in ("main", "autocast") else None,
            compile_options=compile_options,
        )
        for rec in recs:
            rec["group"] = group
            rec["threads"] = torch.get_num_threads()
        records.extend(recs)
    # the main ViT run is also the middle point of both scaling curves
    if "main" in groups and groups & {"scale_batch", "scale_width"}:
        prefix = [r for r in records if r["group"] in ("scale_batch", "scale_width")]
        for rec in [r for r in records if r["group"] == "main" and r["family"] == "vit" and r["key"] in SCALING_METHODS]:
            if prefix and "scale_batch" in groups:
                records.append({**rec, "group": "scale_batch"})
            if prefix and "scale_width" in groups and rec["batch"] == prof["scale_width"][1]:
                records.append({**rec, "group": "scale_width"})

    info = machine_info(device)
    info["load_start"] = load_start
    info["load_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    meta = {
        "command": "python -m onelora.bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "profile": profile_name,
        "dtype": args.dtype,
        "autocast_dtype": args.autocast_dtype if "autocast" in groups else None,
        "groups": [g for g in GROUPS if g in groups],
        "machine": info,
        "duration_s": time.perf_counter() - start,
        "peak_method": "cuda_max_allocated" if device.type == "cuda" else "cpu_process_peak_rss",
        "skipped": skipped,
        "budget_s": budget,
        "compile": compile_options or None,
    }
    paths = report.write(records, merged, meta, Path(args.out))
    log(f"[{meta['duration_s']:.0f} s] wrote " + ", ".join(str(p) for p in paths.values()))
    for kind in ("main", "autocast"):
        for group in report.groups_of(records, kind):
            for variant, view in report.variant_views(group):
                where = group[0]["model"] + (f" ({group[0]['autocast']} autocast)" if kind == "autocast" else "")
                where += ", compiled" if variant == "compiled" else ""
                for t in report.check_targets(view):
                    verdict = ("met" if t["met"] else "NOT met") if t["applies"] else ("(informative)")
                    log(f"  {where}: {t['target']}: {t['value']:.3f} {t['op']} {t['limit']}: {verdict}")
    return paths


if __name__ == "__main__":  # pragma: no cover
    main()
