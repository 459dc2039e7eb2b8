"""Depth Anything (v1) in its original code layout: a DINOv2 ViT encoder plus the DPT depth head.

Why the original layout: the paper's parameter counts (Table S2/S3) fit only DINOv2's own code,
with a FUSED ``attn.qkv`` linear (4 linears per block: ``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
``mlp.fc2``; 96 for ViT-L). transformers' Dinov2 splits q/k/v and gives other LoRA/VeRA/DoRA/MoRA
counts. The module and parameter names here equal LiheYoung/Depth-Anything's ``DPT_DINOv2``
(``pretrained.*`` = the DINOv2 encoder, ``depth_head.*`` = the DPT head), so the released
``depth_anything_vit{s,b,l}14.pth`` checkpoints load with ``strict=True``.

Encoder: timm's ``VisionTransformer`` (same block layout and names as DINOv2: ``blocks.N.norm1``,
``attn.qkv``, ``ls1.gamma``, ...) plus what DINOv2 has and timm lacks: the ``mask_token``
parameter (1 x dim; in the checkpoints, unused at inference) and DINOv2's own positional-embedding
interpolation (bicubic, +0.1 offset, no antialias), so inputs other than 518 x 518 give the
original numbers.

Parameter count of ViT-L (features 256, out_channels 256/512/1024/1024): encoder 304,368,640
(timm's 304,367,616 + mask_token 1,024; includes cls_token and the 1370 x 1024 pos_embed) +
DPT head 30,947,009 = 335,315,649 = 335.32M, the paper's "full" count. Without the mask_token it
would round to 335.31M, so the paper counted it too.

Metric output (our choice, documented): the v1 repository's ``metric_depth`` puts ZoeDepth's
metric-bins module on top of the DPT model; those extra parameters would not give the paper's
335.32M. Its successor's metric variant (Depth-Anything-V2 ``metric_depth``) keeps the DPT head
and only replaces the head's last ReLU by a sigmoid and multiplies by ``max_depth``: parameter-free,
so the counts stay those of the relative model. We do that (``depth_output: metric``): depth =
sigmoid(head) * max_depth in (0, max_depth). ``depth_output: relative`` gives the original v1
relative (disparity) output, ReLU(head). With the v1 checkpoints the head takes the LAST four
blocks (as v1's ``get_intermediate_layers(x, 4)``); v2 checkpoints would use [4, 11, 17, 23] for
ViT-L: the ``intermediate_layers`` arch key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from . import register_builder
from .weights import load_state

#: encoder sizes of DINOv2 (embed_dim, depth, num_heads) and the DPT settings v1 used with each
ENCODERS: dict[str, dict[str, Any]] = {
    "vits": {"embed_dim": 384, "depth": 12, "num_heads": 6, "features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"embed_dim": 768, "depth": 12, "num_heads": 12, "features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "features": 256,
        "out_channels": [256, 512, 1024, 1024],
    },
}
#: hub repositories of the original checkpoints (PyTorchModelHubMixin uploads of ``DepthAnything``)
HUB_IDS = {k: f"LiheYoung/depth_anything_{k}14" for k in ENCODERS}


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------


class DINOv2Encoder(VisionTransformer):
    """timm's VisionTransformer with DINOv2's extras: ``mask_token`` and any multiple of the patch."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 14,
        img_size: int = 518,
        mlp_ratio: float = 4.0,
        init_values: float = 1.0,
    ):
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            init_values=init_values,  # LayerScale (ls1/ls2.gamma); DINOv2's hub models use 1.0
            num_classes=0,
            global_pool="token",
        )
        # DINOv2 keeps a (1, dim) token for iBOT-style masking; it is in the checkpoints
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed.strict_img_size = False  # any multiple of the patch size


def interpolate_pos_encoding(vit: VisionTransformer, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINOv2's positional-embedding resampling (bicubic, scale factor with a +0.1 offset)."""
    pos_embed = vit.pos_embed
    n_patch = tokens.shape[1] - 1
    n_pos = pos_embed.shape[1] - 1
    if n_patch == n_pos and height == width:
        return pos_embed
    dtype = tokens.dtype
    pos = pos_embed.float()
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    dim = tokens.shape[-1]
    p = vit.patch_embed.patch_size[0]
    h0, w0 = height // p + 0.1, width // p + 0.1
    side = math.sqrt(n_pos)
    patch_pos = F.interpolate(
        patch_pos.reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2),
        scale_factor=(h0 / side, w0 / side),
        mode="bicubic",
    )
    assert int(h0) == patch_pos.shape[-2] and int(w0) == patch_pos.shape[-1]
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)


def intermediate_layers(
    vit: nn.Module, x: torch.Tensor, indices: Sequence[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """DINOv2's ``get_intermediate_layers(x, n, return_class_token=True, norm=True)``."""
    height, width = x.shape[-2:]
    tokens = vit.patch_embed(x)
    tokens = torch.cat((vit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
    tokens = tokens + interpolate_pos_encoding(vit, tokens, height, width)
    wanted = set(indices)
    out = []
    for i, block in enumerate(vit.blocks):
        tokens = block(tokens)
        if i in wanted:
            out.append(tokens)
    if len(out) != len(wanted):
        raise ValueError(f"intermediate layers {list(indices)} not all in a {len(vit.blocks)}-block encoder")
    out = [vit.norm(t) for t in out]
    return [(t[:, 1:], t[:, 0]) for t in out]


# ----------------------------------------------------------------------------------------------
# DPT head (names as depth_anything/dpt.py and blocks.py)
# ----------------------------------------------------------------------------------------------


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int, use_bn: bool = False):
        super().__init__()
        self.bn = use_bn
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)
        self.activation = nn.ReLU(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.activation(x))
        if self.bn:
            out = self.bn1(out)
        out = self.conv2(self.activation(out))
        if self.bn:
            out = self.bn2(out)
        return out + x


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int, use_bn: bool = False):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features, use_bn)
        self.resConfUnit2 = ResidualConvUnit(features, use_bn)

    def forward(self, *xs: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        output = xs[0]
        if len(xs) == 2:
            output = output + self.resConfUnit1(xs[1])
        output = self.resConfUnit2(output)
        if size is None:
            output = F.interpolate(output, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            output = F.interpolate(output, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(output)


class DPTHead(nn.Module):
    """The DPT decoder of Depth Anything (one output channel: depth)."""

    def __init__(
        self,
        in_channels: int,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        *,
        use_bn: bool = False,
        use_clstoken: bool = False,
        patch_size: int = 14,
        final_activation: str = "sigmoid",
    ):
        super().__init__()
        self.use_clstoken = use_clstoken
        self.patch_size = patch_size
        oc = list(out_channels)
        self.projects = nn.ModuleList([nn.Conv2d(in_channels, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        if use_clstoken:
            self.readout_projects = nn.ModuleList(
                [nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU()) for _ in oc]
            )
        scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(scratch, f"refinenet{i}", FeatureFusionBlock(features, use_bn))
        scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        if final_activation == "sigmoid":
            last: nn.Module = nn.Sigmoid()
        elif final_activation == "relu":
            last = nn.ReLU(True)
        else:
            raise ValueError(f"DPT head: final_activation must be 'sigmoid' or 'relu', got {final_activation!r}")
        scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, 1, 1),
            last,
            nn.Identity(),
        )
        self.scratch = scratch

    def forward(self, feats: Sequence[tuple[torch.Tensor, torch.Tensor]], patch_h: int, patch_w: int) -> torch.Tensor:
        out = []
        for i, (x, cls_token) in enumerate(feats):
            if self.use_clstoken:
                readout = cls_token.unsqueeze(1).expand_as(x)
                x = self.readout_projects[i](torch.cat((x, readout), -1))
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            out.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(t) for i, t in enumerate(out))
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1)
        out_t = s.output_conv1(path)
        size = (patch_h * self.patch_size, patch_w * self.patch_size)
        out_t = F.interpolate(out_t, size, mode="bilinear", align_corners=True)
        return s.output_conv2(out_t)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class DepthAnything(nn.Module):
    """``pretrained`` (DINOv2 encoder) + ``depth_head`` (DPT); forward: (B,3,H,W) -> depth (B,H,W)."""

    def __init__(
        self,
        encoder: str = "vitl",
        *,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        patch_size: int = 14,
        img_size: int = 518,
        mlp_ratio: float = 4.0,
        features: int | None = None,
        out_channels: Sequence[int] | None = None,
        intermediate_layers: Sequence[int] | None = None,
        use_bn: bool = False,
        use_clstoken: bool = False,
        depth_output: str = "metric",
        max_depth: float = 20.0,
    ):
        super().__init__()
        base = dict(ENCODERS.get(encoder, {}))
        if not base and None in (embed_dim, depth, num_heads, features, out_channels):
            raise ValueError(
                f"Depth Anything: unknown encoder {encoder!r} (known: {sorted(ENCODERS)}); "
                "a custom encoder needs embed_dim, depth, num_heads, features and out_channels"
            )
        embed_dim = embed_dim or base["embed_dim"]
        depth = depth or base["depth"]
        num_heads = num_heads or base["num_heads"]
        features = features or base["features"]
        out_channels = list(out_channels or base["out_channels"])
        if depth_output not in ("metric", "relative"):
            raise ValueError(f"Depth Anything: depth_output must be 'metric' or 'relative', got {depth_output!r}")
        self.depth_output = depth_output
        self.max_depth = float(max_depth)
        self.patch_size = patch_size
        # v1 takes the last four blocks
        self.intermediate_layers = list(intermediate_layers or range(depth - 4, depth))
        self.pretrained = DINOv2Encoder(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            patch_size=patch_size,
            img_size=img_size,
            mlp_ratio=mlp_ratio,
        )
        self.depth_head = DPTHead(
            embed_dim,
            features,
            out_channels,
            use_bn=use_bn,
            use_clstoken=use_clstoken,
            patch_size=patch_size,
            final_activation="sigmoid" if depth_output == "metric" else "relu",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"Depth Anything: image size {h}x{w} is not a multiple of {self.patch_size}")
        feats = intermediate_layers(self.pretrained, x, self.intermediate_layers)
        out = self.depth_head(feats, h // self.patch_size, w // self.patch_size)
        if self.depth_output == "metric":
            out = out * self.max_depth  # sigmoid output in (0, 1) -> (0, max_depth)
        else:  # original v1: resize to the input (a no-op at multiples of 14) and ReLU
            out = F.relu(F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True))
        return out.squeeze(1)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


WEIGHTS_HINT = (
    "The originals: `huggingface-cli download LiheYoung/depth_anything_vitl14 --local-dir <dir>` (vits / vitb "
    "likewise), or `huggingface-cli download --repo-type space LiheYoung/Depth-Anything "
    "checkpoints/depth_anything_vitl14.pth --local-dir <dir>`, then `model.pretrained=<dir or file>`"
)


def load_depth_anything_weights(
    model: DepthAnything, source: str | Path, *, load_head: bool = True
) -> DepthAnything:
    """Load an original checkpoint (keys ``pretrained.*``, ``depth_head.*``) strictly.

    ``load_head=False`` loads only the encoder (strict on it; the head keeps its init), as
    Depth-Anything-V2's metric fine-tuning does.
    """
    state = load_state(str(source), hint=WEIGHTS_HINT)
    if load_head:
        model.load_state_dict(state, strict=True)
    else:
        enc = {k[len("pretrained.") :]: v for k, v in state.items() if k.startswith("pretrained.")}
        model.pretrained.load_state_dict(enc, strict=True)
    return model


#: arch keys read from cfg["arch"] (all optional; ``encoder`` picks the size)
ARCH_KEYS = (
    "encoder",
    "embed_dim",
    "depth",
    "num_heads",
    "patch_size",
    "img_size",
    "mlp_ratio",
    "features",
    "out_channels",
    "intermediate_layers",
    "use_bn",
    "use_clstoken",
    "depth_output",
    "max_depth",
)


@register_builder("depth_anything")
def build_depth_anything(cfg: Mapping[str, Any], *, max_depth: float | None = None, load_weights: bool = True) -> nn.Module:
    """Builder: ``cfg.arch`` sizes the model; ``cfg.pretrained`` (path / hub id / None) its weights.

    ``max_depth`` (the task's depth range; parameter-free) overrides ``arch.max_depth``.
    ``arch.load_head: false`` loads the encoder only.
    """
    arch = dict(cfg.get("arch") or {}) | ({"max_depth": float(max_depth)} if max_depth is not None else {})
    unknown = set(arch) - set(ARCH_KEYS) - {"load_head"}
    if unknown:
        raise ValueError(f"Depth Anything: unknown arch keys {sorted(unknown)}; known: {list(ARCH_KEYS) + ['load_head']}")
    load_head = bool(arch.pop("load_head", True))
    model = DepthAnything(**arch)
    source = cfg.get("pretrained")
    if load_weights and source:
        load_depth_anything_weights(model, source, load_head=load_head)
    return model


# ----------------------------------------------------------------------------------------------
# Metric-depth checkpoints: their key layouts mapped onto this module's names
# ----------------------------------------------------------------------------------------------
#
# Three released layouts (read from the original code; shapes below for ViT-L):
#
# - "dpt": Depth Anything v1's relative checkpoints (depth_anything_vit{s,b,l}14.pth) and
#   Depth-Anything-V2's metric ones (depth_anything_v2_metric_{hypersim,vkitti}_vit{s,b,l}.pth):
#   ``pretrained.*`` (DINOv2, block_chunks=0) + ``depth_head.*`` (DPT), exactly our names. V2's metric
#   head ends in a sigmoid scaled by max_depth (20 m Hypersim, 80 m Virtual KITTI 2), as our
#   ``depth_output: metric``; V2 taps blocks [4, 11, 17, 23] of ViT-L ([2, 5, 8, 11] for S/B):
#   ``arch.intermediate_layers``. V2's own train.py saves {"model": DDP state (``module.*``), ...}.
# - "zoedepth": Depth Anything v1's metric checkpoints (depth_anything_metric_depth_{indoor,outdoor}.pt,
#   fine-tuned on NYU / KITTI with metric_depth/train_mono.py): ZoeDepth with the DPT model as its
#   core, saved as {"model": state, "optimizer": None, "epoch": N}: ``core.core.pretrained.*``,
#   ``core.core.depth_head.*`` plus ZoeDepth's metric-bins head (``conv2``, ``seed_bin_regressor``,
#   ``seed_projector``, ``projectors.0-3``, ``attractors.0-3``, ``conditional_log_binomial``).
#   That head holds 478,145 parameters for ViT-L (64 bins, embedding 128, attractors 16/8/4/1,
#   softplus bin centres; 481,886 with "normed" centres), so the whole ZoeDepth model counts
#   335,793,794 = 335.79M, not the paper's 335.32M (= the DPT model alone, 335,315,649). Its DPT
#   output (ReLU) is the relative depth ZoeDepth conditions on, not metres: loaded into our model,
#   the encoder and DPT neck are the metric-fine-tuned ones and the sigmoid x max_depth output has to
#   be learned again (the head trains), because the metric-bins head is dropped.

#: Depth-Anything-V2's intermediate blocks per encoder (v1 takes the last four)
V2_INTERMEDIATE_LAYERS = {"vits": [2, 5, 8, 11], "vitb": [2, 5, 8, 11], "vitl": [4, 11, 17, 23]}
#: ZoeDepth's metric-bins head: the top-level modules of zoedepth_v1.ZoeDepth besides ``core``
ZOEDEPTH_HEAD_MODULES = ("conv2", "seed_bin_regressor", "seed_projector", "projectors", "attractors", "conditional_log_binomial")
ZOEDEPTH_CORE_PREFIX = "core.core."


def zoedepth_head_shapes(
    *,
    n_bins: int = 64,
    bin_embedding_dim: int = 128,
    core_channels: Sequence[int] = (256, 256, 256, 256, 256),
    n_attractors: Sequence[int] = (16, 8, 4, 1),
    bin_centers_type: str = "softplus",
    midas_out: int = 32,
) -> dict[str, tuple[int, ...]]:
    """Every tensor of ZoeDepth's metric-bins head with its shape (state-dict names, buffers included).

    From ``zoedepth_v1.ZoeDepth.__init__`` with Depth Anything's config (config_zoedepth.json):
    ``conv2`` 1x1 on the bottleneck, ``SeedBinRegressor`` (mlp 256), ``Projector``s (mlp 128),
    ``Attractor``s (mlp 128; 2 outputs per attractor with "normed" centres), and
    ``ConditionalLogBinomial`` on 32 + 1 channels (bottleneck (33 + embedding) // 2, 4 outputs).
    """
    bottleneck, blocks = core_channels[0], list(core_channels[1:])
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, 1, 1), (cout,)

    conv("conv2", bottleneck, bottleneck)
    conv("seed_bin_regressor._net.0", bottleneck, 256)
    conv("seed_bin_regressor._net.2", 256, n_bins)
    conv("seed_projector._net.0", bottleneck, 128)
    conv("seed_projector._net.2", 128, bin_embedding_dim)
    for i, channels in enumerate(blocks):
        conv(f"projectors.{i}._net.0", channels, 128)
        conv(f"projectors.{i}._net.2", 128, bin_embedding_dim)
    per_attractor = 2 if bin_centers_type in ("normed", "hybrid1") else 1
    for i, n in enumerate(n_attractors[: len(blocks)]):
        conv(f"attractors.{i}._net.0", bin_embedding_dim, 128)
        conv(f"attractors.{i}._net.2", 128, n * per_attractor)
    last_in = midas_out + 1  # the 32-channel output features + the relative depth
    hidden = (last_in + bin_embedding_dim) // 2
    conv("conditional_log_binomial.mlp.0", last_in + bin_embedding_dim, hidden)
    conv("conditional_log_binomial.mlp.2", hidden, 4)
    shapes["conditional_log_binomial.log_binomial_transform.k_idx"] = (1, n_bins, 1, 1)  # buffers
    shapes["conditional_log_binomial.log_binomial_transform.K_minus_1"] = (1, 1, 1, 1)
    return shapes


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def metric_checkpoint_layout(state: Mapping[str, Any]) -> str:
    """``"dpt"`` (v1 relative, V2 metric: our names) or ``"zoedepth"`` (v1 metric); else an error."""
    state = _strip(state, "module.")
    if any(k.startswith(ZOEDEPTH_CORE_PREFIX) for k in state):
        return "zoedepth"
    if any(k.startswith("pretrained.") for k in state) and any(k.startswith("depth_head.") for k in state):
        return "dpt"
    shown = ", ".join(sorted(state)[:5])
    raise ValueError(
        f"Depth Anything checkpoint: unknown key layout (first keys: {shown}). Supported: the original "
        f"pretrained.* + depth_head.* (v1 relative, V2 metric) and ZoeDepth's core.core.* (v1 metric_depth); "
        f"transformers' DepthAnythingForDepthEstimation layout is not supported."
    )


def convert_metric_checkpoint(state: Mapping[str, Any]) -> dict[str, Any]:
    """A Depth Anything checkpoint's state dict in any supported layout -> this module's names.

    Unwraps ``{"model": state, ...}`` (both metric trainers save that) and a DDP ``module.``
    prefix; maps ZoeDepth's ``core.core.*`` onto ``pretrained.*`` / ``depth_head.*`` and drops its
    metric-bins head (see the notes above: it is not part of the paper's 335.32M). A key that fits
    no known module is an error, so a wrong file cannot half-load.
    """
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    state = _strip(state, "module.")
    if metric_checkpoint_layout(state) == "dpt":
        return dict(state)
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith(ZOEDEPTH_CORE_PREFIX):
            out[key[len(ZOEDEPTH_CORE_PREFIX) :]] = value
        elif key.split(".", 1)[0] not in ZOEDEPTH_HEAD_MODULES:
            unknown.append(key)
    if unknown:
        raise ValueError(f"ZoeDepth checkpoint: keys outside core.core.* and the metric-bins head: {unknown[:5]}")
    return out
