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


@lru_cache(maxsize=None)
def paper_model_configs() -> dict[str, tuple[str, str]]:
    """Each paper model's name -> (model config, task) as ``make count-paper`` counts it
    (``python -m onelora.experiments paper-models``): the model the task really builds, through its
    task.model_args (CIFAR-10's classifier; Food-101's 101 + 1 class rows; Depth Anything's v1 metric
    model, whose DPT output convolution trains besides the adapter)."""
    from omegaconf import OmegaConf

    from onelora.experiments import paper_model_tasks
    from onelora.methods import PROJECT_CONF

    return {OmegaConf.load(PROJECT_CONF / "model" / f"{m}.yaml").name: (m, t) for m, t in paper_model_tasks()}

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
def counted_report(model: str, method: str) -> dict:
    """The count of ``method`` on the paper model ``model`` as ``make count-paper`` prints it."""
    from onelora.adapters import MethodSpec
    from onelora.config import plain
    from onelora.count import count_parameters_of
    from onelora.methods import method_info
    from onelora.settings import method_settings

    model_file, task = paper_model_configs()[model]
    cfg = config(_TMP, f"model={model_file}", f"task={task}", f"method={method_info(method).file}")  # as a run is
    return count_parameters_of(plain(cfg.model), MethodSpec.from_config(method_settings(cfg)), plain(cfg.task.get("model_args") or {}))


def counted(model: str, method: str) -> int:
    """Our count in the paper's sense (``reported_params``): the adapter, or, where the model says so
    (DiT) and for full fine-tuning, everything that trains."""
    return counted_report(model, method)["reported_params"]


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


def test_depth_counts_show_what_trains_beside_the_papers_count():
    """The v1 metric model nyu_to_kitti builds: 1LoRA's 221,184 (the paper's convention) plus the DPT
    output convolution, 36,929, that every method trains there: 258,113 trained."""
    assert paper_model_configs()["depth_anything_l"] == ("depth_anything_l_metric_indoor", "nyu_to_kitti")
    onelora = counted_report("depth_anything_l", "onelora")
    assert (onelora["reported_params"], onelora["head_params"], onelora["trainable_params"]) == (221_184, 36_929, 258_113)
    assert onelora["reported_as"] == "adapter"
    full = counted_report("depth_anything_l", "full")  # "All" is the whole model, its output convolution included
    assert full["reported_params"] == full["trainable_params"] == 335_315_649 and full["reported_as"] == "trainable"


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
