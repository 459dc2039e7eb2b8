"""Adapter checkpoints: save_adapter / load_adapter (safetensors + JSON) round trips on a small ViT."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from onelora.adapters import AdapterConfigError, adapted_layers, inject, load_adapter, save_adapter
from onelora.adapters.state import CONFIG_NAME, WEIGHTS_NAME

from adapter_cases import HEAD, METHODS, spec_of, tiny_vit

# fixed (non-trainable) tensors an adapter must carry in its checkpoint
FIXED = {"onelora_random": ["onelora_c"], "vera": ["vera_A", "vera_B"]}


def images(seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def trained(method: str, **inject_kwargs) -> nn.Module:
    model = tiny_vit()
    inject(model, spec_of(method), head=HEAD, **inject_kwargs)
    perturb(model)
    return model


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_into_fresh_model(method, tmp_path):
    model = trained(method)
    x = images()
    with torch.no_grad():
        expected = model(x)
    save_adapter(tmp_path, model)
    assert (tmp_path / WEIGHTS_NAME).is_file() and (tmp_path / CONFIG_NAME).is_file()
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["method"]["name"] == method

    # the checkpoint holds the trainable tensors and the adapters' fixed tensors, nothing frozen
    saved = load_file(str(tmp_path / WEIGHTS_NAME))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    fixed = {f"{n}.{t}" for n, _ in adapted_layers(model) for t in FIXED.get(METHODS[method].get("linear"), [])}
    assert set(saved) == trainable | fixed

    fresh = tiny_vit()
    report = load_adapter(tmp_path, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    assert report.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == trainable
    # loading again into the now-adapted model (same method) is fine
    load_adapter(tmp_path, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_loaded_adapter_differs_from_fresh_injection(tmp_path):
    """Guard: the round trip really carries the trained values."""
    model = trained("lora")
    save_adapter(tmp_path, model)
    fresh = tiny_vit()
    inject(fresh, spec_of("lora"), head=HEAD)
    x = images()
    with torch.no_grad():
        before = fresh(x)
        load_adapter(tmp_path, fresh)
        after = fresh(x)
        assert not torch.allclose(before, after)
        assert torch.equal(after, model(x))


def test_load_into_other_method_errors(tmp_path):
    save_adapter(tmp_path, trained("onelora"))
    other = tiny_vit()
    inject(other, spec_of("lora"), head=HEAD)
    with pytest.raises(AdapterConfigError, match="adapted with 'lora'.*holds 'onelora'"):
        load_adapter(tmp_path, other)
    # same name, other options
    save_adapter(tmp_path / "r", trained("onelora_random"))
    other = tiny_vit()
    inject(other, {"name": "onelora_random", "linear": "onelora_random", "options": {"seed": 4}}, head=HEAD)
    with pytest.raises(AdapterConfigError, match="onelora_random"):
        load_adapter(tmp_path / "r", other)


def test_an_adapter_loads_across_implementations_of_the_same_update(tmp_path):
    """main: "model is adapted with 'onelora', the checkpoint holds 'onelora'" for a fused adapter
    loaded into a model injected with impl=autograd: both compute W0 x + b sum(x) from the same b."""
    model = trained("onelora")
    assert model.onelora_method.options.get("impl", "fused") == "fused"
    save_adapter(tmp_path, model)
    other = tiny_vit()
    inject(other, {"name": "onelora", "linear": "onelora", "options": {"impl": "autograd"}}, head=HEAD)
    load_adapter(tmp_path, other)
    assert all(layer.impl == "autograd" for _, layer in adapted_layers(other))
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x))
    # an option that changes the update is named, with both values
    save_adapter(tmp_path / "r1", trained("lora"))
    wider = tiny_vit()
    inject(wider, {"name": "lora", "linear": "lora", "options": {"r": 2, "alpha": 1.0}}, head=HEAD)
    with pytest.raises(AdapterConfigError, match=r"differ in method\.options\.r: 2 vs 1 \(model vs checkpoint\)"):
        load_adapter(tmp_path / "r1", wider)


def test_onelora_random_vector_travels_with_adapter(tmp_path):
    model = trained("onelora_random")
    with torch.no_grad():  # a vector no generator would give: the load must take it from the file
        for _, layer in adapted_layers(model):
            layer.onelora_c.copy_(torch.linspace(-1, 1, layer.in_features))
    save_adapter(tmp_path, model)
    fresh = tiny_vit()
    load_adapter(tmp_path, fresh)
    for (_, a), (_, b) in zip(adapted_layers(model), adapted_layers(fresh)):
        assert torch.equal(a.onelora_c, b.onelora_c)
    x = images()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_custom_target_sets_round_trip(tmp_path):
    sets = {"attn": {"include": [r".*\.attn\.(qkv|proj)"]}}
    model = tiny_vit()
    inject(model, {"name": "lora_attn", "linear": "lora", "targets": "attn", "options": {"r": 1}}, target_sets=sets, head=HEAD)
    perturb(model)
    x = images()
    with torch.no_grad():
        expected = model(x)
    # passed explicitly
    save_adapter(tmp_path / "explicit", model, target_sets=sets)
    fresh = tiny_vit()
    load_adapter(tmp_path / "explicit", fresh)
    assert sorted(n for n, _ in adapted_layers(fresh)) == sorted(n for n, _ in adapted_layers(model))
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    # not passed: the sets the model was adapted with are recorded
    save_adapter(tmp_path / "implicit", model)
    fresh = tiny_vit()
    load_adapter(tmp_path / "implicit", fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_adapter(tmp_path / "nothing", tiny_vit())
    with pytest.raises(AdapterConfigError, match="not adapted"):
        save_adapter(tmp_path / "plain", tiny_vit())

    save_adapter(tmp_path, trained("onelora"))
    weights = tmp_path / WEIGHTS_NAME
    tensors = load_file(str(weights))
    # a tensor of the wrong shape
    bad = dict(tensors)
    bad["blocks.0.attn.qkv.onelora_b"] = torch.zeros(7)
    save_file(bad, str(weights))
    with pytest.raises(AdapterConfigError, match=r"blocks\.0\.attn\.qkv\.onelora_b: shape"):
        load_adapter(tmp_path, tiny_vit())
    # a missing tensor
    bad = dict(tensors)
    del bad["blocks.1.mlp.fc2.onelora_b"]
    save_file(bad, str(weights))
    with pytest.raises(AdapterConfigError, match=r"missing tensors \['blocks\.1\.mlp\.fc2\.onelora_b'\]"):
        load_adapter(tmp_path, tiny_vit())
    model = tiny_vit()
    load_adapter(tmp_path, model, strict=False)  # non-strict loads what is there
    assert torch.equal(model.blocks[0].attn.qkv.onelora_b, tensors["blocks.0.attn.qkv.onelora_b"])


def test_loaded_model_trains_like_the_original(tmp_path):
    model = trained("onelora+bias")
    save_adapter(tmp_path, model)
    fresh = tiny_vit()
    load_adapter(tmp_path, fresh)
    x = images()
    for m in (model, fresh):
        m(x).square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    fresh_grads = {n: p.grad for n, p in fresh.named_parameters() if p.grad is not None}
    assert grads.keys() == fresh_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(fresh_grads[n], grads[n], rtol=0, atol=0)


def test_save_does_not_alias_the_model(tmp_path):
    model = trained("onelora")
    save_adapter(tmp_path, model)
    snapshot = copy.deepcopy(load_file(str(tmp_path / WEIGHTS_NAME)))
    with torch.no_grad():
        model.blocks[0].attn.qkv.onelora_b.add_(1.0)
    assert torch.equal(load_file(str(tmp_path / WEIGHTS_NAME))["blocks.0.attn.qkv.onelora_b"], snapshot["blocks.0.attn.qkv.onelora_b"])


def test_merged_model_is_refused(tmp_path):
    """A merged layer holds gamma-scaled biases: saving them would apply gamma twice on load."""
    from onelora.adapters import merge, unmerge

    model = trained("difffit")
    x = images()
    with torch.no_grad():
        expected = model(x)
    merge(model)
    with pytest.raises(AdapterConfigError, match="merged; call unmerge"):
        save_adapter(tmp_path, model)
    unmerge(model)
    save_adapter(tmp_path, model)
    fresh = tiny_vit()
    load_adapter(tmp_path, fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=1e-5)
    merge(fresh)
    with pytest.raises(AdapterConfigError, match="merged; call unmerge"):
        load_adapter(tmp_path, fresh)


@pytest.mark.parametrize("method,option,values", [
    ("onelora", "impl", ("fused", "autograd")),
    ("onelora_random", "impl", ("fused", "autograd")),
    ("onelora+bias+gamma", "impl", ("fused", "autograd")),
    ("dora", "keep_output", (False, True)),
])
def test_checkpoints_load_into_either_way_of_computing(method, option, values, tmp_path):
    """An adapter saved with ``impl=fused`` loads into ``impl=autograd`` and back (DoRA: with and
    without ``keep_output``): those options change how a layer computes, not what it stores. Both
    give the saved model's outputs, merged or not."""
    from onelora.adapters import MethodSpec, merge

    x = images()
    for saved_value, loaded_value in (values, values[::-1]):
        spec = {"name": method, **METHODS[method]}
        spec["options"] = {**spec.get("options", {}), option: saved_value}
        model = tiny_vit()
        inject(model, MethodSpec.from_config(spec), head=HEAD)
        perturb(model)
        with torch.no_grad():
            expected = model(x)
        save_adapter(tmp_path / str(saved_value), model)
        fresh = tiny_vit()
        inject(fresh, MethodSpec.from_config({**spec, "options": {**spec["options"], option: loaded_value}}), head=HEAD)
        load_adapter(tmp_path / str(saved_value), fresh)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), expected, rtol=1e-5, atol=1e-5)
            merge(fresh)
            torch.testing.assert_close(fresh(x), expected, rtol=1e-5, atol=1e-5)
    other = tiny_vit()
    inject(other, MethodSpec.from_config({**spec, "bias": not spec.get("bias")}), head=HEAD)
    with pytest.raises(AdapterConfigError, match=r"differ in method\.bias: "):
        load_adapter(tmp_path / str(values[0]), other)
