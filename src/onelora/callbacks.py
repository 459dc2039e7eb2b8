"""Lightning callbacks every run uses: wall time (summed over resumes), the best validation round
(the paper's "best mean evaluation metric" and the time needed to reach it), the memory a method
costs, the run's identity in its checkpoints, a checkpoint when the job is terminated, and
``torch.compile`` of the adapted model where ``trainer.compile`` asks for it."""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException


def peak_memory() -> dict[str, Any]:
    """GPU: the most memory tensors ever held (max allocated); CPU: the process's peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"device": "cuda", "kind": "max_allocated", "peak_bytes": int(torch.cuda.max_memory_allocated())}
    return {"device": "cpu", "kind": "rss", "peak_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


class ResumableState(L.Callback):
    """A callback whose state comes back when training resumes, but not when ``trainer.test`` loads
    the best checkpoint (that would rewind the clock and the best round to that checkpoint's time)."""

    _restoring = False

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._restoring = trainer.state.fn == "fit"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._restoring:
            self.restore(state_dict)
        self._restoring = False

    def restore(self, state_dict: dict[str, Any]) -> None:
        raise NotImplementedError


class RunStats(ResumableState):
    """Training, validation and whole-run wall time, summed over every attempt (kept in checkpoints).

    ``started`` is when this attempt's process began the run (``time.time()``), so the whole-run
    time counts set-up, pre-training and testing too, and a resumed run adds its attempts.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.fit_s = 0.0
        self.val_s = 0.0
        self.total_before_s = 0.0  # whole-run time of earlier attempts
        self.attempts = 1
        self._fit_start: float | None = None
        self._val_start: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._fit_start is not None:
            self.fit_s += time.perf_counter() - self._fit_start
            self._fit_start = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        # the end of the whole round: after the module's own epoch-end work (FID sampling)
        if self._val_start is not None:
            self.val_s += time.perf_counter() - self._val_start
            self._val_start = None

    def fit_seconds(self) -> float:
        """Training + validation wall time so far, over all attempts."""
        return self.fit_s + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)

    def times(self) -> dict[str, float]:
        fit = self.fit_seconds()
        total = self.total_before_s + time.time() - self.started
        return {"fit_s": round(fit, 3), "train_s": round(fit - self.val_s, 3), "val_s": round(self.val_s, 3),
                "total_s": round(total, 3), "attempts": self.attempts}

    def state_dict(self) -> dict[str, Any]:
        return {"fit_s": self.fit_seconds(), "val_s": self.val_s,
                "total_s": self.total_before_s + time.time() - self.started, "attempts": self.attempts}

    def restore(self, state_dict: dict[str, Any]) -> None:
        self.fit_s = float(state_dict.get("fit_s", 0.0))
        self.val_s = float(state_dict.get("val_s", 0.0))
        self.total_before_s = float(state_dict.get("total_s", 0.0))
        self.attempts = int(state_dict.get("attempts", 1)) + 1


class BestMetric(ResumableState):
    """The best validation round by the task's metric: its value, epoch, step and time-to-best
    (training + validation wall time up to the end of that round, from ``RunStats``)."""

    def __init__(self, metric: Mapping[str, Any], stats: RunStats) -> None:
        self.key = str(metric["val_key"])
        self.maximize = str(metric.get("direction", "max")) == "max"
        self.stats = stats
        self.best: float | None = None
        self.last: float | None = None
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.time_to_best_s: float | None = None
        self.rounds = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.key not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.key])
        self.last, self.rounds = value, self.rounds + 1
        if math.isfinite(value) and (self.best is None or (value > self.best if self.maximize else value < self.best)):
            self.best, self.best_epoch, self.best_step = value, trainer.current_epoch, trainer.global_step
            self.time_to_best_s = round(self.stats.fit_seconds(), 3)

    def summary(self) -> dict[str, Any]:
        return {"best_val": self.best, "final_val": self.last, "best_epoch": self.best_epoch,
                "best_step": self.best_step, "val_rounds": self.rounds}

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("best", "last", "best_epoch", "best_step", "time_to_best_s", "rounds")}

    def restore(self, state_dict: dict[str, Any]) -> None:
        for key, value in state_dict.items():
            setattr(self, key, value)


class ModelMemory(L.Callback):
    """What the method costs in memory, measured in the run (the same way on every device):
    parameter, gradient and optimizer-state bytes, and the activation bytes autograd keeps for
    backward in one training step (saved-tensor hooks on the first batch of each attempt)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = {}
        self._hooks: Any = None
        self._saved: dict[int, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.bytes.get("activations") is not None or self._hooks is not None:
            return
        saved = self._saved
        weights = {p.untyped_storage().data_ptr() for p in pl_module.parameters()}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            try:
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in weights:  # parameters are not activations
                    saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
            except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse)
                pass
            return tensor.detach()  # returning the tensor itself would keep the graph alive (a cycle)

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
            unique = {id(p): p for p in pl_module.parameters()}.values()
            self.bytes["activations"] = sum(self._saved.values())
            self.bytes["params"] = sum(p.numel() * p.element_size() for p in unique)
            self.bytes["trainable"] = sum(p.numel() * p.element_size() for p in unique if p.requires_grad)
            self.bytes["grads"] = self.bytes["trainable"]
            self._saved.clear()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "optimizer" not in self.bytes and trainer.optimizers:
            state = trainer.optimizers[0].state
            self.bytes["optimizer"] = sum(t.numel() * t.element_size() for s in state.values()
                                          for t in s.values() if isinstance(t, torch.Tensor))

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None


class RunIdentity(L.Callback):
    """Stamps every checkpoint with the run's config fingerprint, so a relaunch with another config
    never resumes it silently (the runner compares before resuming)."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["onelora"] = {"fingerprint": self.fingerprint}


class LastCheckpoint(L.Callback):
    """``checkpoints/last.ckpt``, what a relaunch resumes from: written at every epoch's end (after
    its validation), every ``every_n_train_steps`` steps if set, and when SIGTERM (``kill``,
    ``timeout``, ``scancel``) or Ctrl-C stops the run at a batch boundary. Written to a temporary
    file and renamed, so a kill mid-write never leaves half a checkpoint. It also remembers which
    signal stopped the run (Lightning turns Ctrl-C into a bare ``SystemExit(1)``).

    (Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only alongside a top-k
    save, i.e. not every epoch unless it also keeps other files.)"""

    def __init__(self, path: Path, every_n_train_steps: int | None = None) -> None:
        self.path = Path(path)
        self.every = int(every_n_train_steps or 0)
        self.signal: str | None = None

    def save(self, trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            tmp.replace(self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0 and trainer.global_step > 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            self.signal = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT (Ctrl-C)"
            if trainer.state.fn == "fit":
                self.save(trainer)


#: ``torch.compile`` keywords ``trainer.compile`` may set
COMPILE_OPTIONS = ("backend", "mode", "fullgraph", "dynamic", "options")


class CompileModel(L.Callback):
    """``trainer.compile``: ``torch.compile`` the adapted model for training (and the validation
    rounds inside it), as MoRA's MetaMathQA script compiles its model.

    The model is compiled in place (``nn.Module.compile``) when fitting starts, after the strategy
    has wrapped or sharded it, so parameter names, checkpoints and the adapter files stay those of
    the eager model. Fitting's end restores the eager forward: tests and generation (a new sequence
    length at every token) run eagerly instead of recompiling. ``options``: ``torch.compile``
    keywords (``backend``, ``mode``, ``fullgraph``, ``dynamic``, ``options``); ``True`` means none.
    """

    def __init__(self, options: Mapping[str, Any] | bool = True) -> None:
        self.options = {} if options is True else dict(options)

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.model.compile(**self.options)

    def on_fit_end(self, trainer, pl_module) -> None:
        pl_module.model._compiled_call_impl = None  # what nn.Module.compile set: back to the eager forward
