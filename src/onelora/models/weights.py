"""The one weight loader: find pretrained weights, read them, load them into a model.

A source is a local file, a local directory (holding one weights file), a Hugging Face hub id
(``owner/name``, ``owner/name:file``, ``spaces/owner/name:file``) or a URL (through torch.hub's
cache). Whatever the source, absent weights raise one :class:`MissingWeightsError` that says what
is missing, where it was looked for and how to get it; there is never a silent fallback to random
weights. The hub is asked only after its local cache, and not at all when ``HF_HUB_OFFLINE`` is set
or the hub cannot be reached within a few seconds (no minute of retries before the error).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from .patterns import is_under

#: file names tried in a directory or hub repository, in order
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: wrappers around a state dict in training checkpoints (DiT's train.py: "ema"; Lightning: "state_dict")
WRAPPERS = ("ema", "state_dict", "model", "module")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that are neither on disk nor reachable."""


class UnreadableWeightsError(RuntimeError):
    """A weights file that exists but cannot be read (truncated, empty, not a checkpoint)."""


def how_to_get(source: str) -> str:
    if is_url(source):
        return (f"download it on a machine with internet (`wget {source}`) and point the model at the file: "
                "`model.pretrained=<file>`")
    if is_local(source):
        return "point `model.pretrained` at an existing weights file or directory"
    repo, _, filename = source.partition(":")
    kind = "--repo-type space " if repo.startswith("spaces/") else ""
    command = " ".join(p for p in ("huggingface-cli download", kind + repo.removeprefix("spaces/"), filename) if p)
    return (f"on a machine with internet run `{command} --local-dir <dir>` (or let the library fetch it "
            f"into HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}), then `model.pretrained=<dir>`")


def missing_weights(source: str, tried: str | Path, cause: BaseException | None = None,
                    hint: str | None = None) -> MissingWeightsError:
    reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})" if cause and str(cause) else ""
    hint = f" {hint.rstrip('.')}." if hint else ""
    return MissingWeightsError(
        f"pretrained weights '{source}' not found: looked in {tried}{reason}. To get them, {how_to_get(source)};"
        f"{hint} Or run with `model.pretrained=null` for random init."
    )


def is_url(source: str) -> bool:
    return str(source).startswith(("http://", "https://"))


def is_local(source: str) -> bool:
    source = str(source)
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


# -- finding ------------------------------------------------------------------------------------


def resolve(source: str | Path, *, files: Iterable[str] = WEIGHT_FILES, hint: str | None = None) -> Path:
    """A local weights file for ``source`` (downloading it once where that is possible).

    ``hint`` (where a model's original weights live) is added to the error when they are missing.
    """
    source = str(source)
    if is_url(source):
        return _from_url(source, hint)
    if is_local(source):
        return _local_file(source, tuple(files), hint)
    repo, _, filename = source.partition(":")
    return _from_hub(source, repo, [filename] if filename else list(files), hint)


def resolve_directory(source: str | Path, *, hint: str | None = None) -> Path:
    """A local directory for a transformers ``from_pretrained`` (a local directory or a hub id)."""
    source = str(source)
    if is_local(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise missing_weights(source, f"{path} (a directory with config.json and the weights)", hint=hint)
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not in the local cache: ask the hub, if it can be asked
        _check_hub_reachable(source, hint)
    try:
        return Path(snapshot_download(source))
    except Exception as err:  # gated, not found, network
        raise missing_weights(source, f"the Hugging Face cache and hub ({source})", err, hint) from err


def _local_file(source: str, files: tuple[str, ...], hint: str | None) -> Path:
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in files:
            if (path / name).is_file():
                return path / name
        found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        if len(found) == 1:
            return found[0]
        what = f"{path} (a directory with one of {list(files)} or a single {'/'.join(WEIGHT_SUFFIXES)} file)"
        raise missing_weights(source, what, hint=hint)
    raise missing_weights(source, path, hint=hint)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _check_hub_reachable(source: str, hint: str | None) -> None:
    """Fail at once, not after the hub client's retries, when the hub cannot be asked."""
    from huggingface_hub import constants

    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE}) for '{source}'"
    if _hub_offline():
        raise missing_weights(source, f"{where}; HF_HUB_OFFLINE is set, so not the hub", hint=hint)
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError as err:
        raise missing_weights(source, f"{where} and the hub ({endpoint.hostname} unreachable)", err, hint) from None


def _from_hub(source: str, repo: str, filenames: list[str], hint: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    repo_type = "space" if repo.startswith("spaces/") else None
    repo = repo.removeprefix("spaces/")
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, repo_type=repo_type, local_files_only=True))
        except Exception:  # not cached: try the next name, then the hub
            continue
    _check_hub_reachable(source, hint)
    cause: BaseException | None = None
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, repo_type=repo_type))
        except Exception as err:  # not in this repo, gated, network
            cause = err
    raise missing_weights(source, f"the Hugging Face cache and hub repo {repo} (files {filenames})", cause, hint)


def _from_url(url: str, hint: str | None) -> Path:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=True)
        return cached
    except Exception as err:  # offline, unreachable, 404
        cached.unlink(missing_ok=True)
        raise missing_weights(url, f"{cached} (torch hub cache) and {url}", err, hint) from err


# -- reading -------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors / torch file, unwrapped from training-checkpoint wrappers."""
    path = Path(path)
    open(path, "rb").close()  # an unreadable file raises here, as itself (safetensors calls it "not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (PermissionError, IsADirectoryError, NotADirectoryError):
        raise  # not damaged: the CLI names the path and the key that set it (onelora.places)
    except Exception as err:  # truncated, empty, another format
        raise unreadable_weights(path, err) from err
    while isinstance(state, Mapping):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnreadableWeightsError(f"the weights file {path} holds no state dict of tensors")
    return dict(state)


def unreadable_weights(path: str | Path, err: BaseException) -> UnreadableWeightsError:
    reason = str(err).splitlines()[0][:200] if str(err) else ""
    return UnreadableWeightsError(
        f"cannot read the weights file {path} ({type(err).__name__}: {reason}): "
        "it is damaged or not a checkpoint. Delete it and fetch it again."
    )


def damaged_file_in(directory: str | Path) -> tuple[Path, Exception] | None:
    """The first file of a ``from_pretrained`` directory that cannot be read (a truncated
    ``model.safetensors``, a cut ``config.json``), and why; None if every one reads."""
    import json

    from safetensors import safe_open

    for path in sorted(Path(directory).iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), "pt"):  # the header, and that the data covers it
                    pass
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".bin", ".pt", ".pth"):
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except OSError:
            raise
        except Exception as err:
            return path, err
    return None


def load_directory(load: Callable[[], Any], directory: str | Path) -> Any:
    """``load()`` (a library's ``from_pretrained(directory)``); when it fails on a damaged file, the
    error names that file (safetensors' own error names none)."""
    try:
        return load()
    except Exception as err:
        directory = Path(directory)
        damaged = damaged_file_in(directory) if directory.is_dir() else None
        if damaged is None:
            raise
        raise unreadable_weights(*damaged) from err


def load_state(source: str | Path, *, hint: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict behind any source: ``read_state_dict(resolve(source))``."""
    return read_state_dict(resolve(source, hint=hint))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, head: Iterable[str] = (),
              source: str = "checkpoint") -> nn.Module:
    """Load ``state`` strictly, except head tensors (``head`` regexes) absent or of another shape:
    those keep their fresh initialisation (a new task head, DiT's re-initialised class table)."""
    head = list(head)
    own = model.state_dict()

    def is_head(key: str) -> bool:
        return is_under(key.rpartition(".")[0], head)

    state = {k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape and is_head(k))}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not is_head(k)]
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and own[k].shape != v.shape]
    if missing or result.unexpected_keys or shapes:
        raise RuntimeError(
            f"{source} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
            f"{list(result.unexpected_keys)[:5]}, shape mismatches {shapes[:5]}"
        )
    return model
