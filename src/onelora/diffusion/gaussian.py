"""DiT's Gaussian diffusion: the noise schedule, the forward process and the training objective.

Follows facebookresearch/DiT's ``diffusion/`` (itself from OpenAI's improved-diffusion / ADM),
reimplemented: ``create_diffusion(timestep_respacing="")`` there is ``GaussianDiffusion.create()``
here. The defaults are DiT's: 1000 linear betas (1e-4 .. 0.02, scaled by 1000 / T for other T),
the model predicts the noise eps, and, when it outputs twice the input channels, also the
variance as an interpolation between the posterior's lower and upper bound (``LEARNED_RANGE``),
trained by the hybrid loss ``mse(eps) + vb`` with the variational-bound term seeing the predicted
mean through a stop-gradient (Nichol & Dhariwal's L_hybrid, DiT's ``LossType.MSE`` with learned
sigma). A model that outputs as many channels as the input gets DiT's fixed variance
(``FIXED_LARGE``) and the plain MSE.

Schedule tables are kept in float64 (as the original) and gathered per batch in float32.
Respacing (fewer sampling steps) keeps the model's own timestep numbers: a respaced process maps
its step ``i`` to the original step ``timestep_map[i]`` before the model sees it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

#: model_fn(x_t, t, y) -> (N, C or 2C, ...) ; t are the ORIGINAL process's timesteps
ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def linear_betas(num_timesteps: int = 1000) -> torch.Tensor:
    """Ho et al.'s linear schedule, extended to any T as DiT does: 1e-4 .. 0.02, both x 1000 / T."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int = 1000, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's ``squaredcos_cap_v2`` schedule (DiT offers it; not its default)."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    steps = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return torch.tensor(steps, dtype=torch.float64)


SCHEDULES = {"linear": linear_betas, "squaredcos_cap_v2": cosine_betas}


def space_timesteps(num_timesteps: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """The original steps a respaced process keeps (DiT's ``space_timesteps``), sorted.

    ``section_counts``: an int N (N evenly strided steps over the whole process, what DiT's
    ``create_diffusion(str(N))`` does), a list / comma string of counts per equal section, or
    ``"ddimN"`` (the DDIM paper's integer stride; only where one gives exactly N steps).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            wanted = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == wanted:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot make exactly {wanted} steps of {num_timesteps} with an integer stride")
        section_counts = [int(c) for c in section_counts.split(",")]
    if isinstance(section_counts, int):
        section_counts = [section_counts]
    size, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        length = size + (1 if i < extra else 0)
        if not 0 < count <= length:
            raise ValueError(f"cannot take {count} steps from a section of {length} (of {num_timesteps} steps)")
        stride = (length - 1) / (count - 1) if count > 1 else 1
        position = 0.0
        for _ in range(count):  # accumulated, not j * stride: the original's rounding, step for step
            kept.append(start + round(position))
            position += stride
        start += length
    return sorted(set(kept))


def _gather(table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """table[t] as float32 on t's device, shaped (N, 1, 1, ...) to broadcast against an ndim tensor."""
    values = table.to(t.device)[t].float()
    return values.reshape(-1, *([1] * (ndim - 1)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.ndim)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) for data in [-1, 1] quantised to 256 levels under N(means, e^(2 log_scales)), in nats.

    The decoder term of the variational bound at t = 0; the edge bins extend to +-infinity.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion:
    """A discrete diffusion process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), t = 0..T-1."""

    def __init__(self, betas: torch.Tensor | Sequence[float], *, timestep_map: Sequence[int] | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D sequence in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = torch.as_tensor(
            list(timestep_map) if timestep_map is not None else range(self.num_timesteps), dtype=torch.long
        )
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1).sqrt()
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the variance is 0 at t = 0: its log is clipped to the value at t = 1, as the original
        if self.num_timesteps > 1:
            self.posterior_log_variance_clipped = torch.log(
                torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
            )
        else:
            self.posterior_log_variance_clipped = torch.log(betas)
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        # DiT's FIXED_LARGE variance (for models without a learned sigma)
        fixed_large = torch.cat([self.posterior_variance[1:2], betas[1:]]) if self.num_timesteps > 1 else betas
        self.fixed_large_log_variance = torch.log(fixed_large)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, num_timesteps: int = 1000, schedule: str = "linear") -> "GaussianDiffusion":
        """DiT's training process: ``create_diffusion(timestep_respacing="")``."""
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {schedule!r}; known: {sorted(SCHEDULES)}")
        return cls(SCHEDULES[schedule](num_timesteps))

    def respace(self, steps: int | str | Sequence[int]) -> "GaussianDiffusion":
        """A process over a subset of this one's steps (DiT's ``SpacedDiffusion``) for faster sampling.

        New betas are chosen so that the kept steps have the same abar as here:
        beta_i = 1 - abar[k_i] / abar[k_{i-1}].
        """
        kept = space_timesteps(self.num_timesteps, steps)
        betas, last = [], 1.0
        for k in kept:
            abar = float(self.alphas_cumprod[k])
            betas.append(1.0 - abar / last)
            last = abar
        return GaussianDiffusion(betas, timestep_map=[int(self.timestep_map[k]) for k in kept])

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """This process's step indices -> the timesteps the model was trained with."""
        return self.timestep_map.to(t.device)[t]

    # -- forward process ----------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        return (_gather(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = _gather(self.posterior_mean_coef1, t, xt.ndim) * x0 + _gather(self.posterior_mean_coef2, t, xt.ndim) * xt
        return mean, _gather(self.posterior_variance, t, xt.ndim), _gather(self.posterior_log_variance_clipped, t, xt.ndim)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return _gather(self.sqrt_recip_alphas_cumprod, t, xt.ndim) * xt - _gather(self.sqrt_recipm1_alphas_cumprod, t, xt.ndim) * eps

    def predict_eps(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (_gather(self.sqrt_recip_alphas_cumprod, t, xt.ndim) * xt - x0) / _gather(self.sqrt_recipm1_alphas_cumprod, t, xt.ndim)

    # -- reverse process ----------------------------------------------------------------------
    def p_mean_variance(self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, *,
                        clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from a model output: eps (C channels), plus the variance fraction (C more).

        The learned variance interpolates log-variances: frac = (v + 1) / 2 between the posterior's
        (lower) and beta_t (upper). ``clip_denoised`` clamps the predicted x_0 to [-1, 1].
        """
        channels = xt.shape[1]
        if output.shape[1] == 2 * channels:
            eps, var_values = output.split(channels, dim=1)
            min_log = _gather(self.posterior_log_variance_clipped, t, xt.ndim)
            max_log = _gather(torch.log(self.betas), t, xt.ndim)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
        elif output.shape[1] == channels:
            eps = output
            log_variance = _gather(self.fixed_large_log_variance, t, xt.ndim).expand_as(xt)
        else:
            raise ValueError(f"model output has {output.shape[1]} channels; expected {channels} (eps) or "
                             f"{2 * channels} (eps and learned sigma) for inputs of {channels}")
        pred_x0 = self.predict_x0(xt, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(pred_x0, xt, t)
        return {"mean": mean, "log_variance": log_variance, "pred_x0": pred_x0, "eps": eps}

    # -- training objective -------------------------------------------------------------------
    def vb_terms(self, output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One step of the variational bound in bits per dimension, per sample:
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), and the decoder's -log p(x_0 | x_1) at t = 0."""
        true_mean, _, true_log_variance = self.q_posterior(x0, xt, t)
        out = self.p_mean_variance(output, xt, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, y: torch.Tensor, *,
                        t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-sample losses at uniformly drawn steps: ``mse`` (eps), ``vb`` (learned sigma only), ``loss``.

        As DiT: the vb term sees the predicted eps through a stop-gradient, so it trains only the
        variance, and the MSE alone trains the mean.
        """
        if t is None:
            t = _randint(self.num_timesteps, x0.shape[0], generator, x0.device)
        if noise is None:
            noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        xt = self.q_sample(x0, t, noise)
        output = model_fn(xt, self.model_timesteps(t), y)
        channels = x0.shape[1]
        terms: dict[str, torch.Tensor] = {}
        if output.shape[1] == 2 * channels:
            eps, var_values = output.split(channels, dim=1)
            terms["vb"] = self.vb_terms(torch.cat([eps.detach(), var_values], dim=1), x0, xt, t)
        elif output.shape[1] == channels:
            eps = output
        else:
            raise ValueError(f"model output has {output.shape[1]} channels; expected {channels} or {2 * channels}")
        terms["mse"] = mean_flat((noise - eps) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms


def diffusion_loss(model_fn: ModelFn, x0: torch.Tensor, y: torch.Tensor, *,
                   diffusion: GaussianDiffusion | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiT's training loss on a batch (the mean of :meth:`GaussianDiffusion.training_losses`)."""
    diffusion = diffusion or GaussianDiffusion.create()
    return diffusion.training_losses(model_fn, x0, y, generator=generator)["loss"].mean()


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise; drawn on the generator's device (so a seed gives the same numbers), then moved."""
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    if generator is None:
        return torch.randint(0, high, (n,), device=device)
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)
