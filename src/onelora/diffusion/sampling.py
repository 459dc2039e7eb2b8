"""Sampling from a trained denoiser: DDPM (ancestral) and DDIM, with classifier-free guidance.

As DiT's ``p_sample_loop`` / ``ddim_sample_loop`` on a respaced process (``create_diffusion(str(N))``):
the model sees the original timesteps. DDPM uses the learned variance when the model outputs one
(else DiT's fixed "large" variance); DDIM uses only eps, with ``eta`` scaling its noise (0:
deterministic). Every random draw comes from ``generator``, so a seed fixes the samples.

Classifier-free guidance evaluates the model on the batch twice, once with the real labels and once
with the null label (the class table's extra row), and moves eps away from the unconditional
prediction: eps = eps_u + s (eps_c - eps_u). The variance channels come from the conditional pass.
DiT's own ``forward_with_cfg`` guides only the first 3 channels of its 4 latent channels ("for
exact reproducibility" of its FID); ``guided_channels=3`` does the same, ``None`` guides every eps
channel (needed for models with fewer than 3 channels, e.g. 1-channel digits).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .gaussian import GaussianDiffusion, ModelFn, _gather, _randn

SAMPLERS = ("ddim", "ddpm")


def guided(model_fn: ModelFn, cfg_scale: float, null_label: int | None, *, channels: int,
           guided_channels: int | None = None) -> ModelFn:
    """``model_fn`` with classifier-free guidance of scale ``cfg_scale`` (1: the conditional model).

    ``channels`` is the number of eps channels (the input's); ``guided_channels`` how many of them
    are guided (None: all).
    """
    if cfg_scale == 1.0:
        return model_fn
    if null_label is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs the model's null label "
                         "(the class table's extra row, = num_classes); the model has none")
    k = channels if guided_channels is None else min(int(guided_channels), channels)

    def fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
        cond, uncond = out.chunk(2)
        eps = uncond[:, :k] + cfg_scale * (cond[:, :k] - uncond[:, :k])
        return torch.cat([eps, cond[:, k:]], dim=1)

    return fn


@torch.no_grad()
def sample(model_fn: ModelFn, shape: Sequence[int], labels: torch.Tensor, *, diffusion: GaussianDiffusion,
           steps: int | str | None = 50, method: str = "ddim", eta: float = 0.0, cfg_scale: float = 1.0,
           null_label: int | None = None, guided_channels: int | None = None, clip_denoised: bool = False,
           generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Draw ``shape`` samples (in the model's space: pixels or latents) for ``labels``.

    ``diffusion`` is the training process; ``steps`` respaces it (None: every step).
    ``clip_denoised`` clamps predicted x_0 to [-1, 1] (pixel space; DiT samples latents unclipped).
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}")
    if method == "ddpm" and eta != 0.0:
        raise ValueError("eta applies to the ddim sampler only")
    process = diffusion.respace(steps) if steps is not None else diffusion
    device = labels.device
    x = _randn(shape, generator, device) if noise is None else noise.to(device)
    fn = guided(model_fn, cfg_scale, null_label, channels=shape[1], guided_channels=guided_channels)
    for i in reversed(range(process.num_timesteps)):
        t = torch.full((shape[0],), i, device=device, dtype=torch.long)
        out = process.p_mean_variance(fn(x, process.model_timesteps(t), labels), x, t, clip_denoised=clip_denoised)
        if method == "ddpm":
            x = out["mean"]
            if i > 0:
                x = x + torch.exp(0.5 * out["log_variance"]) * _randn(x.shape, generator, device)
        else:
            x = _ddim_step(process, out["pred_x0"], x, t, eta, generator)
    return x


def _ddim_step(process: GaussianDiffusion, pred_x0: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
               eta: float, generator: torch.Generator | None) -> torch.Tensor:
    """DDIM's update (Song et al., eq. 12) from the predicted x_0 (eps re-derived from it, as DiT)."""
    eps = process.predict_eps(x, t, pred_x0)
    abar = _gather(process.alphas_cumprod, t, x.ndim)
    abar_prev = _gather(process.alphas_cumprod_prev, t, x.ndim)
    sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
    mean = pred_x0 * abar_prev.sqrt() + torch.sqrt(1 - abar_prev - sigma**2) * eps
    if eta > 0 and int(t[0]) > 0:
        mean = mean + sigma * _randn(x.shape, generator, x.device)
    return mean
