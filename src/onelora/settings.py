"""A run's settings, parsed and checked once: the method spec, the learning rate, the task contract,
the model config, the batch per device. Everything the runner, pre-training and counting need is
read from here, never re-derived from the raw config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .adapters import MethodSpec
from .adapters.base import AdapterConfigError
from .config import ConfigError, as_float, as_int, check, plain
from .contract import TaskContract

#: run_tag: appended to a directory name, so no separators or parent references
RUN_TAG = re.compile(r"[A-Za-z0-9_.=+,-]*")


def method_settings(cfg: DictConfig) -> dict[str, Any]:
    """The method config with the model's ``method_overrides`` for it applied (paper quirks)."""
    method = dict(plain(cfg.method))
    overrides = plain(cfg.model.get("method_overrides") or {}) or {}
    return {**method, **(overrides.get(method["name"]) or {})}


CONF = Path(__file__).resolve().parents[2] / "conf"


def _declared(group: str, name: str, key: str, package: str = "task") -> Any:
    """``<package>.<key>`` as the config file ``group/name`` declares it, or a file it extends does
    (its defaults list), without composing: for the errors that suggest a fitting option."""
    path = CONF / group / f"{name}.yaml"
    if not path.is_file():
        return None
    raw = OmegaConf.load(path)
    node = raw if package == "" else raw.get(package) or {}
    value = node.get(key) if hasattr(node, "get") else None
    if value is not None:
        return value
    bases = [d for d in raw.get("defaults") or [] if isinstance(d, str) and d != "_self_"]
    return next((v for b in bases if (v := _declared(group, b, key, package)) is not None), None)


def tasks_for(kind: str | None) -> list[str]:
    """Task configs whose models are of ``kind`` (for the error that suggests one)."""
    return [p.stem for p in sorted((CONF / "task").glob("*.yaml")) if _declared("task", p.stem, "model_kind") == kind]


def datasets_for(family: str | None) -> list[str]:
    """Dataset configs that a recipe of ``family`` reads (for the error that suggests one)."""
    return [p.stem for p in sorted((CONF / "dataset").glob("*.yaml"))
            if _declared("dataset", p.stem, "family", package="dataset") == family]


@dataclass
class RunSettings:
    cfg: DictConfig
    mode: str
    seed: int
    method: MethodSpec
    model: dict[str, Any]
    task: TaskContract | None  # None only when counting a model that no task was given for
    lr: float | None
    batch_per_device: int | None
    world_size: int
    accumulate: int = 1

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "RunSettings":
        """Parse and check the whole config; a bad value raises ConfigError naming its key."""
        mode = cfg.get("mode")
        check(mode in ("train", "count", "eval"), "mode", f"must be 'train', 'eval' or 'count', got {mode!r}")
        seed = as_int(cfg.get("seed"), "seed", minimum=0)
        tag = str(cfg.get("run_tag") or "")
        check(bool(RUN_TAG.fullmatch(tag)) and ".." not in tag, "run_tag",
              f"may hold only letters, numbers and _ . = + , - (it names a folder), got {tag!r}")
        _check_dataset_fits_task(cfg)  # first: a recipe's keys read the dataset's
        model = plain(cfg.model)
        method = _method_spec(cfg)
        task = TaskContract.from_config(cfg.task)
        _check_model_fits_task(cfg, model)
        if mode == "count":
            return cls(cfg, mode, seed, method, model, task, None, None, 1)
        task.check()
        trains = method.wraps_linears or method.norms or method.full or method.modules or model.get("head")
        check(bool(trains) or mode == "eval", "method",
              f"'{method.name}' trains nothing on model '{cfg.model.name}'; evaluate it as loaded with mode=eval")
        lr = learning_rate(cfg)
        world = world_size(cfg)
        settings = cls(cfg, mode, seed, method, model, task, lr, per_device_batch(cfg, world), world,
                       accumulation(cfg, world))
        _check_training_length(cfg)
        _check_trainer(cfg)
        settings.dry_build_optimization()
        return settings

    def dry_build_optimization(self) -> None:
        """Build the optimizer and schedule on a stand-in parameter, so a bad value in either
        fails now, naming the key, not after the model is built and pre-trained."""
        from .tasks.base import call_with_offered

        probe = torch.nn.Parameter(torch.zeros(1))
        try:
            optimizer = self.optimizer()([probe])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"task.optimizer: {err}") from None
        scheduler = self.scheduler()
        if scheduler is not None:
            try:
                call_with_offered(scheduler, optimizer, {"total_steps": 10, "max_lr": [self.lr]})
            except (TypeError, ValueError) as err:
                raise ConfigError(f"task.scheduler: {err}") from None

    @property
    def model_args(self) -> dict[str, Any]:
        return self.task.model_args if self.task else {}

    def optimizer(self) -> Any:
        """The task's optimizer partial with this run's learning rate."""
        from .contract import build

        return build(self.task.cfg.optimizer, "task.optimizer", lr=self.lr)

    def scheduler(self) -> Any:
        from .contract import build

        node = self.task.cfg.get("scheduler")
        return None if node is None else build(node, "task.scheduler")


def _method_spec(cfg: DictConfig) -> MethodSpec:
    settings = method_settings(cfg)
    target_sets = cfg.model.get("target_sets") or {}
    for key in ("targets", "gamma_targets"):
        name = settings.get(key)
        if name and (settings.get("linear") or settings.get("bias") or settings.get("gamma")):
            check(name in target_sets, f"method.{key}",
                  f"model '{cfg.model.name}' has no target set {name!r}; it has {list(target_sets)}")
    modules = settings.get("modules")
    module_sets = cfg.model.get("module_sets") or {}
    check(not modules or modules in module_sets, "model.module_sets",
          f"method '{settings['name']}' trains the module set {modules!r}, which model '{cfg.model.name}' does not "
          f"define (it has {sorted(module_sets)}); add e.g. `module_sets: {{{modules}: [<module regex>]}}` to its YAML")
    try:
        return MethodSpec.from_config(settings)  # the adapter classes check their own options
    except AdapterConfigError as err:
        message = str(err)
        option = re.search(r"option (\w+)=", message) or re.search(r"\w+ (\w+) must be one of", message)
        if option:
            key = f"method.options.{option.group(1)}"
        elif "option" in message:
            key = "method.options"
        else:
            key = "method.linear" if "linear adapter" in message else "method"
        raise ConfigError(f"{key}: {message}") from None


def _check_model_fits_task(cfg: DictConfig, model: dict[str, Any]) -> None:
    want, have = cfg.task.get("model_kind"), model.get("kind")
    if want and have and want != have:
        fitting = tasks_for(have)
        raise ConfigError(
            f"model: '{cfg.model.name}' is of kind {have!r} and task '{cfg.task.name}' needs a model of kind {want!r}; "
            + (f"tasks for {cfg.model.name}: {', '.join(fitting)}" if fitting else f"no task for {have} models exists yet")
        )


def _check_dataset_fits_task(cfg: DictConfig) -> None:
    """A recipe (a task that reads ``task.dataset``) needs a dataset whose family is its own."""
    task, family = cfg.task, cfg.task.get("family")
    chosen = _task_choice()
    if OmegaConf.is_missing(task, "dataset"):
        options = datasets_for(family)
        raise ConfigError(f"dataset: task '{chosen or task.get('name')}' is a recipe and needs a dataset; pick one "
                          f"with dataset=<name>" + (f" ({', '.join(options)})" if options else ""))
    dataset = task.get("dataset")
    if dataset is None:  # a task that declares its data itself
        return
    have = dataset.get("family")
    if family and have and have != family:
        options = datasets_for(family)
        raise ConfigError(
            f"dataset: '{dataset.get('name')}' holds {have} data and the task{f' {chosen!r}' if chosen else ''} is a "
            f"{family} recipe; " + (f"{family} datasets: {', '.join(options)}" if options else f"no {family} dataset exists yet")
        )


def _task_choice() -> str | None:
    """The task file the command chose (``task=<file>``), where Hydra says it (the command line)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("task")
    return None


def learning_rate(cfg: DictConfig) -> float:
    """``method.lr`` if set, else the task's ``lr_per_method[method]``, else ``task.optimizer.lr``."""
    if cfg.method.get("lr") is not None:
        return as_float(cfg.method.lr, "method.lr", positive=True)
    per_method = cfg.task.get("lr_per_method") or {}
    if cfg.method.name in per_method:
        return as_float(per_method[cfg.method.name], f"task.lr_per_method.{cfg.method.name}", positive=True)
    check(cfg.task.optimizer.get("lr") is not None, "task.optimizer.lr", "must be set (or method.lr)")
    return as_float(cfg.task.optimizer.lr, "task.optimizer.lr", positive=True)


def world_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.get("devices", 1)
    nodes = as_int(cfg.trainer.get("num_nodes", 1), "trainer.num_nodes", minimum=1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        check(len(devices) > 0, "trainer.devices", "an empty list selects no device")
        count = len(devices)
    else:
        devices = as_int(devices, "trainer.devices", minimum=1, allow=("auto", -1, "-1"))
        count = max(1, torch.cuda.device_count()) if devices in ("auto", -1, "-1") else devices
    return count * nodes


def per_device_batch(cfg: DictConfig, world: int) -> int:
    """The task's ``batch_size`` is the global batch: split it over devices x nodes, and, when the
    task sets ``micro_batch_size`` (what one device holds at once), over gradient-accumulation
    steps too, so the optimizer sees the same total batch on any cluster (MoRA's 128)."""
    total = as_int(cfg.task.batch_size, "task.batch_size", minimum=1)
    check(total % world == 0, "task.batch_size", f"{total} is not divisible by devices x nodes = {world}")
    micro = cfg.task.get("micro_batch_size")
    if micro is None:
        return total // world
    micro = as_int(micro, "task.micro_batch_size", minimum=1)
    check(total % (world * micro) == 0, "task.micro_batch_size",
          f"task.batch_size={total} is not divisible by devices x nodes x micro_batch_size = {world} x {micro}")
    return micro


def accumulation(cfg: DictConfig, world: int) -> int:
    """Gradient-accumulation steps: batch_size / (devices x nodes x micro_batch_size), or the trainer's."""
    micro = cfg.task.get("micro_batch_size")
    if micro is None:
        return as_int(cfg.trainer.get("accumulate_grad_batches", 1), "trainer.accumulate_grad_batches", minimum=1)
    given = as_int(cfg.trainer.get("accumulate_grad_batches", 1), "trainer.accumulate_grad_batches", minimum=1)
    steps = int(cfg.task.batch_size) // (world * int(micro))
    check(given in (1, steps), "trainer.accumulate_grad_batches",
          f"task.micro_batch_size sets it to {steps}; leave it at 1 (got {given})")
    return steps


def _check_training_length(cfg: DictConfig) -> None:
    """Every key that bounds training must allow at least one step."""
    t = cfg.trainer
    epochs = cfg.task.get("epochs")
    max_steps = as_int(t.get("max_steps", -1), "trainer.max_steps", allow=(-1, None))
    check(max_steps in (-1, None) or max_steps >= 1, "trainer.max_steps", f"must be -1 (no limit) or >= 1, got {max_steps}")
    if epochs is not None:
        as_int(epochs, "task.epochs", minimum=1)
    max_epochs = as_int(t.get("max_epochs"), "trainer.max_epochs", allow=(-1, None))
    if max_epochs not in (-1, None):
        check(max_epochs >= 1, "trainer.max_epochs", f"must be >= 1 (or -1 with trainer.max_steps), got {max_epochs}")
    elif max_steps in (-1, None):
        raise ConfigError("trainer.max_epochs: with no epoch limit, trainer.max_steps must be >= 1")
    limit = t.get("limit_train_batches")
    if limit is not None:
        check(as_float(limit, "trainer.limit_train_batches") > 0, "trainer.limit_train_batches", f"must be > 0, got {limit}")


def _check_trainer(cfg: DictConfig) -> None:
    accelerator = str(cfg.trainer.accelerator)
    strategy = cfg.trainer.get("strategy")
    if "deepspeed" in str(strategy.get("_target_", "") if OmegaConf.is_dict(strategy) else strategy).lower():
        import importlib.util

        check(importlib.util.find_spec("deepspeed") is not None, "trainer.strategy",
              f"{strategy!r} needs DeepSpeed, which is not installed: `pip install -e .[deepspeed]` (GPUs and a CUDA "
              "toolkit), or use trainer=ddp / trainer=fsdp")
    if accelerator in ("gpu", "cuda"):
        check(torch.cuda.is_available(), "trainer.accelerator",
              "'gpu' was asked for but no CUDA GPU is visible here; use trainer=default (or trainer=cpu)")
        if "bf16" in str(cfg.trainer.precision):
            check(torch.cuda.is_bf16_supported(), "trainer.precision", "bf16 is not supported by this GPU; use 16-mixed or 32-true")
