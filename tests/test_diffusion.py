"""DiT's diffusion: schedule, forward process, the hybrid loss, DDPM / DDIM, guidance, EMA."""

from __future__ import annotations

import math

import pytest
import torch

from onelora.diffusion import EMA, GaussianDiffusion, diffusion_loss, guided, linear_betas, sample, space_timesteps
from onelora.models.dit import DiT


def tiny_pixel_dit(num_classes: int = 3, seed: int = 0, **arch) -> DiT:
    torch.manual_seed(seed)
    sizes = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                 class_dropout_prob=0.1, learn_sigma=True, patch_embed="linear")
    return DiT(num_classes=num_classes, **{**sizes, **arch})


def test_linear_schedule_is_dits():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64 and len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert linear_betas(500)[-1].item() == pytest.approx(0.04)  # scaled by 1000 / T, as DiT
    d = GaussianDiffusion.create()
    assert d.alphas_cumprod[-1].item() == pytest.approx(math.prod(1 - b for b in betas.tolist()), rel=1e-9)
    assert d.alphas_cumprod[-1].item() < 5e-5  # x_T is almost pure noise


def test_space_timesteps():
    assert space_timesteps(1000, 1000) == list(range(1000))
    kept = space_timesteps(1000, 50)
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == 999
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert len(space_timesteps(300, "10,15,20")) == 45
    with pytest.raises(ValueError, match="cannot take 20 steps"):
        space_timesteps(10, 20)


def test_respacing_keeps_alpha_bar_and_maps_timesteps():
    d = GaussianDiffusion.create()
    spaced = d.respace(25)
    kept = torch.tensor(space_timesteps(1000, 25))
    assert torch.allclose(spaced.alphas_cumprod, d.alphas_cumprod[kept])
    assert spaced.model_timesteps(torch.tensor([0, 24])).tolist() == [0, 999]


def test_q_sample_statistics():
    d = GaussianDiffusion.create()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    for step in (0, 300, 999):
        t = torch.full((20000,), step)
        xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        abar = d.alphas_cumprod[step].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.02)
        assert xt.var().item() == pytest.approx(1 - abar, abs=0.02 + 0.02 * (1 - abar))


def test_hybrid_loss_terms():
    """mse is on eps; the vb term trains only the sigma channels (stop-gradient on the mean)."""
    d = GaussianDiffusion.create()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    output = torch.cat([noise, torch.zeros_like(x0)], 1).requires_grad_(True)  # perfect eps, mid-range sigma
    terms = d.training_losses(lambda x, tt, y: output, x0, torch.zeros(4, dtype=torch.long), t=t, noise=noise)
    assert torch.allclose(terms["mse"], torch.zeros(4))
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    # exact means: the KL is the variance mismatch alone, which vanishes where beta_t ~ the posterior's
    assert (terms["vb"] >= 0).all() and (terms["vb"][:2] > 1e-3).all() and terms["vb"][3] < 1e-6
    terms["vb"].sum().backward()
    assert output.grad[:, :1].abs().max() == 0 and output.grad[:, 1:].abs().max() > 0
    # fixed sigma (C output channels): the loss is the eps MSE alone
    fixed = d.training_losses(lambda x, tt, y: torch.zeros_like(x), x0, torch.zeros(4, dtype=torch.long), t=t, noise=noise)
    assert "vb" not in fixed and torch.allclose(fixed["loss"], (noise**2).mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        d.training_losses(lambda x, tt, y: torch.zeros(4, 3, 4, 4), x0, torch.zeros(4, dtype=torch.long))


def test_loss_decreases_on_a_fixed_batch():
    model = tiny_pixel_dit(class_dropout_prob=0.0)
    d = GaussianDiffusion.create()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(16, 1, 8, 8, generator=g) > 0.5).float() * 2 - 1
    y = torch.arange(16) % 3
    t, noise = torch.randint(0, 1000, (16,), generator=g), torch.randn(x0.shape, generator=g)

    def fixed_loss() -> torch.Tensor:
        return d.training_losses(model, x0, y, t=t, noise=noise)["loss"].mean()

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    before = fixed_loss().item()
    for _ in range(40):
        loss = diffusion_loss(model, x0, y, diffusion=d, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.dim() == 0
    assert fixed_loss().item() < 0.7 * before


def true_eps_model(d: GaussianDiffusion, x0: torch.Tensor, learn_sigma: bool = True):
    """The exact eps for data that is the single point x0; it must be given the ORIGINAL timesteps."""

    def fn(xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        abar = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1) if learn_sigma else eps

    return fn


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_samplers_recover_x0_with_the_true_eps(method):
    d = GaussianDiffusion.create()
    x0 = torch.linspace(-0.9, 0.9, 16).view(1, 1, 4, 4)
    labels = torch.zeros(3, dtype=torch.long)
    out = sample(true_eps_model(d, x0), (3, 1, 4, 4), labels, diffusion=d, steps=20, method=method,
                 generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, x0.expand(3, -1, -1, -1), atol=1e-3)


def test_sampling_shape_and_determinism():
    model = tiny_pixel_dit().eval()
    d = GaussianDiffusion.create()
    labels = torch.tensor([0, 1, 2, 0])

    def draw(seed: int, method: str = "ddim", **kw) -> torch.Tensor:
        return sample(model, (4, 1, 8, 8), labels, diffusion=d, steps=5, method=method,
                      generator=torch.Generator().manual_seed(seed), **kw)

    a = draw(0)
    assert a.shape == (4, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, draw(0)) and not torch.equal(a, draw(1))
    assert torch.equal(draw(3, "ddpm"), draw(3, "ddpm")) and not torch.equal(draw(3, "ddpm"), draw(4, "ddpm"))
    assert torch.equal(draw(5, eta=1.0), draw(5, eta=1.0)) and not torch.equal(draw(5, eta=1.0), draw(5))
    with pytest.raises(ValueError, match="unknown sampler"):
        draw(0, "euler")


def perturbed(model: DiT) -> DiT:
    """adaLN-Zero starts with a zero output layer: perturb it so outputs depend on the label."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_cfg_scale_one_is_the_conditional_model():
    model = perturbed(tiny_pixel_dit())
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([5, 50, 500, 999]), torch.tensor([0, 1, 2, 1])
    cond = model(x, t, y)
    assert guided(model, 1.0, 3, channels=1) is model
    # the guided formula itself at scale 1 (the shortcut is not taken for a scale of 1.0 + 0)
    unshortcut = guided(model, 1.0 + 1e-12, 3, channels=1)(x, t, y)
    assert torch.allclose(unshortcut, cond, atol=1e-5)
    strong = guided(model, 4.0, 3, channels=1)(x, t, y)
    uncond = model(x, t, torch.full_like(y, 3))
    assert torch.allclose(strong[:, :1], uncond[:, :1] + 4.0 * (cond[:, :1] - uncond[:, :1]), atol=1e-5)
    assert torch.allclose(strong[:, 1:], cond[:, 1:], atol=1e-6)  # sigma from the conditional pass
    with pytest.raises(ValueError, match="null label"):
        guided(model, 2.0, None, channels=1)


def test_cfg_matches_dits_forward_with_cfg():
    """guided_channels=3 reproduces the original's guidance of 3 of its 4 latent channels."""
    model = perturbed(tiny_pixel_dit(in_channels=4, patch_embed="conv"))
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.tensor([2, 0])
    ours = guided(model, 1.5, 3, channels=4, guided_channels=3)(x, t, y)
    original = model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.tensor([2, 0, 3, 3]), 1.5)[:2]
    assert torch.allclose(ours, original, atol=1e-5)


def test_ema_tracks_trainable_parameters_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)
    ema = EMA(model, decay=0.9)
    assert set(ema.shadow) == {"1.weight", "1.bias"}
    start = model[1].weight.detach().clone()
    with torch.no_grad():
        model[1].weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["1.weight"], start + 0.1)  # 0.9 * old + 0.1 * new
    trained = model[1].weight.detach().clone()
    with ema.swapped(model):
        assert torch.allclose(model[1].weight, start + 0.1)
    assert torch.equal(model[1].weight, trained)
    state = ema.state_dict()
    other = EMA(model, decay=0.5)
    other.load_state_dict(state)
    assert other.decay == 0.9 and other.num_updates == 1 and torch.equal(other.shadow["1.weight"], ema.shadow["1.weight"])
    ema.copy_to(model)
    assert torch.allclose(model[1].weight, start + 0.1)
    warm = EMA(model, decay=0.9999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)
