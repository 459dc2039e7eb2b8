"""mode=plan: the traced iteration is exact (fake tensors == real tensors, op for op, on every family's
tiny twin and every method; FLOPs == FlopCounterMode), the rules built on it (per-GPU memory under a
strategy, run length, GPU-hours, the largest micro-batch), the JSON line and the sweep, the paper's
memory claims, and bad input stopping with one line."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from runs import config, run_cli, run_inprocess

from onelora.config import ConfigError
from onelora.plan import GIB
from onelora.plan import paper as plan_paper
from onelora.plan.core import Card, RunPlan, holdout, parse_duration
from onelora.plan.trace import FLOP_FORMULAS, GpuKernels, StepTrace, TraceError, fake_mode, trace_step
from onelora.settings import RunSettings

#: each family's tiny twin at tiny shapes (no data is read: a plan builds none)
FAMILIES = {
    "classification": ("task=cifar10", "+twin=cifar10", "task.batch_size=2"),
    "depth": ("task=nyu_to_kitti", "+twin=nyu_to_kitti", "task.batch_size=2", "plan.depth_target_size=[20,24]"),
    "generation": ("task=food101_generation", "+twin=food101_generation", "task.batch_size=2"),
    "language": ("task=metamath", "+twin=metamath", "task.batch_size=4", "plan.seq_length=12"),
}
METHODS = ("onelora", "lora", "onelora_random", "lora_qkv", "vera", "dora", "mora1", "mora6", "bitfit", "difffit",
           "gamma", "norms", "head", "full", "onelora_bias_gamma_norms")
FAST = ("onelora",)  # the default tier; every other method is in the slow tier
#: combinations the configs refuse (DiT has no norm parameters: norms alone trains nothing)
REFUSED = {("generation", "norms")}
EXACT = ("activations", "forward_held", "peak", "peak_without_states", "optimizer_transient", "grad_bytes", "optimizer_bytes",
         "trainable", "params", "flops_forward", "flops_backward", "flops_recompute")


def plan_of(tmp_path, *overrides: str) -> RunPlan:
    return RunPlan.from_settings(RunSettings.from_config(config(tmp_path, "mode=plan", *overrides)))


def _cases():
    for family in FAMILIES:
        for method in METHODS:
            if (family, method) in REFUSED:
                continue
            marks = () if method in FAST else (pytest.mark.slow,)
            yield pytest.param(family, method, marks=marks, id=f"{family}-{method}")


@pytest.mark.parametrize("family,method", list(_cases()))
def test_fake_tensors_plan_what_real_tensors_do(tmp_path, family, method):
    """The same iteration on fake and on real CPU tensors: every byte and FLOP the plan reports is equal."""
    run = plan_of(tmp_path, *FAMILIES[family], f"method={method}", "plan.attention=native", "plan.cache_dir=null")
    fake, real = run.trace(), run.trace(fake=False)
    assert {k: getattr(fake, k) for k in EXACT} == {k: getattr(real, k) for k in EXACT}
    assert fake.activations > 0 and fake.flops_forward > 0 and fake.peak > fake.param_total_bytes


def _flop_counter_totals(run: RunPlan) -> tuple[int, int, int]:
    """Forward and total FLOPs of one micro-step on real tensors under FlopCounterMode, with and
    without the in-place formulas the plan adds (addmm_, baddbmm_)."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    def raw(formula):
        def count(*args, **kwargs):
            return formula(*args, **kwargs)
        count._get_raw = True
        return count

    inplace = {k: raw(v) for k, v in FLOP_FORMULAS.items() if k not in flop_registry}
    out = []
    for mapping in (inplace, {}):
        model = run.spec.build_model()
        module = run.spec.build_module(model)
        module.train()
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            loss = module.training_step(run.spec.batch(run.micro_batch), 0)
            forward = counter.get_total_flops()
            loss.backward()
        out.append((forward, counter.get_total_flops()))
    return out[0][0], out[0][1], out[1][1]


@pytest.mark.parametrize("family", [f if f in ("classification", "language") else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES])
def test_flops_equal_flop_counter_mode_on_real_tensors(tmp_path, family):
    run = plan_of(tmp_path, *FAMILIES[family], "method=onelora", "plan.attention=native", "plan.cache_dir=null")
    trace = run.trace()
    forward, total, plain_total = _flop_counter_totals(run)
    assert (trace.flops_forward, trace.flops_forward + trace.flops_backward) == (forward, total)
    # FlopCounterMode alone misses the in-place matmul of 1LoRA's fused op (addmm_): every adapted layer
    assert plain_total < total


def test_onelora_costs_bitfits_flops_and_recomputation_is_counted(tmp_path):
    language = FAMILIES["language"]
    onelora = plan_of(tmp_path, *language, "method=onelora", "plan.cache_dir=null").trace()
    bitfit = plan_of(tmp_path, *language, "method=bitfit", "plan.cache_dir=null").trace()
    assert onelora.flops_forward == bitfit.flops_forward > 0  # the same base matmuls; the sums cost no matmul
    assert onelora.checkpointing and 0 < onelora.flops_recompute < onelora.flops_forward
    off = plan_of(tmp_path, *language, "method=onelora", "task.module.gradient_checkpointing=false",
                  "plan.cache_dir=null").trace()
    assert not off.checkpointing and off.flops_recompute == 0 and off.activations > onelora.activations


@pytest.mark.parametrize("family,method", [("classification", "vera"),
                                           pytest.param("language", "dora", marks=pytest.mark.slow),
                                           pytest.param("generation", "onelora", marks=pytest.mark.slow)])
def test_memory_is_affine_in_the_micro_batch(tmp_path, family, method):
    """What the largest micro-batch rests on: the peak at 1, 2, 3 samples lies on a line (allocations
    unrounded; VeRA and DoRA have terms independent of the batch)."""
    run = plan_of(tmp_path, *FAMILIES[family], f"method={method}", "plan.block_bytes=1", "plan.cache_dir=null",
                  "task.batch_size=12")
    peaks = [run.trace(b).peak for b in (1, 2, 3)]
    acts = [run.trace(b).activations for b in (1, 2, 3)]
    assert peaks[2] - peaks[1] == peaks[1] - peaks[0] > 0
    assert abs((acts[2] - acts[1]) - (acts[1] - acts[0])) <= 64 and acts[1] > acts[0]  # a scalar's storage at most


def test_the_largest_micro_batch_is_the_last_that_fits(tmp_path):
    run = plan_of(tmp_path, *FAMILIES["classification"], "method=onelora", "plan.cache_dir=null")
    small, large = run.memory(run.trace(2)), run.memory(run.trace(4))
    slope = (large.total - small.total) / 2
    card = Card("tiny", (small.total + 10.5 * slope) / GIB, 1.0, 1.0)
    best = run.largest_micro_batch(card)
    assert best == 12  # 2 + 10 more samples fit, an 11th does not
    assert run.largest_micro_batch(Card("none", small.total / GIB / 10, 1.0, 1.0)) is None


# ------------------------------------------------------------------------------------------------
# the rules on top of a trace
# ------------------------------------------------------------------------------------------------

def _trace(**kw) -> StepTrace:
    base = dict(micro_batch=2, params=1000, trainable=100, param_bytes={"bfloat16": 2000}, trainable_bytes=200,
                buffer_bytes=0, grad_bytes=200, optimizer_bytes=400, activations=5000, forward_held=6000,
                peak=10_000, peak_without_states=9_000, optimizer_transient=400, flops_forward=10, flops_backward=20,
                flops_recompute=5)
    return StepTrace(**{**base, **kw})


def test_strategies_share_the_states_over_the_gpus(tmp_path):
    run = plan_of(tmp_path, *FAMILIES["language"], "method=onelora")
    trace = _trace()
    single = dataclasses.replace(run, strategy="single", gpus=1).memory(trace)
    ddp = dataclasses.replace(run, strategy="ddp", gpus=4).memory(trace)
    zero2 = dataclasses.replace(run, strategy="zero2", gpus=4).memory(trace)
    assert single.peak == 10_000 and ddp.peak == 10_000 + 200  # DDP's buckets: a copy of the gradients
    buckets = 2 * run.plan.zero2_bucket_elements * 2  # two reduce buckets of bf16
    # fp32 master + 2 moments + a gradient, sharded; the step's temporaries for the fp32 share
    assert zero2.peak == 9_000 + 100 * (12 + 2) / 4 + buckets + 400 * 4 / 2 / 4
    assert single.total == single.peak + run.plan.reserve_gib * GIB
    fsdp = dataclasses.replace(run, strategy="fsdp", gpus=4, fsdp_units=(100, 50)).memory(trace)
    # parameters, gradients, states and the step's temporaries sharded; the largest unit twice and the root gathered
    assert fsdp.peak == 9_000 - 2000 + 2000 / 4 + (2 * 100 + 50) + (200 + 400 + 400) / 4


def test_run_length_from_the_dataset_the_steps_or_the_time_budget(tmp_path):
    run = plan_of(tmp_path, *FAMILIES["classification"], "method=onelora", "task.dataset.train_size=100",
                  "task.epochs=3")  # the twin holds out 20 images (val_size: 20)
    assert run.train_samples == 80 and run.steps_per_epoch() == 40 and run.optimizer_steps()[0] == 120
    capped = plan_of(tmp_path, *FAMILIES["classification"], "method=onelora", "task.dataset.train_size=100",
                     "task.epochs=3", "+task.max_steps=50")
    assert capped.optimizer_steps() == (50, "trainer.max_steps")
    trace = capped.trace()
    card = capped.plan.cards["a100_40gb"]
    cost = capped.run_cost(trace, card)
    model = (trace.flops_forward + trace.flops_backward - trace.flops_recompute) * capped.accumulate
    assert cost["gpu_hours"] == pytest.approx(50 * model / (card.fp32_tflops * 1e12 * capped.plan.mfu) / 3600)
    budget = dataclasses.replace(capped, time_budget_s=1e-9)
    assert budget.run_cost(trace, card)["steps"] == 0


def test_holdout_and_durations():
    assert holdout({"val_size": 0.1}, 50_000) == 5_000 and holdout({"val_size": 20}, 100) == 20
    assert holdout({"val_fraction": 0.2}, 395_000) == 79_000
    assert holdout({"val_fraction": 0.02, "val_from": "test"}, 100) == 0
    assert holdout({"val_size": 10_000, "val_reference": "train"}, 75_750) == 0  # FID references, not a split
    assert parse_duration("00:24:00:00", "k") == 86_400 and parse_duration(60, "k") == 60
    with pytest.raises(ConfigError, match="task.time_budget"):
        parse_duration("24h", "task.time_budget")


# ------------------------------------------------------------------------------------------------
# the GPU's kernels, traced on the CPU
# ------------------------------------------------------------------------------------------------

def test_attention_is_planned_with_the_kernel_a_gpu_runs():
    from onelora.plan.trace import SavedActivations

    b, h, n, d = 2, 4, 16, 8
    with fake_mode():
        q = torch.empty(b, h, n, d, dtype=torch.bfloat16, requires_grad=True)
        with GpuKernels() as kernels, SavedActivations(set()) as saved:
            torch.nn.functional.scaled_dot_product_attention(q * 1, q * 1, q * 1)
        flash = saved.bytes
        mask = torch.ones(n, n, dtype=torch.bool)
        with GpuKernels() as masked, SavedActivations(set()) as saved_masked:
            torch.nn.functional.scaled_dot_product_attention(q * 1, q * 1, q * 1, attn_mask=mask)
    assert kernels.kernels == {"flash": 1} and masked.kernels == {"efficient": 1}
    assert saved_masked.bytes > flash  # the memory-efficient kernel also keeps the (float) mask
    # flash keeps q, k, v, the output (bf16) and a float32 logsumexp per row (and its RNG state: a few
    # int64), nothing of size n x n
    assert 0 <= flash - (4 * b * h * n * d * 2 + b * h * n * 4) <= 64
    assert torch.nn.functional.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # restored


def test_cpu_autocast_keeps_what_cuda_autocast_keeps(tmp_path):
    """Autograd cannot run backward on fake CUDA tensors without a GPU, but a forward can: under CUDA's
    autocast policy (layer norms and softmax in float32, ...) the tensors kept for backward are those the
    plan finds under the CPU's, with the GPU's attention kernel routed."""
    from onelora.plan.trace import SavedActivations

    run = plan_of(tmp_path, *FAMILIES["classification"], "method=onelora", "trainer.precision=bf16-mixed")
    saved = {}
    for device in ("cpu", "cuda"):
        with torch.device("meta"):
            model = run.spec.build_model()
        with fake_mode():
            model = model.to_empty(device=device)
            images = torch.empty(2, 3, 32, 32, device=device)
            weights = {p.untyped_storage()._cdata for p in model.parameters()}
            enable = (torch.set_autocast_enabled, torch.set_autocast_dtype)
            enable[0](device, True), enable[1](device, torch.bfloat16), torch.autocast_increment_nesting()
            try:
                with GpuKernels(), SavedActivations(weights) as counter:
                    model(images).logits.float().sum()
            finally:
                torch.autocast_decrement_nesting(), torch.clear_autocast_cache(), enable[0](device, False)
            saved[device] = counter.bytes
    # 1LoRA's sums are float32 under CUDA's policy: a visible share of a hidden size of 32 (0.03% at ViT-B)
    assert saved["cpu"] == pytest.approx(saved["cuda"], rel=0.02)


# ------------------------------------------------------------------------------------------------
# the command: JSON line, nothing under results/, sweeps, bad input
# ------------------------------------------------------------------------------------------------

def test_mode_plan_prints_a_summary_and_a_json_line_and_writes_no_results(tmp_path, capsys):
    record = run_inprocess(tmp_path, "mode=plan", *FAMILIES["classification"], "method=lora")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("plan: cifar10 | tiny_vit | lora")
    printed = json.loads(lines[-1])
    assert printed["method"] == "lora" and printed["trainable"] == record["trainable"] > 0
    assert set(printed["cards"]) == {"a100_40gb", "a100_80gb", "h100", "h200"}
    assert all(c["largest_micro_batch"] for c in printed["cards"].values())
    assert printed["bytes"]["peak_per_gpu"] == printed["bytes"]["traced_peak"]  # one GPU: nothing shared
    assert not (tmp_path / "results").exists()


@pytest.mark.e2e
def test_a_plan_sweep_through_run_py(tmp_path):
    proc = run_cli(tmp_path, "-m", "mode=plan", *FAMILIES["classification"], "method=onelora,lora",
                   "hydra/job_logging=none", "hydra/hydra_logging=none")
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["method"] for r in records] == ["onelora", "lora"]
    assert "2 runs: 2 planned" in proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_the_table_s7_sweep_plans_llama2_13b(tmp_path):
    proc = run_cli(tmp_path, "-m", "experiment=table_s7", "mode=plan", "trainer=deepspeed",
                   "hydra/job_logging=none", "hydra/hydra_logging=none", timeout=1500)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    methods = ["bitfit", "difffit", "lora_qkv", "onelora"]
    assert sorted(r["method"] for r in records) == sorted(methods * 4)  # 4 methods x seeds 0-3
    assert "16 runs: 16 planned" in proc.stdout
    by_method = {m: [r for r in records if r["method"] == m] for m in methods}
    assert all(all(r == runs[0] for r in runs) for runs in by_method.values())  # a seed changes no figure
    assert {(r["gpus"], r["micro_batch"], r["strategy"]) for r in records} == {(64, 2, "zero2")}
    assert all(13.0e9 < r["params"] < 13.1e9 and r["cards"]["a100_40gb"]["fits"] for r in records)


@pytest.mark.parametrize("override,key", [
    ("plan.strategy=megatron", "plan.strategy"),
    ("plan.mfu=1.5", "plan.mfu"),
    ("plan.attention=sparse", "plan.attention"),
    ("plan.micro_batch=3", "plan.micro_batch"),
    ("plan.gpus=0", "plan.gpus"),
    ("trainer.precision=transformer-engine", "trainer.precision"),
    ("plan.cards.a100_40gb.memory_gib=-1", "plan.cards.a100_40gb.memory_gib"),
])
def test_bad_plan_settings_stop_with_one_line_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        run_inprocess(tmp_path, "mode=plan", *FAMILIES["classification"], "method=onelora", override)
    assert str(err.value).startswith(f"{key}:") and "\n" not in str(err.value)


def test_a_sequence_longer_than_the_model_takes_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^plan.seq_length: 1000 tokens exceed model 'tiny_llama'"):
        run_inprocess(tmp_path, "mode=plan", *FAMILIES["language"], "method=onelora", "plan.seq_length=1000")


def test_a_method_that_cannot_apply_to_the_model_is_refused(tmp_path):
    from onelora.adapters import AdapterConfigError

    with pytest.raises((ConfigError, AdapterConfigError)) as err:
        run_inprocess(tmp_path, "mode=plan", *FAMILIES["generation"], "method=norms")
    assert "'norms'" in str(err.value) and "DiT has none" in str(err.value) and "\n" not in str(err.value)


class _Unique(torch.nn.Module):
    """A task step with an op fake tensors cannot shape (torch.unique: its size depends on values)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def on_fit_start(self):
        pass

    def training_step(self, batch, batch_idx):
        images, _ = batch
        return torch.unique(images).sum() + sum(p.sum() for p in self.model.parameters() if p.requires_grad)


def test_an_op_without_fake_tensor_support_is_named_with_the_model(tmp_path):
    run = plan_of(tmp_path, *FAMILIES["classification"], "method=onelora", "plan.cache_dir=null")
    run.spec = dataclasses.replace(run.spec, build_module=_Unique)
    with pytest.raises(ConfigError) as err:
        run.trace(7)  # a micro-batch no other test traces: not from the in-process trace cache
    message = str(err.value)
    assert message.startswith("mode=plan: model 'tiny_vit' with method 'onelora': the op aten._unique2")
    assert "fake-tensor support" in message and "\n" not in message
    with pytest.raises(TraceError):
        trace_step(run.spec, 2)


def test_the_gpu_check_runs_on_the_cpu_with_a_twin(tmp_path, capsys):
    from onelora.plan.measure import main

    main(["--device", "cpu", "--steps", "1", "--out", str(tmp_path / "gpu.md"), "--config",
          f"paths.root_dir={tmp_path}", *FAMILIES["classification"], "method=onelora"])
    row = (tmp_path / "gpu.md").read_text().splitlines()[-1].split(" | ")
    assert row[0] == "| tiny_vit" and row[1] == "onelora" and row[9] == "yes"  # planned = real, op for op
    assert float(row[4]) == float(row[5])  # the planned peak is the real tensors' peak


# ------------------------------------------------------------------------------------------------
# the paper's grids and memory claims
# ------------------------------------------------------------------------------------------------

def test_the_grids_are_read_from_the_experiments():
    table2 = plan_paper.grid_runs("table2")
    assert len(table2) == 20 and {r.task for r in table2} == {"kitti_to_nyu", "nyu_to_kitti"}
    assert all(r.seeds == (0, 1, 2, 3) and "trainer=gpu" in r.overrides for r in table2)
    s7 = plan_paper.grid_runs("table_s7")
    assert [r.method for r in s7] == ["onelora", "bitfit", "difffit", "lora_qkv"]
    assert all("experiment=table_s7" in r.overrides and "trainer=deepspeed" in r.overrides for r in s7)
    assert [r.seeds for r in plan_paper.grid_runs("fig5")][0] == (0,)


def test_the_paper_rows_map_onto_our_runs():
    rows = plan_paper.paper_rows()
    assert len(rows) == 99 and {r["table"] for r in rows} == {f"S{i}" for i in range(2, 13)}
    s11 = next(r for r in rows if r["table"] == "S11" and r["method"] == "onelora+bias+norms")
    assert plan_paper.claim_configs(s11) == ("task=nyu_to_kitti", "method=onelora_bias_norms", "trainer=gpu")
    s7 = next(r for r in rows if r["table"] == "S7")
    assert plan_paper.claim_configs(s7, mora=True)[:2] == ("experiment=table_s7", "task=metamath")
    assert "task.module.gradient_checkpointing=false" in plan_paper.claim_configs(s7, mora=True)


def test_the_comparison_says_agree_or_which_side_is_lower():
    assert plan_paper.compare(50, 20.5 * GIB)["verdict"] == "agree"  # 20 GiB paper, 20.5 planned
    lower = plan_paper.compare(92, 26.0 * GIB)
    assert lower["verdict"] == "plan lower" and lower["paper_gib"] == 36.8 and lower["gap_gib"] == pytest.approx(10.8)
    assert plan_paper.compare(6, 4.0 * GIB)["verdict"] == "plan higher"
    assert plan_paper.compare(6, 3.3 * GIB)["verdict"] == "agree"  # within 1 GiB of 2.4


def test_the_paper_relative_reading_adds_the_plans_differences_to_the_papers_baseline():
    records = {m: {"bytes": {"peak_per_gpu": gib * GIB}, "cards": {"a100_40gb": {"fits": gib <= 39}}}
               for m, gib in {"onelora": 30.0, "lora": 34.0, "bitfit": 29.9}.items()}
    relative = plan_paper.relative_reading(records, 92.0)
    assert relative == {"onelora": 36.8, "lora": 40.8, "bitfit": 36.7}
    assert plan_paper.fits_set(records) == {"onelora", "lora", "bitfit"}


def test_make_plan_writes_a_table_per_grid_and_the_totals(tmp_path, monkeypatch):
    """The report from two small grids (planned on twins): tables, totals, the JSON."""
    from onelora.plan import report

    def grid_runs(experiment, conf=plan_paper.CONF, extra=()):
        base = FAMILIES["classification"] if experiment == "fig6" else FAMILIES["language"]
        return [plan_paper.RunSpec(experiment, "t", m, (0, 1), (f"paths.root_dir={tmp_path}", *base, f"method={m}"))
                for m in ("onelora", "lora")]

    monkeypatch.setattr(report, "grid_runs", grid_runs)
    data = report.build(tmp_path / "reports", cache=tmp_path / "cache", grids=["fig6", "table_s6"], claims=False,
                        log=lambda *a: None)
    text = (tmp_path / "reports" / "plan.md").read_text()
    assert "## Table S9: ViT-B/16 on CIFAR-10 (`experiment=fig6`)" in text and "| lora |" in text
    assert data["totals"]["runs"] == 8 and set(data["grids"]) == {"fig6", "table_s6"}
    saved = json.loads((tmp_path / "reports" / "plan.json").read_text())
    assert saved["totals"] == data["totals"] and len(saved["records"]) == 4
    assert math.isfinite(data["grids"]["fig6"][0]["peak_gib"])


@pytest.mark.e2e
def test_the_gpu_check_script_runs_the_plan_check_on_the_cpu(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GPU_CHECK_TINY": "1", "PYTHON": __import__("sys").executable}
    proc = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), "plan", str(tmp_path / "out")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "out" / "plan_gpu.md").read_text()
    assert "| tiny_vit | onelora |" in table and "exit 0" in (tmp_path / "out" / "summary.txt").read_text()
