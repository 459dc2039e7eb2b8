"""Which modules a method touches: include / exclude patterns on module names.

A model config names its target sets (``linear``: every linear but the task head; ``qkv``:
attention q, k, v only; ...). Patterns are regular expressions matched against the whole
module name (as peft's ``target_modules`` regex); the word ``all-linear`` stands for every
``nn.Linear`` and transformers ``Conv1D`` (GPT-2), as in peft. Head modules are never targets.
A linear layer whose parent never calls it (``nn.MultiheadAttention``'s ``out_proj``) is skipped
by ``all-linear`` with the reason, and is an error when a pattern names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from torch import nn

from ..models.patterns import is_under, matches
from .base import AdapterConfigError, is_linear

__all__ = ["ALL_LINEAR", "TargetRule", "is_under", "matches", "select_linears", "select_targets"]

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


def unadaptable_reason(name: str, module: nn.Module, parents: Mapping[str, nn.Module]) -> str | None:
    """Why a linear layer cannot be wrapped (its parent reads its weight directly), or None."""
    parent_name, _, child = name.rpartition(".")
    parent = parents.get(parent_name)
    if isinstance(parent, nn.MultiheadAttention) and child == "out_proj":
        return (
            "nn.MultiheadAttention passes out_proj.weight to F.multi_head_attention_forward and never calls "
            "out_proj, so an adapter there would be ignored"
        )
    return None


def select_targets(
    model: nn.Module, rule: TargetRule, head: Iterable[str] = (), *, set_name: str = "targets"
) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The (name, module) pairs a rule selects, in model order, and the linear layers ``all-linear``
    would select but that cannot be adapted ({name: reason}). Errors on an explicit pattern that
    matches a layer that cannot be adapted, and on an empty selection."""
    head = list(head)
    explicit = [p for p in rule.include if p != ALL_LINEAR]
    modules = dict(model.named_modules())
    chosen: list[tuple[str, nn.Module]] = []
    skipped: dict[str, str] = {}
    wrong_type: list[str] = []
    for name, module in modules.items():
        if not name or matches(name, rule.exclude) or is_under(name, head):
            continue
        named = bool(explicit) and matches(name, explicit)
        if not (named or (ALL_LINEAR in rule.include and is_linear(module))):
            continue
        reason = unadaptable_reason(name, module, modules) if is_linear(module) else "not a linear layer"
        if reason is None:
            chosen.append((name, module))
        elif named:
            wrong_type.append(f"{name} ({type(module).__name__}{'' if reason == 'not a linear layer' else ': ' + reason})")
        else:
            skipped[name] = reason
    if wrong_type:
        raise AdapterConfigError(
            f"target set '{set_name}' matches layers that are not nn.Linear (or transformers' Conv1D) and cannot "
            "be adapted: " + ", ".join(wrong_type[:5])
        )
    if not chosen:
        linear_names = [n for n, m in modules.items() if is_linear(m)][:6]
        raise AdapterConfigError(
            f"target set '{set_name}' (include={rule.include}, exclude={rule.exclude}) selects no linear layer "
            f"of {type(model).__name__}; its linear layers are named like {linear_names}"
        )
    return chosen, skipped


def select_linears(
    model: nn.Module, rule: TargetRule, head: Iterable[str] = (), *, set_name: str = "targets"
) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs a rule selects (``select_targets`` without the skipped layers)."""
    return select_targets(model, rule, head, set_name=set_name)[0]
