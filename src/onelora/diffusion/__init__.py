"""DiT's Gaussian diffusion (training loss, DDPM / DDIM sampling with classifier-free guidance) and EMA."""

from .ema import EMA
from .gaussian import (
    GaussianDiffusion,
    cosine_betas,
    diffusion_loss,
    discretized_gaussian_log_likelihood,
    linear_betas,
    normal_kl,
    space_timesteps,
)
from .sampling import SAMPLERS, guided, sample

__all__ = [
    "EMA",
    "GaussianDiffusion",
    "SAMPLERS",
    "cosine_betas",
    "diffusion_loss",
    "discretized_gaussian_log_likelihood",
    "guided",
    "linear_betas",
    "normal_kl",
    "sample",
    "space_timesteps",
]
