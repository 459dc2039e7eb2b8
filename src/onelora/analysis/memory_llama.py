"""GPU memory per method for LLaMA-2 7B / 13B fine-tuning at the paper's settings, and whether the
paper's claim holds that at 13B only 1LoRA, BitFit, DiffFit and LoRA-QKV fit 2 samples per 40 GB A100.

    python -m onelora.analysis.memory_llama --out reports/memory_llama.md

The model, term by term (every assumption is printed in the report):
- weights: every parameter in bf16 (MoRA's script loads the base in bf16 and peft adapters take
  the base's dtype; ours do too). Counts are exact, from the real transformers classes on the meta
  device with our adapter layer and the model configs' target sets.
- gradients (bf16) and AdamW states (fp32 master copy + two moments, 12 bytes) of the trainable
  parameters, sharded over all GPUs by DeepSpeed ZeRO-2, as MoRA ran it; plus ZeRO-2's gradient
  buckets (``reduce_bucket_size`` elements, two of them with ``overlap_comm``, in the parameters'
  dtype), allocated at every backward whatever the number of trainable parameters.
- activations: what autograd keeps for backward, MEASURED with saved-tensor hooks on real-width
  models (bf16, CPU): a 1-block and a 2-block LLaMA-2 of the real hidden / MLP width and vocabulary,
  so per block = (2 blocks) - (1 block) and the rest (embedding, final norm, lm_head, loss) =
  (1 block) - per block; at two sequence lengths, so a term quadratic in the length (attention
  scores, if a kernel kept them) is extrapolated, not missed. With activation checkpointing a
  block keeps only its inputs (measured the same way) and one block is recomputed at a time.
- the loss's backward transient: the gradient of the fp32 log-softmax and of the fp32 logits
  (8 bytes x vocabulary per token) exist together before the lm_head's backward.
Not counted: the CUDA context and NCCL buffers, allocator fragmentation, DeepSpeed's all-gather
buffers, the batch itself; the report shows the headroom they would have to fit in.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..adapters import MethodSpec, inject
from ..bench.memory import SavedTensorCounter, model_storage_keys, unique_bytes

GIB = 1024**3
CONF = Path(__file__).resolve().parents[3] / "conf"

#: the paper's runs (Sec. 4, App. B; MoRA's recipe): GPUs, samples per GPU, tokens per sample (max)
PAPER_RUNS = {"llama2_7b": {"gpus": 16, "samples": 4, "seq": 512},
              "llama2_13b": {"gpus": 64, "samples": 2, "seq": 512}}
GPU_BYTES = 40 * GIB  # A100 40GB
#: MoRA's ds.config: ZeRO-2, reduce_bucket_size 2e8, overlap_comm true (double buffer), contiguous_gradients
ZERO2_BUCKET_ELEMENTS = int(2e8)
ZERO2_BUCKETS = 2
#: MoRA's train.py default lora_dropout (its MetaMathQA command does not change it)
MORA_SCRIPT_DROPOUT = 0.05
#: the methods of Tables S6 / S7, plus DoRA, norms and full fine-tuning as references
METHODS = ("onelora", "bitfit", "difffit", "lora_qkv", "lora", "vera", "dora", "mora1", "mora6", "norms", "full")
#: the paper's claim: at 13B, 2 samples per 40 GB GPU fit for these only (Table S7)
PAPER_FITS_13B = {"onelora", "bitfit", "difffit", "lora_qkv"}
#: GPU memory in % of a 40 GB A100 as printed in Tables S6 / S7
PAPER_MEMORY_PCT = {
    "llama2_7b": {"mora1": 80, "mora6": 91, "bitfit": 75, "difffit": 77, "lora": 93, "vera": 92, "onelora": 76,
                  "lora_qkv": 79},
    "llama2_13b": {"bitfit": 91, "difffit": 93, "onelora": 92, "lora_qkv": 92},
}


# -------------------------------------------------------------------------------------------------
# configs
# -------------------------------------------------------------------------------------------------

def load_yaml(group: str, name: str, conf: Path = CONF) -> dict[str, Any]:
    """A config of ``conf/<group>/<name>.yaml`` with its same-group ``defaults`` merged in."""
    from omegaconf import OmegaConf

    path = conf / group / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config {path}; choose from {sorted(p.stem for p in path.parent.glob('*.yaml'))}")
    own = OmegaConf.load(path)
    merged = OmegaConf.create()
    for entry in own.get("defaults", []) or []:
        merged = OmegaConf.merge(merged, own if entry == "_self_" else load_yaml(group, str(entry), conf))
    if "_self_" not in (own.get("defaults") or []):
        merged = OmegaConf.merge(merged, own)
    out = OmegaConf.to_container(merged)
    out.pop("defaults", None)
    return out


def method_spec(model_cfg: Mapping[str, Any], method: str, conf: Path = CONF, dropout: float | None = None) -> MethodSpec:
    """The method config with the model's ``method_overrides`` (paper quirks) applied; ``dropout``
    sets the adapter dropout where the method's layer takes one (LoRA, DoRA, VeRA)."""
    settings = load_yaml("method", method, conf)
    settings.update((model_cfg.get("method_overrides") or {}).get(method, {}))
    spec = MethodSpec.from_config(settings)
    if dropout is not None and spec.linear in ("lora", "dora", "vera"):
        spec.options["dropout"] = dropout
    return spec


def llama(arch: Mapping[str, Any], layers: int | None = None, *, device: str = "meta",
          dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> nn.Module:
    """LlamaForCausalLM of ``arch`` (``layers`` blocks if given), random weights unless on meta."""
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = dict(arch)
    if layers is not None:
        arch["num_hidden_layers"] = layers
    config = LlamaConfig(**arch, tie_word_embeddings=False, attn_implementation="sdpa")
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)
    if device == "meta":
        return model
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    with torch.device(device):  # its fp32 inv_freq buffer: computed, not left empty
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model


# -------------------------------------------------------------------------------------------------
# counts
# -------------------------------------------------------------------------------------------------

@dataclass
class Counts:
    total: int
    trainable: int
    frozen: int


def count(model_cfg: Mapping[str, Any], spec: MethodSpec) -> Counts:
    """Exact parameter counts of the full-size model with ``spec`` (meta device, no memory)."""
    model = llama(model_cfg["arch"])
    inject(model, spec, target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [])
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Counts(total=total, trainable=trainable, frozen=total - trainable)


# -------------------------------------------------------------------------------------------------
# activations
# -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def checkpoint_inputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The tensors each decoder block receives: what activation checkpointing holds for its recompute
    (inside a checkpointed block, the checkpoint's own saved-tensor hooks replace ours)."""
    held: list[torch.Tensor] = []

    def keep(_module, args, kwargs):
        held.extend(t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))
        held.extend(t for v in kwargs.values() if isinstance(v, tuple) for t in v if isinstance(t, torch.Tensor))

    handles = [layer.register_forward_pre_hook(keep, with_kwargs=True) for layer in model.model.layers]
    try:
        yield held
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def cuda_dropout() -> Iterator[None]:
    """Dropout as CUDA runs it: ATen's fused ``native_dropout`` keeps a 1-byte bool mask for backward,
    while its CPU path multiplies by a noise tensor of the input's dtype (2 bytes in bf16) and keeps
    that. On the CPU the fused kernel exists too; use it, so the CPU measures what a GPU keeps."""
    from torch.nn import functional as F

    plain = F.dropout

    def fused(input, p=0.5, training=True, inplace=False):
        if training and 0.0 < p < 1.0:
            return torch.native_dropout(input, p, True)[0]
        return plain(input, p, training, inplace)

    F.dropout = fused
    try:
        yield
    finally:
        F.dropout = plain


def saved_bytes(model: nn.Module, tokens: int, *, checkpointing: bool, batch: int = 1, seed: int = 0) -> int:
    """Bytes kept for backward at the end of one training forward (loss included) of ``batch`` x
    ``tokens`` random tokens: distinct non-parameter storages."""
    from ..tasks.language import enable_gradient_checkpointing

    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens), generator=generator).to(device)
    counter = SavedTensorCounter(model_storage_keys(model))
    with checkpoint_inputs(model) as inputs, cuda_dropout(), counter:
        out = model(input_ids=ids, labels=ids, use_cache=False)
    saved = [s.tensor for s in (ref() for ref in counter.held) if s is not None]
    kept = saved + (inputs if checkpointing else [])
    exclude = counter.exclude
    result = unique_bytes(t for t in kept if (str(t.device), t.untyped_storage().data_ptr()) not in exclude)
    del out, saved, kept, inputs
    return result


@dataclass
class ActivationProfile:
    """Activation bytes per token: per block, and the rest of the model (embedding, final norm,
    lm_head, loss), each as ``a + b * tokens`` (b: a term quadratic in the sequence length)."""

    block: tuple[float, float]
    rest: tuple[float, float]
    tokens: tuple[int, int]
    raw: dict[str, int] = field(default_factory=dict)

    def per_token(self, part: str, tokens: int) -> float:
        a, b = getattr(self, part)
        return a + b * tokens


def _line(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    (t1, y1), (t2, y2) = points
    slope = (y2 - y1) / (t2 - t1)
    return y1 - slope * t1, slope


def measure_activations(model_cfg: Mapping[str, Any], spec: MethodSpec, *, checkpointing: bool,
                        tokens: tuple[int, int] = (32, 64), arch: Mapping[str, Any] | None = None,
                        bases: dict[int, nn.Module] | None = None) -> ActivationProfile:
    """Per-token activation bytes of one real-width block and of the rest, for ``spec`` (bf16, CPU).

    ``bases``: the random 1- and 2-block models to copy (built once for many methods)."""
    arch = dict(arch or model_cfg["arch"])
    bases = bases if bases is not None else base_models(arch)
    raw: dict[str, int] = {}
    for layers in (1, 2):
        for n in tokens:
            model = copy.deepcopy(bases[layers])
            inject(model, spec, target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [])
            raw[f"L{layers}_T{n}"] = saved_bytes(model, n, checkpointing=checkpointing)
            del model
    block = [(n, (raw[f"L2_T{n}"] - raw[f"L1_T{n}"]) / n) for n in tokens]
    rest = [(n, (2 * raw[f"L1_T{n}"] - raw[f"L2_T{n}"]) / n) for n in tokens]
    return ActivationProfile(block=_line(block), rest=_line(rest), tokens=tuple(tokens), raw=raw)


def base_models(arch: Mapping[str, Any]) -> dict[int, nn.Module]:
    """Random bf16 LLaMA-2 models of ``arch``'s width with 1 and 2 blocks, on the CPU."""
    return {layers: llama(arch, layers, device="cpu", seed=layers) for layers in (1, 2)}


# -------------------------------------------------------------------------------------------------
# the memory model
# -------------------------------------------------------------------------------------------------

@dataclass
class Budget:
    method: str
    model: str
    trainable: int
    weights: float
    grads: float
    optimizer: float
    buckets: float
    activations: float
    loss_transient: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.buckets + self.activations + self.loss_transient

    def fits(self, capacity: float = GPU_BYTES) -> bool:
        return self.total <= capacity


def budget(model: str, method: str, counts: Counts, profile: ActivationProfile, *, checkpointing: bool,
           layers: int, hidden: int, vocab: int, gpus: int, samples: int, seq: int,
           no_ckpt_block: ActivationProfile | None = None) -> Budget:
    """Bytes on one GPU at the peak of a step (the start of backward)."""
    tokens = samples * seq
    block = profile.per_token("block", seq)
    rest = profile.per_token("rest", seq)
    activations = tokens * (rest + layers * block)
    if checkpointing:  # one block's full activations exist again while it is recomputed
        full = no_ckpt_block or profile
        activations += tokens * full.per_token("block", seq)
    return Budget(
        method=method, model=model, trainable=counts.trainable,
        weights=2.0 * counts.total,
        grads=2.0 * counts.trainable / gpus,
        optimizer=12.0 * counts.trainable / gpus,
        buckets=2.0 * ZERO2_BUCKET_ELEMENTS * ZERO2_BUCKETS,
        activations=activations,
        loss_transient=8.0 * vocab * tokens,
    )


# -------------------------------------------------------------------------------------------------
# the report
# -------------------------------------------------------------------------------------------------

def _gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def run(out: Path, models: Sequence[str] = ("llama2_7b", "llama2_13b"), methods: Sequence[str] = METHODS,
        tokens: tuple[int, int] = (32, 64), conf: Path = CONF, log=print) -> str:
    rows: dict[tuple[str, str, str, bool], Budget] = {}
    profiles: dict[tuple[str, str, str, bool], ActivationProfile] = {}
    started = time.time()
    for model in models:
        cfg = load_yaml("model", model, conf)
        run_cfg = PAPER_RUNS[model]
        arch = cfg["arch"]
        bases = base_models(arch)
        for method in methods:
            for variant, dropout in (("configs", None), ("mora_dropout", MORA_SCRIPT_DROPOUT)):
                spec = method_spec(cfg, method, conf, dropout=dropout)
                if variant == "mora_dropout" and "dropout" not in spec.options:
                    continue  # no dropout to add: same as the configs' variant
                counts = count(cfg, spec)
                plain = measure_activations(cfg, spec, checkpointing=False, tokens=tokens, bases=bases)
                ckpt = measure_activations(cfg, spec, checkpointing=True, tokens=tokens, bases=bases)
                for checkpointing, profile in ((False, plain), (True, ckpt)):
                    key = (model, method, variant, checkpointing)
                    profiles[key] = profile
                    rows[key] = budget(model, method, counts, profile, checkpointing=checkpointing,
                                       layers=arch["num_hidden_layers"], hidden=arch["hidden_size"],
                                       vocab=arch["vocab_size"], no_ckpt_block=plain, **run_cfg)
                log(f"{model} {method} {variant}: {_gib(rows[(model, method, variant, False)].total)} GiB, "
                    f"checkpointing {_gib(rows[(model, method, variant, True)].total)} GiB "
                    f"({time.time() - started:.0f} s)")
        del bases
    text = report(rows, profiles, models, methods, tokens)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def _variant_rows(rows, model, method):
    yield rows[(model, method, "configs", False)], "configs", False
    if (model, method, "mora_dropout", False) in rows:
        yield rows[(model, method, "mora_dropout", False)], "mora_dropout", False
    yield rows[(model, method, "configs", True)], "configs", True


def report(rows, profiles, models, methods, tokens) -> str:
    lines = [
        "# GPU memory of LLaMA-2 fine-tuning per method, as the paper ran it",
        "",
        "Generated by `python -m onelora.analysis.memory_llama --out reports/memory_llama.md` "
        "(src/onelora/analysis/memory_llama.py). GiB = 2^30 bytes; the A100's 40 GB are taken as 40 GiB.",
        "",
        "## Settings and assumptions",
        "",
    ]
    for model in models:
        r = PAPER_RUNS[model]
        lines.append(f"- {model}: {r['gpus']} GPUs x {r['samples']} samples x {r['seq']} tokens "
                     f"(MoRA's recipe as the paper states it; the longest batch of an epoch is taken as full length).")
    lines += [
        "- Weights: every parameter in bf16 (MoRA's script loads the base in bf16 with `--use_16bit --use_bf16`; "
        "adapters take the base's dtype). Exact counts from transformers' LlamaForCausalLM on the meta device with "
        "our adapter layer and `conf/model/llama2_*.yaml` target sets (lm_head excluded; DiffFit's gamma also on "
        "lm_head, as the paper's counts show).",
        "- Gradients (bf16, 2 B) and AdamW states (fp32 master copy + exp_avg + exp_avg_sq, 12 B) of the trainable "
        "parameters, divided by the number of GPUs: DeepSpeed ZeRO-2 shards both over all data-parallel ranks "
        "(MoRA's ds.config, stage 2).",
        f"- ZeRO-2 gradient buckets: DeepSpeed allocates `reduce_bucket_size` elements ({ZERO2_BUCKET_ELEMENTS:.0e} "
        f"in MoRA's ds.config) x {ZERO2_BUCKETS} (overlap_comm: double buffer) in the parameters' dtype at every "
        "backward (stage_1_and_2.py `backward`), whatever the number of trainable parameters: "
        f"{_gib(2.0 * ZERO2_BUCKET_ELEMENTS * ZERO2_BUCKETS)} GiB.",
        "- Activations: measured, not estimated. Saved-tensor hooks (pack returns `t.detach()`) count the distinct "
        "non-parameter storages autograd keeps at the end of a training forward (loss included), on a 1-block and a "
        "2-block LLaMA-2 of the real width, MLP width and vocabulary, bf16, CPU, transformers' SDPA attention; "
        f"per block = difference, rest (embedding, final norm, lm_head, loss) = 1-block minus a block; at {tokens[0]} "
        f"and {tokens[1]} tokens, extrapolated linearly per token to 512 (a per-token slope would be a term "
        "quadratic in the length). CPU kernels can save other tensors than CUDA kernels (e.g. SDPA's logsumexp); "
        "the differences are per-head, per-token scalars.",
        "- Activation checkpointing (transformers, non-reentrant, per block): a block keeps its inputs (measured: "
        "the tensors each block receives), and one block's full activations exist again while it is recomputed. "
        "MoRA's script does not enable it (`grad_checkpoint` defaults to False and the README command does not set "
        "it); the paper does not mention it.",
        f"- Dropout: our method configs have none; MoRA's script gives LoRA-family layers `lora_dropout` "
        f"{MORA_SCRIPT_DROPOUT} (its default, not changed by its MetaMathQA command). The `mora_dropout` rows set "
        "that dropout where our layer takes one (LoRA, DoRA, VeRA): dropout keeps a mask and a dropped copy of each "
        "adapted layer's input (measured with ATen's fused dropout, which CUDA uses: a 1-byte mask; the CPU's "
        "own path would keep a 2-byte noise tensor). (Our MoRA layers have no dropout option; MoRA's peft code "
        "applies it to MoRA too, where only the mask is kept: the input is summed, not multiplied.)",
        "- Loss: transformers upcasts the logits to fp32; at the start of backward the gradients of the fp32 "
        "log-softmax and of the fp32 logits exist together: 8 B x vocabulary per token, added as a transient.",
        "- Not counted: CUDA context and NCCL (~0.5-1 GiB), allocator fragmentation and cache, DeepSpeed all-gather "
        "buffers, the input batch. The paper's percentages are of the 40 GB card, probably as nvidia-smi or wandb "
        "report it (reserved memory, context included).",
        "- MoRA's train.py calls `torch.compile(model)` only after handing the model to the Trainer, so training "
        "runs eagerly: no compiler fusion to model.",
        "",
    ]
    for model in models:
        r = PAPER_RUNS[model]
        lines += [f"## {model}: {r['samples']} x {r['seq']} tokens per GPU, {r['gpus']} GPUs", "",
                  "| method | variant | checkpointing | trainable | weights | grads+optim | ZeRO buckets | "
                  "activations | loss transient | total GiB | % of 40 GiB | fits | paper % |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        for method in methods:
            for row, variant, ckpt in _variant_rows(rows, model, method):
                paper = PAPER_MEMORY_PCT.get(model, {}).get(method)
                lines.append(
                    f"| {method} | {variant} | {'yes' if ckpt else 'no'} | {row.trainable:,} | {_gib(row.weights)} | "
                    f"{_gib(row.grads + row.optimizer)} | {_gib(row.buckets)} | {_gib(row.activations)} | "
                    f"{_gib(row.loss_transient)} | {_gib(row.total)} | {100 * row.total / GPU_BYTES:.0f} | "
                    f"{'yes' if row.fits() else 'NO'} | {paper if paper is not None else '-'} |")
        lines.append("")
        lines += ["Measured activation bytes per token (bf16), extrapolated to 512 tokens:", "",
                  "| method | variant | checkpointing | per block | rest of the model | "
                  "per-token slope of a block (B/token^2) |", "| --- | --- | --- | ---: | ---: | ---: |"]
        for method in methods:
            for _, variant, ckpt in _variant_rows(rows, model, method):
                p = profiles[(model, method, variant, ckpt)]
                lines.append(f"| {method} | {variant} | {'yes' if ckpt else 'no'} | {p.per_token('block', 512):,.0f} | "
                             f"{p.per_token('rest', 512):,.0f} | {p.block[1]:.2f} |")
        lines.append("")
    lines += verdict(rows, methods)
    return "\n".join(lines) + "\n"


def verdict(rows, methods) -> list[str]:
    model = "llama2_13b"
    if not any(k[0] == model for k in rows):
        return []
    out = ["## Verdict: LLaMA-2 13B, 2 samples per 40 GB GPU", "",
           "| method | paper: fits | ours, configs (no dropout) | ours, MoRA's dropout 0.05 | ours, checkpointing |",
           "| --- | --- | --- | --- | --- |"]
    fit_configs, fit_dropout = set(), set()
    for method in methods:
        plain = rows[(model, method, "configs", False)]
        dropout = rows.get((model, method, "mora_dropout", False), plain)
        ckpt = rows[(model, method, "configs", True)]
        fit_configs |= {method} if plain.fits() else set()
        fit_dropout |= {method} if dropout.fits() else set()
        out.append(f"| {method} | {'yes' if method in PAPER_FITS_13B else 'no'} | "
                   + " | ".join(f"{'fits' if b.fits() else 'does NOT fit'} ({_gib(b.total)} GiB)"
                                for b in (plain, dropout, ckpt)) + " |")
    considered = set(methods)
    paper = PAPER_FITS_13B & considered
    out += [""]
    for label, fits in (("our configs (no dropout)", fit_configs), ("MoRA's dropout 0.05", fit_dropout)):
        same = fits == paper
        out.append(f"- With {label}, without checkpointing, the methods that fit are {sorted(fits)}: "
                   + ("exactly the paper's set." if same else
                      f"the paper's set is {sorted(paper)} (extra: {sorted(fits - paper)}, missing: {sorted(paper - fits)})."))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/memory_llama.md"))
    parser.add_argument("--models", nargs="+", default=list(PAPER_RUNS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--tokens", nargs=2, type=int, default=(32, 64))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args.out, args.models, args.methods, tuple(args.tokens))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
