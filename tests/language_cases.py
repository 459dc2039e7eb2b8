"""What the language tests share: a small problem file, a tokenizer trained on it, a tiny random
LLaMA sized to that tokenizer, and the base-module arguments."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from onelora.data.synthetic.math import arithmetic_problems
from onelora.data.tokenizers import trained_tokenizer

METRIC = {"name": "val_loss", "direction": "min", "val_key": "val/loss", "test_key": "test/loss"}


def problem_file(cache: Path, types=("add", "sub"), count: int = 200, seed: int = 0) -> str:
    return arithmetic_problems(cache, types, count, seed)


def tokenizer(cache: Path):
    """A byte-level BPE (digits split) trained on 200 add/sub and 100 mul/two_step problems."""
    files = [problem_file(cache), problem_file(cache, ("mul", "two_step"), 100, 1)]
    return trained_tokenizer(files, cache, vocab_size=300)


def tiny_lm(vocab_size: int, seed: int = 0, **arch):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
    cfg.update(arch)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **cfg))


def base_kwargs(lr: float = 1e-3) -> dict:
    """FineTuneModule's keyword arguments as the contract passes them (an optimizer partial)."""
    return {"optimizer": partial(torch.optim.AdamW, lr=lr), "metric": METRIC}
