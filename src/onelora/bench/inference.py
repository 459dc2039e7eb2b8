"""Merged inference: a merged model is a plain model, so it must run as fast as the base.

For each mergeable method the adapters are set to non-zero values (they start as an identity),
the model is merged and unloaded (``merge_and_unload``) into a private copy, and its eval forward
pass is timed against the base model's and the unmerged adapted model's, in interleaved rounds.
The merged output is checked against the unmerged one.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch
from torch import nn

from ..adapters import AdaptedLinear, merge_and_unload
from . import timing
from .core import clone_sharing, own_trained_tensors, release_memory
from .memory import model_storage_keys
from .methods import BenchMethod, apply, ours
from .models import ModelShape, build, make_batch


@torch.no_grad()
def _perturb_adapters(model: nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.device, p.dtype))


def _forward(shape: ModelShape, model: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        if shape.family == "vit":
            return model(pixel_values=data["pixel_values"]).logits
        return model(input_ids=data["input_ids"]).logits


def run_merged(
    shape: ModelShape,
    batch: int,
    methods: list[str],
    *,
    device: torch.device,
    dtype: torch.dtype,
    rounds: int,
    budget_s: float | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    base = build(shape).to(device=device, dtype=dtype).eval()
    data = make_batch(shape, batch, device=device, dtype=dtype)
    shared = model_storage_keys(base)
    by_name: dict[str, BenchMethod] = {m.method: m for m in ours()}
    models: list[tuple[str, str, nn.Module]] = [("base", "base", base)]
    diffs: dict[str, float] = {}
    for name in methods:
        unmerged = apply(by_name[name], clone_sharing(base), shape)
        own_trained_tensors(unmerged, shared)  # private copies of what the method trains,
        _perturb_adapters(unmerged)  # then non-zero adapter values
        unmerged.eval()
        merged = copy.deepcopy(unmerged)  # a private copy of every weight: merging writes into them
        merge_and_unload(merged)
        ref = _forward(shape, unmerged, data)
        out = _forward(shape, merged, data)
        diffs[name] = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        models += [(name, "merged", merged), (name, "unmerged", unmerged)]
    fns = [lambda m=m: _forward(shape, m, data) for _, _, m in models]
    for fn in fns:  # warm-up
        fn()
    left = None if budget_s is None else max(budget_s - (time.perf_counter() - t0), 0.0)
    times, _ = timing.interleaved(fns, rounds=rounds, device=device, budget_s=left)
    base_times = times[0]
    records = []
    for (name, state, model), ts in zip(models, times):
        records.append(
            {
                "method": name,
                "state": state,
                "model": shape.name,
                "batch": batch,
                "dtype": str(dtype).removeprefix("torch."),
                "device": device.type,
                "rounds": len(ts),
                "infer_time_ms": 1e3 * timing.median(ts),
                "infer_times_ms": [round(1e3 * t, 3) for t in ts],
                "infer_time_vs_base": timing.median(ts) / timing.median(base_times),
                "infer_time_vs_base_paired": timing.paired_ratio(ts, base_times),
                "merged_vs_unmerged_max_rel_diff": diffs.get(name),
                "plain_linears_only": not any(isinstance(m, AdaptedLinear) for m in model.modules()),
            }
        )
    log(f"  merged inference {shape.name} batch {batch}: {len(models)} models, {len(times[0])} rounds, "
        f"{time.perf_counter() - t0:.0f} s")
    del models, fns, base
    release_memory()
    return records
