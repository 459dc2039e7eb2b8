"""Class-conditional image generation with a DiT: DiT's diffusion objective, EMA weights, FID.

Training: DiT's loss (eps MSE + the variational-bound term for the learned sigma) on VAE latents
(from the batch's ``latent`` when the data module cached them, else the VAE encodes ``image``; the
identity VAE is pixel space); the class dropout that trains the null label for classifier-free
guidance lives in the model. After each optimizer step an EMA of the trained parameters is updated
(DiT samples with its EMA weights).

Evaluation: each validation round draws ``fid_samples`` samples with the EMA weights (class labels
balanced, the same seed every round, so rounds differ only by the weights) and logs ``val/fid``
against the validation loader's real images, whose features are computed once and kept. Test does
the same with ``test_fid_samples`` against the test loader's images and logs ``test/fid``.
``artifacts(run_dir)`` saves and draws a sample grid, one row per class (onelora.figures.samples).
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..diffusion import EMA, SAMPLERS, GaussianDiffusion, sample
from ..metrics.fid import fid_metric
from ..models.vae import IdentityVAE
from .base import FineTuneModule

EMA_KEY = "onelora_ema"


def model_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) a DiT denoises, from its patch embedding."""
    embed = model.x_embedder  # type: ignore[attr-defined]
    side = math.isqrt(int(embed.num_patches)) * int(embed.patch_size[0])
    return int(model.in_channels), side, side  # type: ignore[attr-defined]


class GenerationModule(FineTuneModule):
    def __init__(
        self,
        model: nn.Module,
        *,
        fid_features: nn.Module | None,
        vae: nn.Module | None = None,
        num_classes: int | None = None,
        diffusion_steps: int = 1000,
        noise_schedule: str = "linear",
        sampler: str = "ddim",
        sample_steps: int | None = 50,
        eta: float = 0.0,
        cfg_scale: float = 1.0,
        guided_channels: int | None = None,
        clip_denoised: bool | None = None,
        fid_samples: int = 500,
        test_fid_samples: int | None = None,
        sample_batch_size: int = 500,
        sample_seed: int = 0,
        ema_decay: float | None = 0.9999,
        ema_warmup: bool = False,
        grid_columns: int = 8,
        grid_classes: int = 16,
        **base_kwargs: Any,
    ):
        """
        ``sampler`` ddim | ddpm with ``sample_steps`` (None: all ``diffusion_steps``); ``eta`` for
        DDIM; ``cfg_scale`` classifier-free guidance (1: none), ``guided_channels`` as DiT's
        ``forward_with_cfg`` (3) or all eps channels (None); ``clip_denoised`` None: clip predicted
        x_0 in pixel space, not in latent space (DiT). ``ema_decay`` None: no EMA (sample with the
        trained weights). ``test_fid_samples`` None: ``fid_samples``. ``fid_features`` None: a module
        that trains but cannot evaluate (``mode=plan`` traces training steps without the task's parts).
        """
        super().__init__(model, **base_kwargs)
        if sampler not in SAMPLERS:
            raise ValueError(f"task.module.sampler must be one of {SAMPLERS}, got {sampler!r}")
        table = getattr(getattr(model, "y_embedder", None), "embedding_table", None)
        model_classes = getattr(getattr(model, "y_embedder", None), "num_classes", None)
        self.num_classes = int(num_classes if num_classes is not None else model_classes)
        if model_classes is not None and int(model_classes) != self.num_classes:
            raise ValueError(f"task.module.num_classes={self.num_classes} but the model's class table has "
                             f"{model_classes} classes (task.model_args.num_classes)")
        self.null_label = self.num_classes if table is not None and table.num_embeddings > self.num_classes else None
        self.vae = vae if vae is not None else IdentityVAE()
        self.diffusion = GaussianDiffusion.create(diffusion_steps, noise_schedule)
        self.sampler, self.sample_steps, self.eta = sampler, sample_steps, float(eta)
        self.cfg_scale, self.guided_channels = float(cfg_scale), guided_channels
        pixel_space = bool(getattr(self.vae, "is_identity", False))
        self.clip_denoised = pixel_space if clip_denoised is None else bool(clip_denoised)
        self.fid_samples = int(fid_samples)
        self.test_fid_samples = int(test_fid_samples or fid_samples)
        self.sample_batch_size, self.sample_seed = int(sample_batch_size), int(sample_seed)
        self.ema_decay, self.ema_warmup = ema_decay, bool(ema_warmup)
        self.grid_columns, self.grid_classes = int(grid_columns), int(grid_classes)
        no_fid = fid_features is None
        self.val_fid = None if no_fid else fid_metric(fid_features, reset_real_features=False)  # real features: once per run
        self.test_fid = None if no_fid else fid_metric(fid_features)
        self.ema: EMA | None = None
        self._pending_ema: dict[str, Any] | None = None
        self._val_real_ready = False
        self.fid_counts: dict[str, dict[str, int]] = {}  # images behind the last FID of each stage
        self._collect_val_real = False

    # -- EMA ------------------------------------------------------------------------------------
    def ensure_ema(self) -> EMA | None:
        """The EMA of the trained parameters, made on first use (after the method froze the rest)."""
        trained = any(p.requires_grad for p in self.model.parameters())  # none: the model evaluated as loaded
        if self.ema is None and self.ema_decay is not None and trained:
            self.ema = EMA(self.model, float(self.ema_decay), warmup=self.ema_warmup)
        if self.ema is not None and self._pending_ema is not None:
            self.ema.load_state_dict(self._pending_ema)
            self._pending_ema = None
        return self.ema

    def on_fit_start(self) -> None:
        self.ensure_ema()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        ema = self.ensure_ema()
        if ema is not None:
            ema.update(self.model)

    def on_fit_end(self) -> None:
        """After training the model holds its EMA weights: what DiT releases and samples with, and
        what pre-training saves."""
        ema = self.ensure_ema()
        if ema is not None:
            ema.copy_to(self.model)

    @contextmanager
    def sampling_weights(self) -> Iterator[nn.Module]:
        """The model in eval mode with the EMA weights swapped in (its own restored afterwards)."""
        ema = self.ensure_ema()
        was_training = self.model.training
        self.model.eval()
        try:
            with ema.swapped(self.model) if ema is not None else nullcontext(self.model):
                yield self.model
        finally:
            self.model.train(was_training)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.ema is not None:
            checkpoint[EMA_KEY] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if EMA_KEY in checkpoint and self.ema_decay is not None:
            self._pending_ema = checkpoint[EMA_KEY]
            if self.ema is not None:
                self.ensure_ema()

    # -- training -------------------------------------------------------------------------------
    def latents(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "latent" in batch:
            return batch["latent"]
        return self.vae.encode(batch["image"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.diffusion.training_losses(self.model, self.latents(batch), batch["label"])
        loss = terms["loss"].mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/mse", terms["mse"].mean())
        if "vb" in terms:
            self.log("train/vb", terms["vb"].mean())
        return loss

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def iter_samples(self, labels: torch.Tensor, *, seed: int | None = None) -> Iterator[torch.Tensor]:
        """Images in [-1, 1] for ``labels``, ``sample_batch_size`` at a time, sampled with the EMA
        weights from one generator seeded with ``seed``: the same seed gives the same images."""
        labels = labels.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.sample_seed if seed is None else int(seed))
        shape = model_input_shape(self.model)
        with self.sampling_weights() as model:
            for chunk in labels.split(self.sample_batch_size):
                latents = sample(
                    model, (len(chunk), *shape), chunk, diffusion=self.diffusion, steps=self.sample_steps,
                    method=self.sampler, eta=self.eta, cfg_scale=self.cfg_scale, null_label=self.null_label,
                    guided_channels=self.guided_channels, clip_denoised=self.clip_denoised, generator=generator,
                )
                yield self.vae.decode(latents).clamp(-1, 1)

    def generate(self, labels: torch.Tensor, *, seed: int | None = None) -> torch.Tensor:
        return torch.cat(list(self.iter_samples(labels, seed=seed)))

    def _local_labels(self, count: int) -> torch.Tensor:
        """This rank's share of ``count`` class-balanced labels."""
        labels = torch.arange(count) % self.num_classes
        rank, world = self._rank_world()
        return labels[rank::world]

    def _rank_world(self) -> tuple[int, int]:
        try:
            return self.trainer.global_rank, self.trainer.world_size
        except RuntimeError:  # not attached to a trainer (used directly)
            return 0, 1

    def _fid_of_samples(self, metric: nn.Module | None, count: int, stage: str) -> float:
        if metric is None:
            raise ValueError("GenerationModule: FID needs the task's fid_features part (task.parts.fid_features)")
        seed = self.sample_seed + self._rank_world()[0]  # ranks draw different samples
        for images in self.iter_samples(self._local_labels(count), seed=seed):
            metric.update(images, real=False)
        value = float(metric.compute())
        self.fid_counts[stage] = {"real": int(metric.real_features_num_samples),
                                  "generated": int(metric.fake_features_num_samples)}  # this rank's
        metric.reset()
        return value

    # -- validation: FID of EMA samples ---------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._collect_val_real = not self._val_real_ready and not self.trainer.sanity_checking

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self._collect_val_real and self.val_fid is not None:
            self.val_fid.update(batch["image"], real=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._val_real_ready = True
        self.log("val/fid", self._fid_of_samples(self.val_fid, self.fid_samples, "val"), prog_bar=True, sync_dist=True)

    # -- test -----------------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        if self.test_fid is not None:
            self.test_fid.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.test_fid is not None:
            self.test_fid.update(batch["image"], real=True)

    def on_test_epoch_end(self) -> None:
        self.log("test/fid", self._fid_of_samples(self.test_fid, self.test_fid_samples, "test"), sync_dist=True)

    # -- artifacts ------------------------------------------------------------------------------
    def artifacts(self, run_dir: str | Path, data: Any = None) -> list[Path]:
        """``predictions/samples.npz`` and ``samples.png``: one row per class (the first
        ``grid_classes``), ``grid_columns`` samples each, from the weights the runner loaded (the
        best round's) with their EMA, drawn with ``sample_seed``: every run of the task gets the
        same labels and the same noise, so the report can set their grids side by side. The
        figure's title names the method, the weights' step and the test FID."""
        from ..figures.figtools import save_figure
        from ..figures.samples import SAMPLES_FILE, grid_figure, load_samples, save_samples

        classes = min(self.num_classes, self.grid_classes)
        labels = torch.arange(classes).repeat_interleave(self.grid_columns)
        images = self.generate(labels, seed=self.sample_seed).float().cpu()
        run_dir = Path(run_dir)
        npz = save_samples(run_dir / SAMPLES_FILE, images.numpy(), labels.tolist(), self.grid_columns,
                           self.sample_seed)
        step, fid = self.weights_step, self.test_metric("test/fid")
        title = " · ".join(filter(None, [
            self.method_label or "model",
            "as loaded (not trained)" if step is None else f"weights of step {step}",
            None if fid is None else f"test FID {fid:.2f}", f"sample seed {self.sample_seed}",
        ]))
        png = save_figure(grid_figure(load_samples(npz), title), run_dir / "samples.png")
        return [npz, png]
