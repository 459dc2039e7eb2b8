"""Which modules a method touches: include / exclude patterns on module names.

A model config names its target sets (``linear``: every linear but the task head; ``qkv``:
attention q, k, v only; ...). Patterns are regular expressions matched against the whole
module name (as peft's ``target_modules`` regex); the word ``all-linear`` stands for every
``nn.Linear``. Head modules are never targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from torch import nn

from .base import AdapterConfigError

ALL_LINEAR = "all-linear"


@dataclass
class TargetRule:
    include: list[str] = field(default_factory=lambda: [ALL_LINEAR])
    exclude: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: "TargetRule | Mapping[str, Any] | str | Iterable[str]") -> "TargetRule":
        if isinstance(cfg, TargetRule):
            return cfg
        if isinstance(cfg, str):
            return cls(include=[cfg])
        if isinstance(cfg, Mapping):
            include = cfg.get("include", [ALL_LINEAR])
            include = [include] if isinstance(include, str) else list(include)
            return cls(include=include, exclude=list(cfg.get("exclude", []) or []))
        return cls(include=list(cfg))


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def select_linears(
    model: nn.Module, rule: TargetRule, head: Iterable[str] = (), *, set_name: str = "targets"
) -> list[tuple[str, nn.Linear]]:
    """The (name, module) pairs a rule selects, in model order; errors on non-linear or empty."""
    head = list(head)
    explicit = [p for p in rule.include if p != ALL_LINEAR]
    chosen, wrong_type = [], []
    for name, module in model.named_modules():
        if not name or matches(name, rule.exclude) or is_under(name, head):
            continue
        if ALL_LINEAR in rule.include and isinstance(module, nn.Linear):
            chosen.append((name, module))
        elif explicit and matches(name, explicit):
            if isinstance(module, nn.Linear):
                chosen.append((name, module))
            else:
                wrong_type.append(f"{name} ({type(module).__name__})")
    if wrong_type:
        raise AdapterConfigError(
            f"target set '{set_name}' matches layers that are not nn.Linear and cannot be adapted: "
            + ", ".join(wrong_type[:5])
        )
    if not chosen:
        linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:6]
        raise AdapterConfigError(
            f"target set '{set_name}' (include={rule.include}, exclude={rule.exclude}) selects no linear layer "
            f"of {type(model).__name__}; its linear layers are named like {linear_names}"
        )
    return chosen


def is_under(name: str, prefixes: Iterable[str]) -> bool:
    """True if ``name`` is a module matched by a pattern or lies inside one."""
    for pattern in prefixes:
        if re.fullmatch(pattern, name) or re.match(f"(?:{pattern})\\.", name):
            return True
    return False
