"""The image autoencoder of latent diffusion, as a task part: pixel space or a frozen diffusers VAE.

DiT trains on Stable Diffusion's VAE latents (``stabilityai/sd-vae-ft-ema`` or ``-mse``; 8x
downsampling, 4 channels) multiplied by 0.18215; the laptop-sized digits task works in pixel space.
Both are the same interface (``encode`` / ``decode`` / ``latent_shape``), picked by one config value:
``build_vae(None)`` (or ``"identity"``) is pixel space, anything else names the VAE's weights (a
local ``save_pretrained`` directory or a hub id). The VAE is frozen and kept in eval mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .weights import MissingWeightsError, load_directory

#: short names for the two VAEs DiT was trained with
KNOWN_VAES = {
    "ema": "stabilityai/sd-vae-ft-ema",
    "mse": "stabilityai/sd-vae-ft-mse",
    "sd-vae-ft-ema": "stabilityai/sd-vae-ft-ema",
    "sd-vae-ft-mse": "stabilityai/sd-vae-ft-mse",
}
#: the latent scale DiT's train.py and sample.py use for both VAEs
DIT_LATENT_SCALE = 0.18215


class IdentityVAE(nn.Module):
    """Pixel space: encode and decode return their input."""

    is_identity = True
    cache_key = "identity"
    downsample = 1

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(image_shape)


class DiffusersVAE(nn.Module):
    """A frozen diffusers ``AutoencoderKL``; latents are posterior samples x ``scale`` (DiT's recipe)."""

    is_identity = False

    def __init__(self, autoencoder: nn.Module, *, scale: float = DIT_LATENT_SCALE, source: str = "custom"):
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale = float(scale)
        self.source = str(source)
        config = autoencoder.config
        self.latent_channels = int(config.latent_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)

    @property
    def cache_key(self) -> str:
        """What latents depend on: the weights' source and the scale (the latent-cache key)."""
        return f"{self.source}|scale={self.scale}"

    def train(self, mode: bool = True) -> "DiffusersVAE":
        return super().train(False)  # frozen: never leaves eval mode

    @torch.no_grad()
    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the posterior, unscaled (what the latent cache stores)."""
        posterior = self.autoencoder.encode(images).latent_dist
        return posterior.mean, posterior.std

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, std = self.moments(images)
        noise = torch.randn(mean.shape, generator=generator, device=generator.device if generator else mean.device)
        return (mean + std * noise.to(mean.device, mean.dtype)) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents / self.scale).sample

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        *lead, _, h, w = image_shape
        return (*lead, self.latent_channels, h // self.downsample, w // self.downsample)


def build_vae(source: str | None = None, *, scale: float = DIT_LATENT_SCALE, subfolder: str | None = None) -> nn.Module:
    """The task part ``vae``: ``None`` / ``"identity"`` for pixel space, else a frozen AutoencoderKL.

    ``source``: a local directory written by ``save_pretrained`` (``config.json`` + weights), a hub
    id (``stabilityai/sd-vae-ft-ema``; read from the Hugging Face cache, the hub only when it may be
    asked), or a short name (``ema``, ``mse``, ``sd-vae-ft-ema``, ``sd-vae-ft-mse``).
    """
    if source is None or str(source).lower() in ("identity", "none", "pixel"):
        return IdentityVAE()
    from diffusers import AutoencoderKL

    source = KNOWN_VAES.get(str(source), str(source))
    kwargs = {"subfolder": subfolder} if subfolder else {}
    path = Path(source).expanduser()
    local = source.startswith(("/", "./", "../", "~")) or path.exists()
    if local:
        if not (path / (subfolder or "") / "config.json").is_file():
            raise _missing(source, f"{path / (subfolder or '')} (a directory with config.json and the weights)")
        try:
            vae = load_directory(lambda: AutoencoderKL.from_pretrained(str(path), **kwargs), path / (subfolder or ""))
        except (OSError, ValueError) as err:
            raise _missing(source, str(path), err) from err
        return DiffusersVAE(vae, scale=scale, source=str(path.resolve()))
    try:
        vae = AutoencoderKL.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as cached_err:
        from huggingface_hub import constants

        where = f"the Hugging Face cache ({constants.HF_HUB_CACHE}) for '{source}'"
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            raise _missing(source, f"{where}; HF_HUB_OFFLINE is set, so not the hub", cached_err) from None
        try:
            vae = AutoencoderKL.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            raise _missing(source, f"{where} and the hub", err) from err
    return DiffusersVAE(vae, scale=scale, source=source)


def _missing(source: str, tried: str, cause: BaseException | None = None) -> MissingWeightsError:
    reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})" if cause and str(cause) else ""
    hub_id = source if not source.startswith(("/", "./", "../", "~")) else "stabilityai/sd-vae-ft-ema"
    return MissingWeightsError(
        f"VAE weights '{source}' not found: looked in {tried}{reason}. To get them, on a machine with internet run "
        f"`huggingface-cli download {hub_id} --local-dir <dir>` (DiT uses stabilityai/sd-vae-ft-ema or "
        f"stabilityai/sd-vae-ft-mse), then set `task.parts.vae.source=<dir>`; or `task.parts.vae.source=null` "
        f"for pixel space."
    )
