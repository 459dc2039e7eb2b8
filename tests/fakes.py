"""Small datasets written in the real on-disk formats, so the real loading code runs in tests."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def write_cifar(root: Path, *, classes: int = 10, per_batch: int = 20, test: int = 20, seed: int = 0) -> Path:
    """A CIFAR-10 / CIFAR-100 copy in torchvision's python layout (pickled batches + meta).

    Images are class-dependent colour patterns plus noise, so a model can learn them.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    base.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if classes == 10 else "fine_labels"
    palette = rng.integers(0, 256, size=(classes, 3))

    def batch(n: int) -> dict:
        labels = rng.integers(0, classes, size=n)
        images = np.empty((n, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            noise = rng.normal(0, 20, size=(3, 32, 32))
            images[i] = np.clip(palette[label][:, None, None] + noise, 0, 255)
        return {"data": images.reshape(n, -1), label_key: labels.tolist(), "filenames": [f"{i}.png" for i in range(n)]}

    def dump(name: str, obj: dict) -> None:
        with open(base / name, "wb") as handle:
            pickle.dump(obj, handle)

    if classes == 10:
        for i in range(1, 6):
            dump(f"data_batch_{i}", batch(per_batch))
        dump("test_batch", batch(test))
        dump("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    else:
        dump("train", batch(per_batch * 5))
        dump("test", batch(test))
        dump("meta", {"fine_label_names": [f"class{i}" for i in range(classes)], "coarse_label_names": []})
    return Path(root)


def write_food101(root: Path, *, classes: tuple[str, ...] = ("apple_pie", "ramen", "sushi"), train: int = 4,
                  test: int = 2, seed: int = 0) -> Path:
    """A Food-101 copy as it ships: food-101/images/<class>/<id>.jpg, meta/{train,test}.json and the
    same lists as meta/{train,test}.txt (``<class>/<id>`` lines), meta/classes.txt and labels.txt."""
    import json

    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / "food-101"
    meta = {"train": {}, "test": {}}
    for c, name in enumerate(classes):
        (base / "images" / name).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", train), ("test", test)):
            ids = []
            for i in range(count):
                image_id = f"{split}{c}{i:03d}"
                pixels = np.clip(rng.normal(60 * (c + 1), 30, size=(40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(base / "images" / name / f"{image_id}.jpg")
                ids.append(f"{name}/{image_id}")
            meta[split][name] = ids
    (base / "meta").mkdir(parents=True, exist_ok=True)
    for split, content in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(content))
        (base / "meta" / f"{split}.txt").write_text("".join(f"{i}\n" for ids in content.values() for i in ids))
    (base / "meta" / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (base / "meta" / "labels.txt").write_text("".join(f"{c.replace('_', ' ').capitalize()}\n" for c in classes))
    return Path(root)


def write_tiny_vae(directory: Path | str) -> Path:
    """A random diffusers AutoencoderKL (2x downsampling, 4 latent channels) saved as diffusers
    saves one (config.json + weights), so the VAE part loads it like sd-vae-ft-ema."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  layers_per_block=1, sample_size=16, mid_block_add_attention=False).save_pretrained(directory)
    return Path(directory)


def write_metamath_twin(home: Path, count: int = 80) -> Path:
    """``MetaMathQA-395K.json`` (synthetic problems of all four types, MetaMathQA's record format),
    ``gsm8k_test.jsonl`` (GSM8K's ``question`` / ``answer ... #### X``) and ``tokenizer/``: a byte-level
    BPE trained on the json and written with ``save_pretrained``, so the task's real
    ``pretrained_tokenizer`` path loads it as it would LLaMA-2's local directory."""
    from onelora.data.synthetic.math import problems
    from onelora.data.tokenizers import trained_tokenizer

    home = Path(home)
    if (home / "tokenizer" / "tokenizer_config.json").is_file():
        return home
    home.mkdir(parents=True, exist_ok=True)
    records = problems(["add", "sub", "mul", "two_step"], count, seed=7)
    (home / "MetaMathQA-395K.json").write_text(json.dumps(records))
    gsm8k = [{"question": r["query"], "answer": r["response"].replace("The answer is: ", "#### ")}
             for r in problems(["add", "mul"], 4, seed=8)]
    (home / "gsm8k_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm8k))
    tokenizer = trained_tokenizer(home / "MetaMathQA-395K.json", home / ".tokenizer_cache", vocab_size=320)
    tokenizer.save_pretrained(str(home / "tokenizer"))
    return home
