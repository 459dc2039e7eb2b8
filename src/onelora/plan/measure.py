"""The plan checked on a GPU: real training iterations of the paper's models (their real architecture
with random weights, synthetic inputs of the real shapes) beside the plan of the same run.

    python -m onelora.plan.measure --out reports/plan_gpu.md          # every paper model, ~6 min on an H200
    python -m onelora.plan.measure --cases vit_base llama2_13b --steps 5
    python -m onelora.plan.measure --device cpu --config task=cifar10 +twin=cifar10 method=onelora   # the CPU path

Per case: the plan (fake tensors), then on the device the same iteration on real tensors, with the same
instruments (so the planned peak and the peak of the real tensors are compared op for op), then
``--steps`` timed iterations without them. The table gives the planned peak, the tensors' peak on the
device, ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` over the real iteration, the
median step time and the FLOP rate it implies (model FLOPs / step time / the card's peak: the MFU to
put in ``plan.mfu``). One GPU runs each case: per-process figures, nothing sharded (a 13B model in
bf16 needs ~26 GB: an 80 GB card or larger).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from . import GIB

#: the paper's models at their recipes' micro-batches: (name, overrides, methods)
CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "vit_base": (("task=cifar10", "trainer=gpu"), ("onelora", "lora", "full")),
    "depth_anything_l": (("task=nyu_to_kitti", "trainer=gpu"), ("onelora", "lora")),
    "dit_xl_2": (("task=food101_generation", "trainer=gpu"), ("onelora", "lora")),
    "llama2_7b": (("task=metamath", "trainer=deepspeed"), ("onelora", "lora")),
    "llama2_13b": (("experiment=table_s7", "task=metamath", "trainer=deepspeed",
                    "task.module.gradient_checkpointing=false"), ("onelora", "lora_qkv")),
}


def measure(overrides: Sequence[str], *, device: str, steps: int = 3) -> dict[str, Any]:
    """The plan of one run and what its iteration does on ``device``."""
    from .core import RunPlan
    from .trace import trace_step
    from .paper import compose
    from ..settings import RunSettings

    cuda = device.startswith("cuda")
    native = () if cuda else ("plan.attention=native",)  # the CPU has no flash / memory-efficient kernels
    run = RunPlan.from_settings(RunSettings.from_config(compose([*overrides, *native, "plan.cache_dir=null"])))
    planned = run.trace()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    real = trace_step(run.spec, run.micro_batch, fake=False, device=device)
    allocated = torch.cuda.max_memory_allocated(device) if cuda else None
    reserved = torch.cuda.max_memory_reserved(device) if cuda else None
    times = _timed_steps(run, device, steps)
    flops = run.step_flops(planned)
    card = next(iter(run.plan.cards.values()))
    step_s = statistics.median(times) if times else None
    model_flops = (planned.flops_forward + planned.flops_backward - planned.flops_recompute)
    return {
        "task": run.name["task"], "model": run.name["model"], "method": run.name["method"],
        "micro_batch": run.micro_batch, "precision": run.precision,
        "planned_peak": planned.peak, "real_peak": real.peak, "max_allocated": allocated, "max_reserved": reserved,
        "planned_activations": planned.activations, "real_activations": real.activations,
        "planned_flops": planned.flops_forward + planned.flops_backward, "real_flops": real.flops_forward + real.flops_backward,
        "step_s": step_s, "tflops": None if not step_s else model_flops / step_s / 1e12,
        "card_tflops": card.tflops(run.precision), "kernels": real.kernels, "accumulate_planned": flops["per_gpu"],
    }


def _timed_steps(run: Any, device: str, steps: int) -> list[float]:
    """``steps`` micro-steps (forward, backward, optimizer) on ``device``, without instruments."""
    from .trace import autocast, random_fill

    spec = run.spec
    with torch.device("meta"):
        model = spec.build_model()
    model = random_fill(model.to_empty(device=device))
    module = spec.build_module(model)
    module.train()
    module.on_fit_start()
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = spec.optimizer([{"params": trainable}])
    batch = spec.batch(run.micro_batch)
    batch = torch.utils._pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, batch)
    times = []
    for i in range(steps + 1):  # the first is warm-up (kernels chosen, states made)
        _sync(device)
        start = time.perf_counter()
        with autocast(spec.precision, torch.device(device).type):
            out = module.training_step(batch, i)
        loss = out["loss"] if isinstance(out, dict) else out
        loss.backward()
        module.optimizer_step(0, i, optimizer)
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return times


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def table(rows: Sequence[dict[str, Any]], device: str) -> str:
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
    lines = [f"GPU check of the plan: {time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__} "
             f"(`python -m onelora.plan.measure`). GiB = 2^30 bytes.", "",
             "| model | method | micro-batch | precision | planned peak | real tensors' peak | max allocated | "
             "max reserved | allocated / planned | planned = real (activations, FLOPs) | step s | model TFLOP/s | MFU |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | | | failed: {r['error'][:100]} | | | | | | | | |")
            continue
        alloc, reserved, step, rate = r["max_allocated"], r["max_reserved"], r["step_s"], r["tflops"]
        same = r["planned_activations"] == r["real_activations"] and r["planned_flops"] == r["real_flops"]
        cells = [r["model"], r["method"], str(r["micro_batch"]), r["precision"], _num(r["planned_peak"] / GIB),
                 _num(r["real_peak"] / GIB), _num(alloc and alloc / GIB), _num(reserved and reserved / GIB),
                 _num(alloc and alloc / r["planned_peak"], 3), "yes" if same else "no", _num(step, 3), _num(rate, 1),
                 _num(rate and rate / r["card_tflops"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m onelora.plan.measure", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--config", nargs="+", help="one run's overrides instead of the paper's cases")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible (use --device cpu with a tiny twin: --config ...)")
    torch.backends.cuda.matmul.allow_tf32 = False  # the plan's fp32 peak assumes PyTorch's default
    configs = [tuple(args.config)] if args.config else [
        (*CASES[c][0], f"method={m}") for c in args.cases for m in CASES[c][1]]
    rows = []
    for overrides in configs:
        started = time.time()
        try:
            row = measure(overrides, device=args.device, steps=args.steps)
        except Exception as err:  # one case's failure is reported, the others still run
            row = {"model": " ".join(overrides), "method": "", "error": f"{type(err).__name__}: {err}"}
        rows.append(row)
        print(f"measure: {' '.join(overrides)} ({time.time() - started:.0f} s)", flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    text = table(rows, args.device)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
