"""The benchmark runs on tiny models and writes every field; its saved-tensor counter is exact.

The benchmark itself is not a test (its timings depend on the machine): this only checks that
``python -m onelora.bench --quick`` runs end to end and that its outputs are complete.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("peft")

from onelora.bench import cli  # noqa: E402
from onelora.bench.memory import SavedTensorCounter, model_storage_keys, unique_bytes  # noqa: E402

REQUIRED = {
    "method",
    "impl",
    "model",
    "batch",
    "step_time_ms",
    "saved_bytes",
    "trainable_bytes",
    "peak_bytes",
    "grad_bytes",
    "optimizer_bytes",
    "trainable_params",
    "packed_bytes",
    "step_times_ms",
    "rounds",
    "threads",
    "group",
}
RATIOS = {f"{f}_vs_{ref}" for f in ("step_time_ms", "saved_bytes", "trainable_bytes", "peak_bytes") for ref in ("frozen", "bitfit")}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    paths = cli.main(
        ["--quick", "--out", str(out), "--models", "vit,llama", "--methods", "onelora,onelora_listing,lora,peft_lora,dora"]
    )
    return out, paths


def test_quick_run_writes_every_output(quick_run):
    out, paths = quick_run
    for name in ("bench.json", "bench.md", "bench.png", "bench_meta.json", "bench_inference.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "bench.md").read_text()
    assert "Targets" in md and "Merged inference" in md and "Scaling with the batch" in md
    assert "bfloat16 autocast (CPU)" in md
    meta = json.loads((out / "bench_meta.json").read_text())
    assert meta["machine"]["torch"] == torch.__version__ and meta["machine"]["torch_threads"] >= 1


def test_records_have_every_field(quick_run):
    out, _ = quick_run
    records = json.loads((out / "bench.json").read_text())
    assert isinstance(records, list) and records
    for r in records:
        missing = (REQUIRED | RATIOS) - set(r)
        assert not missing, (r["method"], missing)
        assert r["impl"] in ("onelora", "peft")
        assert r["step_time_ms"] > 0 and r["peak_bytes"] > 0 and r["trainable_bytes"] > 0
    main = [r for r in records if r["group"] == "main"]
    assert {r["model"] for r in main} == {"vit_micro", "llama_micro"}
    assert all(r["autocast"] is None for r in records if r["group"] != "autocast")
    keys = {(r["model"], r["method"], r["impl"]) for r in main}
    for model in ("vit_micro", "llama_micro"):
        for method, impl in [("frozen", "onelora"), ("bitfit", "onelora"), ("onelora", "onelora"),
                             ("onelora_listing", "onelora"), ("lora", "onelora"), ("lora", "peft"), ("dora", "onelora")]:
            assert (model, method, impl) in keys
        by = {(r["method"], r["impl"]): r for r in main if r["model"] == model}
        assert by[("bitfit", "onelora")]["saved_bytes_vs_bitfit"] == 1.0
        assert by[("frozen", "onelora")]["trainable_bytes_vs_frozen"] == 1.0


def test_saved_bytes_follow_the_methods(quick_run):
    """Exact properties: 1LoRA keeps at most one value per token and layer on top of BitFit's
    activations, LoRA keeps each layer input, ours and peft's LoRA keep the same."""
    out, _ = quick_run
    records = [r for r in json.loads((out / "bench.json").read_text()) if r["group"] == "main"]
    for model in ("vit_micro", "llama_micro"):
        by = {r["key"]: r for r in records if r["model"] == model}
        one, bit, lora = by["onelora"], by["bitfit"], by["lora"]
        tokens = one["batch"] * one["tokens_per_sample"]
        assert 0 < one["saved_bytes"] - bit["saved_bytes"] <= one["adapted_layers"] * tokens * 4
        assert by["onelora_listing"]["saved_bytes"] == one["saved_bytes"]
        assert lora["saved_bytes"] > one["saved_bytes"]
        assert lora["saved_bytes"] == by["peft_lora"]["saved_bytes"]
        assert lora["trainable_params"] == by["peft_lora"]["trainable_params"]


def test_autocast_runs(quick_run):
    """The mixed-precision group: the same model (float32) under bf16 autocast, with BitFit, 1LoRA,
    LoRA, DoRA and peft's LoRA, its ratios taken to BitFit under the same autocast."""
    out, _ = quick_run
    records = [r for r in json.loads((out / "bench.json").read_text()) if r["group"] == "autocast"]
    assert {r["model"] for r in records} == {"vit_micro"}  # the quick profile runs one model under autocast
    for model in ("vit_micro",):
        by = {r["key"]: r for r in records if r["model"] == model}
        assert set(by) == {"frozen", "bitfit", "onelora", "onelora_listing", "lora", "dora", "peft_lora"}
        assert all(r["autocast"] == "bfloat16" and r["dtype"] == "float32" for r in by.values())
        one, bit = by["onelora"], by["bitfit"]
        assert bit["saved_bytes_vs_bitfit"] == 1.0 and one["step_time_ms_vs_bitfit"] > 0
        # BitFit's frozen linears keep their bf16 weight copies (x needs a gradient); 1LoRA keeps
        # copies of the same size plus one value per token and layer (bf16 under CPU autocast)
        tokens = one["batch"] * one["tokens_per_sample"]
        assert one["saved_bytes"] - bit["saved_bytes"] == one["adapted_layers"] * tokens * 2
        assert lora_keeps_more(by)
    meta = json.loads((out / "bench_meta.json").read_text())
    assert meta["autocast_dtype"] == "bfloat16" and "autocast" in meta["groups"]
    assert any(k.endswith("+autocast_bfloat16") for k in meta["targets"])


def lora_keeps_more(by: dict) -> bool:
    """LoRA keeps each layer's (bf16) input for A's gradient on top of what 1LoRA keeps; ours no
    more than peft's."""
    return by["onelora"]["saved_bytes"] < by["lora"]["saved_bytes"] <= by["peft_lora"]["saved_bytes"]


def test_merged_inference_records(quick_run):
    out, _ = quick_run
    merged = json.loads((out / "bench_inference.json").read_text())
    states = {(r["method"], r["state"]) for r in merged}
    assert ("base", "base") in states and ("onelora", "merged") in states and ("dora", "merged") in states
    for r in merged:
        assert r["infer_time_ms"] > 0
        if r["state"] == "merged":
            assert r["plain_linears_only"] and r["merged_vs_unmerged_max_rel_diff"] < 1e-4


def test_saved_tensor_counter_counts_storages_once_and_skips_parameters():
    lin = nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorCounter(model_storage_keys(lin)) as counter:
        h = torch.tanh(lin(x))  # linear saves x (and the weight: a parameter); tanh saves its output
        y = (h * h[:, :1]).sum()  # mul saves h and a view of h: one storage
        transient = (x * 3).exp()  # a graph that dies before backward
        del transient
    stats = counter.stats()
    assert stats.saved_bytes == unique_bytes([x, h])
    assert stats.packed_bytes == stats.saved_bytes + 4 * 8 * 4  # the dead graph's exp output
    y.backward()
    assert x.grad is not None


@pytest.mark.slow
def test_compiled_variants_run_beside_eager(tmp_path):
    """``--compile``: each chosen method (and BitFit, the reference) also runs compiled, in the same
    rounds; its ratios are to the compiled BitFit and to its own eager run, with their own targets.
    (Dynamo's ``eager`` backend keeps the test fast; the bench's default is Inductor.)"""
    cli.main(["--quick", "--out", str(tmp_path), "--models", "vit", "--groups", "main", "--methods", "onelora",
              "--compile", "--compile-methods", "onelora", "--compile-backend", "eager"])
    records = json.loads((tmp_path / "bench.json").read_text())
    by = {r["key"]: r for r in records}
    assert set(by) == {"frozen", "bitfit", "onelora", "bitfit@compiled", "onelora@compiled"}
    one, bit = by["onelora@compiled"], by["bitfit@compiled"]
    assert one["variant"] == "compiled" and by["onelora"]["variant"] == "eager" and one["method"] == "onelora"
    assert one["compile_s"] > 0 and by["onelora"]["compile_s"] is None and one["rounds"] == by["onelora"]["rounds"]
    assert one["step_time_ms_vs_bitfit"] == pytest.approx(one["step_time_ms"] / bit["step_time_ms"])
    assert one["step_time_ms_vs_eager"] == pytest.approx(one["step_time_ms"] / by["onelora"]["step_time_ms"])
    assert one["saved_bytes"] > 0 and bit["saved_bytes_vs_bitfit"] == 1.0
    meta = json.loads((tmp_path / "bench_meta.json").read_text())
    assert meta["compile"] == {"backend": "eager"}
    assert {"vit_micro@2", "vit_micro@2+compiled"} <= set(meta["targets"])
    md = (tmp_path / "bench.md").read_text()
    assert "Compiled (`torch.compile`) against eager" in md and "Targets (compiled)" in md
