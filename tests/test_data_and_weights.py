"""Loading real on-disk formats and locally saved weights through the libraries' own APIs."""

from __future__ import annotations

import pytest
import torch

from fakes import write_cifar, write_food101


def test_food101_loads_in_its_shipped_layout(tmp_path):
    from onelora.data.torchvision_sets import TorchvisionClassificationDataModule

    root = write_food101(tmp_path / "food101")
    data = TorchvisionClassificationDataModule(
        "food101", str(root), batch_size=2, val_size=2, num_workers=0,
        model_input={"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
    )
    data.prepare_data()
    data.setup()
    assert len(data.train_set) == 3 * 4 - 2 and len(data.val_set) == 2 and len(data.test_set) == 3 * 2
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and labels.max() < 3


def test_food101_missing_says_where_and_how(tmp_path):
    from onelora.data.errors import MissingDataError
    from onelora.data.torchvision_sets import TorchvisionClassificationDataModule

    data = TorchvisionClassificationDataModule("food101", str(tmp_path / "nowhere"), num_workers=0)
    with pytest.raises(MissingDataError, match="food-101/.*task.data.download=true"):
        data.prepare_data()


def test_cifar_checksums_are_verified_unless_switched_off(tmp_path):
    from onelora.data.errors import MissingDataError
    from onelora.data.torchvision_sets import TorchvisionClassificationDataModule

    root = write_cifar(tmp_path / "c100", classes=100)
    args = dict(dataset="cifar100", root=str(root), num_workers=0, val_size=10)
    with pytest.raises(MissingDataError, match="cifar-100-python"):  # our fake's md5 is not the real one
        TorchvisionClassificationDataModule(**args).prepare_data()
    data = TorchvisionClassificationDataModule(**args, verify_checksums=False)
    data.prepare_data()
    data.setup()
    assert data.num_classes == 100 and len(data.test_set) == 20


def test_hf_vit_loads_from_a_local_directory(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from onelora.models import build_model

    arch = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}
    torch.manual_seed(1)
    saved = ViTForImageClassification(ViTConfig(**arch, num_labels=21))  # as an in21k-style checkpoint
    saved.save_pretrained(tmp_path / "vit")
    cfg = {"builder": "hf_vit", "pretrained": str(tmp_path / "vit"), "arch": arch}
    model = build_model(cfg, num_classes=10, load_weights=True)
    assert model.classifier.out_features == 10  # a new head for the task
    loaded, original = model.state_dict(), saved.state_dict()
    backbone = [k for k in original if not k.startswith("classifier")]
    assert backbone and all(torch.equal(loaded[k], original[k]) for k in backbone)


def test_timm_model_loads_a_local_state_file_with_a_new_head(tmp_path):
    import timm
    from safetensors.torch import save_file

    from onelora.models import build_model

    arch = {"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 1, "num_heads": 2}
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, **arch)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg = {"builder": "timm", "timm_name": "vit_tiny_patch16_224", "pretrained": str(tmp_path / "w.safetensors"),
           "arch": arch, "head": ["head"]}
    model = build_model(cfg, num_classes=3, load_weights=True)
    assert model.head.out_features == 3
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_cifar_training_set_is_read_once_and_split_into_two_views(tmp_path, monkeypatch):
    """setup reads the training archive once: the augmented training split and the plain
    validation hold-out are two views of it, disjoint, with their own transforms."""
    from onelora.data import torchvision_sets

    root = write_cifar(tmp_path / "c10", classes=10)
    opened = []
    real_open = torchvision_sets.open_dataset

    def counting_open(name, root, train, transform, download, verify):
        opened.append((train, verify))
        return real_open(name, root, train, transform, download, verify)

    monkeypatch.setattr(torchvision_sets, "open_dataset", counting_open)
    data = torchvision_sets.TorchvisionClassificationDataModule(
        "cifar10", str(root), val_size=4, num_workers=0, verify_checksums=False,
        model_input={"size": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
    )
    data.prepare_data()
    data.prepare_data()  # Lightning calls it again after the runner did: nothing is re-read
    assert opened == [(True, False), (False, False)]
    data.setup()
    assert opened[2:] == [(True, False), (False, False)]
    assert data.train_set.base is data.val_set.base
    assert not set(data.train_set.indices) & set(data.val_set.indices)
    assert len(data.train_set) + len(data.val_set) == len(data.train_set.base)
    torch.manual_seed(0)
    val_a, val_b = data.val_set[0][0], data.val_set[0][0]
    assert torch.equal(val_a, val_b) and val_a.shape == (3, 16, 16)  # not augmented
    crops = {tuple(data.train_set[0][0].flatten()[:8].tolist()) for _ in range(8)}
    assert len(crops) > 1  # RandomResizedCrop + flip


def test_hf_vit_loads_a_local_safetensors_file(tmp_path):
    """A weights file (not a from_pretrained directory) is a valid source too, as the README says."""
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification

    from onelora.models import build_model

    arch = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}
    torch.manual_seed(2)
    saved = ViTForImageClassification(ViTConfig(**arch, num_labels=21))
    save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    cfg = {"builder": "hf_vit", "pretrained": str(tmp_path / "vit.safetensors"), "arch": arch, "head": ["classifier"]}
    model = build_model(cfg, num_classes=10, load_weights=True)
    assert model.classifier.out_features == 10
    assert torch.equal(model.vit.layers[0].attention.q_proj.weight, saved.vit.layers[0].attention.q_proj.weight)


def test_a_damaged_weights_file_names_the_file(tmp_path):
    from onelora.models.weights import UnreadableWeightsError, load_state

    for name, content in (("w.safetensors", b"\x00" * 7), ("w.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnreadableWeightsError, match=f"{tmp_path / name}.*damaged"):
            load_state(str(tmp_path / name))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong keys", "wrong size", "meta"])
def test_a_damaged_cifar_file_is_named_when_checksums_are_off(tmp_path, damage):
    """main, with task.data.verify_checksums=false: a bare UnpicklingError / KeyError: 'data'."""
    import pickle

    from onelora.data.errors import DamagedDataError
    from onelora.data.torchvision_sets import TorchvisionClassificationDataModule

    root = write_cifar(tmp_path / "c10")
    base = root / "cifar-10-batches-py"
    bad = base / ("batches.meta" if damage == "meta" else "data_batch_4")
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:3000])
    elif damage in ("garbage", "meta"):
        bad.write_bytes(b"not a pickle at all")
    elif damage == "wrong keys":
        bad.write_bytes(pickle.dumps({"images": [], "labels": []}))
    else:  # images of another size
        bad.write_bytes(pickle.dumps({"data": [[0] * 100] * 2, "labels": [0, 1]}))
    data = TorchvisionClassificationDataModule("cifar10", str(root), num_workers=0, val_size=5, verify_checksums=False)
    with pytest.raises(DamagedDataError) as err:
        data.prepare_data()
    message = str(err.value)
    assert message.startswith(f"dataset cifar10: {bad} is damaged or not a CIFAR10 file in torchvision's python format (")
    assert "task.data.download=true" in message and "task.data.verify_checksums=true" in message
    if damage == "wrong keys":
        assert "no 'data' entry (it has ['images', 'labels'])" in message


def test_a_damaged_weights_file_in_a_weights_directory_names_the_file(tmp_path):
    """main: a bare SafetensorError ("invalid header length") from transformers' from_pretrained."""
    from transformers import ViTConfig, ViTForImageClassification

    from onelora.models import build_model
    from onelora.models.weights import UnreadableWeightsError

    arch = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}
    ViTForImageClassification(ViTConfig(**arch, num_labels=3)).save_pretrained(tmp_path / "vit")
    weights = tmp_path / "vit" / "model.safetensors"
    cfg = {"builder": "hf_vit", "pretrained": str(tmp_path / "vit"), "arch": arch}
    for cut in (4000, weights.stat().st_size - 1):  # a cut header, cut data
        weights.write_bytes(weights.read_bytes()[:cut])
        with pytest.raises(UnreadableWeightsError, match=f"cannot read the weights file {weights} .*damaged"):
            build_model(cfg, num_classes=3, load_weights=True)


def test_training_checkpoint_wrappers_are_unwrapped(tmp_path):
    from onelora.models.weights import load_state

    state = {"w": torch.ones(2)}
    for wrapper in ("state_dict", "model", "module", "ema"):
        torch.save({wrapper: state, "epoch": 3}, tmp_path / f"{wrapper}.pt")
        assert torch.equal(load_state(str(tmp_path / f"{wrapper}.pt"))["w"], state["w"])
    torch.save({"model": {"w": torch.zeros(2)}, "ema": state}, tmp_path / "dit_train.pt")  # DiT's train.py: EMA wins
    assert torch.equal(load_state(str(tmp_path / "dit_train.pt"))["w"], state["w"])
