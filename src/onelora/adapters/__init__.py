"""The adapter-injection layer: every PEFT method of the paper behind one ``inject()``.

Every module of this package is imported here, so each method class registers itself
(``@register("<kind>")``): a new per-layer update is one new module, listed nowhere else.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .base import ADAPTER_KINDS, AdaptedLinear, AdapterConfigError, is_linear, register
from .inject import (
    AdapterReport,
    adapted_layers,
    count_parameters,
    inject,
    merge,
    merge_and_unload,
    trainable_state,
    unmerge,
)
from .spec import MethodSpec
from .state import load_adapter, save_adapter
from .targeting import ALL_LINEAR, TargetRule, select_linears, select_targets

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ADAPTER_KINDS",
    "ALL_LINEAR",
    "AdaptedLinear",
    "AdapterConfigError",
    "AdapterReport",
    "MethodSpec",
    "TargetRule",
    "adapted_layers",
    "count_parameters",
    "inject",
    "is_linear",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "register",
    "save_adapter",
    "select_linears",
    "select_targets",
    "trainable_state",
    "unmerge",
]
