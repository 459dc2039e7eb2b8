"""A run's settings, read from the composed config once and checked: the method spec, the model, the
task contract, the learning rate, the batch per device, the trainer, the places, the record's
config block and fingerprint, and, for a task with source pre-training, the source run's settings.

``RunSettings.from_config(cfg)`` is the one entry point and the only reader of the raw config: the
runner, the training pipeline, pre-training and counting take these typed values and never look
at ``cfg`` again (a test greps them for it). A bad value raises ConfigError naming its key, before
any work."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from .adapters import MethodSpec
from .adapters.base import AdapterConfigError
from .config import ConfigError, as_bool, as_float, as_int, check, plain
from .contract import TaskContract, build
from .loggers import check_loggers
from .methods import DESCRIBE

#: what ``mode=`` may be: train, evaluate the weights as loaded, count parameters, plan the run
#: (onelora.plan: memory, FLOPs, GPU-hours from fake tensors) (add new modes here)
MODES = ("train", "eval", "count", "plan")
#: modes that build no data and train nothing: the settings stop after the model, method and task
NO_RUN_MODES = ("count",)
#: run_tag: appended to a directory name, so no separators or parent references
RUN_TAG = re.compile(r"[A-Za-z0-9_.=+,-]*")
#: config keys that do not change what a run computes (left out of its fingerprint)
NON_RESULT_KEYS = ("paths", "logger", "resume", "force", "hydra", "experiment_name", "reproduce", "twin",
                   "torch_threads", "plan")
#: trainer keys that do not change what a run computes (left out of its fingerprint)
NON_RESULT_TRAINER_KEYS = ("enable_progress_bar", "log_every_n_steps")
#: the task's dataset facts: what they shape is in task.data, model_args and module already, by
#: interpolation (left out of the fingerprint, so runs of tasks that gained a dataset keep theirs)
NON_RESULT_TASK_KEYS = ("dataset",)
#: settings that say where things are, not what is trained (left out of the pre-training cache key)
PLACES = ("num_workers", "root", "cache_dir", "data_dir", "persistent_workers", "pin_memory")
#: model keys that do not shape the pre-trained weights (how adapters attach, names, labels)
NOT_SHAPING_MODEL = ("name", "kind", "pretrained", "target_sets", "module_sets", "method_overrides", "reported_params")
#: task keys that only label a source task (its weights do not depend on them)
NOT_SHAPING_TASK = ("name", "family", "paper", "model_kind", "dataset")
#: the source run's loggers: CSV metrics in its cache folder (a cached artefact, not an experiment)
SOURCE_LOGGERS = {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "name": "logs"}}
CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Paths:
    """Where things are (``paths.*``)."""

    results_dir: Path
    cache_dir: Path
    data_dir: Path

    @classmethod
    def from_config(cls, paths: Any) -> "Paths":
        return cls(*(Path(str(paths.get(k))).expanduser() for k in ("results_dir", "cache_dir", "data_dir")))


@dataclass(frozen=True)
class TrainerSettings:
    """The Lightning Trainer's keyword arguments as configured (resolved, checked; ``strategy`` may
    still be a config mapping with a ``_target_``), and the step interval of ``last.ckpt``."""

    options: dict[str, Any]
    checkpoint_every_n_train_steps: int | None = None
    #: ``trainer.compile``: false (eager), true, or torch.compile keywords (the CompileModel callback's)
    compile: bool | dict[str, Any] = False

    @classmethod
    def from_config(cls, trainer: Any, accumulate: int) -> "TrainerSettings":
        options = dict(plain(trainer))
        every = options.pop("checkpoint_every_n_train_steps", None)  # LastCheckpoint's, not Lightning's
        compile_model = options.pop("compile", False) or False  # CompileModel's, not Lightning's
        options["accumulate_grad_batches"] = accumulate  # from task.micro_batch_size where the task sets it
        for key in ("max_steps", "max_epochs"):  # null (a task without that cap) is Lightning's "no limit"
            if key in options and options[key] is None:
                options[key] = -1
        return cls(options, as_int(every, "trainer.checkpoint_every_n_train_steps", minimum=1, allow=(None,)),
                   compile_model)

    @property
    def step_bounded(self) -> bool:
        """Whether the run has a step or epoch cap (else only a time budget, ``trainer.max_time``,
        ends it: a schedule then gets no ``total_steps``)."""
        return any(self.options.get(k) not in (None, -1) for k in ("max_steps", "max_epochs"))

    @property
    def precision(self) -> str:
        return str(self.options.get("precision", "32-true"))

    def for_source(self, task: TaskContract) -> "TrainerSettings":
        """The source run's trainer: this run's device kind, precision and progress display on ONE
        device; budget, validation schedule and clipping from the source task alone (nothing of
        fine-tuning's length or limits, which the cache key does not hold)."""
        keep = ("accelerator", "precision", "enable_progress_bar", "log_every_n_steps")
        epochs, steps = task.epochs, task.max_steps
        interval = task.raw.get("val_check_interval")  # validation rounds: every N steps (step budgets) ...
        every = None if interval else task.raw.get("val_every_n_epochs") or max(1, int(epochs or 1) // 10)  # ... or epochs
        options = {k: self.options[k] for k in keep if k in self.options}
        options.update(devices=1, num_nodes=1, strategy="auto", accumulate_grad_batches=1, num_sanity_val_steps=0,
                       max_epochs=int(epochs) if epochs else -1, max_steps=int(steps) if steps else -1,
                       val_check_interval=interval, check_val_every_n_epoch=every)
        return TrainerSettings(options, self.checkpoint_every_n_train_steps)  # never compiled: a one-off run


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    mode: str
    seed: int
    method: MethodSpec
    model: dict[str, Any]
    task: TaskContract
    paths: Paths
    run_dir: Path
    config: dict[str, Any] = field(repr=False)  # the plain resolved config: the record's `config` block
    fingerprint: str
    lr: float | None = None
    batch_per_device: int | None = None
    world_size: int = 1
    accumulate: int = 1
    trainer: TrainerSettings | None = None
    resume: bool = True
    force: bool = False
    deterministic: bool = False
    torch_threads: int | None = None
    experiment: str | None = None
    loggers: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    load_weights: bool = True  # False: the source run trains from random init
    source: "RunSettings | None" = None  # the source-task pre-training run, when it is needed

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "RunSettings":
        """Parse and check the whole config; a bad value raises ConfigError naming its key."""
        mode = cfg.get("mode")
        check(mode in MODES, "mode", f"must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        seed = as_int(cfg.get("seed"), "seed", minimum=0)
        for flag in ("resume", "force", "deterministic"):
            as_bool(cfg.get(flag, False), flag)
        tag = str(cfg.get("run_tag") or "")
        check(bool(RUN_TAG.fullmatch(tag)) and ".." not in tag, "run_tag",
              f"may hold only letters, numbers and _ . = + , - (it names a folder), got {tag!r}")
        _check_dataset_fits_task(cfg)  # first: a recipe's keys read the dataset's
        config = plain(cfg)  # resolved once: everything below, the record's config block, the fingerprint
        model = config["model"]
        method = _method_spec(config)
        task = TaskContract.from_config(config["task"])
        _check_model_fits_task(config)
        common = dict(mode=mode, seed=seed, method=method, model=model, task=task, paths=Paths.from_config(config["paths"]),
                      run_dir=run_dir_of(cfg), config=config, fingerprint=fingerprint(config))
        if mode in NO_RUN_MODES:
            return cls(**common)
        task.check()
        trains = method.wraps_linears or method.norms or method.full or method.modules or model.get("head")
        check(bool(trains) or mode == "eval", "method",
              f"'{method.name}' trains nothing on model '{model['name']}'; evaluate it as loaded with mode=eval")
        if mode == "plan":  # planned for the GPUs it names, on a machine that may have none (onelora.plan)
            settings = cls(**common, lr=learning_rate(config))
            settings.dry_build_optimization()
            return settings
        world = world_size(config)
        accumulate = accumulation(config, world)
        _check_training_length(config)
        _check_trainer(config)
        check_loggers(cfg)
        settings = cls(
            **common, lr=learning_rate(config), batch_per_device=per_device_batch(config, world), world_size=world,
            accumulate=accumulate, trainer=TrainerSettings.from_config(config["trainer"], accumulate),
            resume=bool(config.get("resume", True)), force=bool(config.get("force", False)),
            deterministic=bool(config.get("deterministic", False)),
            torch_threads=as_int(config.get("torch_threads"), "torch_threads", minimum=1, allow=(None, 0)) or None,
            experiment=config.get("experiment_name"), loggers=dict(config.get("logger") or {}),
            callbacks=dict(config.get("callbacks") or {}),
        )
        settings.dry_build_optimization()
        if task.pretrain and not model.get("pretrained"):  # model.pretrained given: those weights, no pre-training
            settings = replace(settings, source=settings.source_run())
        return settings

    def source_run(self) -> "RunSettings":
        """The source-task pre-training as a run of its own: the task's ``pretrain`` block over the
        task, ``method=full`` from random init on one device, its own seed and budget, in its folder
        of the cache, keyed (its fingerprint) by everything that shapes the weights."""
        task = self.task.source()
        task.check()
        where = task.where
        model = {**self.model, "pretrained": None}
        head_init(model)  # checked now, before pre-training, not after it
        seed = as_int(task.raw.get("seed", 0), f"{where}.seed", minimum=0)
        lr = task.optimizer.get("lr")
        trainer = self.trainer.for_source(task)
        key_data = {"model": _without_places({k: v for k, v in model.items() if k not in NOT_SHAPING_MODEL}),
                    "task": _without_places({k: v for k, v in task.raw.items() if k not in NOT_SHAPING_TASK}),
                    "seed": seed, "precision": trainer.precision}
        key = hashlib.sha1(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:12]
        source = RunSettings(
            mode="train", seed=seed, method=MethodSpec(name="full", full=True), model=model, task=task,
            paths=self.paths, run_dir=self.paths.cache_dir / "pretrained" / f"{model['name']}-{self.task.name}-{key}",
            config=key_data, fingerprint=key,
            lr=None if lr is None else as_float(lr, f"{where}.optimizer.lr", positive=True),
            batch_per_device=as_int(task.batch_size, f"{where}.batch_size", minimum=1), trainer=trainer,
            resume=self.resume, deterministic=self.deterministic, torch_threads=self.torch_threads,
            loggers=dict(SOURCE_LOGGERS), load_weights=False,
        )
        source.dry_build_optimization()
        return source

    def dry_build_optimization(self) -> None:
        """Build the optimizer and schedule on a stand-in parameter, so a bad value in either
        fails now, naming the key, not after the model is built and pre-trained."""
        from .tasks.base import call_with_offered

        where = self.task.where
        probe = torch.nn.Parameter(torch.zeros(1))
        try:
            optimizer = self.optimizer()([probe])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.optimizer: {err}") from None
        scheduler = self.scheduler()
        if scheduler is not None:
            offered = {"max_lr": [optimizer.param_groups[0]["lr"]]}
            timed = self.trainer is not None and not self.trainer.step_bounded  # a time budget alone
            try:
                call_with_offered(scheduler, optimizer, offered if timed else {"total_steps": 10, **offered})
            except (TypeError, ValueError) as err:
                if timed:
                    raise ConfigError(
                        f"{where}.scheduler: {err}; this run is bounded by its time budget alone (no step or epoch "
                        f"cap), so the schedule gets no step count: set {where}.max_steps or {where}.epochs, or a "
                        "schedule that needs none") from None
                raise ConfigError(f"{where}.scheduler: {err}") from None

    @property
    def model_args(self) -> dict[str, Any]:
        return self.task.model_args

    @property
    def names(self) -> dict[str, str]:
        """The run's task, model and method names (its folder, its record, its log lines)."""
        return {"task": self.task.name, "model": str(self.model["name"]), "method": self.method.name}

    def optimizer(self) -> Any:
        """The task's optimizer partial with this run's learning rate (the configured one where the
        run sets none: the source run)."""
        given = {} if self.lr is None else {"lr": self.lr}
        return build(self.task.optimizer, f"{self.task.where}.optimizer", **given)

    def scheduler(self) -> Any:
        node = self.task.scheduler
        return None if node is None else build(node, f"{self.task.where}.scheduler")


def fingerprint(config: dict[str, Any]) -> str:
    """What a run computes, hashed: its plain config less places, logging and run control."""
    data = {k: v for k, v in plain(config).items() if k not in NON_RESULT_KEYS}
    for key, dropped in (("trainer", NON_RESULT_TRAINER_KEYS), ("task", NON_RESULT_TASK_KEYS), ("method", (DESCRIBE,))):
        if isinstance(data.get(key), dict):  # method.describe: how reports show the method, not what it computes
            data[key] = {k: v for k, v in data[key].items() if k not in dropped}
    if isinstance(data.get("trainer"), dict) and not data["trainer"].get("compile", True):
        data["trainer"].pop("compile")  # eager, the default: fingerprints made before the key stay valid
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_dir_of(cfg: DictConfig) -> Path:
    """The run's folder: Hydra's output dir in a Hydra run, else ``results_dir/run_name``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and cfg.get("mode") not in ("count", "plan"):
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.results_dir).expanduser() / cfg.run_name


def head_init(model: dict[str, Any]) -> str:
    """``fresh`` (default): fine-tuning re-initialises the model's head after pre-training;
    ``source``: it starts from the pre-trained head (which still trains with every method)."""
    value = model.get("head_init") or "fresh"
    if value not in ("fresh", "source"):
        raise ConfigError(f"model.head_init: must be 'fresh' or 'source', got {value!r}")
    return value


def _without_places(value: Any) -> Any:
    """Drop where-things-are keys; a generated place (a ``_target_`` that writes synthetic data)
    is a setting and stays."""
    if isinstance(value, dict):
        return {k: _without_places(v) for k, v in value.items()
                if k not in PLACES or (isinstance(v, dict) and "_target_" in v)}
    if isinstance(value, list):
        return [_without_places(v) for v in value]
    return value


def method_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The method config with the model's ``method_overrides`` for it applied (paper quirks), then
    the task's ``method_options`` for it merged into its ``options`` (a recipe's settings of a method,
    e.g. MoRA's LoRA alpha 16 and dropout 0.05 on MetaMathQA: :func:`task_method_options`)."""
    method = dict(plain(config["method"]))
    overrides = plain(config["model"].get("method_overrides") or {}) or {}
    merged = {**method, **(overrides.get(method["name"]) or {})}
    from_task = task_method_options(config).get(method["name"])
    if from_task:
        merged["options"] = {**(merged.get("options") or {}), **from_task}
    return merged


def task_method_options(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``task.method_options``: per method name, options the task's recipe gives that method (merged
    over the method YAML's ``options`` and the model's overrides; change one on the command line with
    ``task.method_options.<method>.<option>=<value>``). Checked: a mapping of known method names to
    options that method's adapter takes, each in range; an error names ``task.method_options.<m>.<o>``."""
    from .adapters import ADAPTER_KINDS
    from .methods import method_table

    given = plain(config["task"].get("method_options") or {}) or {}
    check(isinstance(given, dict), "task.method_options", f"must be a mapping of method name to options, got {given!r}")
    known = method_table()
    for name, options in given.items():
        check(name in known, f"task.method_options.{name}",
              f"no method is named {name!r}; methods: {', '.join(known)}")
        check(isinstance(options, dict), f"task.method_options.{name}", f"must be a mapping of options, got {options!r}")
        kind = ADAPTER_KINDS.get(_method_kind(name) or "none")
        for option, value in options.items():
            try:
                kind.check_options(**{option: value})
            except AdapterConfigError as err:
                raise ConfigError(f"task.method_options.{name}.{option}: {err}") from None
    return given


def _method_kind(name: str) -> str | None:
    """The per-linear adapter kind of the method run name ``name`` (its YAML's ``linear``)."""
    from .methods import method_config, method_info

    info = method_info(name)
    return None if info is None else method_config(info.file).get("linear")


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


def _method_spec(config: Mapping[str, Any]) -> MethodSpec:
    settings = method_settings(config)
    model = config["model"]
    target_sets = model.get("target_sets") or {}
    for key in ("targets", "gamma_targets"):
        name = settings.get(key)
        if name and (settings.get("linear") or settings.get("bias") or settings.get("gamma")):
            check(name in target_sets, f"method.{key}",
                  f"model '{model['name']}' has no target set {name!r}; it has {list(target_sets)}")
    modules = settings.get("modules")
    module_sets = model.get("module_sets") or {}
    check(not modules or modules in module_sets, "model.module_sets",
          f"method '{settings['name']}' trains the module set {modules!r}, which model '{model['name']}' does not "
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


def _check_model_fits_task(config: Mapping[str, Any]) -> None:
    model, task = config["model"], config["task"]
    want, have = task.get("model_kind"), model.get("kind")
    if want and have and want != have:
        fitting = tasks_for(have)
        raise ConfigError(
            f"model: '{model['name']}' is of kind {have!r} and task '{task['name']}' needs a model of kind {want!r}; "
            + (f"tasks for {model['name']}: {', '.join(fitting)}" if fitting else f"no task for {have} models exists yet")
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


def learning_rate(config: Mapping[str, Any]) -> float:
    """``method.lr`` if set, else the task's ``lr_per_method[method]``, else ``task.optimizer.lr``."""
    method, task = config["method"], config["task"]
    if method.get("lr") is not None:
        return as_float(method["lr"], "method.lr", positive=True)
    per_method = task.get("lr_per_method") or {}
    if method["name"] in per_method:
        return as_float(per_method[method["name"]], f"task.lr_per_method.{method['name']}", positive=True)
    check(task["optimizer"].get("lr") is not None, "task.optimizer.lr", "must be set (or method.lr)")
    return as_float(task["optimizer"]["lr"], "task.optimizer.lr", positive=True)


def world_size(config: Mapping[str, Any]) -> int:
    trainer = config["trainer"]
    devices = trainer.get("devices", 1)
    nodes = as_int(trainer.get("num_nodes", 1), "trainer.num_nodes", minimum=1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        check(len(devices) > 0, "trainer.devices", "an empty list selects no device")
        count = len(devices)
    else:
        devices = as_int(devices, "trainer.devices", minimum=1, allow=("auto", -1, "-1"))
        count = max(1, torch.cuda.device_count()) if devices in ("auto", -1, "-1") else devices
    return count * nodes


def per_device_batch(config: Mapping[str, Any], world: int) -> int:
    """The task's ``batch_size`` is the global batch: split it over devices x nodes, and, when the
    task sets ``micro_batch_size`` (what one device holds at once), over gradient-accumulation
    steps too, so the optimizer sees the same total batch on any cluster (MoRA's 128)."""
    task = config["task"]
    total = as_int(task.get("batch_size"), "task.batch_size", minimum=1)
    check(total % world == 0, "task.batch_size", f"{total} is not divisible by devices x nodes = {world}")
    micro = task.get("micro_batch_size")
    if micro is None:
        return total // world
    micro = as_int(micro, "task.micro_batch_size", minimum=1)
    check(total % (world * micro) == 0, "task.micro_batch_size",
          f"task.batch_size={total} is not divisible by devices x nodes x micro_batch_size = {world} x {micro}")
    return micro


def accumulation(config: Mapping[str, Any], world: int) -> int:
    """Gradient-accumulation steps: batch_size / (devices x nodes x micro_batch_size), or the trainer's."""
    task, trainer = config["task"], config["trainer"]
    given = as_int(trainer.get("accumulate_grad_batches", 1), "trainer.accumulate_grad_batches", minimum=1)
    micro = task.get("micro_batch_size")
    if micro is None:
        return given
    steps = int(task["batch_size"]) // (world * int(micro))
    check(given in (1, steps), "trainer.accumulate_grad_batches",
          f"task.micro_batch_size sets it to {steps}; leave it at 1 (got {given})")
    return steps


def _check_training_length(config: Mapping[str, Any]) -> None:
    """Every key that bounds training must allow at least one step."""
    t = config["trainer"]
    epochs = config["task"].get("epochs")
    max_steps = as_int(t.get("max_steps", -1), "trainer.max_steps", allow=(-1, None))
    check(max_steps in (-1, None) or max_steps >= 1, "trainer.max_steps", f"must be -1 (no limit) or >= 1, got {max_steps}")
    if epochs is not None:
        as_int(epochs, "task.epochs", minimum=1)
    max_epochs = as_int(t.get("max_epochs"), "trainer.max_epochs", allow=(-1, None))
    if max_epochs not in (-1, None):
        check(max_epochs >= 1, "trainer.max_epochs", f"must be >= 1 (or -1 with trainer.max_steps), got {max_epochs}")
    elif max_steps in (-1, None) and not t.get("max_time"):
        raise ConfigError("trainer.max_epochs: with no epoch limit, trainer.max_steps must be >= 1 "
                          "(or a time budget: task.time_budget)")
    limit = t.get("limit_train_batches")
    if limit is not None:
        check(as_float(limit, "trainer.limit_train_batches") > 0, "trainer.limit_train_batches", f"must be > 0, got {limit}")


def _check_trainer(config: Mapping[str, Any]) -> None:
    trainer = config["trainer"]
    _check_compile(trainer.get("compile"))
    _check_precision(trainer.get("precision"))
    accelerator = str(trainer.get("accelerator"))
    strategy = trainer.get("strategy")
    is_node = isinstance(strategy, Mapping) or OmegaConf.is_dict(strategy)
    if "deepspeed" in str(strategy.get("_target_", "") if is_node else strategy).lower():
        import importlib.util

        check(importlib.util.find_spec("deepspeed") is not None, "trainer.strategy",
              f"{strategy!r} needs DeepSpeed, which is not installed: `pip install -e .[deepspeed]` (GPUs and a CUDA "
              "toolkit), or use trainer=ddp / trainer=fsdp")
    if accelerator in ("gpu", "cuda"):
        check(torch.cuda.is_available(), "trainer.accelerator",
              "'gpu' was asked for but no CUDA GPU is visible here; use trainer=default (or trainer=cpu)")
        if "bf16" in str(trainer.get("precision")):
            check(torch.cuda.is_bf16_supported(), "trainer.precision", "bf16 is not supported by this GPU; use 16-mixed or 32-true")


def _check_precision(value: Any) -> None:
    """``trainer.precision`` is one Lightning takes (checked by Lightning's own parser)."""
    import typing
    import warnings

    from lightning.fabric.connector import _PRECISION_INPUT_STR, _convert_precision_to_unified_args

    if value is None:
        return
    try:
        with warnings.catch_warnings():  # Lightning warns about aliases (16, "bf16") again when it builds the trainer
            warnings.simplefilter("ignore")
            _convert_precision_to_unified_args(value)
    except (ValueError, TypeError):
        allowed = ", ".join(typing.get_args(_PRECISION_INPUT_STR))
        raise ConfigError(f"trainer.precision: must be one of {allowed}, got {value!r}") from None
    if str(value).startswith("transformer-engine"):
        import importlib.util

        check(importlib.util.find_spec("transformer_engine") is not None, "trainer.precision",
              f"{value!r} needs NVIDIA Transformer Engine (a GPU and `pip install transformer_engine`); "
              "use bf16-mixed or 32-true")


def _check_compile(value: Any) -> None:
    """``trainer.compile``: false / null (eager), true, or a mapping of ``torch.compile`` keywords."""
    from .callbacks import COMPILE_OPTIONS

    if value is None or isinstance(value, bool):
        return
    check(OmegaConf.is_dict(value) or isinstance(value, dict), "trainer.compile",
          f"must be true, false or a mapping of torch.compile options ({', '.join(COMPILE_OPTIONS)}), got {value!r}")
    unknown = sorted(set(value) - set(COMPILE_OPTIONS))
    check(not unknown, "trainer.compile", f"unknown option(s) {unknown}; it takes {', '.join(COMPILE_OPTIONS)}")
    backend = value.get("backend", "inductor")
    check(not isinstance(backend, str) or backend in torch._dynamo.list_backends(exclude_tags=()), "trainer.compile.backend",
          f"unknown torch.compile backend {backend!r}; available: {', '.join(torch._dynamo.list_backends(exclude_tags=()))}")
