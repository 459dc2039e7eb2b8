"""The one method table: ``conf/method/*.yaml`` read outside a Hydra run.

A method is one adapter class (registered in ``onelora.adapters``) plus one YAML file. The file
holds the ``MethodSpec`` fields a run injects and a ``describe`` block that no run reads: how
tables, plots, the benchmark and the counts show the method::

    describe:
      label: 1LoRA              # our tables, plots and reports
      paper_label: null         # the paper's own label where it differs: a string, or {table id: label}
      family: 1LoRA             # plots colour methods by family ...
      color: tab:red            # ... in the family's colour (every method of a family gives the same)
      order: 20                 # tables list methods by it
      compared: true            # one of the paper's compared methods: make count-paper, the LLaMA memory analysis
      per_layer: d              # the paper's trainable parameters per target layer (k in, d out features)
      bench:                    # the benchmark's rows of it: key, label, option changes
        - {key: onelora, label: 1LoRA (fused)}

Everything else that lists methods (reporting's labels and colours, the benchmark, ``make
count-paper``, the memory analysis, the tests' parametrisations) reads this table, so no second
list of methods exists. ``ONELORA_CONF`` (folders separated by ``os.pathsep``, searched in order)
replaces the project's ``conf/``: a test adds a method in a folder of its own this way.

``python -m onelora.methods compared`` prints the compared methods' config files, comma-separated
(the Makefile's ``COUNT_METHODS``).
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from omegaconf import OmegaConf

if TYPE_CHECKING:
    from .adapters import MethodSpec

#: the project's config folder
PROJECT_CONF = Path(__file__).resolve().parents[2] / "conf"
#: the key of a method YAML that describes the method for people (no run reads it)
DESCRIBE = "describe"
#: keys every ``describe`` block gives
REQUIRED = ("label", "family", "color", "order")


def conf_dirs() -> tuple[Path, ...]:
    """The config folders searched for method files: ``ONELORA_CONF``'s, else the project's."""
    value = os.environ.get("ONELORA_CONF")
    if not value:
        return (PROJECT_CONF,)
    return tuple(Path(p) for p in value.split(os.pathsep) if p)


# ---------------------------------------------------------------------------------------------
# the files
# ---------------------------------------------------------------------------------------------


def method_files() -> list[str]:
    """Every method config's file name (without .yaml), sorted."""
    return sorted({p.stem for d in conf_dirs() for p in (d / "method").glob("*.yaml")})


def method_config(file: str) -> dict[str, Any]:
    """``conf/method/<file>.yaml`` with its defaults list applied, merged as Hydra merges it (the
    file's own keys win; nested blocks such as ``options`` and ``describe`` merge key by key)."""
    return copy.deepcopy(_config(conf_dirs(), file))


@lru_cache(maxsize=None)
def _config(dirs: tuple[Path, ...], file: str) -> dict[str, Any]:
    path = next((d / "method" / f"{file}.yaml" for d in dirs if (d / "method" / f"{file}.yaml").is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no method config {file}.yaml in {', '.join(map(str, dirs))}; "
                                f"available: {', '.join(method_files())}")
    own = OmegaConf.load(path)
    parents = [p for p in (own.pop("defaults", None) or []) if p != "_self_"]
    merged = OmegaConf.merge(*(OmegaConf.create(_config(dirs, str(p))) for p in parents), own)
    return OmegaConf.to_container(merged)


def method_spec(file: str, **changes: Any) -> "MethodSpec":
    """The MethodSpec of a method config, with ``changes`` applied (``options`` are merged)."""
    from .adapters import MethodSpec

    cfg = dict(method_config(file))
    options = {**(cfg.get("options") or {}), **changes.pop("options", {})}
    return MethodSpec.from_config({**cfg, **changes, "options": options})


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One row of the benchmark: ``key`` names it in bench.json, ``options`` change the method's."""

    key: str
    label: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """A method as tables, plots, the benchmark and the counts know it."""

    file: str  # conf/method/<file>.yaml: what `method=` takes
    name: str  # the run's method name (results.json "method", the paper CSVs' "method")
    label: str
    family: str
    color: str
    order: int
    compared: bool = False
    per_layer: str | None = None
    paper_label: str | Mapping[str, str] | None = None
    bench: tuple[BenchRow, ...] = ()

    def label_in(self, table: str | None = None) -> str:
        """The label a table prints: the paper's own for that table where the YAML gives one."""
        paper = self.paper_label
        if isinstance(paper, Mapping):
            paper = paper.get(str(table)) if table is not None else None
        return str(paper) if paper else self.label


class MethodTableError(ValueError):
    """A method YAML's ``describe`` block is missing a key or contradicts another file."""


def method_table() -> dict[str, MethodInfo]:
    """Every method, by its run name, in table order (``describe.order``, then name)."""
    return _table(conf_dirs())


def method_info(name: str) -> MethodInfo | None:
    """The method a run name (``onelora+bias``) or config file (``onelora_bias``) names, or None."""
    table = method_table()
    return table.get(name) or next((m for m in table.values() if m.file == name), None)


def family_colors() -> dict[str, str]:
    """One colour per method family, in table order."""
    out: dict[str, str] = {}
    for info in method_table().values():
        out.setdefault(info.family, info.color)
    return out


def compared_methods() -> list[str]:
    """The config files of the paper's compared methods, in table order."""
    return [m.file for m in method_table().values() if m.compared]


@lru_cache(maxsize=None)
def _table(dirs: tuple[Path, ...]) -> dict[str, MethodInfo]:
    infos: list[MethodInfo] = []
    for file in method_files():
        cfg = _config(dirs, file)
        where = f"conf/method/{file}.yaml"
        describe = cfg.get(DESCRIBE)
        if not isinstance(describe, Mapping):
            raise MethodTableError(f"{where}: no '{DESCRIBE}' block (label, family, color, order); see onelora.methods")
        missing = [k for k in REQUIRED if describe.get(k) in (None, "")]
        if missing:
            raise MethodTableError(f"{where}: {DESCRIBE}.{missing[0]} is not set")
        unknown = sorted(set(describe) - set(REQUIRED) - {"compared", "per_layer", "paper_label", "bench"})
        if unknown:
            raise MethodTableError(f"{where}: {DESCRIBE} has no key {unknown[0]!r}")
        rows = []
        for row in describe.get("bench") or []:
            if not isinstance(row, Mapping) or not row.get("key") or not row.get("label"):
                raise MethodTableError(f"{where}: every {DESCRIBE}.bench row needs a key and a label, got {row!r}")
            rows.append(BenchRow(str(row["key"]), str(row["label"]), dict(row.get("options") or {})))
        per_layer = describe.get("per_layer")
        infos.append(MethodInfo(
            file=file, name=str(cfg["name"]), label=str(describe["label"]), family=str(describe["family"]),
            color=str(describe["color"]), order=int(describe["order"]), compared=bool(describe.get("compared")),
            per_layer=None if per_layer is None else str(per_layer), paper_label=describe.get("paper_label"),
            bench=tuple(rows),
        ))
    table: dict[str, MethodInfo] = {}
    colors: dict[str, MethodInfo] = {}
    bench: dict[str, MethodInfo] = {}
    labels: dict[tuple[str | None, str], MethodInfo] = {}
    tables = {None} | {t for m in infos if isinstance(m.paper_label, Mapping) for t in m.paper_label}
    for info in sorted(infos, key=lambda m: (m.order, m.name)):
        if info.name in table:
            raise MethodTableError(f"conf/method/{info.file}.yaml and {table[info.name].file}.yaml both name "
                                   f"the method '{info.name}'")
        first = colors.setdefault(info.family, info)
        if first.color != info.color:
            raise MethodTableError(f"conf/method/{info.file}.yaml: family '{info.family}' is coloured "
                                   f"{first.color!r} in {first.file}.yaml, not {info.color!r}")
        for row in info.bench:
            if row.key in bench:
                raise MethodTableError(f"conf/method/{info.file}.yaml: bench key '{row.key}' is taken by "
                                       f"{bench[row.key].file}.yaml")
            bench[row.key] = info
        for where in tables:  # a file that extends another inherits its describe keys: give each its own
            other = labels.setdefault((where, info.label_in(where)), info)
            if other is not info:
                raise MethodTableError(f"conf/method/{info.file}.yaml and {other.file}.yaml are both labelled "
                                       f"{info.label_in(where)!r}" + (f" in Table {where}" if where else ""))
        table[info.name] = info
    return table


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else ""
    if what == "compared":
        print(",".join(compared_methods()))
    elif what == "files":
        print(",".join(m.file for m in method_table().values()))
    else:
        raise SystemExit("usage: python -m onelora.methods compared|files")


if __name__ == "__main__":  # pragma: no cover
    main()
