"""Module names matched by patterns: regular expressions on a module's whole name.

A model config names its head, its target sets and its module sets this way; the weight loader
drops a head's tensors, the adapters select their targets and skip the head, pre-training saves a
backbone without its head, all with these two functions.
"""

from __future__ import annotations

import re
from typing import Iterable


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True if a pattern matches the whole of ``name``."""
    return any(re.fullmatch(p, name) for p in patterns)


def is_under(name: str, prefixes: Iterable[str]) -> bool:
    """True if ``name`` is a module matched by a pattern or lies inside one."""
    for pattern in prefixes:
        if re.fullmatch(pattern, name) or re.match(f"(?:{pattern})\\.", name):
            return True
    return False
