"""The method specs every adapter test runs: each method of the paper and 1LoRA's combinations."""

from __future__ import annotations

from onelora.adapters import MethodSpec

HEAD = ["head"]

# every method of the paper and the 1LoRA combinations of Tables S11 / S12
METHODS: dict[str, dict] = {
    "onelora": dict(linear="onelora"),
    "onelora_random": dict(linear="onelora_random", options={"seed": 3}),
    "lora": dict(linear="lora", options={"r": 1, "alpha": 1.0}),
    "vera": dict(linear="vera", options={"r": 1, "seed": 0}),
    "dora": dict(linear="dora", options={"r": 1}),
    "mora1": dict(linear="mora1"),
    "mora6": dict(linear="mora6"),
    "bitfit": dict(bias=True),
    "gamma": dict(gamma=True),
    "difffit": dict(bias=True, gamma=True, norms=True),
    "norms": dict(norms=True),
    "full": dict(full=True),
    "head": dict(),
    "onelora+bias": dict(linear="onelora", bias=True),
    "onelora+gamma": dict(linear="onelora", gamma=True),
    "onelora+norms": dict(linear="onelora", norms=True),
    "onelora+bias+gamma+norms": dict(linear="onelora", bias=True, gamma=True, norms=True),
}


def spec_of(name: str) -> MethodSpec:
    return MethodSpec.from_config({"name": name, **METHODS[name]})
