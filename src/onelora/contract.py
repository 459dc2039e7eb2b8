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
from omegaconf import DictConfig, OmegaConf

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


@dataclass
class TaskContract:
    """A task config, read once per run."""

    cfg: DictConfig
    metric: MetricSpec

    @classmethod
    def from_config(cls, task: DictConfig) -> "TaskContract":
        for key in ("name", "data", "module", "metric", "optimizer"):
            if task.get(key) is None:
                raise ConfigError(f"task.{key}: the task contract needs it (see docs/task_contract.md)")
        return cls(task, MetricSpec.from_config(plain(task.metric)))

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(plain(self.cfg.get("model_args") or {}))

    @property
    def parts(self) -> dict[str, Any]:
        return dict(self.cfg.get("parts") or {})

    def check(self) -> None:
        """Every object the task builds takes the keys its config gives (before any work)."""
        for name, node in self.parts.items():
            check_keys(node, f"task.parts.{name}")
        check_keys(self.cfg.data, "task.data", self.offered_names())
        check_keys(self.cfg.module, "task.module", self.offered_names())
        if self.cfg.data.get("num_workers") is not None:  # else the DataLoader says so after any pre-training
            as_int(self.cfg.data.num_workers, "task.data.num_workers", minimum=0)
        for key in ("optimizer", "scheduler"):
            node = self.cfg.get(key)
            if node is not None:
                check_keys(node, f"task.{key}")
                if not node.get("_partial_", False):
                    raise ConfigError(f"task.{key}: needs `_partial_: true` (the module passes it the parameters)")

    def offered_names(self) -> set[str]:
        return {"batch_size", "model_input", *self.parts}

    def build_parts(self) -> dict[str, Any]:
        built: dict[str, Any] = {}
        for name, node in self.parts.items():
            built[name] = build(node, f"task.parts.{name}", built)
        return built
