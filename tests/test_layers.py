"""The import rule of docs/task_contract.md ("Layers"): each module of src/onelora imports only from
its own layer or the layers below it, read from the source with ``ast`` (imports inside functions
and under ``TYPE_CHECKING`` count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: bottom to top; a module belongs to the layer of the longest prefix that names it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("onelora", "onelora.config", "onelora.files", "onelora.quiet", "onelora.results", "onelora.runlock")),
    ("data", ("onelora.data",)),
    ("models", ("onelora.models", "onelora.diffusion")),
    ("adapters", ("onelora.adapters",)),
    ("methods", ("onelora.methods",)),
    ("metrics", ("onelora.metrics",)),
    ("figures", ("onelora.figures",)),
    ("tasks", ("onelora.tasks",)),
    ("run", ("onelora.experiments", "onelora.pipeline", "onelora.plan", "onelora.contract", "onelora.settings", "onelora.count",
             "onelora.pretrain", "onelora.runner", "onelora.callbacks", "onelora.strategies", "onelora.sweeps",
             "onelora.cli")),
    ("tools", ("onelora.reporting", "onelora.bench", "onelora.analysis")),
]


def layer_of(module: str) -> int:
    """Index of the layer a dotted module name belongs to (the longest matching prefix)."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} is in no layer: add it to tests/test_layers.py and docs/task_contract.md"
    return index


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((SRC / "onelora").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def imported(module: str, path: Path) -> set[str]:
    """The onelora modules ``module`` imports (``from . import x`` counts as importing ``pkg.x``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found |= {name} if node.module else {f"{name}.{a.name}" for a in node.names}
    return {n for n in found if n == "onelora" or n.startswith("onelora.")}


MODULES = modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_a_module_imports_only_its_own_layer_or_below(module, path):
    own = layer_of(module)
    above = {name: LAYERS[layer_of(name)][0] for name in imported(module, path) if layer_of(name) > own}
    assert not above, f"{module} ({LAYERS[own][0]}) imports from a higher layer: {above}"


def test_the_rule_sees_what_it_must():
    """The parser itself: relative imports resolve, a function-level import counts."""
    found = dict(MODULES)
    assert "onelora.data.crops" in imported("onelora.data.depth", found["onelora.data.depth"])
    assert "onelora.adapters.base" in imported("onelora.adapters", found["onelora.adapters"])
    assert "onelora.methods" in imported("onelora.analysis.memory_llama", found["onelora.analysis.memory_llama"])
    assert layer_of("onelora.data.depth") < layer_of("onelora.metrics.depth") < layer_of("onelora.tasks.depth")
    assert layer_of("onelora.models.weights") < layer_of("onelora.adapters.targeting")
