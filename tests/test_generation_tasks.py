"""The generation tasks through the runner, as their tiny twins: task=digits_generation (pixel-space
DiT pre-trained on digits 0-4, fine-tuned on 5-9) with every method and as the un-adapted model,
and task=food101_generation (Food-101 as it ships, a tiny random VAE, latents cached once, the time
budget ending a run with its record)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from onelora.methods import method_files, method_info
from onelora.figures.samples import SAMPLES_FILE, load_samples
from runs import ROOT, results, run_inprocess, twin

DIGITS = twin("digits_generation")
#: every method config but `none` (mode=eval) and `norms` (DiT's LayerNorms have no parameters: refused)
METHODS = [m for m in method_files() if m not in ("none", "norms")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for the module: the twin's source-task pre-training and the FID features, once."""
    return tmp_path_factory.mktemp("generation_cache")


def run_digits(tmp: Path, cache: Path, *overrides: str) -> dict:
    return run_inprocess(tmp, *DIGITS, f"paths.cache_dir={cache}", *overrides)


def adapter_tensors(record: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(Path(record["run_dir"]) / "adapter" / "adapter.safetensors")
    return {name: t for name, t in tensors.items() if "embedding_table" not in name}


def check_digits_run(record: dict, method: str) -> None:
    """A completed record with a finite FID of the best round, the class table (and the method's
    parameters) trained, a sample grid."""
    metric, params = record["metric"], record["params"]
    assert record["status"] == "completed" and record["trained"], method
    assert record["family"] == "generation" and metric["name"] == "fid" and metric["direction"] == "min"
    assert math.isfinite(metric["test"]) and metric["test"] > 0 and metric["val_rounds"] == 2, method
    assert metric["test_final"] is None  # test_final: false, the best round is tested
    assert params["head_params"] == 6 * 64  # the re-initialised class table (5 classes + null) trains
    if method == "head":
        assert params["adapter_params"] == 0 and params["trainable_params"] == 384
    else:
        assert params["adapter_params"] > 0, method
    if method in ("onelora", "bitfit"):  # vectors that start at zero: every adapted layer learned
        assert params["adapter_params"] == 4040  # 1LoRA = BitFit: one vector per layer's output
        tensors = adapter_tensors(record)
        assert len(tensors) == 23 and all(float(t.abs().max()) > 0 for t in tensors.values()), method
    assert record["pretrained_from"].endswith(".safetensors")  # the cached source-task weights
    assert Image.open(Path(record["run_dir"]) / "samples.png").format == "PNG"
    samples = load_samples(Path(record["run_dir"]) / SAMPLES_FILE)  # what the report's comparison reads
    assert samples["images"].shape == (10, 8, 8, 1) and samples["seed"] == 0  # 5 class rows x 2 samples


def test_digits_generation_head_onelora_full(tmp_path, cache):
    from unittest.mock import patch

    import matplotlib.pyplot as plt

    for method in ("head", "onelora", "full"):
        titles = []
        with patch("onelora.figures.samples.grid_figure",
                   side_effect=lambda s, title: titles.append(title) or plt.figure()):
            record = run_digits(tmp_path, cache, f"method={method}")
        check_digits_run(record, method)
        # the grid's title names the method's label and the step of the weights the runner tested
        assert titles[0].startswith(f"{method_info(method).label} · weights of step {record['metric']['best_step']} · ")
    assert len(list((cache / "pretrained").glob("dit_digits-digits_generation-*.safetensors"))) == 1


@pytest.mark.e2e  # 20 runs through the runner: ~35 s of CPU
def test_digits_generation_every_method(tmp_path, cache):
    for method in METHODS:
        check_digits_run(run_digits(tmp_path, cache, f"method={method}"), method)


def test_norms_alone_is_refused_on_dit(tmp_path, cache):
    from onelora.adapters import AdapterConfigError

    with pytest.raises(AdapterConfigError, match="method 'norms' trains norms, but DiT has none"):
        run_digits(tmp_path, cache, "method=norms")


def test_digits_generation_unadapted_is_evaluated_as_loaded(tmp_path, cache):
    record = run_digits(tmp_path, cache, "method=none", "mode=eval")
    assert record["status"] == "completed" and record["trained"] is False and record["method"] == "unadapted"
    assert record["global_step"] == 0 and record["params"]["adapter_params"] == 0
    assert math.isfinite(record["metric"]["test"]) and record["metric"]["best_val"] is not None
    assert not (Path(record["run_dir"]) / "adapter").exists()
    assert (Path(record["run_dir"]) / "samples.png").is_file()


@pytest.fixture(scope="module")
def food(tmp_path_factory) -> list[str]:
    return twin("food101_generation", tmp_path_factory.mktemp("food_data"))


def test_food101_twin_caches_latents_once(tmp_path, food):
    first = run_inprocess(tmp_path, *food, "method=onelora")
    assert first["status"] == "completed" and first["paper"] == {"task": "generation", "source": "ImageNet",
                                                                  "target": "Food-101"}
    (cached,) = (tmp_path / ".cache" / "latents").glob("food101-*.pt")
    content = torch.load(cached, weights_only=True)
    assert content["mean"].shape == (12, 4, 8, 8) and "flip_mean" in content  # 3 classes x 4 images, 16 px -> 8 x 8
    stamp = cached.stat().st_mtime_ns
    second = run_inprocess(tmp_path, *food, "method=lora")
    assert second["status"] == "completed" and cached.stat().st_mtime_ns == stamp  # read, not encoded again
    assert first["params"]["head_params"] == 102 * 64  # 101 classes + null, the twin's width
    for record in (first, second):
        assert math.isfinite(record["metric"]["test"]) and (Path(record["run_dir"]) / "samples.png").is_file()


def test_food101_time_budget_ends_the_run_with_its_record(tmp_path, food):
    """The time budget alone bounds the run (no step or epoch cap: the real task's default, 24 h)."""
    record = run_inprocess(tmp_path, *food, "method=bitfit", "task.max_steps=null", 'task.time_budget="00:00:00:02"')
    assert record["config"]["trainer"]["max_steps"] in (None, -1) and record["config"]["task"]["epochs"] is None
    assert record["status"] == "completed" and record["global_step"] > 0
    assert 2 <= record["time"]["fit_s"] < 60 and math.isfinite(record["metric"]["test"])
    assert (Path(record["run_dir"]) / "adapter").is_dir()
    assert results(Path(record["run_dir"]))["global_step"] == record["global_step"]


def test_food101_budget_is_the_papers_24_hours_and_the_step_cap_an_option(tmp_path):
    """Sec. 4.3: "all experiments with a 24h time budget"; DiffFit's 24,000 steps only when asked."""
    from onelora.config import ConfigError
    from onelora.settings import RunSettings
    from runs import config

    cfg = config(tmp_path, "task=food101_generation")
    assert (cfg.task.time_budget, cfg.task.max_steps, cfg.task.epochs) == ("00:24:00:00", None, None)
    assert cfg.trainer.max_time == "00:24:00:00"
    trainer = RunSettings.from_config(cfg).trainer
    assert (trainer.options["max_steps"], trainer.options["max_epochs"], trainer.step_bounded) == (-1, -1, False)
    capped = RunSettings.from_config(config(tmp_path, "task=food101_generation", "task.max_steps=24000")).trainer
    assert capped.options["max_steps"] == 24000 and capped.options["max_time"] == "00:24:00:00" and capped.step_bounded
    # a schedule that needs the step count cannot run on the time budget alone: said before any work
    cosine = "task.scheduler._target_=onelora.tasks.schedules.warmup_cosine"
    with pytest.raises(ConfigError, match=r"task.scheduler: .*bounded by its time budget alone .*task.max_steps"):
        RunSettings.from_config(config(tmp_path, "task=food101_generation", cosine))


def test_the_fig5_grid_is_table_s8():
    """experiments/fig5.yaml runs exactly Table S8's methods, and task=food101_generation's paper
    keys and model are the spelling of its rows, so the report puts our runs beside them."""
    from omegaconf import OmegaConf

    from onelora.reporting.paper import load_paper_rows, norm_key
    from runs import config

    s8 = load_paper_rows().query("table == 'S8'")
    grid = OmegaConf.load(ROOT / "experiments" / "fig5.yaml").hydra.sweeper.params
    names = {OmegaConf.load(ROOT / "conf" / "method" / f"{m}.yaml").name for m in grid.method.split(",")}
    assert names == set(s8["method"]) and str(grid.seed) == "0"  # the paper's DiT results are single runs
    cfg = config(Path("/tmp/onelora-fig5-test"), "experiment=fig5")
    keys = {(norm_key(r.task), norm_key(r.source), norm_key(r.target), r.model) for r in s8.itertuples()}
    paper = cfg.task.paper
    assert keys == {(norm_key(paper.task), norm_key(paper.source), norm_key(paper.target), cfg.model.name)}
