"""One training iteration of a task, traced exactly: what a method costs in memory and FLOPs.

The same code runs on fake tensors (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes and
dtypes only, no weights, no data, no GPU; LLaMA-2 13B in seconds) and on real ones (the exactness
tests run both on each family's tiny twin and compare). What it does is what Lightning does in a
run: the task module's ``training_step`` under the trainer's precision, the loss divided by the
accumulation steps, ``backward``, gradient clipping, the module's ``optimizer_step`` and
``zero_grad(set_to_none=True)``. One optimizer step runs first, so its states exist; with gradient
accumulation the traced micro-step is a later one of its window (its gradients exist already, the
larger peak); the optimizer runs ``foreach`` as it does on CUDA.

Four instruments watch it:

- **live memory**: every storage an op creates, from the op that allocates it to the moment it is
  freed (a weak reference on the storage), each rounded up to the CUDA caching allocator's 512-byte
  block. The peak is the most bytes alive at once during the steady-state iteration (after one
  optimizer step, so its states exist), which is what ``torch.cuda.max_memory_allocated`` measures
  on a GPU, minus what no op allocates (see docs: CUDA context, cuBLAS / cuDNN workspaces);
- **activations**: the distinct storages autograd packs for backward during the forward
  (saved-tensor hooks, parameters and buffers excluded; the rule of ``ModelMemory`` in a run);
- **FLOPs**: the formulas of ``torch.utils.flop_counter`` (``FlopCounterMode``'s, extended to the
  in-place ``addmm_`` it misses; the tests check the totals equal ``FlopCounterMode`` with that
  mapping on real tensors) over forward and backward of one micro-step, with the forward passes that
  run again during backward (activation checkpointing) counted apart as recomputation;
- **the GPU's kernels**: a GPU run does not take CPU code paths, so on the CPU the trace routes
  ``scaled_dot_product_attention`` to the kernel a CUDA GPU picks (``attention``: flash when the
  inputs are 16-bit and no mask is given, else memory-efficient; ``math``; or ``native``, the CPU's
  own choice, for comparisons with real CPU tensors) and dropout to ATen's fused kernel (a 1-byte
  mask, as CUDA keeps, not the CPU's noise tensor); code that picks a path by device
  (``DEVICE_CHOICES``: 1LoRA's sums in the matmul) takes the accelerator's. Autocast runs with the CPU's policy; with these
  kernels routed, it keeps the same bytes as CUDA's policy does (a test traces a forward on fake CUDA
  tensors under CUDA autocast to show it: autograd cannot run backward on fake CUDA tensors without
  a GPU).

What fake tensors cannot know is decided the worst way (``UnknownValues``): a boolean mask selects
every element (depth's valid pixels), a value read back to Python reads as 0 / False (transformers
then builds the explicit attention mask of a padded batch).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

_DEVICE = torch.ops.prim.device.default


def _flop_formulas() -> dict[Any, Any]:
    """``flop_counter``'s formulas, and the same for the in-place variants (``addmm_``, ``baddbmm_``),
    which ``FlopCounterMode`` does not count: 1LoRA's fused op computes its base matmul with
    ``addmm_``, so ``FlopCounterMode`` alone would miss every adapted layer's matmul."""
    formulas = dict(flop_registry)
    for packet, formula in flop_registry.items():
        inplace = getattr(torch.ops.aten, f"{packet.__name__}_", None)
        if isinstance(inplace, torch._ops.OpOverloadPacket):
            formulas.setdefault(inplace, formula)
    return formulas


#: what the trace counts FLOPs with (FlopCounterMode(custom_mapping=...) counts the same)
FLOP_FORMULAS = _flop_formulas()
#: the CUDA caching allocator rounds every allocation up to this many bytes
BLOCK_BYTES = 512
ATTENTION = ("flash_or_efficient", "efficient", "math", "native")
#: Lightning precision -> (autocast dtype or None, parameter dtype or None)
PRECISIONS: dict[str, tuple[torch.dtype | None, torch.dtype | None]] = {
    "32-true": (None, None), "32": (None, None), "64-true": (None, torch.float64),
    "bf16-mixed": (torch.bfloat16, None), "16-mixed": (torch.float16, None),
    "bf16-true": (None, torch.bfloat16), "16-true": (None, torch.float16),
}


def rounded(nbytes: int, block: int) -> int:
    return -(-int(nbytes) // block) * block if block > 1 else int(nbytes)


def storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


# ------------------------------------------------------------------------------------------------
# instruments
# ------------------------------------------------------------------------------------------------

class LiveMemory(TorchDispatchMode):
    """Each storage an op creates: bytes (rounded to ``block``), the op index that allocated it and
    the op index after which it was freed (None while alive); ``watch`` adds storages made before.
    It also counts FLOPs with ``torch.utils.flop_counter``'s formulas (those of ``FlopCounterMode``,
    without its module tracking or its decompositions, which would change what is allocated)."""

    def __init__(self, block: int = BLOCK_BYTES, unknown_values: bool = False):
        super().__init__()
        self.block = int(block)
        self.unknown = UnknownValues() if unknown_values else None  # in this mode: one Python layer less per op
        self.op = 0
        self.flops = 0
        self.recomputing = 0  # > 0 while activation checkpointing runs a forward again (in backward)
        self.recompute_flops = 0
        self.records: list[list[Any]] = []  # [bytes, born, died]
        self._alive: dict[int, list[Any]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _DEVICE:
            return func(*args, **kwargs)
        self.op += 1
        out = self.unknown.__torch_dispatch__(func, types, args, kwargs) if self.unknown else func(*args, **kwargs)
        formula = FLOP_FORMULAS.get(func._overloadpacket)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            self.flops += flops
            if self.recomputing:
                self.recompute_flops += flops
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.watch(t)
        return out

    def watch(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._alive:
            return
        record = [rounded(storage.nbytes(), self.block), self.op, None]
        self.records.append(record)
        self._alive[key] = record
        weakref.finalize(storage, self._free, key, record)

    def _free(self, key: int, record: list[Any]) -> None:
        record[2] = self.op
        if self._alive.get(key) is record:
            del self._alive[key]

    def record_of(self, t: torch.Tensor) -> int:
        """The identity of the record behind ``t``'s storage (storage addresses are reused)."""
        self.watch(t)
        return id(self._alive[storage_key(t)])

    def live_bytes(self) -> int:
        return sum(r[0] for r in self._alive.values())

    def window(self, start: int, end: int, groups: Mapping[str, set[int]]) -> dict[str, list[int]]:
        """Bytes alive after each op in ``start..end``, per group of records (``record_of``; the rest: ``other``)."""
        n = end - start + 1
        out = {name: [0] * (n + 1) for name in (*groups, "other")}
        for record in self.records:
            size, born, died = record
            if died is not None and died < start or born > end:
                continue
            name = next((g for g, ids in groups.items() if id(record) in ids), "other")
            diff = out[name]
            diff[max(born, start) - start] += size
            if died is not None and died < end:
                diff[died - start + 1] -= size
        for name, diff in out.items():  # prefix sums: the live bytes after each op
            total = 0
            for i in range(n):
                total += diff[i]
                diff[i] = total
            diff.pop()
        return out


class SavedActivations:
    """The storages autograd packs for backward (saved-tensor hooks), less ``exclude`` (the
    parameters' and buffers'); the pack hook returns a detached tensor (returning the tensor itself
    keeps the graph alive through a reference cycle)."""

    def __init__(self, exclude: set[int]):
        self.exclude = exclude
        self.saved: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t)
        if key not in self.exclude:
            self.saved[key] = max(self.saved.get(key, 0), t.untyped_storage().nbytes())
        return t.detach()

    def __enter__(self) -> "SavedActivations":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.saved.values())


@contextlib.contextmanager
def watching_recomputation(live: LiveMemory) -> Iterator[None]:
    """Marks ``live`` while ``torch.utils.checkpoint`` recomputes a forward (its ``_recomputation_hook``
    is entered around the recomputation; module hooks would miss it, as the recomputation stops
    early, and grad mode is off inside custom autograd functions)."""
    import torch.utils.checkpoint as checkpoint

    hook = getattr(checkpoint, "_recomputation_hook", None)
    if hook is None:
        yield
        return
    enter, leave = hook.__enter__, hook.__exit__

    def entering(self):
        live.recomputing += 1
        return enter(self)

    def leaving(self, *exc):
        live.recomputing -= 1
        return leave(self, *exc)

    hook.__enter__, hook.__exit__ = entering, leaving
    try:
        yield
    finally:
        hook.__enter__, hook.__exit__ = enter, leave


#: (module, function(device) -> bool) pairs where code takes a GPU-only path on accelerators: the trace
#: answers as a GPU would (1LoRA's per-token sums from one more row of the matmul under mixed precision)
DEVICE_CHOICES = (("onelora.adapters.onelora", "sums_in_matmul"),)


class GpuKernels:
    """The kernels a CUDA GPU runs where the CPU would take another path: attention (see module
    docstring) and fused dropout. It replaces ``torch.nn.functional``'s two functions while it is
    entered (a torch-function mode would not reach the forward that activation checkpointing runs
    again during backward: the autograd engine does not carry Python function modes)."""

    def __init__(self, attention: str = "flash_or_efficient", fused_dropout: bool = True):
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.attention, self.fused_dropout = attention, fused_dropout
        self.kernels: dict[str, int] = {}
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "GpuKernels":
        import importlib

        functional = nn.functional
        self._saved = {"scaled_dot_product_attention": functional.scaled_dot_product_attention,
                       "dropout": functional.dropout}
        if self.attention != "native":
            functional.scaled_dot_product_attention = self.sdpa
        if self.fused_dropout:
            functional.dropout = self.dropout
        self._device_choices = []
        for module_name, name in DEVICE_CHOICES:  # code that asks which device it runs on: a GPU
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                self._device_choices.append((module, name, getattr(module, name)))
                setattr(module, name, lambda device: True)
        return self

    def __exit__(self, *exc) -> None:
        for name, function in self._saved.items():
            setattr(nn.functional, name, function)
        for module, name, function in self._device_choices:
            setattr(module, name, function)

    def dropout(self, input, p=0.5, training=True, inplace=False):
        if training and 0.0 < p < 1.0:
            return torch.native_dropout(input, p, True)[0]
        return self._saved["dropout"](input, p, training, inplace)

    def sdpa(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        device = q.device.type
        if torch.is_autocast_enabled(device):  # SDPA is on autocast's lower-precision list
            low = torch.get_autocast_dtype(device)
            q, k, v = (x.to(low) if x.is_floating_point() and x.dtype != low else x for x in (q, k, v))
            if attn_mask is not None and attn_mask.is_floating_point():
                attn_mask = attn_mask.to(low)
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill_(attn_mask.logical_not(), float("-inf"))
        flash_ok = attn_mask is None and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256
        if self.attention == "math":
            kernel = "math"
            out = torch.ops.aten._scaled_dot_product_attention_math(
                q, k, v, attn_mask, dropout_p, is_causal, None, scale=scale)[0]
        elif self.attention == "flash_or_efficient" and flash_ok:
            kernel = "flash"
            out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[0]
        else:
            kernel = "efficient"
            if attn_mask is not None:  # the kernel wants the mask broadcast to (batch, heads, q, k)
                attn_mask = attn_mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            grad = q.requires_grad or k.requires_grad or v.requires_grad
            out = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, attn_mask, grad, dropout_p, is_causal, scale=scale)[0]
        self.kernels[kernel] = self.kernels.get(kernel, 0) + 1
        return out


class UnknownValues:
    """What fake tensors cannot know, decided the worst way: a boolean-mask selection selects every
    element (``x[mask]``, its backward's ``index_put``, ``nonzero``); a value read back to Python
    (``.item()``, ``bool(t)``) reads as 0 / False, so e.g. transformers sees a padded batch ("not every
    token attends": an explicit attention mask), as a batch padded to its longest sample is."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aten = torch.ops.aten
        if func is aten._local_scalar_dense.default:
            from torch._subclasses.fake_tensor import DataDependentOutputException

            try:
                return func(*args, **kwargs)  # a constant fake tensors track (torch.tensor(...), optimizer steps)
            except DataDependentOutputException:
                dtype = args[0].dtype
                return False if dtype == torch.bool else (0.0 if dtype.is_floating_point else 0)
        if func is aten.index.Tensor and _bool_index(args[1]):
            mask = next(i for i in args[1] if i is not None)
            return args[0].reshape(-1, *args[0].shape[mask.dim():]).clone()
        if func in (aten.index_put.default,) and _bool_index(args[1]):
            return args[0].clone()
        if func in (aten.index_put_.default, aten._index_put_impl_.default) and _bool_index(args[1]):
            return args[0]
        if func is aten.nonzero.default:
            return torch.empty((args[0].numel(), args[0].dim()), dtype=torch.long, device=args[0].device)
        return func(*args, **kwargs)


def _bool_index(indices: Sequence[Any]) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


@contextlib.contextmanager
def autocast(precision: str, device: str = "cpu") -> Iterator[None]:
    dtype = PRECISIONS[precision][0]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device, dtype=dtype):
        yield


# ------------------------------------------------------------------------------------------------
# the traced iteration
# ------------------------------------------------------------------------------------------------

@dataclass
class StepSpec:
    """What one training iteration of a run is, resolved from its config (see plan.core)."""

    build_model: Callable[[], nn.Module]  # the model with the method injected (under the current device)
    build_module: Callable[[nn.Module], Any]  # the task's LightningModule around it
    optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
    batch: Callable[[int], Any]  # a synthetic batch of n samples in the task's real shapes
    precision: str = "32-true"
    accumulate: int = 1
    clip: float | None = None
    attention: str = "flash_or_efficient"
    fused_dropout: bool = True
    block: int = BLOCK_BYTES


@dataclass
class StepTrace:
    """One micro-batch size's iteration. Bytes are per process (one GPU, nothing sharded)."""

    micro_batch: int
    params: int  # parameters (count)
    trainable: int  # trainable parameters (count)
    param_bytes: dict[str, int]  # by dtype
    trainable_bytes: int
    buffer_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activations: int  # saved for backward by the first micro-step's forward (hooks), params/buffers excluded
    forward_held: int  # every storage the forward left alive (activations, checkpointed blocks' inputs, outputs)
    peak: int  # live bytes at their maximum over the iteration (rounded allocations)
    peak_without_states: int  # forward and backward's peak without gradients and optimizer states (sharded strategies)
    flops_forward: int  # one micro-step
    flops_backward: int  # one micro-step, recomputation included
    flops_recompute: int  # forward passes run again during backward
    optimizer_transient: int = 0  # what clipping and the optimizer step allocate beyond what they find (foreach temporaries)
    kernels: dict[str, int] = field(default_factory=dict)
    checkpointing: bool = False

    @property
    def param_total_bytes(self) -> int:
        return sum(self.param_bytes.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TraceError(RuntimeError):
    """The iteration cannot be traced (an op without fake-tensor support, a shape the model refuses)."""

    def __init__(self, message: str, op: str | None = None):
        super().__init__(message)
        self.op = op


class NoDeviceFakeTensorMode(FakeTensorMode):
    """Fake tensors that never initialise a device: they need none, and asking whether CUDA is there
    on every op (FakeTensorMode's default) costs more than the op on a machine without a GPU."""

    avoid_device_init = True


def fake_mode() -> NoDeviceFakeTensorMode:
    return NoDeviceFakeTensorMode(allow_non_fake_inputs=True)


def trace_step(spec: StepSpec, micro_batch: int, *, fake: bool = True, device: str = "cpu") -> StepTrace:
    """Trace one iteration at ``micro_batch`` samples per micro-step; ``fake`` False runs it on real
    tensors on ``device`` (the same code: the exactness tests on the CPU, the GPU check on CUDA, where
    the model is built on the meta device and filled with random values there)."""
    live = LiveMemory(spec.block, unknown_values=fake)
    kernels = GpuKernels(spec.attention, spec.fused_dropout)
    fake_mode_ = fake_mode() if fake else contextlib.nullcontext()
    try:
        with fake_mode_, live, kernels, _quiet_lightning():
            return _iteration(spec, micro_batch, live, kernels, fake, device)
    except TraceError:
        raise
    except Exception as err:  # name the op where fake tensors gave up
        from torch._subclasses import fake_tensor as ft

        unsupported = (ft.UnsupportedOperatorException, ft.DynamicOutputShapeException, ft.DataDependentOutputException,
                       ft.UnsupportedFakeTensorException)
        if isinstance(err, unsupported):
            op = getattr(err, "func", None)
            raise TraceError(f"the op {op or type(err).__name__} has no fake-tensor support ({str(err)[:160]})",
                             op=str(op) if op else None) from err
        raise


def _iteration(spec: StepSpec, micro_batch: int, live: LiveMemory, kernels: GpuKernels, fake: bool,
               device: str = "cpu") -> StepTrace:
    from torch.utils._python_dispatch import _disable_current_modes

    if fake or device == "cpu":
        model = spec.build_model()
    else:
        with torch.device("meta"):
            model = spec.build_model()
        model = random_fill(model.to_empty(device=device))
    with _disable_current_modes():  # the module's own set-up (schedules, metric states) computes with values
        module = spec.build_module(model)
    module.train()
    for t in (*module.parameters(), *module.buffers()):
        live.watch(t)
    module.on_fit_start()  # what Lightning calls before training (DiT's EMA of the trained weights)
    params = list({id(p): p for p in module.parameters()}.values())
    trainable = [p for p in params if p.requires_grad]
    groups = module.param_groups() if hasattr(module, "param_groups") else [{"params": trainable}]
    optimizer = spec.optimizer([{"params": g["params"]} for g in groups])
    batch = spec.batch(micro_batch)
    if device != "cpu":
        from torch.utils._pytree import tree_map

        batch = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, batch)
    for t in tree_flatten(batch)[0]:
        if isinstance(t, torch.Tensor):
            live.watch(t)
    # one optimizer step first, so its states exist (they are made at the first step); with gradient
    # accumulation the traced micro-step is a later one of the window: its gradients exist already
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    if spec.accumulate == 1:
        optimizer.zero_grad(set_to_none=True)

    weights = {storage_key(t) for t in (*params, *module.buffers())}
    static = {live.record_of(t) for t in (*params, *module.buffers())}
    start = live.op + 1
    saved = SavedActivations(weights)
    before_forward, flops_before = live.live_bytes(), live.flops
    with saved, autocast(spec.precision, torch.device(device).type):
        loss = _loss(module.training_step(batch, 0))
    forward_flops = live.flops - flops_before
    forward_held = live.live_bytes() - before_forward
    recompute_before = live.recompute_flops
    with watching_recomputation(live):
        (loss / spec.accumulate if spec.accumulate > 1 else loss).backward()
    total_flops, recompute = live.flops - flops_before, live.recompute_flops - recompute_before
    del loss
    grads = {live.record_of(p.grad) for p in trainable if p.grad is not None}
    grad_bytes = sum(p.grad.untyped_storage().nbytes() for p in trainable if p.grad is not None)
    step_start = live.op + 1
    if spec.clip:
        torch.nn.utils.clip_grad_norm_(trainable, float(spec.clip))
    module.optimizer_step(0, 0, optimizer)
    states = {live.record_of(t) for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)}
    optimizer_bytes = sum(t.untyped_storage().nbytes() for s in optimizer.state.values() for t in s.values()
                          if isinstance(t, torch.Tensor))
    optimizer.zero_grad(set_to_none=True)
    end = live.op
    timeline = live.window(start, end, {"static": static, "grads": grads, "states": states})
    totals = [sum(parts) for parts in zip(*timeline.values())]
    split = step_start - start  # ops before it: forward and backward; from it: clipping and the optimizer
    without_states = [s + o for s, o in zip(timeline["static"][:split], timeline["other"][:split])]
    other = timeline["other"]
    transient = max(other[split:], default=0) - (other[split - 1] if split > 0 else 0)
    by_dtype: dict[str, int] = {}
    for p in params:
        name = str(p.dtype).removeprefix("torch.")
        by_dtype[name] = by_dtype.get(name, 0) + p.numel() * p.element_size()
    checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in module.modules())
    return StepTrace(
        micro_batch=int(micro_batch),
        params=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        param_bytes=by_dtype,
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        buffer_bytes=sum(b.untyped_storage().nbytes() for b in {storage_key(b): b for b in module.buffers()}.values()),
        grad_bytes=grad_bytes,
        optimizer_bytes=optimizer_bytes,
        activations=saved.bytes,
        forward_held=forward_held,
        peak=max(totals) if totals else 0,
        peak_without_states=max(without_states) if without_states else 0,
        optimizer_transient=max(0, transient),
        flops_forward=int(forward_flops),
        flops_backward=int(total_flops - forward_flops),
        flops_recompute=int(recompute),
        kernels=dict(kernels.kernels),
        checkpointing=checkpointing,
    )


@torch.no_grad()
def random_fill(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Values for a model materialised with ``to_empty``: its memory and speed do not depend on them,
    but garbage can hold NaNs and infinities; normal(0, std) everywhere is harmless."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            t.normal_(0.0, std)
    return model


def _loss(out: Any) -> torch.Tensor:
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor):
        raise TraceError(f"training_step returned {type(out).__name__}, not a loss tensor")
    return loss


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """``self.log`` outside a Trainer warns once per call; the trace has no Trainer."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
        warnings.filterwarnings("ignore", message=r".*self\.trainer.*")
        warnings.filterwarnings("ignore", message=r"Accessing the data pointer of FakeTensor")  # torchmetrics copies its states
        yield


