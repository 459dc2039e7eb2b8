"""The task contract (docs/task_contract.md): what a task declares, and how its objects are built.

A task YAML names its data module, its LightningModule and any other part it needs through Hydra
``_target_``; the runner, pre-training and the tables read the task only through this module.
Objects are built by :func:`build`: the config's keys plus the named values the runner offers
(``batch_size``, ``model_input``, the task's parts), each passed only where the target's signature
has a parameter of that name. A key the target does not take is an error that names it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from .config import ConfigError, as_int, plain


@dataclass(frozen=True)
class MetricSpec:
    """The one declaration of a task's metric that the runner, pre-training, results.json and the
    tables all read."""

    name: str
    direction: str
    val_key: str
    test_key: str
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "task.metric") -> "MetricSpec":
        cfg = dict(cfg or {})
        for key in ("name", "val_key", "test_key"):
            if not isinstance(cfg.get(key), str) or not cfg[key]:
                raise ConfigError(f"{where}.{key}: must be set (a string), got {cfg.get(key)!r}")
        direction = cfg.get("direction", "max")
        if direction not in ("max", "min"):
            raise ConfigError(f"{where}.direction: must be 'max' or 'min', got {direction!r}")
        unknown = set(cfg) - {"name", "direction", "val_key", "test_key", "extra"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; it takes name, direction, val_key, test_key, extra")
        return cls(cfg["name"], direction, cfg["val_key"], cfg["test_key"], dict(cfg.get("extra") or {}))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "direction": self.direction, "val_key": self.val_key,
                "test_key": self.test_key, "extra": dict(self.extra)}

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "max" else a < b


def target_of(node: Any, where: str) -> Any:
    if not (isinstance(node, Mapping) or OmegaConf.is_dict(node)) or "_target_" not in node:
        raise ConfigError(f"{where}: needs a `_target_` (the class or function to build)")
    try:
        return get_object(str(node["_target_"]))
    except Exception as err:  # ImportError, AttributeError, ValueError
        raise ConfigError(f"{where}._target_: cannot import {node['_target_']!r} ({err})") from None


def accepted_names(target: Any) -> tuple[set[str], bool]:
    """The keyword names ``target`` takes, and whether it takes any name (``**kwargs``).

    A class whose ``__init__`` forwards ``**kwargs`` to its base (a task module passing the base
    settings on) takes the base's names too, so a typo is still caught before anything is built.
    """
    chain = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    names: set[str] = set()
    for function in chain:
        try:
            params = inspect.signature(function).parameters
        except (TypeError, ValueError):
            return names, True
        names |= {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names - {"self"}, False
    return names - {"self"}, True


def check_keys(node: Any, where: str, offered: Mapping[str, Any] = {}) -> Any:
    """Fail on a config key the target does not take (before anything is built); returns the target."""
    target = target_of(node, where)
    names, any_name = accepted_names(target)
    keys = {str(k) for k in node if not str(k).startswith("_")}
    unknown = sorted(keys - names) if not any_name else []
    if unknown:
        shown = ", ".join(sorted(names - set(offered) - {"self"}))
        raise ConfigError(f"{where}: {getattr(target, '__name__', target)} takes no key {unknown[0]!r}"
                          f"{' (nor ' + ', '.join(map(repr, unknown[1:])) + ')' if unknown[1:] else ''}; it takes: {shown}")
    return target


def build(node: Any, where: str, offered: Mapping[str, Any] | None = None, **given: Any) -> Any:
    """``instantiate(node, **given, **offered-that-fit)``; config errors name ``where``."""
    offered = dict(offered or {})
    target = check_keys(node, where, {**offered, **given})
    names, any_name = accepted_names(target)
    keys = {str(k) for k in node}
    extra = {k: v for k, v in offered.items() if k in names and k not in keys}  # offered by explicit name only
    try:
        return instantiate(node, **given, **extra, _convert_="all")
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, (ConfigError,)) or type(cause).__name__ in ("MissingDataError", "MissingWeightsError"):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            raise ConfigError(f"{where}: {getattr(target, '__name__', target)}: {cause}") from cause
        raise


#: ``task.pretrain``: keys merged over the task's own, keys that replace them, and the source run's own
PRETRAIN_MERGED = ("data", "module", "model_args", "parts")
PRETRAIN_REPLACED = ("optimizer", "scheduler", "epochs", "max_steps", "batch_size", "lr_scales", "metric", "dataset")
PRETRAIN_RUN = ("seed", "val_every_n_epochs", "val_check_interval")
#: task keys of the fine-tuning run only, never of its source-task pre-training
FINE_TUNING_ONLY = ("pretrain", "lr_per_method", "method_options", "resources", "test_final", "time_budget",
                    "val_check_interval", "gradient_clip_val", "micro_batch_size")


@dataclass(frozen=True)
class TaskContract:
    """A task config, read once per run into plain values (the objects it builds stay config
    mappings, which :func:`build` instantiates). ``where`` is how errors name its keys
    (``task``, or ``task.pretrain`` for the source task of a pre-training)."""

    name: str
    metric: MetricSpec
    data: dict[str, Any]
    module: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    parts: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    lr_scales: dict[str, float] = field(default_factory=dict)
    lr_per_method: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    model_kind: str | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] | None = None  # the dataset's facts (conf/dataset/), if the task reads one
    batch_size: Any = None
    micro_batch_size: Any = None
    epochs: Any = None
    max_steps: Any = None
    test_final: bool = True
    pretrain: dict[str, Any] | None = None
    where: str = "task"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the whole plain task config

    @classmethod
    def from_config(cls, task: Any, where: str = "task") -> "TaskContract":
        """``task``: the composed task node (or its plain dict), resolved here once."""
        raw = dict(plain(task))
        for key in ("name", "data", "module", "metric", "optimizer"):
            if raw.get(key) is None:
                raise ConfigError(f"{where}.{key}: the task contract needs it (see docs/task_contract.md)")
        return cls(
            name=str(raw["name"]),
            metric=MetricSpec.from_config(raw["metric"], f"{where}.metric"),
            data=dict(raw["data"]),
            module=dict(raw["module"]),
            optimizer=dict(raw["optimizer"]),
            scheduler=raw.get("scheduler"),
            parts=dict(raw.get("parts") or {}),
            model_args=dict(raw.get("model_args") or {}),
            lr_scales=dict(raw.get("lr_scales") or {}),
            lr_per_method=dict(raw.get("lr_per_method") or {}),
            family=raw.get("family"),
            model_kind=raw.get("model_kind"),
            paper=dict(raw.get("paper") or {}),
            dataset=raw.get("dataset"),
            batch_size=raw.get("batch_size"),
            micro_batch_size=raw.get("micro_batch_size"),
            epochs=raw.get("epochs"),
            max_steps=raw.get("max_steps"),
            test_final=bool(raw.get("test_final", True)),
            pretrain=raw.get("pretrain"),
            where=where,
            raw=raw,
        )

    def source(self) -> "TaskContract":
        """The source task of ``pretrain``: its ``data``, ``module``, ``model_args`` and ``parts``
        merged over the task's own; ``optimizer``, ``scheduler``, ``epochs``, ``max_steps``,
        ``batch_size``, ``lr_scales``, ``metric`` and ``dataset`` replacing them; the keys of
        fine-tuning alone left out."""
        pre = dict(self.pretrain or {})
        where = f"{self.where}.pretrain"
        unknown = set(pre) - set(PRETRAIN_MERGED) - set(PRETRAIN_REPLACED) - set(PRETRAIN_RUN)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; it takes "
                              f"{', '.join(sorted(PRETRAIN_MERGED + PRETRAIN_REPLACED + PRETRAIN_RUN))}")
        merged = {k: v for k, v in self.raw.items() if k not in FINE_TUNING_ONLY}
        for key in PRETRAIN_MERGED:
            if pre.get(key) is not None:
                merged[key] = plain(OmegaConf.merge(merged.get(key) or {}, pre[key]))
        if "epochs" in pre or "max_steps" in pre:  # pre-training's own budget, not fine-tuning's
            merged.pop("epochs", None)
            merged.pop("max_steps", None)
        for key in PRETRAIN_REPLACED + PRETRAIN_RUN:
            if key in pre:
                merged[key] = pre[key]
        return TaskContract.from_config(merged, where)

    def check(self) -> None:
        """Every object the task builds takes the keys its config gives (before any work)."""
        for name, node in self.parts.items():
            check_keys(node, f"{self.where}.parts.{name}")
        check_keys(self.data, f"{self.where}.data", self.offered_names())
        check_keys(self.module, f"{self.where}.module", self.offered_names())
        if self.data.get("num_workers") is not None:  # else the DataLoader says so after any pre-training
            as_int(self.data["num_workers"], f"{self.where}.data.num_workers", minimum=0)
        for key in ("optimizer", "scheduler"):
            node = getattr(self, key)
            if node is not None:
                check_keys(node, f"{self.where}.{key}")
                if not node.get("_partial_", False):
                    raise ConfigError(f"{self.where}.{key}: needs `_partial_: true` (the module passes it the parameters)")

    def offered_names(self) -> set[str]:
        return {"batch_size", "model_input", *self.parts}

    def build_parts(self) -> dict[str, Any]:
        built: dict[str, Any] = {}
        for name, node in self.parts.items():
            built[name] = build(node, f"{self.where}.parts.{name}", built)
        return built
