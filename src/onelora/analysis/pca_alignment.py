"""Fig. 9: how well fixed compression vectors align with what full fine-tuning changed.

For each adapted linear layer of a finished full fine-tuning run, the update ``dW = W_ft - W0``
(d x k) is decomposed by SVD; its right singular vectors are the principal input directions
the update reads. Each is compared (absolute cosine) with the summation vector ``1/sqrt(k)``
(1LoRA's compression), a random unit vector (the random-compression ablation) and, from a
finished LoRA r=1 run, that layer's learned compression vector ``A``. Layers are grouped by
type (QKV, projection, MLP 1, MLP 2) and plotted over the component index on a log axis.

    python -m onelora.analysis pca_alignment --full <run_dir> --lora <run_dir> --out <dir> [--base W0.safetensors]

Weights are read from the run directories; no model is built.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from onelora.analysis import rundir

#: module-name suffixes of each layer type, per model family: timm / DiT / DINOv2 (fused qkv),
#: transformers ViT 5.x and 4.x, LLaMA. Checked in this order (attention.output.dense is the
#: projection, not MLP 2).
LAYER_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("QKV", re.compile(r"(attn\.qkv|attention\.[qkv]_proj|attention\.attention\.(query|key|value)|self_attn\.[qkv]_proj)$")),
    ("projection", re.compile(r"(attn\.proj|attention\.o_proj|attention\.output\.dense|self_attn\.o_proj)$")),
    ("MLP 1", re.compile(r"(mlp\.fc1|intermediate\.dense|mlp\.(gate|up)_proj)$")),
    ("MLP 2", re.compile(r"(mlp\.fc2|output\.dense|mlp\.down_proj)$")),
)
TYPE_ORDER = tuple(name for name, _ in LAYER_TYPES)
#: what each curve compares the principal directions with, and its colour
VECTORS = {"ones": ("summation 1/√k (1LoRA)", "tab:red"), "random": ("random vector", "0.45"),
           "lora": ("LoRA r=1 A (learned)", "tab:blue")}


def layer_type(module: str) -> str | None:
    """"QKV", "projection", "MLP 1", "MLP 2" for a module name, None for any other layer."""
    for name, pattern in LAYER_TYPES:
        if pattern.search(module):
            return name
    return None


def principal_directions(delta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(singular values, right singular vectors as rows) of an update, in float64."""
    _, s, vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    return s.numpy(), vh.numpy()


def alignment(directions: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """For each direction (unit rows of ``directions``), the norm of its projection onto the span
    of ``vectors`` (rows): |cos| with the one vector for a single vector (LoRA r=1's A)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    basis, _ = np.linalg.qr(vectors.T)  # orthonormal basis of the span, as columns
    return np.linalg.norm(directions @ basis, axis=1)


@dataclass
class LayerAlignment:
    """One layer's principal directions and their alignment with each vector."""

    name: str
    type: str
    shape: tuple[int, int]
    singular_values: list[float]
    cos: dict[str, list[float]] = field(default_factory=dict)

    def energy_alignment(self, vector: str) -> float:
        """||dW v|| / ||dW||_F: the share of the update's norm along the vector (the singular
        values weighting each component's |cos|)."""
        s2 = np.square(self.singular_values)
        return float(math.sqrt(np.sum(s2 * np.square(self.cos[vector])) / np.sum(s2))) if s2.sum() > 0 else 0.0


def _lora_vectors(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Each module's LoRA compression ``A`` (r x k), keyed by module name."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(".lora_A"):
            out[name[: -len(".lora_A")]] = value.to(torch.float64).numpy()
    return out


def analyse(full_dir: str | Path, lora_dir: str | Path | None = None, base: str | Path | None = None,
            seed: int = 0) -> list[LayerAlignment]:
    """Every typed linear layer of the full run: its update's principal directions vs ones,
    a random vector (one per layer, seeded) and, with ``lora_dir``, the LoRA run's A."""
    rundir.read_record(full_dir)  # a run directory at all?
    tuned = rundir.adapter_tensors(full_dir)
    base_weights = rundir.load_base(rundir.base_weights_path(full_dir, base))
    lora = _lora_vectors(rundir.adapter_tensors(lora_dir)) if lora_dir is not None else {}
    if lora_dir is not None and not lora:
        raise rundir.RunDirError(f"{Path(lora_dir) / rundir.ADAPTER}: no '<module>.lora_A' tensors (is it a LoRA run?)")
    rng = np.random.default_rng(seed)
    layers = []
    for name in sorted(tuned, key=_natural):
        module, _, leaf = name.rpartition(".")
        kind = layer_type(module)
        if leaf != "weight" or tuned[name].ndim != 2 or kind is None:
            continue
        w0 = base_weights[rundir.match_name(name, base_weights)]
        if w0.shape != tuned[name].shape:
            raise rundir.RunDirError(f"{name}: fine-tuned {tuple(tuned[name].shape)} vs base {tuple(w0.shape)}")
        s, vh = principal_directions(tuned[name].to(torch.float64) - w0.to(torch.float64))
        k = vh.shape[1]
        cos = {"ones": alignment(vh, np.ones(k)), "random": alignment(vh, rng.standard_normal(k))}
        if lora_dir is not None:
            if module not in lora:
                raise rundir.RunDirError(f"LoRA run {lora_dir} has no {module}.lora_A: were the same layers adapted?")
            cos["lora"] = alignment(vh, lora[module])
        layers.append(LayerAlignment(module, kind, tuple(tuned[name].shape), s.tolist(),
                                     {key: v.tolist() for key, v in cos.items()}))
    if not layers:
        raise rundir.RunDirError(
            f"{Path(full_dir) / rundir.ADAPTER}: no 2-D '<module>.weight' tensors of a known layer type "
            f"({', '.join(TYPE_ORDER)}); is it a full fine-tuning run?"
        )
    return layers


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def summarise(layers: list[LayerAlignment]) -> list[dict]:
    """Per layer type and vector: mean |cos| over all components, |cos| with the top component,
    and the energy alignment ||dW v|| / ||dW||_F, each averaged over the type's layers."""
    rows = []
    for kind in TYPE_ORDER:
        group = [layer for layer in layers if layer.type == kind]
        if not group:
            continue
        for vector in VECTORS:
            if vector not in group[0].cos:
                continue
            rows.append({
                "type": kind,
                "vector": vector,
                "layers": len(group),
                "k": group[0].shape[1],
                "mean_cos": float(np.mean([np.mean(layer.cos[vector]) for layer in group])),
                "top1_cos": float(np.mean([layer.cos[vector][0] for layer in group])),
                "energy": float(np.mean([layer.energy_alignment(vector) for layer in group])),
            })
    return rows


def plot(layers: list[LayerAlignment], path: str | Path, title: str = "") -> Path:
    """Fig. 9's layout: one panel per layer type, |cos| against the component index (log x),
    the mean over the type's layers as a line and their range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in TYPE_ORDER if any(layer.type == k for layer in layers)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        group = [layer for layer in layers if layer.type == kind]
        n = min(len(layer.singular_values) for layer in group)
        index = np.arange(1, n + 1)
        for vector, (label, color) in VECTORS.items():
            if vector not in group[0].cos:
                continue
            values = np.array([layer.cos[vector][:n] for layer in group])
            ax.plot(index, values.mean(axis=0), color=color, label=label, linewidth=1.4)
            ax.fill_between(index, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15, linewidth=0)
        k = group[0].shape[1]
        ax.axhline(math.sqrt(2 / (math.pi * k)), color="0.45", linestyle=":", linewidth=1,
                   label="E|cos| of a random vector")
        ax.set_xscale("log")
        ax.set_xlabel("principal component of W_ft − W0 (index)")
        ax.set_title(f"{kind} ({len(group)} layers, k = {k})", fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("|cosine similarity|")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "Alignment of the full fine-tuning update's principal directions", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(summary: list[dict], full_dir: str | Path, lora_dir: str | Path | None) -> str:
    lines = [
        "# PCA alignment (Fig. 9)", "",
        f"Full fine-tuning run: `{full_dir}`; LoRA r=1 run: `{lora_dir or '—'}`.", "",
        "Per layer type, averaged over its layers: mean |cos| of every principal direction of W_ft − W0 "
        "with the vector; |cos| with the first (largest) component; and ||ΔW v|| / ||ΔW||_F, the share of "
        "the update along the vector. The mean over all components is close to a random vector's "
        "expectation by construction (the directions are a basis: their squared cosines with any unit "
        "vector sum to at most 1); the top component and the share are where the vectors differ.", "",
        "| layer type | layers | k | vector | mean \\|cos\\| | top-1 \\|cos\\| | ‖ΔW v‖ / ‖ΔW‖_F |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['type']} | {r['layers']} | {r['k']} | {VECTORS[r['vector']][0]} | {r['mean_cos']:.3f} | "
                     f"{r['top1_cos']:.3f} | {r['energy']:.3f} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", required=True, help="run directory of a finished full fine-tuning run")
    parser.add_argument("--lora", help="run directory of a finished LoRA r=1 run on the same model and task")
    parser.add_argument("--base", help="base weights (safetensors) if the full run's config.model.pretrained is not one")
    parser.add_argument("--out", default="reports", help="output folder (default: reports/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random comparison vectors")
    parser.add_argument("--name", default="pca_alignment", help="file name stem of the outputs")


def run(args: argparse.Namespace) -> int:
    layers = analyse(args.full, args.lora, args.base, args.seed)
    summary = summarise(layers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = rundir.read_record(args.full)
    title = f"Fig. 9 on {record.get('task', '?')} / {record.get('model', '?')}: principal directions of W_ft − W0"
    png = plot(layers, out / f"{args.name}.png", title)
    (out / f"{args.name}.json").write_text(json.dumps(
        {"full": str(args.full), "lora": str(args.lora) if args.lora else None, "seed": args.seed,
         "summary": summary, "layers": [asdict(layer) for layer in layers]}, indent=1))
    (out / f"{args.name}.md").write_text(markdown(summary, args.full, args.lora))
    for r in summary:
        print(f"{r['type']:<10} {r['vector']:<6} mean|cos| {r['mean_cos']:.3f}  top1 {r['top1_cos']:.3f}  "
              f"energy {r['energy']:.3f}")
    print(f"{len(layers)} layers -> {png}, {out / (args.name + '.json')}, {out / (args.name + '.md')}")
    return 0
