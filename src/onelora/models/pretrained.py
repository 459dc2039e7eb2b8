"""Finding pretrained weights: a local directory or file, or a Hugging Face hub id.

Without network or files a run must stop at once and say what is missing, where it looked and
how to get it; there is never a silent fallback to random weights.
"""

from __future__ import annotations

import os
from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that are neither on disk nor reachable."""


def weights_hint(source: str) -> str:
    return (
        f"Get them on a machine with internet with `huggingface-cli download {source} --local-dir <dir>` "
        f"(or let transformers/timm download them there, HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}), "
        f"then point the model at it: `model.pretrained=<dir>`; or run with `model.pretrained=null` for random init."
    )


def missing_weights(source: str, tried: str | Path, cause: BaseException | None = None) -> MissingWeightsError:
    reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})" if cause else ""
    return MissingWeightsError(
        f"pretrained weights '{source}' not found: looked in {tried}{reason}. {weights_hint(source)}"
    )


def is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
