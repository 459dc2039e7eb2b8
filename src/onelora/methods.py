"""The method configs of ``conf/method/*.yaml`` as plain dicts, for code that runs outside a Hydra
run (the benchmark, the tests), so no second table of methods exists anywhere."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .adapters import MethodSpec

#: the project's config folder (``ONELORA_CONF`` moves it)
CONF_DIR = Path(os.environ.get("ONELORA_CONF", Path(__file__).resolve().parents[2] / "conf"))


@lru_cache(maxsize=None)
def method_config(file: str) -> dict[str, Any]:
    """``conf/method/<file>.yaml`` with its defaults list applied (the file's own keys win, as Hydra's)."""
    path = CONF_DIR / "method" / f"{file}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no method config {path}; available: {', '.join(method_files())}")
    own = OmegaConf.to_container(OmegaConf.load(path))
    merged: dict[str, Any] = {}
    for parent in own.pop("defaults", []) or []:
        if parent != "_self_":
            merged.update(method_config(parent))
    merged.update(own)
    return merged


def method_files() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def method_spec(file: str, **changes: Any) -> MethodSpec:
    """The MethodSpec of a method config, with ``changes`` applied (``options`` are merged)."""
    cfg = dict(method_config(file))
    options = {**(cfg.get("options") or {}), **changes.pop("options", {})}
    return MethodSpec.from_config({**cfg, **changes, "options": options})
