"""Memory accounting for one training step: activations kept for backward, trainable / gradient /
optimizer-state bytes, and the step's peak.

Activations are counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor autograd
packs is wrapped (the pack hook returns a *detached* tensor inside the wrapper: returning the tensor
itself keeps the graph alive through a reference cycle), storages are counted once, and the
storages of the model's parameters and buffers are left out (keeping them costs nothing extra).
``saved_bytes`` is what is still held when the forward pass ends, i.e. what autograd keeps for
backward; ``packed_bytes`` also counts tensors saved by graphs that died during forward (e.g. peft's
DoRA builds ``B A`` through an identity matrix and drops that graph at once).

Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` over the step; on a CPU, the process's
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) over the step, with glibc told
to serve every allocation above 64 KiB by ``mmap`` so that freed tensors leave the resident set at
once. Either way the step's rise above the memory held before it is added to the bytes the method's
model and optimizer hold on their own (``state_bytes``), so methods that share frozen weights in one
process are measured as if each ran alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

M_MMAP_THRESHOLD = -3


def storage_key(t: torch.Tensor) -> tuple[str, int]:
    st = t.untyped_storage()
    return (str(t.device), st.data_ptr())


def storage_nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        seen.setdefault(storage_key(t), storage_nbytes(t))
    return sum(seen.values())


def model_storage_keys(model: nn.Module) -> set[tuple[str, int]]:
    return {storage_key(t) for t in list(model.parameters()) + list(model.buffers())}


class _Saved:
    """What the pack hook returns: the detached tensor, plus a handle we can watch with weakref."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


@dataclass
class SavedTensorStats:
    saved_bytes: int  # distinct non-parameter storages still held for backward at the end of forward
    packed_bytes: int  # distinct non-parameter storages ever packed during forward
    saved_tensors: int  # number of saved (non-parameter) tensors still held


class SavedTensorCounter:
    """Context manager around a forward pass; call ``stats()`` before running backward."""

    def __init__(self, exclude: set[tuple[str, int]]):
        self.exclude = exclude
        self.held: list[weakref.ref] = []
        self._live_by_key: dict[tuple[str, int], weakref.ref] = {}
        self.packed_bytes = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> _Saved:
        saved = _Saved(t.detach())
        ref = weakref.ref(saved)
        self.held.append(ref)
        key = storage_key(t)
        if key not in self.exclude:
            previous = self._live_by_key.get(key)
            if previous is None or previous() is None:  # a storage freed and reused counts again
                self.packed_bytes += storage_nbytes(t)
            self._live_by_key[key] = ref
        return saved

    @staticmethod
    def _unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor

    def __enter__(self) -> "SavedTensorCounter":
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def stats(self) -> SavedTensorStats:
        alive = [r() for r in self.held]
        tensors = [s.tensor for s in alive if s is not None]
        kept = [t for t in tensors if storage_key(t) not in self.exclude]
        return SavedTensorStats(
            saved_bytes=unique_bytes(kept), packed_bytes=self.packed_bytes, saved_tensors=len(kept)
        )


# ------------------------------------------------------------------------------------------------
# peak memory
# ------------------------------------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def configure_cpu_allocator() -> bool:
    """Make glibc ``mmap`` every allocation above 64 KiB (and return it on free); True if done."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024))
    except OSError:
        return False


def _status_bytes(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


def rss_bytes() -> int:
    return _status_bytes("VmRSS")


def process_peak_bytes() -> int:
    """The process's peak resident set since start or the last ``reset_process_peak``."""
    return _status_bytes("VmHWM")


def reset_process_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_tracker(device: torch.device) -> Iterator[dict[str, int]]:
    """Yields a dict that holds ``rise``: the peak bytes above the level at entry, after exit."""
    out: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield out
        torch.cuda.synchronize(device)
        out["rise"] = torch.cuda.max_memory_allocated(device) - before
        out["method"] = "cuda_max_allocated"
    else:
        reset_process_peak()
        before = rss_bytes()
        yield out
        out["rise"] = max(0, process_peak_bytes() - before)
        out["method"] = "cpu_process_peak_rss"


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return unique_bytes(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


def trainable(model: nn.Module) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out

