"""A run's plan from its config: the traced iteration (plan.trace), the memory one GPU needs under the
run's strategy, whether that fits each card and the largest micro-batch that does, the FLOPs of an
optimizer step and of the whole run, and its GPU-hours.

Rules (docs/plan.md states them with the numbers they give):

- **GPUs** of one run: ``plan.gpus``, else the recipe's (``task.resources.gpus``), else
  ``trainer.devices x trainer.num_nodes``. The global batch (``task.batch_size``) is split over
  them as the runner splits it: ``task.micro_batch_size`` per GPU and gradient accumulation for the
  rest, or ``batch_size / gpus`` per GPU.
- **Per-GPU memory** = the traced peak (one process, nothing sharded), then the strategy's share:
  ``ddp`` adds DDP's gradient buckets (a second copy of the gradients); ``zero2`` (DeepSpeed ZeRO
  stage 2, as MoRA trained LLaMA-2) takes forward and backward's peak without the traced gradients
  and optimizer states and adds DeepSpeed's: an fp32 master copy and AdamW's two fp32 moments (12
  bytes) and the gradient in the weights' dtype per trainable parameter, divided over the GPUs, the
  optimizer step's temporaries for that fp32 share, and two reduce buckets of
  ``plan.zero2_bucket_elements`` (``overlap_comm``); ``fsdp`` divides parameters, gradients, states
  and the step's temporaries over the GPUs and adds the largest wrapped unit twice (being computed,
  prefetched) and the unwrapped root unit, gathered. A card fits a run when the peak plus ``plan.reserve_gib`` (CUDA
  context, library workspaces: memory no traced op allocates) is at most its memory.
- **Largest micro-batch**: the peak traced at two micro-batch sizes (b and 2b) gives a line
  a + c x b (every term the trace sees is affine in the batch; the tests check a third size lands on
  it); the largest b under each card's memory.
- **FLOPs**: an optimizer step is the micro-step's forward + backward (FlopCounterMode, recomputation
  included) x accumulation x GPUs. **GPU-hours** = the run's model FLOPs (recomputation excluded) /
  (the card's dense peak for the run's precision x ``plan.mfu``).
- **Run length**: optimizer steps = epochs x ceil(ceil(train samples / GPUs) / micro-batch /
  accumulation), the train samples being the dataset's ``train_size`` (``task.dataset.train_size``,
  from conf/dataset/) less the task's validation hold-out;
  capped by ``trainer.max_steps`` and by ``task.time_budget`` (wall time on the run's GPUs at the
  planned rate, per card).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..adapters import AdapterConfigError
from ..config import ConfigError, as_float, as_int, check, plain
from .inputs import batch_builder
from .trace import ATTENTION, BLOCK_BYTES, PRECISIONS, StepSpec, StepTrace, TraceError, trace_step

GIB = 2**30
STRATEGIES = ("single", "ddp", "zero2", "fsdp")
#: Lightning's precision spellings -> the canonical ones
PRECISION_ALIASES = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true", "64": "64-true", "64-true": "64-true"}


@dataclass(frozen=True)
class Card:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense 16-bit tensor-core peak
    fp32_tflops: float  # dense fp32 peak (no TF32: PyTorch's default matmul precision)

    def tflops(self, precision: str) -> float:
        return self.fp32_tflops if precision in ("32-true", "64-true") else self.bf16_tflops

    @property
    def bytes(self) -> float:
        return self.memory_gib * GIB


@dataclass
class PlanConfig:
    """The ``plan`` config node, checked (a bad value names its key)."""

    gpus: int | None
    strategy: str | None
    micro_batch: int | None
    attention: str
    mfu: float
    reserve_gib: float
    zero2_bucket_elements: int
    block_bytes: int
    cards: dict[str, Card]
    cache_dir: str | None = None

    @classmethod
    def from_config(cls, node: Any) -> "PlanConfig":
        node = plain(node) or {}
        gpus = node.get("gpus")
        strategy = node.get("strategy")
        check(strategy is None or strategy in STRATEGIES, "plan.strategy", f"must be one of {list(STRATEGIES)} or null, got {strategy!r}")
        attention = node.get("attention", "flash_or_efficient")
        check(attention in ATTENTION, "plan.attention", f"must be one of {list(ATTENTION)}, got {attention!r}")
        mfu = as_float(node.get("mfu", 0.4), "plan.mfu", positive=True)
        check(mfu <= 1, "plan.mfu", f"is a fraction of the card's peak, at most 1, got {mfu:g}")
        cards = {}
        for name, card in (node.get("cards") or {}).items():
            where = f"plan.cards.{name}"
            check(isinstance(card, Mapping), where, "must hold memory_gib, bf16_tflops, fp32_tflops")
            cards[name] = Card(name, as_float(card.get("memory_gib"), f"{where}.memory_gib", positive=True),
                               as_float(card.get("bf16_tflops"), f"{where}.bf16_tflops", positive=True),
                               as_float(card.get("fp32_tflops"), f"{where}.fp32_tflops", positive=True))
        check(bool(cards), "plan.cards", "needs at least one card")
        return cls(
            gpus=None if gpus is None else as_int(gpus, "plan.gpus", minimum=1),
            strategy=strategy,
            micro_batch=None if node.get("micro_batch") is None else as_int(node["micro_batch"], "plan.micro_batch", minimum=1),
            attention=attention, mfu=mfu,
            reserve_gib=as_float(node.get("reserve_gib", 1.0), "plan.reserve_gib", minimum=0),
            zero2_bucket_elements=as_int(node.get("zero2_bucket_elements", int(2e8)), "plan.zero2_bucket_elements", minimum=0),
            block_bytes=as_int(node.get("block_bytes", BLOCK_BYTES), "plan.block_bytes", minimum=1),
            cards=cards,
            cache_dir=None if node.get("cache_dir") in (None, "") else str(node["cache_dir"]),
        )


def precision_of(cfg: Any) -> str:
    value = str(cfg.trainer.get("precision", "32-true"))
    value = PRECISION_ALIASES.get(value, value)
    check(value in PRECISIONS, "trainer.precision", f"mode=plan traces {sorted(PRECISIONS)}, got {value!r}")
    return value


def strategy_of(cfg: Any, gpus: int, chosen: str | None) -> str:
    """``plan.strategy``, else the trainer's (DeepSpeed stage 2 -> zero2, FSDP -> fsdp, else ddp / single)."""
    if chosen:
        return chosen
    strategy = cfg.trainer.get("strategy")
    name = str(strategy.get("_target_", "") if hasattr(strategy, "get") else strategy).lower()
    if "deepspeed" in name:
        check("stage_2" in name, "trainer.strategy", f"mode=plan models DeepSpeed ZeRO stage 2 only, got {strategy!r}")
        return "zero2"
    if "fsdp" in name:
        return "fsdp"
    return "ddp" if gpus > 1 else "single"


def parse_duration(text: str, key: str) -> float:
    """Lightning's ``max_time`` "DD:HH:MM:SS" (or a number of seconds) -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", str(text).strip())
    check(bool(match), key, f"must be DD:HH:MM:SS, got {text!r}")
    days, hours, minutes, seconds = (int(g) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def holdout(data: Mapping[str, Any], n: int) -> int:
    """Samples of the training split the task holds out for validation (the data modules' rules)."""
    if data.get("val_reference") is not None or data.get("val_from") == "test":
        return 0  # generation: FID references drawn from, not split off, the training images
    fraction = data.get("val_fraction")
    if fraction is not None:
        return int(round(float(fraction) * n))
    size = data.get("val_size")
    if isinstance(size, float) and size < 1:
        return int(round(size * n))
    return int(size or 0)


@dataclass
class Memory:
    """One GPU's bytes at the peak, under the run's strategy."""

    strategy: str
    gpus: int
    peak: float
    params: float
    grads_and_states: float
    activations: float
    overhead: float  # what the strategy adds (DDP buckets, ZeRO buckets, FSDP gathered units)
    reserve: float

    @property
    def total(self) -> float:
        return self.peak + self.reserve

    def fits(self, card: Card) -> bool:
        return self.total <= card.bytes

    def verdict(self, card: Card) -> str:
        """fits | tight (within 10% of the card: the allocator's cache can tip it) | no."""
        if not self.fits(card):
            return "no"
        return "tight" if self.total > 0.9 * card.bytes else "fits"


@dataclass
class RunPlan:
    """Everything a run is planned from, resolved from its settings once."""

    name: dict[str, str]
    plan: PlanConfig
    spec: StepSpec
    shapes: dict[str, Any]
    gpus: int
    strategy: str
    precision: str
    global_batch: int
    micro_batch: int
    accumulate: int
    epochs: int | None
    max_steps: int | None
    time_budget_s: float | None
    train_samples: int | None
    trace_inputs: dict[str, Any] = field(default_factory=dict)  # what the traced iteration depends on (its key)
    fsdp_units: tuple[int, int] | None = None  # (largest unit bytes, root bytes) when planning FSDP
    traces: dict[int, StepTrace] = field(default_factory=dict)

    # -- from a run's settings ----------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Any) -> "RunPlan":
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(settings.config)  # the run's resolved config, read once by the settings
        plan = PlanConfig.from_config(cfg.get("plan"))
        resources = cfg.task.get("resources") or {}
        if plan.gpus is not None:
            gpus = plan.gpus
        elif resources.get("gpus") is not None:
            gpus = as_int(resources.get("gpus"), "task.resources.gpus", minimum=1)
        else:
            devices = cfg.trainer.get("devices", 1)
            gpus = (len(devices) if OmegaConfList(devices) else as_int(devices, "trainer.devices", minimum=1)) * \
                as_int(cfg.trainer.get("num_nodes", 1), "trainer.num_nodes", minimum=1)
        total = as_int(cfg.task.batch_size, "task.batch_size", minimum=1)
        micro_key = "plan.micro_batch" if plan.micro_batch is not None else "task.micro_batch_size"
        micro = plan.micro_batch if plan.micro_batch is not None else cfg.task.get("micro_batch_size")
        if micro is None:
            check(total % gpus == 0, "task.batch_size", f"{total} is not divisible by the plan's {gpus} GPUs")
            micro = total // gpus
            accumulate = as_int(cfg.trainer.get("accumulate_grad_batches", 1) or 1, "trainer.accumulate_grad_batches", minimum=1)
        else:
            micro = as_int(micro, micro_key, minimum=1)
            check(total % (gpus * micro) == 0, micro_key,
                  f"task.batch_size={total} is not divisible by GPUs x micro-batch = {gpus} x {micro}")
            accumulate = total // (gpus * micro)
        strategy = strategy_of(cfg, gpus, plan.strategy)
        precision = precision_of(cfg)
        autocast_dtype, param_dtype = PRECISIONS[precision]
        if strategy == "zero2" and autocast_dtype is not None:
            # DeepSpeed's bf16 / fp16 casts the module itself and runs without autocast
            precision, param_dtype = {torch.bfloat16: "bf16-true", torch.float16: "16-true"}[autocast_dtype], autocast_dtype
        model_cfg = dict(settings.model)
        batch, shapes = batch_builder(cfg, model_cfg)
        spec = StepSpec(
            build_model=_model_builder(model_cfg, settings.model_args, settings.method, param_dtype),
            build_module=_module_builder(settings, micro, model_cfg),
            optimizer=_optimizer(settings),
            batch=batch,
            precision=precision,
            accumulate=accumulate,
            clip=cfg.trainer.get("gradient_clip_val"),
            attention=plan.attention,
            block=plan.block_bytes,
        )
        epochs = cfg.task.get("epochs")
        max_steps = cfg.trainer.get("max_steps", -1)
        budget = cfg.task.get("time_budget") or cfg.trainer.get("max_time")
        size_key = "task.dataset.train_size"
        size = (cfg.task.get("dataset") or {}).get("train_size")
        if size is None:  # a task that declares its data itself (no dataset group) may give it here
            size_key, size = "task.dataset_size", cfg.task.get("dataset_size")
        train = None
        if size is not None:
            size = as_int(size, size_key, minimum=1)
            train = size - holdout(plain(cfg.task.data) or {}, size)
        run = cls(
            name={"task": cfg.task.name, "model": cfg.model.name, "method": cfg.method.name},
            plan=plan, spec=spec, shapes=shapes, gpus=gpus, strategy=strategy, precision=precision,
            global_batch=total, micro_batch=micro, accumulate=accumulate,
            epochs=None if epochs in (None, -1) else as_int(epochs, "task.epochs", minimum=1),
            max_steps=None if max_steps in (None, -1) else as_int(max_steps, "trainer.max_steps", minimum=1),
            time_budget_s=None if budget is None else parse_duration(budget, "task.time_budget"),
            train_samples=train,
        )
        run.trace_inputs = {
            "model": {k: v for k, v in model_cfg.items() if k not in ("name", "pretrained")},
            "model_args": dict(settings.model_args), "method": settings.method.to_dict(),
            "module": plain(cfg.task.module), "lr_scales": plain(cfg.task.get("lr_scales") or {}),
            "optimizer": {k: v for k, v in (plain(cfg.task.optimizer) or {}).items() if k != "lr"},
            "shapes": shapes, "precision": precision, "param_dtype": str(param_dtype), "accumulate": accumulate,
            "clip": spec.clip, "attention": plan.attention, "block": plan.block_bytes,
        }
        if strategy == "fsdp":
            run.fsdp_units = _fsdp_units(cfg, model_cfg, settings)
        return run

    def trace_key(self, micro_batch: int) -> str:
        """What a trace at ``micro_batch`` depends on, hashed (with onelora's source and the libraries):
        runs that share it share the trace (KITTI -> DIODE and NYU -> DIODE, a method in two grids)."""
        text = json.dumps([source_digest(), self.trace_inputs, int(micro_batch)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    # -- tracing -----------------------------------------------------------------------------------
    def trace(self, micro_batch: int | None = None, *, fake: bool = True) -> StepTrace:
        b = int(micro_batch or self.micro_batch)
        if fake and b not in self.traces:
            cached = TRACES.get(self.trace_key(b), self.plan.cache_dir)
            if cached is not None:
                self.traces[b] = cached
        if b not in self.traces or not fake:
            try:
                result = trace_step(self.spec, b, fake=fake)
            except TraceError as err:
                raise ConfigError(f"mode=plan: model {self.name['model']!r} with method {self.name['method']!r}: {err}") from err
            except (ConfigError, AdapterConfigError):  # the method or the config, named as in a run
                raise
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                raise ConfigError(
                    f"mode=plan: model '{self.name['model']}' does not take the task's input {self.shapes} at micro-batch "
                    f"{b}: {str(err).splitlines()[0][:200]} (check model.input, task.data, plan.seq_length)") from None
            if not fake:
                return result
            self.traces[b] = result
            TRACES.put(self.trace_key(b), result, self.plan.cache_dir)
        return self.traces[b]

    # -- memory ------------------------------------------------------------------------------------
    def memory(self, trace: StepTrace) -> Memory:
        t, n = trace, self.gpus
        params = float(t.param_total_bytes)
        states = float(t.grad_bytes + t.optimizer_bytes)
        reserve = self.plan.reserve_gib * GIB
        if self.strategy == "zero2":
            element = max(t.param_bytes, key=t.param_bytes.get)  # the weights' dtype
            size = torch.empty((), dtype=getattr(torch, element)).element_size()
            sharded = t.trainable * (12 + size) / n
            buckets = 2.0 * self.plan.zero2_bucket_elements * size
            step = t.optimizer_transient * 4 / size / n  # the step's temporaries, on the fp32 share
            peak = t.peak_without_states + sharded + buckets + step
            return Memory("zero2", n, peak, params, sharded, peak - params - sharded - buckets, buckets, reserve)
        if self.strategy == "fsdp":
            largest, root = self.fsdp_units or (0, 0)
            gathered = 2 * largest + root
            peak = t.peak_without_states - params + params / n + gathered + (states + t.optimizer_transient) / n
            return Memory("fsdp", n, peak, params / n, states / n, peak - params / n - gathered - states / n, gathered, reserve)
        buckets = float(t.grad_bytes) if self.strategy == "ddp" and n > 1 else 0.0
        peak = t.peak + buckets
        return Memory(self.strategy, n, peak, params, states, peak - params - states - buckets, buckets, reserve)

    def largest_micro_batch(self, card: Card) -> int | None:
        """The largest micro-batch whose peak (plus the reserve) fits ``card``, from the line through
        the traces at b and 2b; None if even one sample does not fit."""
        small = self.trace(self.micro_batch)
        large = self.trace(2 * self.micro_batch)
        a_peak, b_peak = self.memory(small).total, self.memory(large).total
        slope = (b_peak - a_peak) / self.micro_batch
        if slope <= 0:
            return None
        intercept = a_peak - slope * self.micro_batch
        best = math.floor((card.bytes - intercept) / slope)
        return best if best >= 1 else None

    # -- compute and length ------------------------------------------------------------------------
    def step_flops(self, trace: StepTrace) -> dict[str, int]:
        """FLOPs of one optimizer step on all GPUs: executed (recomputation included) and model FLOPs."""
        micro = trace.flops_forward + trace.flops_backward
        per_gpu = micro * self.accumulate
        model = (micro - trace.flops_recompute) * self.accumulate
        return {"executed": per_gpu * self.gpus, "model": model * self.gpus, "per_gpu": per_gpu,
                "forward": trace.flops_forward, "backward": trace.flops_backward, "recompute": trace.flops_recompute}

    def steps_per_epoch(self) -> int | None:
        if self.train_samples is None:
            return None
        per_gpu = math.ceil(self.train_samples / self.gpus)
        return math.ceil(math.ceil(per_gpu / self.micro_batch) / self.accumulate)

    def optimizer_steps(self) -> tuple[int | None, str]:
        """Optimizer steps before any time budget, and what set them."""
        per_epoch = self.steps_per_epoch()
        by_epochs = per_epoch * self.epochs if per_epoch is not None and self.epochs else None
        candidates = [(s, why) for s, why in ((by_epochs, f"{self.epochs} epochs x {per_epoch} steps"),
                                                (self.max_steps, "trainer.max_steps")) if s is not None]
        if not candidates:
            return None, "unknown: set the dataset's train_size (with task.epochs) or trainer.max_steps"
        return min(candidates)

    def run_cost(self, trace: StepTrace, card: Card) -> dict[str, Any]:
        """Steps, PFLOP and GPU-hours of the whole run on ``card`` at ``plan.mfu``."""
        steps, why = self.optimizer_steps()
        flops = self.step_flops(trace)
        rate = card.tflops(self.precision) * 1e12 * self.plan.mfu  # model FLOP/s per GPU
        step_s = flops["model"] / self.gpus / rate
        if self.time_budget_s is not None:
            within = math.floor(self.time_budget_s / step_s)
            if steps is None or within < steps:
                steps, why = within, f"task.time_budget {self.time_budget_s / 3600:g} h at the planned rate"
        if steps is None:
            return {"steps": None, "why": why, "pflop": None, "gpu_hours": None, "hours": None}
        gpu_hours = steps * flops["model"] / rate / 3600
        return {"steps": steps, "why": why, "pflop": steps * flops["executed"] / 1e15,
                "model_pflop": steps * flops["model"] / 1e15, "gpu_hours": gpu_hours, "hours": gpu_hours / self.gpus}

    # -- the record ----------------------------------------------------------------------------------
    def record(self, *, largest: bool = True) -> dict[str, Any]:
        trace = self.trace()
        memory = self.memory(trace)
        flops = self.step_flops(trace)
        out: dict[str, Any] = {
            **self.name,
            "gpus": self.gpus, "strategy": self.strategy, "precision": self.precision,
            "global_batch": self.global_batch, "micro_batch": self.micro_batch, "accumulate": self.accumulate,
            "shapes": self.shapes, "attention": self.plan.attention, "kernels": trace.kernels,
            "checkpointing": trace.checkpointing,
            "params": trace.params, "trainable": trace.trainable,
            "bytes": {
                "params": trace.param_bytes, "buffers": trace.buffer_bytes, "grads": trace.grad_bytes,
                "optimizer": trace.optimizer_bytes, "activations": trace.activations,
                "forward_held": trace.forward_held, "traced_peak": trace.peak,
                "peak_per_gpu": int(memory.peak), "strategy_overhead": int(memory.overhead),
                "reserve": int(memory.reserve),
            },
            "peak_gib": round(memory.total / GIB, 3),
            "flops": {"step_executed": flops["executed"], "step_model": flops["model"], "micro_forward": flops["forward"],
                      "micro_backward": flops["backward"], "micro_recompute": flops["recompute"]},
            "mfu": self.plan.mfu,
            "cards": {},
        }
        for name, card in self.plan.cards.items():
            entry = {"memory_gib": card.memory_gib, "verdict": memory.verdict(card), "fits": memory.fits(card)}
            if largest:
                entry["largest_micro_batch"] = self.largest_micro_batch(card)
            entry.update(self.run_cost(trace, card))
            out["cards"][name] = entry
        return out


class TraceCache:
    """Traces by key: in this process, and as JSON files under a folder when one is given."""

    def __init__(self) -> None:
        self.memory: dict[str, StepTrace] = {}

    def get(self, key: str, folder: str | None) -> StepTrace | None:
        if key in self.memory:
            return self.memory[key]
        if folder:
            try:
                trace = StepTrace(**json.loads((Path(folder) / f"{key}.json").read_text()))
            except (FileNotFoundError, json.JSONDecodeError, TypeError):
                return None
            self.memory[key] = trace
            return trace
        return None

    def put(self, key: str, trace: StepTrace, folder: str | None) -> None:
        self.memory[key] = trace
        if folder:
            path = Path(folder) / f"{key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(trace.to_dict()))
            tmp.replace(path)


TRACES = TraceCache()


#: onelora's code that never runs in a trace (a change there keeps the cached traces)
OUTSIDE_TRACES = ("reporting", "analysis", "bench", "plan/report.py", "plan/paper.py", "plan/measure.py",
                  "plan/__main__.py", "plan/__init__.py")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """onelora's source that a trace runs and the libraries it runs through, digested: a cached
    trace is used only while neither changed."""
    import importlib.metadata as md

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if not any(name == skip or name.startswith(f"{skip}/") for skip in OUTSIDE_TRACES):
            digest.update(name.encode() + path.read_bytes())
    for name in ("torch", "transformers", "timm", "lightning"):
        try:
            digest.update(f"{name}={md.version(name)}".encode())
        except md.PackageNotFoundError:
            pass
    return digest.hexdigest()[:16]


def OmegaConfList(value: Any) -> bool:
    from omegaconf import OmegaConf

    return isinstance(value, (list, tuple)) or OmegaConf.is_list(value)


# ------------------------------------------------------------------------------------------------
# how the traced iteration builds its parts
# ------------------------------------------------------------------------------------------------

def _model_builder(model_cfg: Mapping[str, Any], model_args: Mapping[str, Any], method: Any,
                   param_dtype: torch.dtype | None):
    from ..adapters import inject
    from ..models import build_model

    def build() -> torch.nn.Module:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode_stack

        fake = any(isinstance(m, FakeTensorMode) for m in _get_current_dispatch_mode_stack())
        # under fake tensors: built and adapted on the meta device outside the modes (nothing is
        # allocated, no fake tensor is swapped), then materialised as fake tensors
        with _disable_current_modes() if fake else contextlib.nullcontext(), \
                torch.device("meta") if fake else contextlib.nullcontext():
            model = _build(model_cfg, model_args)
            if param_dtype is not None:
                model = model.to(param_dtype)
            inject(model, method, target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [],
                   module_sets=model_cfg.get("module_sets") or {})
        return model.to_empty(device="cpu") if fake else model

    def _build(cfg, args):
        try:
            return build_model(cfg, load_weights=False, **dict(args))
        except TypeError as err:
            raise ConfigError(f"task.model_args: {err}") from None

    return build


def _module_builder(settings: Any, micro_batch: int, model_cfg: Mapping[str, Any]):
    from ..contract import build

    task = settings.task
    offered = {"batch_size": micro_batch, "model_input": model_cfg.get("input"),
               **{name: None for name in task.parts}}  # parts (VAE, tokenizer, FID) serve evaluation, not the step

    def module(model: torch.nn.Module) -> Any:
        return build(task.module, "task.module", offered, model=model, optimizer=None, scheduler=None,
                     metric=task.metric.as_dict(), lr_scales=dict(task.lr_scales))

    return module


def _optimizer(settings: Any):
    """The task's optimizer with ``foreach=True`` where it takes it: PyTorch's default on CUDA (the
    CPU's default is one tensor at a time, which allocates different temporaries)."""
    import inspect

    factory = settings.optimizer()
    target = getattr(factory, "func", factory)
    bound = getattr(factory, "keywords", {}) or {}
    try:
        takes = "foreach" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        takes = False

    def make(groups):
        return factory(groups, foreach=True) if takes and "foreach" not in bound else factory(groups)

    return make


def _fsdp_units(cfg: Any, model_cfg: Mapping[str, Any], settings: Any) -> tuple[int, int]:
    """(the largest wrapped unit's parameter bytes, the unwrapped rest's), from a meta-device build."""
    from hydra.utils import get_class

    from ..models import build_model

    wrap = (plain(cfg.trainer.get("strategy")) or {}).get("wrap") or [] if hasattr(cfg.trainer.get("strategy"), "get") else []
    classes = tuple(get_class(name) for name in wrap)
    with torch.device("meta"):
        model = build_model(model_cfg, load_weights=False, **settings.model_args)
    units = [m for m in model.modules() if classes and isinstance(m, classes)]
    unit_bytes = [sum(p.numel() * p.element_size() for p in u.parameters()) for u in units]
    inside = {id(p) for u in units for p in u.parameters()}
    root = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in inside)
    return (max(unit_bytes) if unit_bytes else 0, root)
