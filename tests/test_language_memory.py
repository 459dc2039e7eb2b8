"""The LLaMA memory model's measurement code on a tiny width (the real-width run is `slow`): saved
activations of frozen vs adapted layers computed by hand, checkpointing, exact counts, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from onelora.analysis import memory_llama as mem

H, I = 64, 160  # tiny width: hidden, MLP


@pytest.fixture(scope="module")
def cfg():
    return mem.model_config("llama2_13b")


@pytest.fixture(scope="module")
def arch(cfg):
    return dict(cfg["arch"], hidden_size=H, intermediate_size=I, num_attention_heads=4, num_key_value_heads=4,
                vocab_size=256)


@pytest.fixture(scope="module")
def bases(arch):
    return mem.base_models(arch)


def block(cfg, arch, bases, method, checkpointing=False, dropout=None):
    spec = mem.method_spec(cfg, method, dropout=dropout)
    return mem.measure_activations(cfg, spec, checkpointing=checkpointing, arch=arch, bases=bases)


def test_configs_resolve_defaults_and_overrides(cfg):
    assert cfg["arch"]["hidden_size"] == 5120 and cfg["target_sets"]["qkv"]  # 13b over its 7b defaults
    lora_qkv = mem.method_spec(cfg, "lora_qkv")
    assert (lora_qkv.linear, lora_qkv.targets, lora_qkv.options["r"]) == ("lora", "qkv", 1)
    difffit = mem.method_spec(cfg, "difffit")
    assert difffit.gamma_targets == "linear_and_lm_head" and not difffit.bias  # the model's override
    assert mem.method_spec(cfg, "lora", dropout=0.05).options["dropout"] == 0.05
    assert "dropout" not in mem.method_spec(cfg, "onelora", dropout=0.05).options


def test_exact_counts_on_the_meta_device():
    seven = mem.model_config("llama2_7b")
    assert mem.count(seven, mem.method_spec(seven, "difffit")).trainable == 1_658_112  # the paper's counts
    onelora = mem.count(seven, mem.method_spec(seven, "onelora"))
    assert onelora.trainable == 1_359_872
    assert onelora.total == 6_738_415_616 + 1_359_872 and onelora.frozen == 6_738_415_616  # LLaMA-2 7B


def test_frozen_block_keeps_no_linear_inputs_and_adapters_add_what_they_need(cfg, arch, bases):
    bitfit = block(cfg, arch, bases, "bitfit")
    onelora = block(cfg, arch, bases, "onelora")
    lora = block(cfg, arch, bases, "lora")
    full = block(cfg, arch, bases, "full")
    assert bitfit.block[2] == 0 and onelora.block[2] == 0  # nothing quadratic in the length (SDPA)
    per = {name: p.per_token("block", 512) for name, p in
           {"bitfit": bitfit, "onelora": onelora, "lora": lora, "full": full}.items()}
    # 1LoRA keeps sum(x): one bf16 scalar per token for each of the 7 adapted linears of a block
    assert per["onelora"] - per["bitfit"] == 7 * 2
    # LoRA's A keeps its input: the attention norm's output (shared by q, k, v), the MLP norm's output
    # (shared by gate, up) and down's input; o's input is SDPA's output, which attention keeps anyway
    assert per["lora"] - per["bitfit"] == 2 * (H + H + I) + 7 * 2  # + B's input A x (r = 1) per layer
    assert per["full"] > per["lora"]
    # the rest of the model (final norm, frozen lm_head, loss) is the same for every frozen-head method
    assert onelora.per_token("rest", 512) == pytest.approx(bitfit.per_token("rest", 512))


def test_dropout_keeps_a_mask_and_a_dropped_copy(cfg, arch, bases):
    lora = block(cfg, arch, bases, "lora").per_token("block", 512)
    dropped = block(cfg, arch, bases, "lora", dropout=0.05).per_token("block", 512)
    # each of the 7 layers draws its own mask (1 B, CUDA's fused dropout) and keeps its own dropped
    # input (2 B), in place of the shared undropped inputs LoRA kept without dropout
    inputs = 6 * H + I
    assert dropped - lora == 3 * inputs - 2 * (H + H + I)


def test_checkpointing_keeps_only_each_blocks_input(cfg, arch, bases):
    for method in ("onelora", "lora", "full"):
        ckpt = block(cfg, arch, bases, method, checkpointing=True)
        assert ckpt.per_token("block", 512) == 2 * H  # the bf16 hidden state entering the block


def test_fit_recovers_constant_linear_and_quadratic_terms():
    points = [(t, 7 + 3 * t + 0.5 * t * t) for t in (32, 64, 96)]
    assert mem._fit(points) == pytest.approx((7, 3, 0.5))


def test_a_constant_per_block_is_not_mistaken_for_a_per_token_cost(cfg, arch, bases):
    """VeRA keeps lambda_b * B (out x r) once per layer whatever the batch: a constant, not per token."""
    vera, bitfit = block(cfg, arch, bases, "vera"), block(cfg, arch, bases, "bitfit")
    assert vera.block[2] == pytest.approx(0, abs=1e-6) and vera.block[0] > 0
    assert vera.per_token("block", 512) >= bitfit.per_token("block", 512)


def test_budget_adds_the_terms_as_documented():
    counts = mem.Counts(total=1000, trainable=64, frozen=936)
    profile = mem.ActivationProfile(block=(50.0, 100.0, 0.5), rest=(5.0, 40.0, 0.0), tokens=(32, 64, 96))
    plain = mem.budget("m", "x", counts, profile, checkpointing=False, layers=3, hidden=8, vocab=10,
                       gpus=4, samples=2, seq=16)
    assert plain.weights == 2000 and plain.grads == 2 * 64 / 4 and plain.optimizer == 12 * 64 / 4
    assert plain.activations == (5 + 2 * 40 * 16) + 3 * (50 + 2 * (100 * 16 + 0.5 * 16**2))
    assert plain.loss_transient == 8 * 10 * 32
    assert plain.buckets == 2 * 2 * mem.ZERO2_BUCKET_ELEMENTS
    small = mem.ActivationProfile(block=(0.0, 16.0, 0.0), rest=(5.0, 40.0, 0.0), tokens=(32, 64, 96))
    ckpt = mem.budget("m", "x", counts, small, checkpointing=True, layers=3, hidden=8, vocab=10,
                      gpus=4, samples=2, seq=16, no_ckpt_block=profile)
    recomputed = 50 + 2 * (100 * 16 + 0.5 * 16**2)  # one block's full activations again
    assert ckpt.activations == (5 + 2 * 40 * 16) + 3 * (2 * 16 * 16) + recomputed


def test_verdict_names_the_difference_to_the_paper():
    def row(method, total):
        return mem.Budget(method, "llama2_13b", 1, total, 0, 0, 0, 0, 0)

    sizes = {"onelora": 30, "bitfit": 30, "difffit": 30, "lora_qkv": 30, "lora": 45}
    rows = {("llama2_13b", m, "configs", ck): row(m, s * mem.GIB) for m, s in sizes.items() for ck in (False, True)}
    rows[("llama2_13b", "lora", "configs", False)] = row("lora", 39 * mem.GIB)
    text = "\n".join(mem.verdict(rows, list(sizes)))
    assert "extra: ['lora']" in text and "does NOT fit (45.00 GiB)" in text


@pytest.mark.slow
def test_real_width_13b_block_measures(cfg):
    """One real 13B block (bf16, ~0.8 GB of weights): what reports/memory_llama.md is built from."""
    profile = mem.measure_activations(cfg, mem.method_spec(cfg, "onelora"), checkpointing=True)
    assert profile.per_token("block", 512) == 2 * 5120
    assert Path(mem.CONF).is_dir()
    assert torch.get_num_threads() == 1


@pytest.mark.slow
def test_the_plan_agrees_with_the_fitted_model_at_13b():
    """The LLaMA memory report comes from the plan; the fitted model (real CPU tensors of 1- and 2-block
    real-width models, extrapolated) is its cross-check: 13B 1LoRA's activations at 2 x 512 tokens."""
    from onelora.plan.paper import plan_all

    record = plan_all([mem.plan_configs("llama2_13b", "onelora", "mora")], cache_dir=None, log=lambda *a: None)
    planned = next(iter(record.values()))["bytes"]["activations"]
    assert planned == pytest.approx(mem.fitted_activations("llama2_13b", "onelora"), rel=0.01)
