"""GPU memory per method for LLaMA-2 7B / 13B fine-tuning at the paper's settings, and whether the
paper's claim holds that at 13B only 1LoRA, BitFit, DiffFit and LoRA-QKV fit 2 samples per 40 GB A100.

    python -m onelora.analysis.memory_llama --out reports/memory_llama.md [--jobs 2]
    python -m onelora.analysis.memory_llama --cross-check      # + the fitted model below, on real CPU tensors (slow)

The report comes from the plan (``onelora.plan``: each run's training iteration traced exactly on
fake tensors at the paper's shapes, per-GPU memory under DeepSpeed ZeRO-2 as MoRA ran it).

The fitted model it replaced stays as a cross-check of the activations (``--cross-check``: the
tensors kept for backward measured on real CPU tensors of 1- and 2-block real-width models and
extrapolated; the report prints the two side by side). That model, term by term:
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

from ..adapters import ADAPTER_KINDS, MethodSpec, inject
from ..bench.memory import SavedTensorCounter, model_storage_keys, unique_bytes
from ..methods import compared_methods

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

def model_config(name: str, conf: Path = CONF) -> dict[str, Any]:
    """``conf/model/<name>.yaml`` with its same-group ``defaults`` merged in (13B over 7B)."""
    from omegaconf import OmegaConf

    path = conf / "model" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no model config {path}; choose from {sorted(p.stem for p in path.parent.glob('*.yaml'))}")
    own = OmegaConf.to_container(OmegaConf.load(path))
    merged: dict[str, Any] = {}
    for parent in own.pop("defaults", []) or []:
        if parent != "_self_":
            merged.update(model_config(str(parent), conf))
    merged.update(own)
    return merged


def method_spec(model_cfg: Mapping[str, Any], method: str, dropout: float | None = None) -> MethodSpec:
    """The shipped method config with the model's ``method_overrides`` (paper quirks) applied;
    ``dropout`` sets the adapter dropout where the method's layer takes one (LoRA, DoRA, VeRA)."""
    from ..methods import method_spec as shipped

    spec = shipped(method, **(model_cfg.get("method_overrides") or {}).get(method, {}))
    if dropout is not None and spec.linear and "dropout" in ADAPTER_KINDS[spec.linear].option_names():
        spec.options["dropout"] = dropout
    return spec


def _inject(model: nn.Module, model_cfg: Mapping[str, Any], spec: MethodSpec) -> None:
    inject(model, spec, target_sets=model_cfg["target_sets"], head=model_cfg.get("head") or [],
           module_sets=model_cfg.get("module_sets") or {})


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
    _inject(model, model_cfg, spec)
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
    """Activation bytes of one block and of the rest of the model (embedding, final norm, lm_head,
    loss), each as ``const + samples * (linear * seq + quadratic * seq^2)``: ``const`` is what a
    forward keeps once whatever the batch (e.g. VeRA's ``lambda_b * B`` per layer), ``quadratic`` a
    per-sample term in the square of the length (attention scores, if a kernel kept them)."""

    block: tuple[float, float, float]
    rest: tuple[float, float, float]
    tokens: tuple[int, ...]
    raw: dict[str, int] = field(default_factory=dict)

    def bytes(self, part: str, samples: int, seq: int) -> float:
        const, linear, quadratic = getattr(self, part)
        return const + samples * (linear * seq + quadratic * seq**2)

    def per_token(self, part: str, seq: int) -> float:
        """Bytes per token at ``seq`` tokens, without the constant."""
        _, linear, quadratic = getattr(self, part)
        return linear + quadratic * seq


def _fit(points: Sequence[tuple[int, float]]) -> tuple[float, float, float]:
    """(const, linear, quadratic) through three (tokens, bytes) points, exactly."""
    (t1, y1), (t2, y2), (t3, y3) = points
    # divided differences (Newton form), then expanded
    d12, d23 = (y2 - y1) / (t2 - t1), (y3 - y2) / (t3 - t2)
    quadratic = (d23 - d12) / (t3 - t1)
    linear = d12 - quadratic * (t1 + t2)
    const = y1 - linear * t1 - quadratic * t1**2
    return const, linear, quadratic


def measure_activations(model_cfg: Mapping[str, Any], spec: MethodSpec, *, checkpointing: bool,
                        tokens: tuple[int, int, int] = (32, 64, 96), arch: Mapping[str, Any] | None = None,
                        bases: dict[int, nn.Module] | None = None) -> ActivationProfile:
    """Activation bytes of one real-width block and of the rest, for ``spec`` (bf16, CPU, one sample
    of each length in ``tokens``).

    ``bases``: the random 1- and 2-block models to copy (built once for many methods)."""
    arch = dict(arch or model_cfg["arch"])
    bases = bases if bases is not None else base_models(arch)
    raw: dict[str, int] = {}
    for layers in (1, 2):
        for n in tokens:
            model = copy.deepcopy(bases[layers])
            _inject(model, model_cfg, spec)
            raw[f"L{layers}_T{n}"] = saved_bytes(model, n, checkpointing=checkpointing)
            del model
    block = [(n, raw[f"L2_T{n}"] - raw[f"L1_T{n}"]) for n in tokens]
    rest = [(n, 2 * raw[f"L1_T{n}"] - raw[f"L2_T{n}"]) for n in tokens]
    return ActivationProfile(block=_fit(block), rest=_fit(rest), tokens=tuple(tokens), raw=raw)


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
    activations = profile.bytes("rest", samples, seq) + layers * profile.bytes("block", samples, seq)
    if checkpointing:  # one block's full activations exist again while it is recomputed
        activations += (no_ckpt_block or profile).bytes("block", samples, seq)
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


def fitted_run(out: Path, models: Sequence[str] = ("llama2_7b", "llama2_13b"), methods: Sequence[str] | None = None,
               tokens: tuple[int, ...] = (32, 64, 96), conf: Path = CONF, log=print) -> str:
    """The former report: the fitted model of every (model, method) (hours on a CPU). ``methods``:
    config files; None: the paper's compared methods (``describe.compared`` of conf/method/)."""
    methods = list(methods) if methods is not None else compared_methods()
    rows: dict[tuple[str, str, str, bool], Budget] = {}
    profiles: dict[tuple[str, str, str, bool], ActivationProfile] = {}
    started = time.time()
    for model in models:
        cfg = model_config(model, conf)
        run_cfg = PAPER_RUNS[model]
        arch = cfg["arch"]
        bases = base_models(arch)
        for method in methods:
            for variant, dropout in (("configs", None), ("mora_dropout", MORA_SCRIPT_DROPOUT)):
                spec = method_spec(cfg, method, dropout=dropout)
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
        f"per block = difference, rest (embedding, final norm, lm_head, loss) = 1-block minus a block; one sample "
        f"of {', '.join(map(str, tokens))} tokens, fitted exactly as constant + linear + quadratic in the length "
        "and evaluated at the paper's batch (the constant once, the rest per sample). CPU kernels can save other tensors than CUDA kernels (e.g. SDPA's logsumexp); "
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
        lines += ["Measured activation bytes (bf16): per token at 512 tokens, and the constant a forward keeps "
                  "once whatever the batch; the quadratic coefficient of a block (bytes / token^2 per sample; 0 "
                  "means nothing grows with the square of the length):", "",
                  "| method | variant | checkpointing | block B/token | block constant | block quadratic | "
                  "rest B/token | rest constant |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for method in methods:
            for _, variant, ckpt in _variant_rows(rows, model, method):
                p = profiles[(model, method, variant, ckpt)]
                lines.append(f"| {method} | {variant} | {'yes' if ckpt else 'no'} | {p.per_token('block', 512):,.0f} | "
                             f"{p.block[0]:,.0f} | {p.block[2]:.3f} | {p.per_token('rest', 512):,.0f} | "
                             f"{p.rest[0]:,.0f} |")
        lines.append("")
    lines += verdict(rows, methods)
    lines += why(rows, profiles)
    return "\n".join(lines) + "\n"


def why(rows, profiles, model: str = "llama2_13b") -> list[str]:
    """What makes the differences, in measured bytes per block and token."""
    def block(method, variant="configs"):
        key = (model, method, variant, False)
        return profiles[key].per_token("block", 512) if key in profiles else None

    base = block("bitfit")
    if base is None:
        return []
    parts = [f"a block of the frozen base keeps {base:,.0f} B per token (norm inputs in fp32, q, k, v and "
             "SDPA's output, the MLP's gate, up and SiLU outputs; a frozen linear keeps nothing of its input)"]
    for method, variant, what in (
        ("onelora", "configs", "1LoRA keeps sum(x), one scalar per token and layer"),
        ("lora", "configs", "LoRA's A keeps its inputs"),
        ("lora", "mora_dropout", "LoRA with dropout 0.05 keeps a mask and a dropped copy of every adapted layer's input"),
        ("dora", "mora_dropout", "DoRA with dropout 0.05"),
        ("difffit", "configs", "DiffFit's gamma keeps every adapted layer's output (lm_head's included, in the rest)"),
        ("mora6", "configs", "our MoRA type 6 keeps its rotated compressed input"),
    ):
        value = block(method, variant)
        if value is not None:
            parts.append(f"{what}: {value - base:+,.0f} B")
    weights = rows[(model, "onelora", "configs", False)].weights
    peft_states = max(r.grads + r.optimizer for k, r in rows.items() if k[0] == model and k[1] != "full")
    return ["", f"## Why ({model}, per block and token, measured)", "",
            "; ".join(parts) + ". "
            f"Per GPU the bf16 weights ({_gib(weights)} GiB) dominate; gradients and AdamW states of every PEFT "
            f"method are at most {peft_states / 2**20:.2f} MiB after ZeRO-2's sharding. What separates the methods is "
            f"what their layers keep for backward, times the blocks and the "
            f"{PAPER_RUNS[model]['samples'] * PAPER_RUNS[model]['seq']:,} tokens per GPU."]


def verdict(rows, methods) -> list[str]:
    model = "llama2_13b"
    if not any(k[0] == model for k in rows):
        return []
    out = ["## Verdict: LLaMA-2 13B, 2 samples per 40 GB GPU", "",
           "### From the memory the tensors need (this model)", "",
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
    out += paper_reading(rows)
    return out


def paper_reading(rows) -> list[str]:
    """The 13B verdict from the paper's own 7B percentages: each method's excess over 1LoRA at 7B
    (Table S6), scaled to 13B by our measured ratio of 1LoRA's activations (13B at 2 x 512 over 7B at
    4 x 512), added to the paper's 13B 1LoRA memory (Table S7)."""
    small, large = "llama2_7b", "llama2_13b"
    keys = [(small, "onelora", "configs", False), (large, "onelora", "configs", False)]
    if not all(k in rows for k in keys):
        return []
    scale = rows[keys[1]].activations / rows[keys[0]].activations
    pct7, pct13 = PAPER_MEMORY_PCT[small], PAPER_MEMORY_PCT[large]
    base13 = pct13["onelora"] / 100 * GPU_BYTES
    ours13 = rows[keys[1]].total
    out = ["", "### From the paper's own percentages", "",
           f"The paper's 13B 1LoRA run used {pct13['onelora']}% = {_gib(base13)} GiB; this model counts "
           f"{_gib(ours13)} GiB for it, so {_gib(base13 - ours13)} GiB of the paper's memory is what this model does "
           "not count (allocator cache and fragmentation, CUDA context, NCCL, ...). At 7B the gap is "
           f"{_gib(pct7['onelora'] / 100 * GPU_BYTES - rows[keys[0]].total)} GiB. Each method's excess over 1LoRA in "
           f"the paper's 7B runs (Table S6), scaled to 13B by the ratio of 1LoRA's measured activations ({scale:.2f}: "
           "1.25x wider, 1.25x deeper, half the tokens per GPU), added to the paper's 13B 1LoRA memory:", "",
           "| method | paper 7B % | excess over 1LoRA at 7B (GiB) | predicted 13B (GiB) | fits 40 GiB | paper: fits |",
           "| --- | ---: | ---: | ---: | --- | --- |"]
    fits = set()
    for method, pct in sorted(pct7.items(), key=lambda kv: kv[1]):
        excess = (pct - pct7["onelora"]) / 100 * GPU_BYTES
        predicted = base13 + scale * excess
        if predicted <= GPU_BYTES:
            fits.add(method)
        out.append(f"| {method} | {pct} | {_gib(excess)} | {_gib(predicted)} | {'yes' if predicted <= GPU_BYTES else 'NO'} | "
                   f"{'yes' if method in PAPER_FITS_13B else 'no'} |")
    paper = PAPER_FITS_13B & set(pct7)
    out += ["", f"- Read this way the methods that fit are {sorted(fits)}"
            + (": exactly the paper's set." if fits == paper else
               f"; the paper's set is {sorted(paper)} (extra: {sorted(fits - paper)}, missing: {sorted(paper - fits)}).")]
    return out


# -------------------------------------------------------------------------------------------------
# the report, from the plan
# -------------------------------------------------------------------------------------------------

#: what a row plans: MoRA's recipe (no activation checkpointing) with our method configs as they are
#: (task=metamath's `method_options`, MoRA's dropout, left out), with MoRA's dropout 0.05 (task=metamath
#: as it stands; VeRA given it too), and with activation checkpointing (our configs, no dropout)
VARIANTS = {"mora": ("task.module.gradient_checkpointing=false", "task.method_options=null"),
            "mora_dropout": ("task.module.gradient_checkpointing=false", f"++method.options.dropout={MORA_SCRIPT_DROPOUT}"),
            "checkpointing": ("task.module.gradient_checkpointing=true", "task.method_options=null")}
DROPOUT_METHODS = ("lora", "lora_qkv", "vera", "dora", "mora1", "mora6")


def plan_configs(model: str, method: str, variant: str) -> tuple[str, ...]:
    head = ("experiment=table_s7",) if model == "llama2_13b" else ()
    return (*head, "task=metamath", f"method={method}", "trainer=deepspeed", *VARIANTS[variant])


def rows_of(models: Sequence[str], methods: Sequence[str]) -> list[tuple[str, str, str]]:
    return [(model, method, variant) for model in models for method in methods for variant in VARIANTS
            if variant != "mora_dropout" or method in DROPOUT_METHODS]


def run(out: Path, models: Sequence[str] = ("llama2_7b", "llama2_13b"), methods: Sequence[str] | None = None, *,
        jobs: int = 1, cache: Path | None = None, cross_check: Sequence[str] = (), log=print) -> str:
    """reports/memory_llama.md from the plan (``methods``: config files; None: the compared ones);
    ``cross_check``: methods whose 13B activations the fitted model also measures."""
    from ..plan.paper import plan_all

    methods = list(methods) if methods is not None else compared_methods()

    rows = rows_of(models, methods)
    records = plan_all([plan_configs(*r) for r in rows], cache_dir=str(cache) if cache else None, jobs=jobs, log=log)
    planned = {r: records[plan_configs(*r)] for r in rows}
    fitted = {m: fitted_activations("llama2_13b", m) for m in cross_check}
    text = plan_report(planned, models, methods, fitted)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def fitted_activations(model: str, method: str) -> float:
    """The fitted model's activation bytes of ``model`` at the paper's batch, MoRA's recipe."""
    cfg = model_config(model)
    spec = method_spec(cfg, method)
    profile = measure_activations(cfg, spec, checkpointing=False)
    run_cfg, arch = PAPER_RUNS[model], cfg["arch"]
    return profile.bytes("rest", run_cfg["samples"], run_cfg["seq"]) + \
        arch["num_hidden_layers"] * profile.bytes("block", run_cfg["samples"], run_cfg["seq"])


def _per_gpu_states(record: Mapping[str, Any]) -> float:
    """ZeRO-2's per-GPU share: fp32 master + two fp32 moments + a bf16 gradient per trainable parameter."""
    return record["trainable"] * (12 + 2) / record["gpus"]


def plan_report(planned: Mapping[tuple[str, str, str], Any], models: Sequence[str], methods: Sequence[str],
                fitted: Mapping[str, float] | None = None) -> str:
    ok = {k: v for k, v in planned.items() if isinstance(v, dict)}
    lines = [
        "# GPU memory of LLaMA-2 fine-tuning per method, as the paper ran it",
        "",
        "Generated by `python -m onelora.analysis.memory_llama --out reports/memory_llama.md` from the plan "
        "(`onelora.plan`, docs/plan.md): each run's training iteration traced exactly on fake tensors (transformers' "
        "LlamaForCausalLM of the real size, our adapter layers, the task module's step, AdamW), at the paper's "
        "shapes, per GPU under DeepSpeed ZeRO-2 as MoRA trained. GiB = 2^30 bytes; the A100's 40 GB are taken as "
        "40 GiB.",
        "",
        "## Settings",
        "",
        "- 7B: 16 GPUs x 4 samples (accumulation 2); 13B: 64 GPUs x 2 samples; 512 tokens per sample (MoRA's "
        "cutoff; batches pad to their longest sample, so this is the worst batch), one position padded (transformers "
        "then passes an explicit attention mask: the memory-efficient SDPA kernel).",
        "- Weights in bf16, no autocast (DeepSpeed's bf16 casts the module; MoRA loads the base in bf16). ZeRO-2: "
        "an fp32 master copy and AdamW's two fp32 moments (12 B) and a bf16 gradient (2 B) per trainable parameter, "
        "divided over the GPUs, plus two reduce buckets of 2e8 bf16 elements (0.75 GiB, `overlap_comm`).",
        "- Variants: `mora`: MoRA's recipe (no activation checkpointing: `grad_checkpoint` defaults to False in its "
        "script) with our method configs (no dropout); `mora_dropout`: with MoRA's `lora_dropout` 0.05 where our "
        "layer takes a dropout (LoRA, LoRA-QKV, DoRA, MoRA 1 / 6 as `task=metamath` sets it; VeRA too; CUDA's fused "
        "dropout keeps a 1-byte mask); `checkpointing`: our method configs with non-reentrant activation "
        "checkpointing per decoder layer (`task.module.gradient_checkpointing=true`, what fits a method that does "
        "not fit without).",
        "- Peak per GPU: the traced peak of live tensors (allocations rounded to 512 B), the states sharded, + 1 GiB "
        "reserve (CUDA context, library workspaces). Not counted: the caching allocator's reserve and "
        "fragmentation, NCCL's buffers, DeepSpeed's all-gather buffers.",
        "",
    ]
    for model in models:
        r = PAPER_RUNS[model]
        lines += [f"## {model}: {r['samples']} x {r['seq']} tokens per GPU, {r['gpus']} GPUs", "",
                  "| method | variant | trainable | weights | grads + optimizer (per GPU) | ZeRO buckets | activations | "
                  "peak per GPU | % of 40 GiB | fits | paper % |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
        for method in methods:
            for variant in VARIANTS:
                rec = ok.get((model, method, variant))
                if rec is None:
                    continue
                b = rec["bytes"]
                paper = PAPER_MEMORY_PCT.get(model, {}).get(method) if variant == "mora" else None
                lines.append(
                    f"| {method} | {variant} | {rec['trainable']:,} | {_gib(sum(b['params'].values()))} | "
                    f"{_gib(_per_gpu_states(rec))} | {_gib(b['strategy_overhead'])} | {_gib(b['activations'])} | "
                    f"{rec['peak_gib']:.2f} | {100 * rec['peak_gib'] * GIB / GPU_BYTES:.0f} | "
                    f"{rec['cards']['a100_40gb']['verdict']} | {paper if paper is not None else '-'} |")
        lines.append("")
    lines += _plan_verdict(ok, methods) + _plan_why(ok) + _cross_check(ok, fitted or {})
    return "\n".join(lines) + "\n"


def _plan_verdict(ok, methods, model: str = "llama2_13b") -> list[str]:
    from ..plan.paper import relative_reading

    mora = {m: ok[(model, m, "mora")] for m in methods if (model, m, "mora") in ok}
    if "onelora" not in mora:
        return []
    relative = relative_reading(mora, PAPER_MEMORY_PCT[model]["onelora"])
    lines = ["## Verdict: LLaMA-2 13B, 2 samples per 40 GB GPU", "",
             "| method | paper: fits | MoRA's recipe | with dropout 0.05 | with checkpointing | paper-relative |",
             "| --- | --- | --- | --- | --- | --- |"]
    fits: dict[str, set[str]] = {"mora": set(), "mora_dropout": set(), "checkpointing": set(), "relative": set()}
    for method, rec in mora.items():
        cells = []
        for variant in ("mora", "mora_dropout", "checkpointing"):
            r = ok.get((model, method, variant), rec if variant == "mora_dropout" else None)
            if r is None:
                cells.append("-")
                continue
            verdict = r["cards"]["a100_40gb"]["verdict"]
            fits[variant] |= {method} if verdict != "no" else set()
            cells.append(f"{verdict} ({r['peak_gib']:.2f} GiB)")
        rel = relative[method]
        fits["relative"] |= {method} if rel <= 40 else set()
        cells.append(f"{'fits' if rel <= 40 else 'no'} ({rel:.2f} GiB)")
        lines.append(f"| {method} | {'yes' if method in PAPER_FITS_13B else 'no'} | " + " | ".join(cells) + " |")
    paper = PAPER_FITS_13B & set(mora)
    labels = {"mora": "MoRA's recipe", "mora_dropout": "MoRA's recipe with its dropout", "checkpointing":
              "with checkpointing", "relative": "the paper-relative reading (the plan's excess over 1LoRA added to the "
              f"paper's 13B 1LoRA figure, {PAPER_MEMORY_PCT[model]['onelora']}%)"}
    lines.append("")
    for key, label in labels.items():
        found = fits[key]
        lines.append(f"- {label}: {sorted(found)} fit: " + ("exactly the paper's set." if found == paper else
                     f"the paper's set is {sorted(paper)} (extra {sorted(found - paper)}, missing {sorted(paper - found)})."))
    base = mora["onelora"]["peak_gib"]
    lines += ["", f"The paper's 13B 1LoRA run used {PAPER_MEMORY_PCT[model]['onelora']}% = "
              f"{PAPER_MEMORY_PCT[model]['onelora'] / 100 * 40:.1f} GiB; the plan counts {base:.2f} GiB (reserve included) "
              "for its tensors, so the rest is what a tensor count leaves out (the allocator's cache and fragmentation, "
              "NCCL). Counting tensors no method needs more than 40 GiB on MoRA's recipe; the paper's split between "
              "fitting and not fitting is not what the tensors make.", ""]
    return lines


def _plan_why(ok, model: str = "llama2_13b") -> list[str]:
    base = ok.get((model, "bitfit", "mora"))
    if base is None:
        return []
    r = PAPER_RUNS[model]
    layers = {"llama2_7b": 32, "llama2_13b": 40}[model]
    per = r["samples"] * r["seq"] * layers
    parts = []
    for method, variant, what in (("onelora", "mora", "1LoRA keeps sum(x), one value per token and layer"),
                                  ("lora", "mora", "LoRA's A keeps its inputs"),
                                  ("lora", "mora_dropout", "LoRA with dropout 0.05 keeps a mask and a dropped copy of its inputs"),
                                  ("difffit", "mora", "DiffFit's gamma keeps every adapted output (lm_head's included)"),
                                  ("mora6", "mora", "our MoRA type 6 keeps its rotated compressed input"),
                                  ("full", "mora", "full fine-tuning keeps every linear's input")):
        rec = ok.get((model, method, variant))
        if rec is not None:
            parts.append(f"{what}: {(rec['bytes']['activations'] - base['bytes']['activations']) / per:+,.0f} B")
    return ["## Why (13B, MoRA's recipe: activation bytes per token and decoder layer beyond BitFit's)", "",
            "; ".join(parts) + f". BitFit's own: {base['bytes']['activations'] / per:,.0f} B per token and layer "
            "(the frozen base keeps its norms' inputs, q, k, v and the attention output, the MLP's gate, up and SiLU "
            "outputs; a frozen linear keeps nothing of its input). The weights (24.2 GiB in bf16) dominate every "
            "method; what separates the methods is what their layers keep for backward.", ""]


def _cross_check(ok, fitted: Mapping[str, float], model: str = "llama2_13b") -> list[str]:
    lines = ["## Cross-check: the fitted model", "",
             "The report this one replaced was fitted: activation bytes measured on real CPU tensors of 1- and 2-block "
             "real-width LLaMA-2 models at three lengths, extrapolated to the full depth and the paper's batch "
             "(`fitted_run`, kept as the cross-check; `--cross-check` reruns it for the methods given). "]
    if not fitted:
        return lines + ["Not run for this report (`python -m onelora.analysis.memory_llama --cross-check onelora "
                        "lora difffit`, minutes per method on a CPU).", ""]
    lines += ["", "| method | planned activations GiB | fitted GiB | difference |", "| --- | ---: | ---: | ---: |"]
    for method, value in fitted.items():
        rec = ok.get((model, method, "mora"))
        if rec is None:
            continue
        planned = rec["bytes"]["activations"]
        lines.append(f"| {method} | {_gib(planned)} | {_gib(value)} | {100 * (planned - value) / value:+.2f}% |")
    return lines + ["", "The plan steps through the task module (labels, a padded batch's attention mask, the "
                    "GPU's attention kernel); the fitted model ran the bare model on CPU kernels without a mask.", ""]


def main(argv: Sequence[str] | None = None) -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/memory_llama.md"))
    parser.add_argument("--models", nargs="+", default=list(PAPER_RUNS))
    parser.add_argument("--methods", nargs="+", default=None, help="method configs (default: the compared ones)")
    parser.add_argument("--jobs", type=int, default=1, help="processes tracing runs in parallel")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("ONELORA_CACHE", ".cache")) / "plan")
    parser.add_argument("--cross-check", nargs="*", default=[], metavar="METHOD",
                        help="also fit these methods' 13B activations on real CPU tensors (the former model)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args.out, args.models, args.methods, jobs=args.jobs, cache=args.cache, cross_check=args.cross_check)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
