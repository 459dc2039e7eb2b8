"""LanguageModule with a tiny random LLaMA and a tokenizer built by the test (no runner): the loss
counts response tokens only, val/test loss are token-weighted over the split, accuracy and the
App. C side-by-side come from greedy generation, and gradient checkpointing keeps every method's
gradients."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from language_cases import base_kwargs, problem_file, tiny_lm, tokenizer
from onelora.adapters import MethodSpec, inject
from onelora.methods import compared_methods, method_spec
from onelora.data.math import IGNORE_INDEX, MetaMathDataModule, encode, pad_right
from onelora.tasks.language import LanguageModule, side_by_side_markdown

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lang")


@pytest.fixture(scope="module")
def tok(cache):
    return tokenizer(cache)


@pytest.fixture
def data(cache, tok) -> MetaMathDataModule:
    dm = MetaMathDataModule(path=problem_file(cache), tokenizer=tok, batch_size=4, eval_batch_size=3,
                            val_limit=7, accuracy_problems=4)
    dm.setup("fit")
    return dm


def _module(tok, model=None, lr: float = 1e-3, **kw) -> LanguageModule:
    return LanguageModule(model if model is not None else tiny_lm(len(tok)), tokenizer=tok, **kw, **base_kwargs(lr))


def _trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


def _token_losses(model, records, tok) -> torch.Tensor:
    """Per-token cross-entropies of the response tokens, one example at a time (no padding at all)."""
    out = []
    with torch.no_grad():
        for r in records:
            item = encode(r["query"], r["response"], tok, 512)
            ids, labels = torch.tensor([item["input_ids"]]), torch.tensor(item["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1]
            keep = labels != IGNORE_INDEX
            out.append(F.cross_entropy(logits[keep], labels[keep], reduction="none"))
    return torch.cat(out)


def test_loss_counts_response_tokens_only_and_ignores_padding(tok, data):
    module = _module(tok).eval()
    records = data.train_records[:4]
    batch = pad_right([encode(r["query"], r["response"], tok, 512) for r in records], tok.pad_token_id)
    loss, count = module.lm_loss(batch)
    expected = _token_losses(module.model, records, tok)
    assert count == len(expected)
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-4, atol=1e-5)
    # prompt and padding positions get no gradient: d loss / d logits is zero where the next label is -100
    logits = []
    handle = module.model.lm_head.register_forward_hook(lambda mod, inp, out: logits.append(out))
    loss, _ = module.lm_loss(batch)
    handle.remove()
    [grads] = torch.autograd.grad(loss, logits)
    masked = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX) == IGNORE_INDEX
    assert masked.any() and (~masked).any()
    assert grads[masked].abs().sum() == 0 and (grads[~masked].abs().sum(-1) > 0).all()


def test_val_and_test_loss_are_token_weighted_over_the_split(tok, data):
    module = _module(tok)
    [val] = _trainer().validate(module, datamodule=data, verbose=False)
    # 7 records in batches of 3, 3, 1: a mean of batch means would differ from the token mean
    expected = _token_losses(module.model, data.val_records, tok).mean()
    assert val["val/loss"] == pytest.approx(float(expected), rel=1e-4)
    expected_test = _token_losses(module.model, data.heldout_records, tok).mean()
    module.generate = lambda ids, mask: ["The answer is: 0"] * len(ids)  # accuracy tested below
    [test, _] = _trainer().test(module, datamodule=data, verbose=False)
    assert test["test/loss"] == pytest.approx(float(expected_test), rel=1e-4)


def test_accuracy_is_exact_match_of_extracted_answers(tok, data):
    module = _module(tok)
    answers = iter(["We add: 1 + 1 = 2. The answer is: " + r["response"].rsplit(": ", 1)[1] if i % 2 == 0
                    else "The answer is: -1" for i, r in enumerate(data.problem_records)])
    module.generate = lambda ids, mask: [next(answers) for _ in range(len(ids))]
    results = _trainer().test(module, datamodule=data, verbose=False)
    assert results[0]["test/accuracy"] == pytest.approx(50.0)  # 2 of 4 right


def test_greedy_generation_batched_equals_one_by_one(tok, data):
    module = _module(tok, max_new_tokens=6)
    queries = [r["query"] for r in data.val_records[:3]]
    batched = module.answer(queries, batch_size=3)
    assert batched == [module.answer([q])[0] for q in queries]
    assert all(isinstance(t, str) for t in batched) and module.model.training  # mode restored


def test_artifacts_write_the_side_by_side(tok, data, tmp_path):
    module = _module(tok)
    problems = data.sample_problems(3, seed=1)
    generated = ["Let me see. The answer is: " + problems[0]["response"].rsplit(": ", 1)[1], "No idea.", "x | y"]
    module.answer = lambda queries, batch_size=8: generated[: len(queries)]
    md, js = module.artifacts(tmp_path, problems=problems)
    # from the data module, as the runner calls it: the same seeded draw
    module.answer = lambda queries, batch_size=8: ["The answer is: 1"] * len(queries)
    module.side_by_side, module.side_by_side_seed = 3, 1
    md2, _ = module.artifacts(tmp_path / "run", data)
    assert all(p["query"] in md2.read_text() for p in problems)
    rows = json.loads(js.read_text())
    assert [r["correct"] for r in rows] == [True, False, False]
    assert rows[1]["generated_answer"] is None and rows[0]["reference_answer"] == rows[0]["generated_answer"]
    text = md.read_text()
    assert "1 of 3 generated answers match" in text and problems[2]["query"] in text
    assert "x \\| y" in text and text == side_by_side_markdown(rows)


def test_training_reduces_the_loss_on_a_fixed_batch(tok, data):
    L.seed_everything(0)
    module = _module(tok, lr=1e-2)
    batch = next(iter(data.train_dataloader()))
    loader = torch.utils.data.DataLoader([batch] * 20, batch_size=None)
    before = float(module.lm_loss(batch)[0].detach())
    trainer = L.Trainer(accelerator="cpu", max_steps=20, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    assert float(module.lm_loss(batch)[0].detach()) < 0.5 * before


# -- gradient checkpointing with a frozen base -----------------------------------------------------

def _llama_model_config():
    tiny = OmegaConf.load(CONF / "model" / "tiny_llama.yaml")
    assert "llama2_7b" in tiny.defaults  # tiny_llama inherits its target sets and overrides
    return OmegaConf.to_container(OmegaConf.load(CONF / "model" / "llama2_7b.yaml"))


#: the paper's compared methods but full fine-tuning (every parameter: nothing to check), and head-only
FAMILIES = [m for m in compared_methods() if m != "full"] + ["head"]


def _spec(name: str) -> MethodSpec:
    """The shipped method config with the LLaMA model config's overrides (DiffFit's lm_head gamma)."""
    return method_spec(name, **_llama_model_config().get("method_overrides", {}).get(name, {}))


def _adapted(name: str, tok):
    model = tiny_lm(len(tok), seed=3)
    cfg = _llama_model_config()
    inject(model, _spec(name), target_sets=cfg["target_sets"], head=cfg["head"], module_sets=cfg["module_sets"])
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # move zero-initialised adapters off their init: every part gets a gradient
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


@pytest.mark.parametrize("name", FAMILIES)
def test_gradient_checkpointing_keeps_every_methods_gradients(name, tok, data):
    batch = next(iter(data.train_dataloader()))
    grads, calls = {}, {}
    for checkpointing in (False, True):
        module = _module(tok, model=_adapted(name, tok), gradient_checkpointing=checkpointing).train()
        # transformers checkpoints the layer's forward; a pre-hook (the recompute stops as soon as the
        # saved tensors are back, so post-forward hooks of the last module need not fire)
        inner = module.model.model.layers[0].mlp
        calls[checkpointing] = 0

        def count(*_):
            calls[checkpointing] += 1

        inner.register_forward_pre_hook(count)
        module.training_step(batch, 0).backward()
        grads[checkpointing] = {n: p.grad for n, p in module.model.named_parameters() if p.requires_grad}
    assert calls == {False: 1, True: 2}  # the checkpointed layer re-ran its forward in backward
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for n, g in grads[True].items():
        assert g is not None and g.abs().sum() > 0, f"{name}: no gradient reaches {n} with checkpointing"
        torch.testing.assert_close(g, grads[False][n], rtol=1e-4, atol=1e-6, msg=f"{name}: {n}")
