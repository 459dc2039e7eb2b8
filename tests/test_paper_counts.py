"""Every trainable-parameter count printed in the paper's tables, from our configs (meta device).

The paper's ViT counts (Tables S9, S10, S12) are 4x one model's (summed over 4 data-parallel
ranks, see the README); our counts are one model's, so those rows compare 4x ours.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib.resources import files

import pytest

from runs import config

_TMP = "/tmp/onelora-count-tests"

RANKS = {"vit_base": 4}           # the paper's ViT counts are 4x one model's
#: the paper task a model's counts depend on, counted through it (its task.model_args): CIFAR-10's
#: classifier; Food-101's 101 classes, whose class table is re-initialised with 101 + 1 rows
PAPER_TASK = {"vit_base": "cifar10", "dit_xl_2": "food101_generation"}

# exact integers for one model, decoded in ../shared/paper/README.md
EXACT = {
    ("vit_base", "onelora"): 82_944, ("vit_base", "bitfit"): 82_944, ("vit_base", "lora"): 165_888,
    ("vit_base", "vera"): 83_016, ("vit_base", "dora"): 248_832, ("vit_base", "mora1"): 83_340,
    ("vit_base", "mora6"): 82_032, ("vit_base", "norms"): 38_400, ("vit_base", "difffit"): 204_288,
    ("vit_base", "full"): 85_798_656,
    ("depth_anything_l", "onelora"): 221_184, ("depth_anything_l", "bitfit"): 221_184,
    ("depth_anything_l", "lora"): 393_216, ("depth_anything_l", "vera"): 221_280,
    ("depth_anything_l", "dora"): 614_400, ("depth_anything_l", "mora1"): 220_056,
    ("depth_anything_l", "mora6"): 217_440, ("depth_anything_l", "norms"): 100_352,
    ("depth_anything_l", "difffit"): 321_536,
    ("llama2_7b", "onelora"): 1_359_872, ("llama2_7b", "bitfit"): 1_359_872, ("llama2_7b", "lora"): 2_498_560,
    ("llama2_7b", "lora_qkv"): 786_432, ("llama2_7b", "vera"): 1_360_096, ("llama2_7b", "mora1"): 1_360_960,
    ("llama2_7b", "mora6"): 1_347_584, ("llama2_7b", "difffit"): 1_658_112,
    ("llama2_13b", "onelora"): 2_129_920, ("llama2_13b", "bitfit"): 2_129_920,
    ("llama2_13b", "lora_qkv"): 1_228_800, ("llama2_13b", "difffit"): 2_576_640,
    ("dit_xl_2", "onelora"): 603_680, ("dit_xl_2", "bitfit"): 603_680, ("dit_xl_2", "vera"): 603_822,
    ("dit_xl_2", "lora"): 864_032, ("dit_xl_2", "difffit"): 1_089_856, ("dit_xl_2", "mora1"): 604_412,
    ("dit_xl_2", "mora6"): 596_516,
}


@lru_cache(maxsize=None)
def counted(model: str, method: str) -> int:
    """Our count in the paper's sense: adapter (or, where the model says so, all trainable) params."""
    from onelora.adapters import MethodSpec
    from onelora.config import plain
    from onelora.count import count_parameters_of
    from onelora.methods import method_info
    from onelora.settings import method_settings

    task = [f"task={PAPER_TASK[model]}"] if model in PAPER_TASK else []
    cfg = config(_TMP, f"model={model}", f"method={method_info(method).file}", *task)  # composed as a run is
    model_cfg = plain(cfg.model)
    model_args = plain(cfg.task.model_args) if task else None
    out = count_parameters_of(model_cfg, MethodSpec.from_config(method_settings(cfg)), model_args)
    return out["trainable_params"] if model_cfg["reported_params"] == "trainable" else out["adapter_params"]


def paper_rows():
    with files("onelora.data").joinpath("paper_results.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["params"]]
    seen, out = set(), []
    for r in rows:
        key = (r["model"], r["method"], r["params"])
        if key not in seen:
            seen.add(key)
            out.append(pytest.param(r["model"], r["method"], r["params"], id=f"{r['table']}-{r['model']}-{r['method']}"))
    return out


@pytest.mark.parametrize(("model", "method", "printed"), paper_rows())
def test_every_printed_count_matches(model, method, printed):
    from onelora.reporting.paper import format_params

    ours = counted(model, method) * RANKS.get(model, 1)
    assert format_params(ours) == printed, f"{model} {method}: ours {ours:,} prints {format_params(ours)}, paper {printed}"


@pytest.mark.parametrize(("model", "method"), sorted(EXACT))
def test_exact_counts(model, method):
    assert counted(model, method) == EXACT[(model, method)]


def test_the_counts_cover_every_model_of_the_paper():
    models = {p.values[0] for p in paper_rows()}
    assert models == {"vit_base", "depth_anything_l", "llama2_7b", "llama2_13b", "dit_xl_2"}


def test_the_dit_count_through_the_food101_task_as_the_cli_prints_it(tmp_path, capsys):
    """`python run.py mode=count model=dit_xl_2 method=onelora task=food101_generation`: 603,680."""
    import json

    from runs import run_inprocess

    out = run_inprocess(tmp_path, "mode=count", "model=dit_xl_2", "method=onelora", "task=food101_generation")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["trainable_params"] == out["trainable_params"] == 603_680
    assert printed["head_params"] == 102 * 1152  # 101 classes + the null class, re-initialised
