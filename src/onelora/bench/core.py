"""Running one benchmark group: one model shape and batch, every selected method, side by side.

All methods of a group live in one process at once and share the frozen base weights (each gets
its own copy of whatever it trains), so their steps can run in interleaved rounds. Per method:
the optimizer state is created up front (one AdamW step on zero gradients), then ``warmup`` steps,
one measured step (saved tensors, peak memory, gradient and optimizer bytes; it is also the timed
steps' warm-up), then the timed rounds, interleaved over the methods.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from . import memory, timing
from .methods import BenchMethod, apply, check_only_head_trains, count_adapted
from .models import ModelShape, build, loss_fn, make_batch


#: the variants a method can run in: as built, or through ``torch.compile``
VARIANTS = ("eager", "compiled")


@dataclass
class Entry:
    method: BenchMethod
    model: nn.Module
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    variant: str = "eager"

    @property
    def key(self) -> str:
        """The record's key: the method's, with ``@compiled`` for its compiled variant."""
        return variant_key(self.method.key, self.variant)


def variant_key(key: str, variant: str) -> str:
    return key if variant == "eager" else f"{key}@{variant}"


def clone_sharing(base: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers share storage with ``base`` (new Parameter objects,
    so each copy has its own ``requires_grad`` and ``.grad``)."""
    memo: dict[int, Any] = {}
    for p in base.parameters():
        memo[id(p)] = nn.Parameter(p.data, requires_grad=p.requires_grad)
    for b in base.buffers():
        memo[id(b)] = b
    return copy.deepcopy(base, memo)


def own_trained_tensors(model: nn.Module, shared: set[tuple[str, int]]) -> None:
    """Give the model private copies of the shared tensors it trains (so steps do not leak)."""
    for p in model.parameters():
        if p.requires_grad and memory.storage_key(p) in shared:
            p.data = p.data.clone()


def release_memory(collect: bool = True) -> None:
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare(
    shape: ModelShape,
    methods: list[BenchMethod],
    *,
    device: torch.device,
    dtype: torch.dtype,
    lr: float = 1e-5,
    compiled: list[BenchMethod] | None = None,
    compile_options: dict[str, Any] | None = None,
) -> tuple[nn.Module, list[Entry]]:
    """The base model and one entry per method, then one more per method of ``compiled``: the same
    method with its model compiled in place (``nn.Module.compile(**compile_options)``)."""
    base = build(shape).to(device=device, dtype=dtype)
    shared = memory.model_storage_keys(base)
    entries = []
    plan = [(m, "eager") for m in methods] + [(m, "compiled") for m in compiled or []]
    for method, variant in plan:
        model = apply(method, clone_sharing(base), shape)
        if method.method == "frozen":
            check_only_head_trains(model, shape)
        own_trained_tensors(model, shared)
        params = memory.trainable(model)
        fused = device.type == "cuda" and dtype in (torch.float32, torch.float16, torch.bfloat16)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=fused or None)
        init_optimizer_state(optimizer, params)
        if variant == "compiled":
            model.compile(**(compile_options or {}))
        entries.append(Entry(method, model, optimizer, params, variant))
    return base, entries


def init_optimizer_state(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Create AdamW's state with one step on zero gradients (no forward / backward needed), so the
    first measured step already runs in the steady state's memory."""
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` in ``dtype`` around the forward pass, or nothing."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def make_step(
    shape: ModelShape,
    entry: Entry,
    data: dict[str, torch.Tensor],
    *,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> Callable[[], None]:
    """One training step; with ``autocast``, the forward and the loss run under ``torch.autocast``
    (what Lightning's ``bf16-mixed`` does), backward and the optimizer step outside it."""

    def step() -> None:
        entry.optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, autocast):
            loss = loss_fn(shape, entry.model, data)
        loss.backward()
        entry.optimizer.step()

    return step


def measured_step(
    shape: ModelShape,
    entry: Entry,
    data: dict[str, torch.Tensor],
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> dict[str, Any]:
    """One training step under the saved-tensor counter and the peak tracker."""
    entry.optimizer.zero_grad(set_to_none=True)
    release_memory(collect=False)
    exclude = memory.model_storage_keys(entry.model)
    with memory.peak_tracker(device) as peak:
        with memory.SavedTensorCounter(exclude) as counter, autocast_context(device, autocast):
            loss = loss_fn(shape, entry.model, data)
        saved = counter.stats()
        loss.backward()
        entry.optimizer.step()
        del loss
    model_bytes = memory.unique_bytes(list(entry.model.parameters()) + list(entry.model.buffers()))
    optimizer_bytes = memory.optimizer_state_bytes(entry.optimizer)
    grad_bytes = memory.unique_bytes(p.grad for p in entry.params)
    return {
        "saved_bytes": saved.saved_bytes,
        "packed_bytes": saved.packed_bytes,
        "saved_tensors": saved.saved_tensors,
        "trainable_params": sum(p.numel() for p in entry.params),
        "trainable_bytes": memory.unique_bytes(entry.params),
        "grad_bytes": grad_bytes,
        "optimizer_bytes": optimizer_bytes,
        "model_bytes": model_bytes,
        "peak_rise_bytes": peak["rise"],
        "peak_bytes": model_bytes + optimizer_bytes + peak["rise"],
        "peak_method": peak["method"],
        "adapted_layers": count_adapted(entry.model),
    }


def run_group(
    shape: ModelShape,
    batch: int,
    methods: list[BenchMethod],
    *,
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    rounds: int,
    budget_s: float | None = None,
    autocast: torch.dtype | None = None,
    compiled: list[BenchMethod] | None = None,
    compile_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Records (one per method, and one per method of ``compiled`` for its compiled variant) for
    one model shape at one batch size (forward under ``torch.autocast`` in ``autocast`` if given,
    the model staying in ``dtype``). A compiled variant's first step compiles (``compile_s``), and
    is an extra warm-up step, so the measured and timed steps run the compiled code."""
    t0 = time.perf_counter()
    base, entries = prepare(shape, methods, device=device, dtype=dtype, compiled=compiled,
                            compile_options=compile_options)
    data = make_batch(shape, batch, device=device, dtype=dtype)
    steps = [make_step(shape, e, data, device=device, autocast=autocast) for e in entries]
    measured: list[dict[str, Any]] = []
    steps[0]()  # the process's first step pages in code and library state that no method should pay for
    for entry, step in zip(entries, steps):
        compile_s = None
        if entry.variant == "compiled":
            t1 = time.perf_counter()
            step()
            compile_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        for _ in range(warmup):
            step()
        t2 = time.perf_counter()
        measured.append({**measured_step(shape, entry, data, device, autocast), "compile_s": compile_s})
        compiling = f"compile + first step {compile_s:.1f} s, " if compile_s is not None else ""
        log(f"    {entry.key}: {compiling}warm-up {t2 - t1:.1f} s, measured step {time.perf_counter() - t2:.1f} s")
    setup_s = time.perf_counter() - t0
    left = None if budget_s is None else max(budget_s - setup_s, 0.0)
    times, cpu_times = timing.interleaved(steps, rounds=rounds, device=device, budget_s=left)
    records = []
    for entry, stats, ts, cts in zip(entries, measured, times, cpu_times):
        records.append(
            {
                "method": entry.method.method,
                "impl": entry.method.impl,
                "key": entry.key,
                "variant": entry.variant,
                "label": entry.method.label + (", compiled" if entry.variant == "compiled" else ""),
                "model": shape.name,
                "family": shape.family,
                "width": shape.arch["hidden_size"],
                "batch": batch,
                "tokens_per_sample": tokens_per_sample(shape),
                "dtype": str(dtype).removeprefix("torch."),
                "autocast": None if autocast is None else str(autocast).removeprefix("torch."),
                "device": device.type,
                "warmup_steps": warmup,
                "rounds": len(ts),
                "step_time_ms": 1e3 * timing.median(ts),
                "step_times_ms": [round(1e3 * t, 3) for t in ts],
                "cpu_time_ms": 1e3 * timing.median(cts),
                "cpu_times_ms": [round(1e3 * t, 3) for t in cts],
                **stats,
            }
        )
    add_ratios(records, times=times)
    log(f"  {shape.name} batch {batch}: {len(entries)} entries, {len(times[0])} rounds, {time.perf_counter() - t0:.0f} s")
    del base, entries, steps, data
    release_memory()
    return records


def tokens_per_sample(shape: ModelShape) -> int:
    if shape.family == "vit":
        return (shape.arch["image_size"] // shape.arch["patch_size"]) ** 2 + 1
    return shape.seq_len


RATIO_FIELDS = ("step_time_ms", "cpu_time_ms", "saved_bytes", "trainable_bytes", "grad_bytes", "optimizer_bytes", "peak_bytes")


def add_ratios(records: list[dict[str, Any]], times: list[list[float]] | None = None) -> None:
    """``<field>_vs_frozen`` and ``<field>_vs_bitfit`` for every figure, to the reference of the same
    variant (a compiled method to the compiled BitFit) in the same group; for a compiled variant
    also ``<field>_vs_eager``, to the same method run eagerly."""
    by_key = {r["key"]: (i, r) for i, r in enumerate(records)}

    def compare(i: int, record: dict[str, Any], ref_key: str, suffix: str) -> None:
        if ref_key not in by_key:
            return
        ref_index, ref_record = by_key[ref_key]
        for f in RATIO_FIELDS:
            denom = ref_record[f]
            record[f"{f}_vs_{suffix}"] = record[f] / denom if denom else None
        if times is not None:
            record[f"step_time_vs_{suffix}_paired"] = timing.paired_ratio(times[i], times[ref_index])

    for i, record in enumerate(records):
        variant = record.get("variant", "eager")
        base_key = record["key"].removesuffix(f"@{variant}") if variant != "eager" else record["key"]
        for ref in ("frozen", "bitfit"):
            compare(i, record, variant_key(ref, variant), ref)
        if variant != "eager":
            compare(i, record, base_key, "eager")
