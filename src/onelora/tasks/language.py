"""Causal language modelling on math word problems (the paper's LLaMA-2 on MetaMathQA, and the
laptop-sized synthetic transfer).

The paper reports the validation loss on the held-out 20%: the cross-entropy of the response tokens
(prompt and padding carry label -100; transformers shifts the labels itself), averaged over every
response token of the split (token-weighted, synced over devices). Beyond the paper, the test adds
exact-match accuracy of greedy generations ("The answer is: X", numbers normalised) and
``artifacts`` writes the App. C side-by-side of generated and reference solutions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric

from ..data.answers import extract_answer, is_correct
from ..data.math import IGNORE_INDEX, alpaca_prompt, pad_left, prompt_ids
from .base import FineTuneModule


def response_tokens(labels: torch.Tensor) -> torch.Tensor:
    """How many tokens carry loss once labels are shifted (position t predicts token t + 1)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """transformers' per-layer activation checkpointing, non-reentrant: gradients then reach the
    adapters of a frozen base without ``enable_input_require_grads`` (the reentrant variant returns
    no gradient when no input of a checkpointed block requires one)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise ValueError(f"{type(model).__name__} has no activation checkpointing (a transformers model has)")
    model.config.use_cache = False  # a cache is useless in training and incompatible with checkpointing


class LanguageModule(FineTuneModule):
    """Response-only causal LM loss; ``val/loss``, ``test/loss`` and optionally ``test/accuracy``."""

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer: Any = None,
        gradient_checkpointing: bool = False,
        max_new_tokens: int = 256,
        side_by_side: int = 8,
        side_by_side_seed: int = 0,
        **base_kwargs: Any,
    ):
        super().__init__(model, **base_kwargs)
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.side_by_side, self.side_by_side_seed = int(side_by_side), int(side_by_side_seed)
        if gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.val_loss = MeanMetric()  # weighted by response tokens: the split's token mean
        self.test_loss = MeanMetric()
        self.test_accuracy = MeanMetric()  # percent of problems answered exactly

    # -- loss -----------------------------------------------------------------------------------
    def lm_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean cross-entropy over the batch's response tokens, and their number."""
        labels = batch["labels"]
        count = response_tokens(labels)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                         use_cache=False)
        if count == 0:  # every response truncated away: no loss, but keep the graph (DDP)
            return out.logits.sum() * 0.0, count
        return out.loss, count

    def training_step(self, batch, batch_idx):
        loss, _ = self.lm_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss, count = self.lm_loss(batch)
        if count:
            self.val_loss.update(loss.detach().float(), weight=count)

    def on_validation_epoch_end(self):
        if self.val_loss.update_count:
            self.log("val/loss", self.val_loss.compute(), prog_bar=True, sync_dist=True)
        self.val_loss.reset()

    # -- test: held-out loss and exact-match accuracy --------------------------------------------
    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if "references" in batch:  # a generation batch (MetaMathDataModule's second test loader)
            texts = self.generate(batch["input_ids"], batch["attention_mask"])
            correct = [100.0 * is_correct(t, r) for t, r in zip(texts, batch["references"])]
            self.test_accuracy.update(torch.tensor(correct, device=self.device))
            return
        loss, count = self.lm_loss(batch)
        if count:
            self.test_loss.update(loss.detach().float(), weight=count)

    def on_test_epoch_end(self):
        if self.test_loss.update_count:
            self.log("test/loss", self.test_loss.compute(), sync_dist=True)
        if self.test_accuracy.update_count:
            self.log("test/accuracy", self.test_accuracy.compute(), sync_dist=True)
        self.test_loss.reset()
        self.test_accuracy.reset()

    # -- generation -----------------------------------------------------------------------------
    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("LanguageModule: generation needs the task's tokenizer part (task.parts.tokenizer)")
        return self.tokenizer

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
        """Greedy continuations of left-padded prompts, decoded without special tokens."""
        tokenizer = self._require_tokenizer()
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=self.max_new_tokens,
                do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
            )
        finally:
            self.model.train(was_training)
        return tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)

    def answer(self, queries: Sequence[str], batch_size: int = 8) -> list[str]:
        """Greedy solutions of ``queries`` (the training prompt, nothing added)."""
        tokenizer = self._require_tokenizer()
        texts: list[str] = []
        for start in range(0, len(queries), batch_size):
            ids = [prompt_ids(q, tokenizer) for q in queries[start:start + batch_size]]
            batch = pad_left(ids, tokenizer.pad_token_id)
            texts += self.generate(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        return texts

    # -- App. C side-by-side ----------------------------------------------------------------------
    def artifacts(self, run_dir: str | Path, data: Any = None,
                  problems: Sequence[dict[str, Any]] | None = None) -> list[Path]:
        """``side_by_side.md`` (and ``.json``): generated vs reference solutions for ``side_by_side``
        held-out problems of ``data`` (a ``MetaMathDataModule``) drawn with ``side_by_side_seed``, or
        for the given ``problems``. The runner calls it on rank 0 with the best round's weights."""
        if problems is None:
            if not self.side_by_side or data is None:
                return []
            problems = data.sample_problems(self.side_by_side, self.side_by_side_seed)
        generated = self.answer([p["query"] for p in problems])
        rows = []
        for problem, text in zip(problems, generated):
            rows.append({
                "query": problem["query"], "prompt": alpaca_prompt(problem["query"]),
                "reference": problem["response"], "generated": text,
                "reference_answer": extract_answer(problem["response"]), "generated_answer": extract_answer(text),
                "correct": is_correct(text, problem["response"]),
            })
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = run_dir / "side_by_side.json", run_dir / "side_by_side.md"
        json_path.write_text(json.dumps(rows, indent=1))
        md_path.write_text(side_by_side_markdown(rows))
        return [md_path, json_path]


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, line breaks as <br>."""
    return (text or "").strip().replace("|", "\\|").replace("\n", "<br>")


def side_by_side_markdown(rows: Sequence[dict[str, Any]], title: str = "Generated vs reference solutions") -> str:
    """App. C style: per problem, the question, then the reference and the generated solution side by side."""
    correct = sum(bool(r["correct"]) for r in rows)
    lines = [f"# {title}", "", f"{correct} of {len(rows)} generated answers match the reference.", ""]
    for index, row in enumerate(rows, 1):
        mark = "correct" if row["correct"] else "wrong"
        lines += [
            f"## Problem {index} ({mark}: generated {row['generated_answer']}, reference {row['reference_answer']})",
            "", f"> {_cell(row['query'])}", "",
            "| Reference | Generated |", "| --- | --- |",
            f"| {_cell(row['reference'])} | {_cell(row['generated'])} |", "",
        ]
    return "\n".join(lines)
