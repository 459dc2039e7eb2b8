"""MetaMathQA for supervised fine-tuning, the way MoRA's code (kongds/MoRA, training_utils.py) feeds
LLaMA-2: the Alpaca prompt, the response plus EOS as the target, the prompt masked out of the loss,
at most 512 tokens, right padding; and the paper's seeded 80/20 train/validation split (of the
records of the chosen ``types`` when set: filtered first, so each type is split 80/20 too).

One deliberate difference from MoRA: the prompt and the response are tokenised SEPARATELY and the
ids joined (MoRA tokenises the joined string and masks as many tokens as the prompt alone has). So
the loss mask is exact whatever the tokenizer merges across the boundary, and a generation prompt
is the very token sequence training saw before the response. Truncation is MoRA's: the joined
sequence keeps its first ``max_length`` tokens (a long response loses its end, EOS included).

The file is MetaMathQA's json (a list of ``{"query", "response", "type", "original_question"}``);
the synthetic problems of ``onelora.data.synthetic.math`` use the same format. GSM8K's test jsonl
(``{"question", "answer": "... #### 72"}``) can be added for the exact-match accuracy evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import ConfigError
from .errors import MissingDataError, missing_data

IGNORE_INDEX = -100

# MoRA's PROMPT_DICT (from alpaca-lora / Stanford Alpaca), verbatim
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)

METAMATH_HOW = (
    "download MetaMathQA-395K.json from the Hugging Face dataset meta-math/MetaMathQA "
    "(`huggingface-cli download meta-math/MetaMathQA MetaMathQA-395K.json --repo-type dataset "
    "--local-dir <dir>`) and set task.data.path=<dir>/MetaMathQA-395K.json"
)
GSM8K_HOW = (
    "download test.jsonl of the Hugging Face dataset openai/gsm8k (or github openai/grade-school-math, "
    "grade_school_math/data/test.jsonl) and set task.data.gsm8k_path=<file>, or leave it null"
)


def alpaca_prompt(query: str) -> str:
    """MoRA's prompt: the query's first line is the instruction, any further lines the input."""
    instruction, _, rest = query.partition("\n")
    if rest:
        return PROMPT_INPUT.format(instruction=instruction, input=rest)
    return PROMPT_NO_INPUT.format(instruction=instruction)


# -------------------------------------------------------------------------------------------------
# files
# -------------------------------------------------------------------------------------------------

def _read_json_records(path: Path, name: str, how: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise missing_data(name, path, "a json file", how)
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON lines
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid json or json lines ({err}); {how}") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty list of records, got {type(records).__name__}; {how}")
    return records


def _require(records: list[Any], keys: Sequence[str], path: Path, how: str) -> None:
    for index, record in enumerate(records):
        if not isinstance(record, dict) or any(not isinstance(record.get(k), str) for k in keys):
            raise ValueError(
                f"{path}: record {index} lacks the text fields {list(keys)} "
                f"(it has {sorted(record) if isinstance(record, dict) else type(record).__name__}); {how}"
            )


def load_metamath(path: str | Path) -> list[dict[str, Any]]:
    """MetaMathQA records (``query``, ``response``, ``type``, ...) from its json / json lines file."""
    path = Path(path).expanduser()
    records = _read_json_records(path, "MetaMathQA", METAMATH_HOW)
    _require(records, ("query", "response"), path, METAMATH_HOW)
    return records


def load_gsm8k(path: str | Path) -> list[dict[str, Any]]:
    """GSM8K problems as MetaMathQA-style records: ``query`` = question, ``response`` = the solution
    ending "#### X" (which the answer extraction reads)."""
    path = Path(path).expanduser()
    records = _read_json_records(path, "GSM8K", GSM8K_HOW)
    _require(records, ("question", "answer"), path, GSM8K_HOW)
    return [{"query": r["question"], "response": r["answer"], "type": "gsm8k"} for r in records]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded train / validation split of ``n`` records (depends on ``seed`` only, not on the run)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"task.data.val_fraction must lie in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# -------------------------------------------------------------------------------------------------
# tokenisation
# -------------------------------------------------------------------------------------------------

def encode(query: str, response: str, tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """Prompt ids (with the tokenizer's BOS) + response ids + EOS; labels -100 on the prompt; the
    joined sequence cut to its first ``max_length`` tokens."""
    prompt = tokenizer(alpaca_prompt(query), add_special_tokens=True)["input_ids"]
    target = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def prompt_ids(query: str, tokenizer: Any) -> list[int]:
    """What generation starts from: exactly the ids training saw before the response."""
    return tokenizer(alpaca_prompt(query), add_special_tokens=True)["input_ids"]


def pad_right(items: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding: pad ids (attention 0) and labels -100 after each sequence."""
    width = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        attention[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def pad_left(prompts: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left padding for batched generation (every prompt ends at the last column)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention[row, width - len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


class SupervisedMath(Dataset):
    """Records tokenised on access (395K records need no up-front pass)."""

    def __init__(self, records: Sequence[dict[str, Any]], tokenizer: Any, max_length: int):
        self.records, self.tokenizer, self.max_length = list(records), tokenizer, int(max_length)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        record = self.records[index]
        return encode(record["query"], record["response"], self.tokenizer, self.max_length)


class GenerationProblems(Dataset):
    """Prompts with their reference solutions, for greedy generation and exact match."""

    def __init__(self, records: Sequence[dict[str, Any]], tokenizer: Any):
        self.records, self.tokenizer = list(records), tokenizer

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        return {"prompt_ids": prompt_ids(record["query"], self.tokenizer), "query": record["query"],
                "reference": record["response"]}


class MetaMathDataModule(L.LightningDataModule):
    """Train on the 80%, validate (``val/loss``, optionally on its first ``val_limit`` records) and
    test (``test/loss``, all of it) on the seeded 20%; test adds ``accuracy_problems`` greedy-generation problems (GSM8K's test file if given, else the
    first of the held-out split) as a second test loader."""

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        max_length: int = 512,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        types: Sequence[str] | None = None,
        train_limit: int | None = None,
        val_limit: int | None = None,
        accuracy_problems: int = 0,
        gsm8k_path: str | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if tokenizer is None:
            raise ValueError("MetaMathDataModule needs a tokenizer: declare one under task.parts.tokenizer")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs an EOS and a pad token (onelora.data.tokenizers sets them)")
        self.path, self.tokenizer = str(path), tokenizer
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.max_length, self.val_fraction, self.split_seed = int(max_length), float(val_fraction), int(split_seed)
        self.types = list(types) if types else None
        self.train_limit, self.val_limit = train_limit, val_limit
        self.accuracy_problems, self.gsm8k_path = int(accuracy_problems), gsm8k_path
        self.num_workers = int(num_workers)
        self.train_records: list[dict[str, Any]] | None = None

    # -- records --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """A missing file stops the run here, before any weights are fetched (the runner calls it)."""
        if not Path(self.path).expanduser().is_file():
            raise missing_data("MetaMathQA", self.path, "a json file", METAMATH_HOW)
        if self.accuracy_problems and self.gsm8k_path and not Path(self.gsm8k_path).expanduser().is_file():
            raise missing_data("GSM8K", self.gsm8k_path, "a json lines file", GSM8K_HOW)
        self.setup()  # read and split now: a bad `types` stops the run before any pre-training

    def setup(self, stage: str | None = None) -> None:
        if self.train_records is not None:
            return
        records = load_metamath(self.path)
        if self.types:  # before the split: the chosen types are split val_fraction / the rest, as a whole file is
            found = sorted({str(r.get("type")) for r in records})
            records = [r for r in records if r.get("type") in self.types]
            if len(records) < 2:
                raise ConfigError(f"task.data.types: {self.path} has {len(records)} record(s) of types {self.types} "
                                 f"(its types are {found})")
        train_idx, val_idx = split_indices(len(records), self.val_fraction, self.split_seed)
        train = [records[i] for i in train_idx]
        val = [records[i] for i in val_idx]
        if not train or not val:
            raise ConfigError(f"task.data.val_fraction: {self.val_fraction} of {len(records)} records leaves an empty "
                             "training or validation split")
        self.train_records = train[: self.train_limit] if self.train_limit else train
        self.heldout_records = val  # test/loss: the whole held-out split
        self.val_records = val[: self.val_limit] if self.val_limit else val  # per-round val/loss
        if self.accuracy_problems:
            pool = load_gsm8k(self.gsm8k_path) if self.gsm8k_path else val
            self.problem_records = pool[: self.accuracy_problems]
        else:
            self.problem_records = []

    def sample_problems(self, count: int, seed: int = 0) -> list[dict[str, Any]]:
        """``count`` held-out problems drawn with ``seed`` (the App. C side-by-side)."""
        self.setup()
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(self.val_records), size=min(count, len(self.val_records)), replace=False)
        return [self.val_records[i] for i in sorted(picks)]

    # -- loaders --------------------------------------------------------------------------------
    def _collate(self, items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return pad_right(items, self.tokenizer.pad_token_id)

    def _collate_problems(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = pad_left([item["prompt_ids"] for item in items], self.tokenizer.pad_token_id)
        batch["queries"] = [item["query"] for item in items]
        batch["references"] = [item["reference"] for item in items]
        return batch

    def _loader(self, records, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(SupervisedMath(records, self.tokenizer, self.max_length), batch_size=batch_size,
                          shuffle=shuffle, collate_fn=self._collate, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_records, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_records, False, self.eval_batch_size)

    def problems_dataloader(self) -> DataLoader:
        return DataLoader(GenerationProblems(self.problem_records, self.tokenizer), batch_size=self.eval_batch_size,
                          shuffle=False, collate_fn=self._collate_problems, num_workers=self.num_workers)

    def test_dataloader(self) -> list[DataLoader]:
        loaders = [self._loader(self.heldout_records, False, self.eval_batch_size)]
        if self.problem_records:
            loaders.append(self.problems_dataloader())
        return loaders


__all__ = [
    "IGNORE_INDEX", "MetaMathDataModule", "MissingDataError", "alpaca_prompt", "encode", "load_gsm8k",
    "load_metamath", "pad_left", "pad_right", "prompt_ids", "split_indices",
]
