"""The depth transfers as tasks: the paper's starting checkpoints through the one loader, the four
paper tasks and the two laptop ones under the task contract, every method on Depth Anything, the
cached source-domain pre-training, and the records the reporting code files under Table 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from onelora.methods import method_files
from onelora.models import build_model
from onelora.models.depth_anything import DepthAnything, build_depth_anything
from onelora.models.weights import MissingWeightsError
from runs import config, run_inprocess, twin

PAPER_TASKS = ("nyu_to_kitti", "kitti_to_nyu", "kitti_to_diode_outdoor", "nyu_to_diode_outdoor")
MINI_TASKS = ("depth_mini", "depth_mini_outdoor_to_indoor")
TINY = {"encoder": "tiny", "embed_dim": 64, "depth": 4, "num_heads": 4, "patch_size": 14, "img_size": 56,
        "features": 16, "out_channels": [8, 16, 32, 32], "max_depth": 10.0}
METHODS = [m for m in method_files() if m != "none"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """One folder for the twins' data, written once per module (twin() writes a set only once)."""
    return tmp_path_factory.mktemp("depth_data")


def tiny(seed: int) -> DepthAnything:
    torch.manual_seed(seed)
    model = DepthAnything(**TINY)
    with torch.no_grad():  # non-trivial everywhere, so a mis-mapped tensor shows in the output
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


# ------------------------------------------------------------------ weights


def test_every_released_layout_loads_through_the_builder(tmp_path):
    """v1 metric (ZoeDepth, its bins head dropped), V2 metric (a DDP-wrapped training checkpoint) and a
    directory holding one file: the builder reads each through the one loader, strictly."""
    source = tiny(1)
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        expected = source(x)
    zoe = {f"core.core.{k}": v.clone() for k, v in source.state_dict().items()}
    zoe["seed_bin_regressor._net.0.weight"] = torch.randn(256, 16, 1, 1)  # a piece of the metric-bins head
    torch.save({"model": zoe, "optimizer": None, "epoch": 4}, tmp_path / "depth_anything_metric_depth_indoor.pt")
    v2 = {"model": {f"module.{k}": v.clone() for k, v in source.state_dict().items()}, "epoch": 3}
    (tmp_path / "v2").mkdir()
    torch.save(v2, tmp_path / "v2" / "latest.pth")
    for path in (tmp_path / "depth_anything_metric_depth_indoor.pt", tmp_path / "v2"):
        built = build_depth_anything({"arch": TINY, "pretrained": str(path)}, load_weights=True).eval()
        with torch.no_grad():
            assert torch.equal(built(x), expected), path
    torch.save({"backbone.embeddings.cls_token": torch.zeros(1)}, tmp_path / "hf_layout.pt")
    with pytest.raises(ValueError, match=r"hf_layout.pt: .*unknown key layout"):
        build_depth_anything({"arch": TINY, "pretrained": str(tmp_path / "hf_layout.pt")})


@pytest.mark.parametrize("name, fetch", [
    ("depth_anything_l_metric_indoor",
     "huggingface-cli download --repo-type space LiheYoung/Depth-Anything checkpoints_metric_depth/"
     "depth_anything_metric_depth_indoor.pt"),
    ("depth_anything_l_metric_outdoor", "depth_anything_metric_depth_outdoor.pt"),
    ("depth_anything_v2_l_hypersim",
     "huggingface-cli download depth-anything/Depth-Anything-V2-Metric-Hypersim-Large "
     "depth_anything_v2_metric_hypersim_vitl.pth"),
    ("depth_anything_v2_l_vkitti", "depth_anything_v2_metric_vkitti_vitl.pth"),
])
def test_the_starting_checkpoints_name_where_to_get_them(tmp_path, monkeypatch, name, fetch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache; HF_HUB_OFFLINE is set
    cfg = OmegaConf.to_container(config(tmp_path, f"model={name}", "task=nyu_to_kitti").model, resolve=True)
    with pytest.raises(MissingWeightsError, match="model.pretrained=") as err:
        build_model(cfg, load_weights=True, max_depth=80.0)
    assert fetch in str(err.value)
    # the paper's counts: the v1 metric models train their output convolutions besides the adapters
    assert cfg["head"] == ([r"depth_head\.scratch\.output_conv2"] if "metric" in name else [])
    assert cfg["name"] == ("depth_anything_l" if "metric" in name else "depth_anything_v2_l")


def test_paper_counts_with_the_v1_metric_models(tmp_path):
    record = run_inprocess(tmp_path, "task=kitti_to_nyu", "mode=count", "method=onelora")
    assert (record["adapter_params"], record["head_params"], record["adapted_layers"]) == (221_184, 36_929, 96)


# ------------------------------------------------------------------ tasks under the contract


@pytest.mark.parametrize("task", PAPER_TASKS + MINI_TASKS)
def test_depth_tasks_declare_the_contract(tmp_path, data, task):
    from onelora.reporting.paper import load_paper_rows, norm_key
    from onelora.settings import RunSettings

    cfg = config(tmp_path, *twin(task, data))
    settings = RunSettings.from_config(cfg)  # every object's keys checked, optimizer and schedule built
    t = cfg.task
    assert (t.family, t.model_kind, cfg.model.kind) == ("depth", "depth", "depth")
    # the best round on validation RMSE, the paper's "time needed to achieve the minimum RMSE"; AbsRel beside it
    assert settings.task.metric.as_dict() == {"name": "rmse", "direction": "min", "val_key": "val/rmse",
                                              "test_key": "test/rmse", "extra": {"abs_rel": "test/abs_rel"}}
    assert cfg.task.metric.val_key == config(tmp_path, f"task={task}").task.metric.val_key == "val/rmse"  # not the twin's
    layout = t.data.get("dataset", "diode_outdoor")  # the reference's layout the dataset is read in
    target_max = {"nyu": 10.0, "kitti": 80.0, "diode_outdoor": 80.0}[layout]
    # the output scale and the metric's range are the target dataset's (conf/dataset/)
    assert t.model_args.max_depth == t.module.max_depth == t.dataset.max_depth == target_max
    assert t.module.eval_crop == {"nyu": "eigen", "kitti": "garg", "diode_outdoor": "garg"}[layout]
    rows = load_paper_rows()
    keys = {(norm_key(r.task), norm_key(r.source), norm_key(r.target)) for r in rows.itertuples()}
    ours = tuple(norm_key(t.paper[k]) for k in ("task", "source", "target"))
    assert (ours in keys) == (task in PAPER_TASKS), ours  # spelled as the paper's rows, or ours only
    if task in PAPER_TASKS:
        real = config(tmp_path, f"task={task}")
        assert real.model.name == "depth_anything_l" and real.task.batch_size == 16 and real.task.epochs == 5
        assert real.task.optimizer.lr == pytest.approx(1.61e-4) and real.task.resources.timeout_min >= 120
        # ZoeDepth's get_lr_params: the pre-trained core (encoder AND DPT decoder) at lr / 50, the output mapping at lr
        assert OmegaConf.to_container(real.task.lr_scales) == {r"pretrained\.|depth_head\.(?!scratch\.output_conv2\.)": 0.02}
        assert real.trainer.gradient_clip_val == 0.1 and real.trainer.val_check_interval == 0.25
    else:  # the laptop tasks: one rate for every parameter, a documented choice (docs/depth.md)
        assert OmegaConf.to_container(config(tmp_path, f"task={task}").task.lr_scales) == {}


def _lr_groups(tmp_path, data, method: str) -> dict[float, set[str]]:
    """The parameter names in each learning-rate group of the nyu_to_kitti twin's module."""
    from onelora.contract import build
    from onelora.pipeline import prepare_model
    from onelora.settings import RunSettings

    settings = RunSettings.from_config(config(tmp_path, *twin("nyu_to_kitti", data), f"method={method}"))
    model, _, _ = prepare_model(settings)
    module = build(settings.task.module, "task.module", {}, model=model, optimizer=settings.optimizer(),
                   scheduler=None, metric=settings.task.metric.as_dict(), lr_scales=settings.task.lr_scales)
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["lr_scale"]: {names[id(p)] for p in g["params"]} for g in module.param_groups()}


def test_the_pretrained_core_trains_at_a_fiftieth_of_the_rate(tmp_path, data):
    """lr_scales, as ZoeDepth's get_lr_params: the encoder (adapters included) AND the pre-trained DPT
    decoder at lr / 50; at lr only the output mapping (the DPT output convolution, in the new metric
    module's role)."""
    groups = _lr_groups(tmp_path, data, "onelora")
    assert {n.split(".")[0] for n in groups[0.02]} == {"pretrained"} and len(groups[0.02]) == 16  # one vector per linear
    assert groups[1.0] and all(n.startswith("depth_head.scratch.output_conv2.") for n in groups[1.0])
    full = _lr_groups(tmp_path, data, "full")  # "All": under full fine-tuning the decoder is slowed down too
    decoder = {n for n in full[0.02] if n.startswith("depth_head.")}
    assert any(".refinenet" in n for n in decoder) and any(".projects." in n for n in decoder)
    assert not any("output_conv2" in n for n in full[0.02]) and full[1.0] == groups[1.0]


# ------------------------------------------------------------------ every method on Depth Anything


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_depth_anything(tmp_path, data, method):
    """Identity at initialisation, a step that moves the output, frozen weights that stay frozen."""
    from onelora.adapters import inject
    from onelora.metrics.depth import silog_loss
    from onelora.settings import RunSettings

    settings = RunSettings.from_config(config(tmp_path, *twin("nyu_to_kitti", data), f"method={method}"))
    torch.manual_seed(0)
    base = build_model(settings.model, load_weights=False, **settings.model_args).train()
    model = build_model(settings.model, load_weights=False, **settings.model_args).train()
    model.load_state_dict(base.state_dict())
    m = settings.model
    report = inject(model, settings.method, target_sets=m["target_sets"], head=m["head"], module_sets=m["module_sets"])
    assert report.summary()["trainable_params"] > 0
    x = torch.randn(2, 3, 56, 56)
    depth = torch.rand(2, 1, 56, 56) * 70 + 5
    with torch.no_grad():
        assert torch.allclose(model(x), base(x), atol=1e-4)  # every method starts as the loaded model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    loss = silog_loss(model(x), depth, depth > 0)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # in the checkpoints but not in the forward (as in the original code): DINOv2's masking token and
    # the deepest fusion block's unit for a second input it never gets
    unused = ("pretrained.mask_token", "depth_head.scratch.refinenet4.resConfUnit1.")
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and not n.startswith(unused))
    torch.optim.SGD(trainable, lr=1e-2 if method == "full" else 1.0).step()
    with torch.no_grad():
        assert not torch.allclose(model(x), base(x), atol=1e-4)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


# ------------------------------------------------------------------ the runs


def test_a_paper_transfer_runs_on_its_twin_and_lands_in_table_2(tmp_path, data, capsys):
    """nyu_to_kitti's twin: KITTI's layout and KB crop, a 1LoRA combination; its record, given the
    real model's name, fills the paper's Table 2 and Table S11 rows."""
    from onelora.reporting import build_report, runs_from_records

    record = run_inprocess(tmp_path, *twin("nyu_to_kitti", data), "method=onelora_bias_gamma_norms",
                           "task.epochs=1")
    assert record["status"] == "completed" and record["trained"] is True
    assert record["paper"] == {"task": "depth", "source": "NYU", "target": "KITTI"} and record["dataset"] == "kitti"
    assert record["metric"]["test"] > 0 and record["metric"]["extra"]["abs_rel"]["test"] > 0
    # what trains, counted: the adapter (the paper's count) and the DPT output convolution beside it
    params = record["params"]
    assert params["head_params"] == 2_369  # the tiny twin's DPT output convolutions
    assert params["trainable_params"] == params["adapter_params"] + 2_369
    assert (params["reported_params"], params["reported_as"]) == (params["adapter_params"], "adapter")
    a, t = params["adapter_params"], params["trainable_params"]
    printed = capsys.readouterr().out  # the summary line: what trains, and the paper's count beside it
    assert f"trainable parameters: {a:,} adapter + 2,369 head = {t:,} trained" in printed
    assert f"the paper's count: {a:,} (adapter)" in printed
    real = dict(record, model="depth_anything_l")
    report = build_report(runs_from_records([real]), tmp_path / "report", plots=False)
    filled = {(t.spec.id, r["method"], r["metric"]) for t in report.paper_tables for r in t.rows if r["ours_n"]}
    assert ("S11", "onelora+bias+gamma+norms", "rmse") in filled


def test_the_laptop_transfer_pretrains_once_switches_the_range_and_evaluates_unadapted(tmp_path, capsys):
    data = twin("depth_mini", tmp_path / "data")
    first = run_inprocess(tmp_path, *data, "method=onelora")
    assert "Pre-training tiny_depth_anything on the depth_mini source task" in capsys.readouterr().out
    cached = Path(first["pretrained_from"])
    assert cached.parent == tmp_path / ".cache" / "pretrained" and cached.is_file()
    info = OmegaConf.load(cached.with_suffix(".json"))
    assert info.settings.task.model_args.max_depth == 10.0  # pre-trained in the indoor range ...
    assert first["config"]["task"]["model_args"]["max_depth"] == 80.0  # ... fine-tuned in the outdoor one
    assert first["paper"] == {"task": "depth", "source": "synthetic-indoor", "target": "synthetic-outdoor"}
    unadapted = run_inprocess(tmp_path, *data, "method=none", "mode=eval")
    assert "Pre-training" not in capsys.readouterr().out  # the cached weights, not a second pre-training
    assert unadapted["trained"] is False and unadapted["method"] == "unadapted"
    assert unadapted["pretrained_from"] == first["pretrained_from"] and unadapted["metric"]["test"] > 0
    source_range = run_inprocess(tmp_path, *data, "method=none", "mode=eval", "task.module.output_max_depth=10.0",
                                 "run_tag=_source_range")
    assert source_range["metric"]["test"] != unadapted["metric"]["test"]  # the output scale did switch
    reverse = run_inprocess(tmp_path, *twin("depth_mini_outdoor_to_indoor", tmp_path / "data"), "method=onelora_random")
    assert reverse["status"] == "completed" and reverse["pretrained_from"] != first["pretrained_from"]
    assert reverse["config"]["task"]["model_args"]["max_depth"] == 10.0


def test_the_pretraining_cache_key_follows_the_source_sets_settings(tmp_path, data):
    from onelora.pretrain import pretrained_path
    from onelora.settings import RunSettings

    paths = [pretrained_path(RunSettings.from_config(config(tmp_path, *twin("depth_mini", data), *over)))
             for over in ((), ("task.pretrain.data.root.n_train=17",), ("task.data.num_workers=2", "paths.data_dir=/x"))]
    assert paths[0] != paths[1]
    assert paths[0].name == paths[2].name  # places (where the data is, how it is read) are not settings
