"""DiT (Peebles & Xie) in the original facebookresearch/DiT layout, for class-conditional generation.

Why the original layout: the paper's DiT-XL/2 counts fit only the original code (fused
``attn.qkv``, timm ``Attention`` / ``Mlp``, ONE class table ``y_embedder.embedding_table``);
diffusers' ``DiTTransformer2DModel`` has a timestep MLP and class table per block and gives other
numbers. Module and parameter names equal the original ``models.py``, so ``DiT-XL-2-256x256.pt``
loads with ``strict=True``.

Layout: ``x_embedder`` (timm PatchEmbed), ``t_embedder.mlp`` (Linear-SiLU-Linear on 256 sinusoidal
timestep features), ``y_embedder.embedding_table`` (num_classes + 1 rows: the extra row is the
"no class" label of classifier-free guidance), ``pos_embed`` (fixed 2-D sin-cos, a frozen
``nn.Parameter`` as in the original, so it is in the checkpoint and in the total count), ``blocks.N``
with ``norm1``/``norm2`` (LayerNorm without affine), ``attn.qkv``/``attn.proj``, ``mlp.fc1``/``mlp.fc2``
(GELU tanh) and ``adaLN_modulation = Sequential(SiLU, Linear(d, 6d))``, and ``final_layer`` with
``norm_final`` (no affine), ``linear`` and ``adaLN_modulation``. Learned sigma: out_channels = 2 x in.

Fine-tuning on a new label set (Food-101: 101 classes) re-initialises the class table with
num_classes + 1 rows (102 x 1152 = 117,504 parameters); everything else comes from the ImageNet
checkpoint. DiT-XL/2 at 256 px has 675,129,632 parameters (1000-class table).

``patch_embed="linear"`` (not in the original) builds the patch embedding as an ``nn.Linear`` on
flattened patches, the same map as the convolution, so PEFT methods adapt it too (the pixel-space
digits DiT, ``conf/model/dit_digits.yaml``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention
from torch import nn

from . import register_builder
from .weights import load_into, load_state

#: the original configurations: name -> (depth, hidden_size, patch_size, num_heads)
DIT_CONFIGS: dict[str, dict[str, int]] = {
    f"DiT-{name}/{p}": {"depth": d, "hidden_size": h, "patch_size": p, "num_heads": n}
    for name, (d, h, n) in {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}.items()
    for p in (2, 4, 8)
}
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/DiT/models/{name}"
#: the released checkpoints (plain EMA state dicts), by file name
RELEASED = ("DiT-XL-2-256x256.pt", "DiT-XL-2-512x512.pt")
TABLE_KEY = "y_embedder.embedding_table.weight"


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> sinusoidal features (256) -> MLP -> hidden_size."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; with dropout > 0 an extra "null" row for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (shift, scale, gate for attention and MLP)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(
            in_features=hidden_size,
            hidden_features=int(hidden_size * mlp_ratio),
            act_layer=lambda: nn.GELU(approximate="tanh"),
            drop=0,
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """MAE/DiT fixed 2-D sin-cos embedding (grid_size**2, embed_dim), computed in float64."""
    if embed_dim % 4:
        raise ValueError(f"DiT: hidden_size must be a multiple of 4 for the sin-cos embedding, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    grid_w, grid_h = torch.meshgrid(coords, coords, indexing="xy")  # as np.meshgrid(grid_w, grid_h)

    def one_d(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    # the original's grid[0] is the meshgrid's first output (varies along columns)
    return torch.cat([one_d(embed_dim // 2, grid_w), one_d(embed_dim // 2, grid_h)], dim=1)


class LinearPatchEmbed(nn.Module):
    """Patches as an ``nn.Linear`` (patch_dim = C * p * p -> hidden), so adapters see the embedding.

    The same map as timm's ``PatchEmbed`` convolution (kernel = stride = p): patch vectors are
    flattened in the conv weight's (C, p, p) order, so ``conv.weight.flatten(1)`` loads as
    ``proj.weight``. Same attributes (``proj``, ``patch_size``, ``num_patches``) as timm's.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"DiT: input_size {img_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Linear(in_chans * patch_size * patch_size, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch_size[0]
        patches = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (n, gh, gw, c, p, p)
        return self.proj(patches.reshape(n, (h // p) * (w // p), c * p * p))


#: how ``x_embedder`` is built: the original convolution, or a linear layer that adapters can wrap
PATCH_EMBEDS = ("conv", "linear")


class DiT(nn.Module):
    """Diffusion transformer; forward(x (N,C,H,W), t (N,), y (N,)) -> (N, out_channels, H, W)."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        patch_embed: str = "conv",
    ):
        super().__init__()
        if patch_embed not in PATCH_EMBEDS:
            raise ValueError(f"DiT: patch_embed must be one of {PATCH_EMBEDS}, got {patch_embed!r}")
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        embed = PatchEmbed if patch_embed == "conv" else LinearPatchEmbed
        self.x_embedder = embed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The original init: xavier linears, zeroed adaLN and output (adaLN-Zero), sin-cos pos_embed."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        if not self.pos_embed.is_meta:
            grid = int(self.x_embedder.num_patches**0.5)
            with torch.no_grad():
                self.pos_embed.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], grid).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        c, p = self.out_channels, self.x_embedder.patch_size[0]
        h = w = int(x.shape[1] ** 0.5)
        assert h * w == x.shape[1]
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Classifier-free guidance on a batch whose second half carries the null label (as the original).

        Like the original, guidance is applied to the first 3 channels only ("for exact
        reproducibility" of the paper's FID); the rest (and the learned sigma) pass through. With
        fewer than 3 input channels that would guide the sigma channels too: the samplers use
        ``onelora.diffusion.guided`` (``guided_channels=3`` reproduces this method).
        """
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        eps, rest = out[:, :3], out[:, 3:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def checkpoint_source(source: str) -> str:
    """A released checkpoint's name (``DiT-XL-2-256x256.pt``) -> its URL; anything else as given."""
    return CHECKPOINT_URL.format(name=source) if source in RELEASED else source


def load_dit_weights(model: DiT, source: str | Path) -> DiT:
    """Load an original checkpoint strictly; a class table of another size stays re-initialised."""
    hint = (f"The released DiT checkpoints are {list(RELEASED)} at {CHECKPOINT_URL.format(name='<name>')} "
            "(`model.pretrained=<name>` finds them in the torch hub cache once downloaded)")
    state = load_state(checkpoint_source(str(source)), hint=hint)
    return load_into(model, state, head=[TABLE_KEY.removesuffix(".weight").replace(".", r"\.")], source=str(source))


ARCH_KEYS = (
    "model",
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "learn_sigma",
    "pretrained_num_classes",
    "patch_embed",
)


@register_builder("dit")
def build_dit(cfg: Mapping[str, Any], *, num_classes: int | None = None, load_weights: bool = True) -> nn.Module:
    """Builder: ``cfg.arch.model`` (e.g. ``DiT-XL/2``) and/or explicit sizes; ``cfg.pretrained`` weights.

    ``num_classes`` other than ``arch.pretrained_num_classes`` (1000, ImageNet) gives a class table
    of num_classes + 1 rows, re-initialised; the checkpoint's table is then not loaded.
    """
    arch = dict(cfg.get("arch") or {})
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown:
        raise ValueError(f"DiT: unknown arch keys {sorted(unknown)}; known: {list(ARCH_KEYS)}")
    name = arch.pop("model", None)
    sizes: dict[str, Any] = {}
    if name is not None:
        if name not in DIT_CONFIGS:
            raise ValueError(f"DiT: unknown model {name!r}; known: {sorted(DIT_CONFIGS)}")
        sizes.update(DIT_CONFIGS[name])
    pretrained_classes = int(arch.pop("pretrained_num_classes", 1000))
    sizes.update(arch)
    model = DiT(num_classes=pretrained_classes if num_classes is None else int(num_classes), **sizes)
    source = cfg.get("pretrained")
    if load_weights and source:
        load_dit_weights(model, source)
    return model
