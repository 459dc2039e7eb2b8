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

METHOD_FILE = {"onelora+bias": "onelora_bias", "onelora+norms": "onelora_norms", "onelora+gamma": "onelora_gamma",
               "onelora+bias+norms": "onelora_bias_norms", "onelora+bias+gamma": "onelora_bias_gamma",
               "onelora+gamma+norms": "onelora_gamma_norms", "onelora+bias+gamma+norms": "onelora_bias_gamma_norms"}
RANKS = {"vit_base": 4}           # the paper's ViT counts are 4x one model's
#: what each model's paper task declares (task.model_args): CIFAR-10's classifier; Food-101's 101
#: classes, whose class table is re-initialised with 101 + 1 rows
MODEL_ARGS = {"vit_base": {"num_classes": 10}, "dit_xl_2": {"num_classes": 101}}

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
    from onelora.settings import method_settings

    cfg = config(_TMP, f"model={model}", f"method={METHOD_FILE.get(method, method)}")  # composed as a run is
    model_cfg = plain(cfg.model)
    out = count_parameters_of(model_cfg, MethodSpec.from_config(method_settings(cfg)), MODEL_ARGS.get(model))
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
