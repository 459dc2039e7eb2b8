"""MetaMathQA data: the synthetic problem files, MoRA's prompt, loss masking, truncation, padding,
the seeded split, loaders, GSM8K, clear errors, and the tokenizer part."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from language_cases import problem_file, tokenizer
from onelora.data.errors import MissingDataError
from onelora.data.math import (
    IGNORE_INDEX, MetaMathDataModule, alpaca_prompt, encode, load_gsm8k, load_metamath, pad_left, pad_right,
    split_indices,
)
from onelora.data.synthetic.math import arithmetic_problems
from onelora.data.tokenizers import MissingTokenizerError, pretrained_tokenizer, trained_tokenizer


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lang")


@pytest.fixture(scope="module")
def tok(cache):
    return tokenizer(cache)


# -- synthetic problems ----------------------------------------------------------------------------

def test_synthetic_problems_are_metamath_records_with_correct_answers(cache):
    records = json.loads(Path(problem_file(cache, ("add", "sub", "mul", "two_step"), 400, 3)).read_text())
    assert len(records) == 400 and len({r["query"] for r in records}) == 400
    assert {r["type"] for r in records} == {"add", "sub", "mul", "two_step"}
    for r in records:
        assert set(r) == {"query", "response", "type", "original_question"} and r["original_question"] == r["query"]
        answer = int(re.fullmatch(r".* The answer is: (-?\d+)", r["response"]).group(1))
        # every equation in the solution holds, and the last one's result is the answer
        equations = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", r["response"])
        assert equations and all(eval(f"{a}{op}{b}") == int(c) for a, op, b, c in equations)
        assert int(equations[-1][3]) == answer


def test_synthetic_problems_deterministic_cached_and_atomic(tmp_path):
    a = arithmetic_problems(tmp_path / "a", ("mul", "two_step"), 50, seed=7)
    b = arithmetic_problems(tmp_path / "b", ("mul", "two_step"), 50, seed=7)
    c = arithmetic_problems(tmp_path / "a", ("mul", "two_step"), 50, seed=8)
    assert Path(a).read_bytes() == Path(b).read_bytes() != Path(c).read_bytes()
    before = os.stat(a).st_mtime_ns
    assert arithmetic_problems(tmp_path / "a", ("mul", "two_step"), 50, seed=7) == a
    assert os.stat(a).st_mtime_ns == before  # reused, not rewritten
    assert not list(Path(a).parent.glob("*.tmp"))
    with pytest.raises(ValueError, match="divide"):
        arithmetic_problems(tmp_path, ("divide",), 5)


# -- prompt, masking, truncation, padding ---------------------------------------------------------

def test_alpaca_prompt_is_moras():
    assert alpaca_prompt("What is 2 + 3?") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is 2 + 3?\n\n### Response:"
    )
    # MoRA: a multi-line query's first line is the instruction, the rest the input
    assert alpaca_prompt("Solve this.\nx + 1 = 3\nWhat is x?") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nSolve this.\n\n"
        "### Input:\nx + 1 = 3\nWhat is x?\n\n### Response:"
    )


def test_only_response_tokens_and_eos_carry_labels(tok):
    query, response = "Ava has 12 apples. Ava gets 30 more apples. How many apples does Ava have now?", \
        "We add the two amounts: 12 + 30 = 42. The answer is: 42"
    item = encode(query, response, tok, 512)
    prompt = tok(alpaca_prompt(query))["input_ids"]
    target = tok(response, add_special_tokens=False)["input_ids"]
    assert item["input_ids"] == prompt + target + [tok.eos_token_id]
    assert item["input_ids"][0] == tok.bos_token_id
    assert item["labels"] == [IGNORE_INDEX] * len(prompt) + target + [tok.eos_token_id]
    assert tok.decode([t for t in item["labels"] if t != IGNORE_INDEX], skip_special_tokens=True) == response
    # digits are single tokens: "42" is two of them
    assert tok.convert_ids_to_tokens(tok("42", add_special_tokens=False)["input_ids"]) == ["4", "2"]


def test_truncation_keeps_the_first_max_length_tokens(tok):
    query, response = "What is 2 + 3?", "We add the two amounts: 2 + 3 = 5. The answer is: 5"
    full = encode(query, response, tok, 512)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = encode(query, response, tok, n_prompt + 3)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 3]
    assert cut["labels"] == full["labels"][: n_prompt + 3] and tok.eos_token_id not in cut["labels"]
    none_left = encode(query, response, tok, n_prompt - 1)
    assert set(none_left["labels"]) == {IGNORE_INDEX}


def test_right_padding_masks_and_left_padding_for_generation():
    batch = pad_right([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [-100]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    left = pad_left([[5, 6, 7], [8]], 0)
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


# -- split and data module -----------------------------------------------------------------------

def test_split_is_seeded_disjoint_and_80_20():
    train, val = split_indices(1000, 0.2, seed=42)
    assert len(val) == 200 and len(train) == 800 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(1000))
    again_train, again_val = split_indices(1000, 0.2, seed=42)
    assert (again_val == val).all() and (again_train == train).all()
    assert set(split_indices(1000, 0.2, seed=43)[1]) != set(val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.5, 0)


def _module(path, tok, **kw):
    dm = MetaMathDataModule(path=path, tokenizer=tok, batch_size=4, **kw)
    dm.setup("fit")
    return dm


def test_split_does_not_depend_on_the_run_seed(cache, tok):
    path = problem_file(cache, ("add", "sub", "mul", "two_step"), 300, 5)
    L.seed_everything(1)
    a = _module(path, tok)
    L.seed_everything(2)
    b = _module(path, tok)
    assert [r["query"] for r in a.val_records] == [r["query"] for r in b.val_records]
    assert len(a.val_records) == 60 and len(a.train_records) == 240


def test_types_are_filtered_before_the_split(cache, tok):
    """Filtering after the split gave one type a lopsided split (23 / 2 of 50 in a check): the
    chosen types are split val_fraction / the rest, as the whole file is."""
    from onelora.config import ConfigError

    path = problem_file(cache, ("add", "sub", "mul", "two_step"), 300, 5)
    records = json.loads(Path(path).read_text())
    for types in (["mul"], ["add", "two_step"]):
        chosen = [r for r in records if r["type"] in types]
        dm = _module(path, tok, types=types)
        assert {r["type"] for r in dm.train_records + dm.val_records} == set(types)
        assert len(dm.val_records) == round(0.2 * len(chosen)) and len(dm.train_records) == len(chosen) - len(dm.val_records)
        assert sorted(r["query"] for r in dm.train_records + dm.val_records) == sorted(r["query"] for r in chosen)
    with pytest.raises(ConfigError, match=r"task\.data\.types: .* 0 record\(s\) of types \['divide'\]"):
        _module(path, tok, types=["divide"])


def test_loaders_batches_and_generation_problems(cache, tok, tmp_path):
    path = problem_file(cache)
    dm = _module(path, tok, val_limit=10, accuracy_problems=6)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert ((batch["labels"] == tok.eos_token_id).sum(1) == 1).all()  # each target ends with one EOS
    assert sum(len(b["input_ids"]) for b in dm.val_dataloader()) == 10
    loss_loader, problems = dm.test_dataloader()
    assert len(loss_loader.dataset) == 40  # test/loss: the whole held-out 20% of 200
    gen = next(iter(problems))
    assert gen["references"][0] == dm.val_records[0]["response"]
    assert (gen["input_ids"][:, -1] != tok.pad_token_id).all()  # left padded: prompts end together
    # GSM8K's test file replaces the held-out problems for accuracy
    gsm = tmp_path / "test.jsonl"
    gsm.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"})
                             for i in range(3)))
    dm = _module(path, tok, accuracy_problems=2, gsm8k_path=str(gsm))
    gen = next(iter(dm.test_dataloader()[1]))
    assert gen["references"] == ["0+1=1\n#### 1", "1+1=2\n#### 2"] and gen["queries"][1] == "What is 1 + 1?"
    assert load_gsm8k(gsm)[2]["query"] == "What is 2 + 1?"
    picks = dm.sample_problems(5, seed=0)
    assert picks == dm.sample_problems(5, seed=0) and all(p in dm.val_records for p in picks)


def test_missing_and_malformed_files_are_named(tmp_path, tok):
    missing = tmp_path / "MetaMathQA-395K.json"
    with pytest.raises(MissingDataError, match="meta-math/MetaMathQA") as err:
        load_metamath(missing)
    assert str(missing) in str(err.value) and "MetaMathQA-395K.json" in str(err.value)
    with pytest.raises(MissingDataError, match=str(missing)):
        _module(str(missing), tok)
    bad = tmp_path / "bad.json"
    bad.write_text("[{'query': ")
    with pytest.raises(ValueError, match=f"{bad}.*not valid json"):
        load_metamath(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"query": "q", "response": "r"}, {"question": "q"}]))
    with pytest.raises(ValueError, match="record 1 lacks"):
        load_metamath(wrong)
    with pytest.raises(MissingDataError, match="openai/gsm8k"):
        load_gsm8k(tmp_path / "test.jsonl")


# -- tokenizer part ------------------------------------------------------------------------------

def test_trained_tokenizer_interface_and_cache(cache, tok):
    assert len(tok) == 300 and tok.padding_side == "right"
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok("The answer is: 145")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "The answer is: 145"
    files = [problem_file(cache), problem_file(cache, ("mul", "two_step"), 100, 1)]
    [saved] = (cache / "tokenizers").glob("bpe300_*/tokenizer.json")
    before = saved.stat().st_mtime_ns
    assert trained_tokenizer(files, cache, vocab_size=300)("7 + 8")["input_ids"] == tok("7 + 8")["input_ids"]
    assert saved.stat().st_mtime_ns == before  # cached by its settings, not retrained
    with pytest.raises(MissingDataError, match="nowhere.json"):
        trained_tokenizer([str(cache / "nowhere.json")], cache)


def test_pretrained_tokenizer_from_a_directory_gets_moras_pad(cache, tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    [saved] = (cache / "tokenizers").glob("bpe300_*/tokenizer.json")
    no_pad = PreTrainedTokenizerFast(tokenizer_file=str(saved), bos_token="<s>", eos_token="</s>")
    no_pad.save_pretrained(tmp_path / "tok")
    loaded = pretrained_tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token_id == loaded.eos_token_id == tok.eos_token_id  # MoRA: pad_token_id = EOS
    assert loaded("2 + 3")["input_ids"] == tok("2 + 3")["input_ids"]
    assert pretrained_tokenizer(str(tmp_path / "tok"), pad_token="<pad>").pad_token_id == 0


def test_missing_pretrained_tokenizer_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingTokenizerError, match="empty"):
        pretrained_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(MissingTokenizerError, match="meta-llama/Llama-2-7b-hf.*huggingface-cli download"):
        pretrained_tokenizer("meta-llama/Llama-2-7b-hf")  # tests run offline
    with pytest.raises(MissingTokenizerError, match=r"tokenizer directory '.*absent' does not exist") as missing:
        pretrained_tokenizer(str(tmp_path / "absent"))  # a path is not sent to the hub as a repo id
    assert "Repo id" not in str(missing.value)
    assert torch.get_num_threads() == 1
