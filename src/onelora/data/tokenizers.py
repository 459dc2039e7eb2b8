"""The tokenizer part of the language tasks: LLaMA-2's from a hub id or a local directory, or a small
byte-level BPE trained here for the laptop-sized transfer. Both come back as a transformers
``PreTrainedTokenizerFast`` with BOS added by ``tokenizer(text)``, no EOS added, and a pad token, so
the data module and the module use one interface.

Why the trained tokenizer splits digits one by one (``pre_tokenizers.Digits(individual_digits=True)``):
a tiny model on arithmetic learns the digit algorithms only if "145" is always "1", "4", "5"; a
plain byte-level BPE merges frequent numbers into single tokens and a probe reached 13% accuracy
after pre-training against 85% with split digits. A vocabulary of 512 keeps the Alpaca template
at ~40 tokens (a character tokenizer needs ~140 for the template alone).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..cache import build_once
from ..files import write_text_atomic
from .errors import missing_data
from .math import alpaca_prompt, load_metamath

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
TOKENIZER_VERSION = 1  # part of the cache key: bump when training changes


class MissingTokenizerError(FileNotFoundError):
    """A tokenizer that is neither in the local directory nor in the Hugging Face cache."""


def pretrained_tokenizer(source: str, pad_token: str | None = None):
    """A hub id or local directory through ``AutoTokenizer`` (fast tokenizer).

    Pad token as in MoRA's MetaMathQA script: LLaMA-2 has none, and MoRA sets ``pad_token_id = 2``
    (LLaMA's EOS); ``pad_token=None`` does the same for any tokenizer without one. Padding never
    reaches the loss or attention here (labels -100, attention mask from the lengths).
    """
    from transformers import AutoTokenizer

    local = Path(source).expanduser()
    if not local.exists() and (local.is_absolute() or source.startswith((".", "~"))):
        raise MissingTokenizerError(  # a path, not a hub id: the hub's "Repo id must be ..." would mislead
            f"tokenizer directory {str(local)!r} does not exist. Give a local directory with tokenizer.json / "
            f"tokenizer.model (task.parts.tokenizer.source=<dir>) or a Hugging Face hub id"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else source, use_fast=True)
    except (OSError, ValueError) as err:
        where = local if local.exists() else "the Hugging Face cache and hub"
        raise MissingTokenizerError(
            f"tokenizer {source!r} not found in {where} ({str(err).splitlines()[0][:200]}). Give a local "
            f"directory with tokenizer.json / tokenizer.model (e.g. `huggingface-cli download {source} "
            f"--include 'tokenizer*' --local-dir <dir>` where the hub is reachable, then "
            f"task.parts.tokenizer.source=<dir>)"
        ) from err
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # MoRA: pad_token_id = 2 = </s>
    tokenizer.padding_side = "right"
    return tokenizer


def _corpus(files: Sequence[str]) -> list[str]:
    """The texts the BPE is trained on: prompt and response of every record joined as MoRA joins them
    (no separator), so that "### Response:" and the first response word tokenise as in training."""
    return [alpaca_prompt(r["query"]) + r["response"] for path in files for r in load_metamath(path)]


def _key(files: Sequence[str], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps([TOKENIZER_VERSION, settings]).encode())
    for path in files:
        digest.update(Path(path).expanduser().read_bytes())
    return digest.hexdigest()[:12]


def _wrap(tokenizer_file: Path):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file), bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="right"
    )
    return tokenizer


def trained_tokenizer(files: str | Iterable[str], cache_dir: str | os.PathLike, vocab_size: int = 512,
                      min_frequency: int = 2, individual_digits: bool = True):
    """A byte-level BPE trained on MetaMathQA-format json ``files``; cached by its settings and the
    files' contents under ``cache_dir/tokenizers/``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    files = [files] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]
    for path in files:
        if not Path(path).expanduser().is_file():
            raise missing_data("tokenizer training text", path, "a MetaMathQA-format json file",
                               "generate it with onelora.data.synthetic.math.arithmetic_problems or point "
                               "task.parts.tokenizer.files at MetaMathQA json files")
    settings = {"vocab_size": int(vocab_size), "min_frequency": int(min_frequency),
                "individual_digits": bool(individual_digits)}
    out = Path(cache_dir).expanduser() / "tokenizers" / f"bpe{vocab_size}_{_key(files, settings)}" / "tokenizer.json"

    def train(out: Path) -> None:
        tokenizer = Tokenizer(models.BPE())
        splits = [pre_tokenizers.Digits(individual_digits=True)] if individual_digits else []
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size), min_frequency=int(min_frequency), special_tokens=[PAD, BOS, EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tokenizer.train_from_iterator(_corpus(files), trainer)
        bos_id = tokenizer.token_to_id(BOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
        write_text_atomic(out, tokenizer.to_str())  # concurrent runs never read a half-written file

    build_once(out, train, complete=Path.is_file, what="the trained tokenizer")
    return _wrap(out)
