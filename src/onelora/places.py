"""Where a run reads and writes, and the one line a user sees when one of those places cannot be used.

Every place is a config key holding a path (``paths.results_dir``, ``paths.cache_dir``,
``paths.data_dir``, ``task.data.root``, ``model.pretrained``, ...), often set through an
environment variable in its default (``paths.results_dir: ${oc.env:ONELORA_RESULTS,...}``). An
``OSError`` on a path under one of them (no permission, a file where a folder should be, a
read-only or full disk) is the user's setup, not a bug: :func:`explain` turns it into one line
that names the path, the key and the variable that set it, what is wrong and how to fix it. The
CLI uses it for every error (:mod:`onelora.cli`), and :class:`CheckPlaces` checks the run's output
folder and the cache up front, before Hydra or the run writes anything.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import plain

#: what each errno means for a place, in words
PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of it is a file, not a folder",
    errno.EISDIR: "it is a folder where a file was expected",
    errno.EEXIST: "it exists but is not a folder (a file, or a link to nowhere)",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOENT: "it does not exist",
}
#: places a run writes to: a missing file there is the run's own business (a bug), not the user's
WRITTEN = ("paths.results_dir", "paths.cache_dir")
_ENV = re.compile(r"\$\{oc\.env:(\w+)")
_REF = re.compile(r"\$\{((?:paths|task|model)\.[\w.]+)\}")


class PlaceError(OSError):
    """A configured place that cannot be used; the message names the path and the key."""


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _leaves(value, f"{prefix}{index}.")
    else:
        out.append((prefix[:-1], node))
    return out


def places(cfg: DictConfig) -> dict[str, Path]:
    """Every config key whose value is a local path: ``paths.*`` first, then the run's own keys."""
    found: dict[str, Path] = {}
    for section in ("paths", "task", "model", "logger"):
        node = cfg.get(section) if isinstance(cfg, DictConfig) else None
        if node is None:
            continue
        try:
            resolved = OmegaConf.to_container(node, resolve=True)
        except Exception:  # an interpolation that only resolves inside Hydra's runtime
            continue
        for key, value in _leaves(resolved, f"{section}."):
            if isinstance(value, str) and value and (section == "paths" or value.startswith(("/", "~", "./", "../"))):
                found[key] = Path(value).expanduser().absolute()
    return found


def _raw(cfg: DictConfig, key: str) -> Any:
    """``key``'s value as written (interpolations unresolved)."""
    parent, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return OmegaConf.to_container(node, resolve=False).get(leaf)
    except Exception:
        return None


def origin(cfg: DictConfig, key: str) -> tuple[list[str], str | None]:
    """What set ``key``: the keys its value is built from and the environment variable that set
    the last of them, e.g. ``(["paths.data_dir"], "ONELORA_DATA")`` for ``task.data.root``."""
    chain: list[str] = []
    for _ in range(5):
        raw = _raw(cfg, key)
        if not isinstance(raw, str):
            break
        env = [name for name in _ENV.findall(raw) if name in os.environ]
        if env:
            return chain, env[0]
        refs = _REF.findall(raw)
        if not refs:
            break
        key = refs[0]
        chain.append(key)
    return chain, None


def _owner(path: Path, known: dict[str, Path]) -> str | None:
    """The key of the most specific place ``path`` lies under (or is)."""
    under = [key for key, root in known.items() if _is_under(path, root)]
    return max(under, key=lambda key: len(known[key].parts), default=None)


def _is_under(path: Path, root: Path | None) -> bool:
    return root is not None and (path == root or root in path.parents)


def _written(key: str, known: dict[str, Path]) -> bool:
    """``key`` is (or lies under) a place the run writes to."""
    return key in WRITTEN or any(_is_under(known[key], known.get(root)) for root in WRITTEN if key in known)


def _os_error(err: BaseException | None) -> OSError | None:
    """The first OSError with a file name in ``err``'s chain (a library may wrap it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.filename and err.errno in PROBLEMS:
            return err
        err = err.__cause__ or err.__context__
    return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return "you"


def _existing(path: Path) -> Path:
    """``path`` or its deepest ancestor that exists (where a permission or a file gets in the way)."""
    for part in (path, *path.parents):
        if os.path.lexists(part):
            return part
    return path


def describe(path: str | Path, code: int, key: str, cfg: DictConfig) -> str:
    """One line: the path, what is wrong, the key (and variable) that put it there, the fix."""
    path = Path(path)
    value = places(cfg).get(key, path)
    keys, env = origin(cfg, key)
    by = f" (set by {env})" if env else ""
    problem = PROBLEMS.get(code, os.strerror(code))
    remedy = ""
    if code in (errno.EACCES, errno.EPERM):
        problem += f" for user {_user()}"
        remedy = f"give yourself access (`ls -ld {_existing(path)}`) or "
    elif code in (errno.ENOSPC, errno.EDQUOT):
        remedy = "free some space or "
    elif code == errno.ENAMETOOLONG:
        remedy = "shorten the name (run_tag, the file name) or "
    elif code == errno.ENOTDIR:
        problem = f"{_existing(path)} is a file, not a folder"
    elif code == errno.EEXIST and os.path.islink(path) and not path.exists():
        problem = f"it is a link to {os.readlink(path)}, which does not exist"
    where = f"{key}={value}{by}" if path == value else f"{path} (under {key}={value}{by})"
    writes = _written(key, places(cfg)) or code in (errno.EROFS, errno.ENOSPC, errno.EDQUOT)
    need = "a folder you can write to" if writes else "a copy you can read"
    default_env = _ENV.search(str(_raw(cfg, key) or ""))  # the variable the key's default reads, set or not
    others = keys + [name for name in (env or (default_env and default_env.group(1)),) if name]
    slot = "<dir>" if key.startswith("paths.") or value.is_dir() or not value.suffix else "<path>"
    alternative = f"{key}={slot}" + (f" (or {', '.join(f'{k}=<dir>' for k in others)})" if others else "")
    return f"cannot use {where}: {problem}. To fix it, {remedy}point {alternative} at {need}"


def explain(err: BaseException, cfg: DictConfig) -> str | None:
    """One line for a filesystem error on one of the run's places, or None if it is not one."""
    found = _os_error(err)
    if found is None:
        return None
    known = places(cfg)
    for name in (found.filename, found.filename2):
        if not name or not isinstance(name, (str, bytes, os.PathLike)):
            continue
        path = Path(os.fsdecode(name)).expanduser().absolute()
        key = _owner(path, known)
        if key is None or (found.errno == errno.ENOENT and _written(key, known)):
            continue  # a file the run writes itself that is missing: a bug, not the user's setup
        return describe(path, found.errno, key, cfg)
    return None


def check_writable(folder: str | Path, key: str, cfg: DictConfig) -> None:
    """Create ``folder`` (as the run would) and write a file in it; a failure raises PlaceError."""
    folder = Path(folder).expanduser().absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PlaceError(explain(err, cfg) or describe(err.filename or folder, err.errno, key, cfg)) from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".onelora-write-check-"):
            pass
    except OSError as err:  # named by the folder, not by the probe's random name
        raise PlaceError(describe(folder, err.errno, _owner(folder, places(cfg)) or key, cfg)) from None


def check_folder(folder: str | Path, key: str, cfg: DictConfig) -> None:
    """``folder`` need not exist, but what exists of it must be folders (not a file, not a broken link)."""
    folder = Path(folder).expanduser().absolute()
    for part in (folder, *folder.parents):
        if os.path.lexists(part):
            if not part.is_dir():
                raise PlaceError(describe(folder, errno.EEXIST if part == folder else errno.ENOTDIR, key, cfg))
            return


def check_places(cfg: DictConfig, output_dir: str | Path | None) -> None:
    """Before anything is written: the run's output folder can be written, the cache is a folder
    (a shared cache need not be writable: what is built already is only read)."""
    for key, value in (plain(cfg.get("paths")) or {}).items():
        if key.endswith("_dir") and (value is None or not str(value).strip()):  # "" + "/task/..." would be a folder at the root
            raise PlaceError(f"paths.{key} is empty; set it to a folder (or unset it for the default)")
    if output_dir is not None:
        output_dir = Path(output_dir).expanduser().absolute()
        check_writable(output_dir, _owner(output_dir, places(cfg)) or "hydra.run.dir", cfg)
    if cfg.get("mode") != "count" and cfg.get("paths") is not None and cfg.paths.get("cache_dir"):
        check_folder(cfg.paths.cache_dir, "paths.cache_dir", cfg)


class CheckPlaces(Callback):
    """Hydra callback (conf/hydra/default.yaml), first of all: Hydra creates the output folder,
    its ``.hydra`` and ``run.log`` before the run starts, so a folder that cannot be written must
    be found here to be reported in one line instead of Hydra's chained tracebacks."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        try:
            check_places(config, OmegaConf.select(config, key))
        except PlaceError as err:
            print(f"onelora: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
