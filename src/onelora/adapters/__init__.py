"""The adapter-injection layer: every PEFT method of the paper behind one ``inject()``."""

from . import dora, lora, mora, onelora, vera  # noqa: F401  (register the method classes)
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
