"""The paper's analyses on tiny run directories: PCA alignment (Fig. 9) and calibration (Fig. 11),
each checked against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.calibration import calibration_curve

from onelora.analysis import __main__ as cli
from onelora.analysis import calibration, pca_alignment, rundir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ tiny run directories
def write_run(run_dir, method, tensors=None, pretrained=None, predictions=None):
    run_dir.mkdir(parents=True)
    record = {"status": "completed", "method": method, "task": "tiny", "model": "tiny_vit",
              "config": {"model": {"pretrained": str(pretrained) if pretrained else None}}}
    (run_dir / "results.json").write_text(json.dumps(record))
    if tensors is not None:
        (run_dir / "adapter").mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(run_dir / "adapter" / "adapter.safetensors"))
    if predictions is not None:
        (run_dir / "predictions").mkdir()
        logits, labels = predictions
        np.savez(run_dir / "predictions" / "val.npz", logits=logits.astype(np.float32), labels=labels.astype(np.int64))
    return run_dir


def unit(v):
    v = torch.tensor(v, dtype=torch.float64)
    return v / v.norm()


# ------------------------------------------------------------------ Fig. 9
def test_layer_types_across_model_families():
    cases = {
        "blocks.3.attn.qkv": "QKV", "blocks.3.attn.proj": "projection", "blocks.3.mlp.fc1": "MLP 1",
        "blocks.3.mlp.fc2": "MLP 2",  # timm, DiT, DINOv2 / Depth Anything
        "vit.layers.0.attention.q_proj": "QKV", "vit.layers.0.attention.v_proj": "QKV",
        "vit.layers.0.attention.o_proj": "projection", "vit.layers.0.mlp.fc2": "MLP 2",  # transformers 5 ViT
        "vit.encoder.layer.0.attention.attention.key": "QKV", "vit.encoder.layer.0.attention.output.dense": "projection",
        "vit.encoder.layer.0.intermediate.dense": "MLP 1", "vit.encoder.layer.0.output.dense": "MLP 2",  # 4.x
        "model.layers.5.self_attn.k_proj": "QKV", "model.layers.5.self_attn.o_proj": "projection",
        "model.layers.5.mlp.gate_proj": "MLP 1", "model.layers.5.mlp.up_proj": "MLP 1",
        "model.layers.5.mlp.down_proj": "MLP 2",  # LLaMA
    }
    for name, kind in cases.items():
        assert pca_alignment.layer_type(name) == kind, name
    for other in ("head", "blocks.0.adaLN_modulation.1", "lm_head", "patch_embed.proj"):
        assert pca_alignment.layer_type(other) is None, other


def test_cosines_match_hand_computed_values():
    # dW = 3 u1 v1^T + 1 u2 v2^T, v1 = e1, v2 = e2 (k = 4)
    u1, u2 = unit([1, 0, 0]), unit([0, 1, 0])
    v1, v2 = unit([1, 0, 0, 0]), unit([0, 1, 0, 0])
    delta = 3 * torch.outer(u1, v1) + torch.outer(u2, v2)
    s, vh = pca_alignment.principal_directions(delta)
    assert s[:2] == pytest.approx([3.0, 1.0]) and s[2] == pytest.approx(0.0, abs=1e-12)
    ones = pca_alignment.alignment(vh[:2], np.ones(4))
    assert ones == pytest.approx([0.5, 0.5])  # |<e_i, 1/2>| = 1/2
    lora_a = pca_alignment.alignment(vh[:2], np.array([[1.0, 2.0, 0.0, 0.0]]))
    assert lora_a == pytest.approx([1 / math.sqrt(5), 2 / math.sqrt(5)])  # A = (1, 2, 0, 0)
    # the scale and sign of a vector do not matter; a rank-2 A measures the projection onto its span
    assert pca_alignment.alignment(vh[:2], -7 * np.ones(4)) == pytest.approx([0.5, 0.5])
    span = pca_alignment.alignment(vh[:2], np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]))
    assert span == pytest.approx([1.0, 0.0])
    # the update's principal direction IS the summation vector
    _, vh = pca_alignment.principal_directions(2 * torch.outer(u1, unit([1, 1, 1, 1])) + 0.5 * torch.outer(u2, v1 - v2))
    assert pca_alignment.alignment(vh[:2], np.ones(4)) == pytest.approx([1.0, 0.0], abs=1e-12)
    # share of the update's norm along v1: sqrt(3^2 * 1 + 1^2 * 0) / sqrt(3^2 + 1^2)
    layer = pca_alignment.LayerAlignment("x", "QKV", (3, 4), [3.0, 1.0], {"v1": [1.0, 0.0]})
    assert layer.energy_alignment("v1") == pytest.approx(3 / math.sqrt(10))


@pytest.fixture
def tiny_runs(tmp_path):
    """A 1-block model (k = 4): qkv's update reads the summation direction, fc2's reads e1."""
    torch.manual_seed(0)
    base = {
        "blocks.0.attn.qkv.weight": torch.randn(12, 4), "blocks.0.attn.proj.weight": torch.randn(4, 4),
        "blocks.0.mlp.fc1.weight": torch.randn(8, 4), "blocks.0.mlp.fc2.weight": torch.randn(4, 8),
        "blocks.0.norm1.weight": torch.ones(4), "head.weight": torch.randn(3, 4),
    }
    base_path = tmp_path / "base.safetensors"
    save_file(base, str(base_path))
    out_vec = unit(list(range(1, 13)))
    updates = {
        "blocks.0.attn.qkv.weight": 2 * torch.outer(out_vec, unit([1, 1, 1, 1])),
        "blocks.0.attn.proj.weight": torch.outer(unit([1, 0, 0, 0]), unit([0, 0, 1, 0])),
        "blocks.0.mlp.fc1.weight": torch.outer(unit([1] * 8), unit([1, -1, 0, 0])),
        "blocks.0.mlp.fc2.weight": torch.outer(unit([0, 1, 0, 0]), unit([1, 0, 0, 0, 0, 0, 0, 0])),
    }
    full = {k: (v.double() + updates.get(k, 0.1)).float() for k, v in base.items()}
    lora = {
        "blocks.0.attn.qkv.lora_A": torch.tensor([[1.0, 1.0, 1.0, 1.0]]), "blocks.0.attn.qkv.lora_B": torch.zeros(12, 1),
        "blocks.0.attn.proj.lora_A": torch.tensor([[0.0, 0.0, 3.0, 4.0]]), "blocks.0.attn.proj.lora_B": torch.zeros(4, 1),
        "blocks.0.mlp.fc1.lora_A": torch.tensor([[1.0, 0.0, 0.0, 0.0]]), "blocks.0.mlp.fc1.lora_B": torch.zeros(8, 1),
        "blocks.0.mlp.fc2.lora_A": torch.ones(1, 8), "blocks.0.mlp.fc2.lora_B": torch.zeros(4, 1),
    }
    full_dir = write_run(tmp_path / "full" / "seed0", "full", full, pretrained=base_path)
    lora_dir = write_run(tmp_path / "lora" / "seed0", "lora", lora)
    return full_dir, lora_dir, base_path


def test_pca_alignment_on_tiny_runs(tiny_runs, tmp_path):
    full_dir, lora_dir, _ = tiny_runs
    layers = pca_alignment.analyse(full_dir, lora_dir)
    assert [(layer.name, layer.type) for layer in layers] == [
        ("blocks.0.attn.proj", "projection"), ("blocks.0.attn.qkv", "QKV"),
        ("blocks.0.mlp.fc1", "MLP 1"), ("blocks.0.mlp.fc2", "MLP 2"),
    ]
    by = {layer.type: layer for layer in layers}
    # each update is rank one: its first direction is the one the fixture built in
    assert by["QKV"].singular_values[0] == pytest.approx(2.0, abs=1e-5)
    assert by["QKV"].cos["ones"][0] == pytest.approx(1.0, abs=1e-6)
    assert by["QKV"].cos["lora"][0] == pytest.approx(1.0, abs=1e-6)
    assert by["projection"].cos["ones"][0] == pytest.approx(0.5, abs=1e-6)  # e3 vs 1/2
    assert by["projection"].cos["lora"][0] == pytest.approx(0.6, abs=1e-6)  # e3 vs (0, 0, 3, 4) / 5
    assert by["MLP 1"].cos["ones"][0] == pytest.approx(0.0, abs=1e-6)  # (1, -1, 0, 0) sums to zero
    assert by["MLP 1"].cos["lora"][0] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert by["MLP 2"].cos["ones"][0] == pytest.approx(1 / math.sqrt(8), abs=1e-6)
    rows = {(r["type"], r["vector"]): r for r in pca_alignment.summarise(layers)}
    assert rows[("QKV", "ones")]["top1_cos"] == pytest.approx(1.0, abs=1e-6)
    assert rows[("QKV", "ones")]["energy"] == pytest.approx(1.0, abs=1e-5)
    assert rows[("MLP 2", "lora")]["k"] == 8 and rows[("MLP 2", "lora")]["layers"] == 1
    assert 0.0 <= rows[("QKV", "random")]["mean_cos"] <= 1.0


def test_pca_alignment_cli_writes_figure_and_numbers(tiny_runs, tmp_path):
    full_dir, lora_dir, _ = tiny_runs
    out = tmp_path / "out"
    assert cli.main(["pca_alignment", "--full", str(full_dir), "--lora", str(lora_dir), "--out", str(out)]) == 0
    data = json.loads((out / "pca_alignment.json").read_text())
    assert len(data["layers"]) == 4 and {r["vector"] for r in data["summary"]} == {"ones", "random", "lora"}
    assert "| QKV | 1 | 4 | summation 1/√k (1LoRA) | " in (out / "pca_alignment.md").read_text()
    png = out / "pca_alignment.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(png) as img:
        assert img.size[0] > 800


def test_pca_alignment_errors_name_the_fix(tiny_runs, tmp_path, capsys):
    full_dir, lora_dir, base_path = tiny_runs
    record = json.loads((full_dir / "results.json").read_text())
    record["config"]["model"]["pretrained"] = None
    (full_dir / "results.json").write_text(json.dumps(record))
    with pytest.raises(rundir.RunDirError, match="pass --base"):
        pca_alignment.analyse(full_dir, lora_dir)
    assert len(pca_alignment.analyse(full_dir, lora_dir, base=base_path)) == 4  # --base fills the gap
    # a LoRA "run" that is not one, a full "run" that is LoRA, a directory that is no run
    with pytest.raises(rundir.RunDirError, match="lora_A"):
        pca_alignment.analyse(full_dir, full_dir, base=base_path)
    with pytest.raises(rundir.RunDirError, match="is it a full fine-tuning run"):
        pca_alignment.analyse(lora_dir, None, base=base_path)
    assert cli.main(["pca_alignment", "--full", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "results.json not found" in capsys.readouterr().err


# ------------------------------------------------------------------ Fig. 11
def test_ece_matches_hand_computed_value():
    confidence = np.array([0.9, 0.7, 0.6, 0.45])
    correct = np.array([1, 0, 1, 1])
    rel = calibration.reliability(confidence, correct, bins=2)
    # bin (0, .5]: {0.45 correct}: |1 - .45| = .55, weight 1/4; bin (.5, 1]: acc 2/3, conf 2.2/3: gap .2/3, weight 3/4
    assert rel.counts.tolist() == [1, 3]
    assert rel.accuracy == pytest.approx([1.0, 2 / 3]) and rel.confidence == pytest.approx([0.45, 2.2 / 3])
    assert rel.ece == pytest.approx(0.55 / 4 + 0.2 / 4)
    # 10 bins: (.4,.5] .55/4, (.5,.6] |1-.6|/4, (.6,.7] |0-.7|/4, (.8,.9] |1-.9|/4; a confidence on an edge
    # (0.6, 0.7 exactly) belongs to the bin below it, as in sklearn
    rel10 = calibration.reliability(confidence, correct, bins=10)
    assert rel10.counts.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 1, 0]
    assert rel10.ece == pytest.approx((0.55 + 0.4 + 0.7 + 0.1) / 4)
    assert calibration.reliability(np.ones(5), np.ones(5), bins=15).ece == pytest.approx(0.0)
    with pytest.raises(ValueError, match="bins"):
        calibration.reliability(confidence, correct, bins=0)


def test_reliability_agrees_with_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 500)
    correct = rng.uniform(size=500) < confidence ** 2
    rel = calibration.reliability(confidence, correct, bins=15)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    full = rel.counts > 0
    assert rel.accuracy[full] == pytest.approx(prob_true) and rel.confidence[full] == pytest.approx(prob_pred)


def test_calibration_from_logits(tmp_path):
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.45, 0.35]])
    labels = np.array([0, 1, 0, 1])
    errors, rel = calibration.calibrate(np.log(probs) + 3.0, labels, bins=2)  # softmax ignores the shift
    assert errors == pytest.approx(-np.log([0.9, 0.2, 0.6, 0.45]))
    assert rel.ece == pytest.approx(0.55 / 4 + 0.2 / 4)


def test_calibration_cli_and_pooling(tmp_path, capsys):
    rng = np.random.default_rng(1)
    dirs = []
    for method, seed, sharp in (("full", 0, 4.0), ("lora", 0, 2.0), ("onelora", 0, 1.0), ("onelora", 1, 1.0)):
        labels = rng.integers(0, 5, 200)
        logits = rng.normal(size=(200, 5))
        logits[np.arange(200), labels] += sharp
        dirs.append(write_run(tmp_path / method / f"seed{seed}", method, predictions=(logits, labels)))
    out = tmp_path / "out"
    assert cli.main(["calibration", *map(str, dirs), "--bins", "10", "--out", str(out)]) == 0
    data = json.loads((out / "calibration.json").read_text())
    assert data["bins"] == 10
    assert [r["label"] for r in data["runs"]] == ["All", "LoRA", "1LoRA (seed0)", "1LoRA (seed1)"]
    for r in data["runs"]:
        assert r["n"] == 200 and sum(r["bins"]["counts"]) == 200 and 0 <= r["ece"] <= 1
    assert data["runs"][0]["accuracy"] > data["runs"][2]["accuracy"]  # the sharper logits are right more often
    assert (out / "calibration.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "| All | 200 |" in (out / "calibration.md").read_text()
    assert cli.main(["calibration", *map(str, dirs), "--pool", "--out", str(out), "--name", "pooled"]) == 0
    pooled = json.loads((out / "pooled.json").read_text())["runs"]
    assert [r["label"] for r in pooled] == ["All", "LoRA", "1LoRA (2 runs pooled)"] and pooled[2]["n"] == 400
    # a run without predictions: the error names the file and what it must hold
    bare = write_run(tmp_path / "bare", "full")
    assert cli.main(["calibration", str(bare), "--out", str(out)]) == 2
    assert "predictions/val.npz not found" in capsys.readouterr().err
