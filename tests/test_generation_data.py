"""Generation data: the VAE part (identity / a tiny random AutoencoderKL), latent caching,
Food-101 as it ships, and the digits source / target splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fakes import write_food101, write_tiny_vae
from onelora.data.errors import MissingDataError
from onelora.data.generation import (
    DigitsGenerationDataModule,
    Food101GenerationDataModule,
    TensorImages,
    center_crop_arr,
    open_food101,
)
from onelora.data.latents import LatentDataset, cache_latents, latent_cache_path
from onelora.data.digits import digits_images
from onelora.models.vae import DIT_LATENT_SCALE, DiffusersVAE, IdentityVAE, build_vae


# -- VAE ------------------------------------------------------------------------------------------


def test_identity_vae_is_pixel_space():
    for source in (None, "identity"):
        vae = build_vae(source)
        assert isinstance(vae, IdentityVAE) and vae.is_identity
    x = torch.randn(2, 1, 8, 8)
    assert build_vae().encode(x) is x and build_vae().decode(x) is x


def test_tiny_vae_from_a_directory(tmp_path):
    vae = build_vae(str(write_tiny_vae(tmp_path / "vae")))
    assert isinstance(vae, DiffusersVAE) and not vae.is_identity and vae.scale == DIT_LATENT_SCALE
    assert not any(p.requires_grad for p in vae.parameters())
    vae.train()
    assert not vae.autoencoder.training  # frozen: stays in eval mode
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, std = vae.moments(x)
    z = vae.encode(x, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    assert z.shape == vae.latent_shape(x.shape) == (2, 4, 8, 8)
    assert torch.allclose(z, (mean + std * noise) * DIT_LATENT_SCALE, atol=1e-6)
    assert torch.allclose(vae.decode(z), vae.autoencoder.decode(z / DIT_LATENT_SCALE).sample, atol=1e-6)
    assert vae.decode(z).shape == x.shape


def test_missing_vae_weights_say_what_and_how(tmp_path, monkeypatch):
    from onelora.models.vae import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=r"nowhere.*config\.json.*huggingface-cli download"):
        build_vae(str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError, match=r"stabilityai/sd-vae-ft-ema.*HF_HUB_OFFLINE is set"):
        build_vae("sd-vae-ft-ema")


# -- latent cache ---------------------------------------------------------------------------------


def test_latent_cache_is_written_once_and_read_back(tmp_path, monkeypatch):
    vae = build_vae(str(write_tiny_vae(tmp_path / "vae")))
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    dataset = TensorImages(images, torch.tensor([0, 1, 2, 1, 0]))
    path = latent_cache_path(tmp_path / "cache", "toy|train|16", vae)
    assert path.parent == tmp_path / "cache" / "latents"
    assert latent_cache_path(tmp_path / "cache", "toy|train|32", vae) != path  # another dataset key
    assert cache_latents(dataset, vae, path, dataset_key="toy|train|16", batch_size=2, device="cpu") == path
    content = torch.load(path, weights_only=True)
    mean, std = vae.moments(images)
    flip_mean, _ = vae.moments(images.flip(-1))
    assert content["mean"].dtype == torch.float16 and content["label"].tolist() == [0, 1, 2, 1, 0]
    assert torch.allclose(content["mean"].float(), mean, atol=2e-3) and torch.allclose(content["std"].float(), std, atol=2e-3)
    assert torch.allclose(content["flip_mean"].float(), flip_mean, atol=2e-3)

    monkeypatch.setattr(vae, "moments", lambda x: pytest.fail("a cached dataset was encoded again"))
    assert cache_latents(dataset, vae, path, dataset_key="toy|train|16", device="cpu") == path

    plain = LatentDataset(path, hflip=False, sample_posterior=False)
    item = plain[3]
    assert len(plain) == 5 and item["label"].item() == 1
    assert torch.allclose(item["latent"], content["mean"][3].float() * DIT_LATENT_SCALE)
    flipping = LatentDataset(path, hflip=True, sample_posterior=False)
    torch.manual_seed(0)
    seen = {int(torch.allclose(flipping[0]["latent"], content["flip_mean"][0].float() * DIT_LATENT_SCALE)) for _ in range(20)}
    assert seen == {0, 1}  # the image and its flip, each some of the time
    sampled = LatentDataset(path, hflip=False)[0]["latent"]
    assert not torch.allclose(sampled, plain[0]["latent"])  # a fresh posterior sample


# -- Food-101 -------------------------------------------------------------------------------------


def test_adm_center_crop_by_hand():
    columns = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))  # 32 rows x 64 columns, value 4 * column
    out = np.array(center_crop_arr(Image.fromarray(columns), 16))
    # short side 32 >= 2 x 16: box-halved to 16 x 32 (column j -> mean of 4(2j) and 4(2j + 1) = 8j + 2),
    # already 16 high, then the centre 16 columns (8..23)
    assert out.shape == (16, 16)
    assert out[0].tolist() == [8 * j + 2 for j in range(8, 24)]


def test_food101_as_it_ships(tmp_path):
    root = write_food101(tmp_path / "data", train=4, test=2)
    data = Food101GenerationDataModule(str(root), image_size=16, batch_size=4, eval_batch_size=3, val_size=5,
                                       test_reference="test", num_workers=0)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].dtype == torch.long
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert len(data.train_set) == 12 and len(data.val_set) == 5 and len(data.test_set) == 6
    val = next(iter(data.val_dataloader()))
    assert set(val) == {"image", "label"} and val["image"].shape == (3, 3, 16, 16)
    # the model's input size when the data does not set one
    assert Food101GenerationDataModule(str(root), model_input={"size": 32}).image_size == 32
    with pytest.raises(ValueError, match="val_reference"):
        Food101GenerationDataModule(str(root), image_size=16, val_reference="validation")


def test_food101_txt_lists_give_the_same_dataset(tmp_path):
    root = write_food101(tmp_path / "data")  # ships both the .json and the .txt lists
    from_json = open_food101(root, "train")
    for split in ("train", "test"):
        (root / "food-101" / "meta" / f"{split}.json").unlink()
    from_txt = open_food101(root, "train")
    assert len(from_txt) == len(from_json) == 12
    for i in (0, 5, 11):
        assert from_txt[i][1] == from_json[i][1]
        assert np.array_equal(np.array(from_txt[i][0]), np.array(from_json[i][0]))


def test_food101_missing_says_where_and_how(tmp_path):
    data = Food101GenerationDataModule(str(tmp_path / "nowhere"), image_size=16, num_workers=0)
    with pytest.raises(MissingDataError, match=r"nowhere/food-101.*food-101\.tar\.gz"):
        data.prepare_data()


def test_food101_trains_from_cached_latents(tmp_path):
    root = write_food101(tmp_path / "data", train=3, test=1)
    vae = build_vae(str(write_tiny_vae(tmp_path / "vae")))
    data = Food101GenerationDataModule(str(root), image_size=16, batch_size=4, vae=vae, val_size=4,
                                       cache_dir=str(tmp_path / "cache"), num_workers=0)
    data.prepare_data()
    assert data.latent_cache is not None and data.latent_cache.is_file()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"latent", "label"} and batch["latent"].shape == (4, 4, 8, 8)
    assert next(iter(data.val_dataloader()))["image"].shape[1:] == (3, 16, 16)  # FID references stay pixels
    fresh = Food101GenerationDataModule(str(root), image_size=16, vae=vae, cache_dir=str(tmp_path / "cache"), num_workers=0)
    fresh.setup("fit")  # a process that did not run prepare_data finds the same cache
    assert fresh.latent_cache == data.latent_cache and len(fresh.train_set) == 9


# -- digits ---------------------------------------------------------------------------------------


def test_digits_generation_splits():
    all_images, all_labels = digits_images()
    target = DigitsGenerationDataModule("target")
    target.setup()
    train, test = target.train_set, target.test_set
    assert len(train) == 448 and len(test) == 448 and target.val_set is train  # val FID vs the training images
    batch = next(iter(target.train_dataloader()))
    assert batch["image"].shape == (64, 1, 8, 8) and batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert sorted(set(train.labels.tolist())) == [0, 1, 2, 3, 4]
    assert np.bincount(test.labels.numpy()).min() >= 34  # stratified: ~36 per class
    # the target images are the 5-9 digits (label 0 = digit 5), train and test disjoint
    fives = all_images[all_labels == 5]
    assert all(any(torch.equal(img, f) for f in fives) for img in train.images[train.labels == 0][:5])
    train_keys = {tuple(x.flatten().tolist()) for x in train.images}
    assert not any(tuple(x.flatten().tolist()) in train_keys for x in test.images[:50])

    source = DigitsGenerationDataModule("source", val_fraction=0.1)
    source.setup()
    assert len(source.val_set) < len(source.train_set) and source.val_set is not source.train_set
    zeros = all_images[all_labels == 0]
    assert any(torch.equal(source.test_set.images[source.test_set.labels == 0][0], z) for z in zeros)
    with pytest.raises(ValueError, match="split"):
        DigitsGenerationDataModule("both")
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsGenerationDataModule(test_fraction=1.0)


def test_digits_epochs_of_a_set_number_of_steps():
    data = DigitsGenerationDataModule("target", batch_size=64, steps_per_epoch=20)
    data.setup()
    torch.manual_seed(0)
    batches = list(data.train_dataloader())
    assert len(batches) == 20 and all(b["image"].shape == (64, 1, 8, 8) for b in batches)
    # whole reshuffled passes: each of the 448 training images once per pass (1280 = 2 passes + 384)
    images = torch.cat([b["image"] for b in batches]).flatten(1)
    index = {tuple(x.tolist()): i for i, x in enumerate(data.train_set.images.flatten(1))}
    seen = [index[tuple(x.tolist())] for x in images]
    assert sorted(seen[:448]) == list(range(448)) and sorted(seen[448:896]) == list(range(448))
    assert len(set(seen[896:])) == 384
    assert len(data.val_dataloader()) == 1  # evaluation loaders are not stretched: the 448 images at once
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        DigitsGenerationDataModule(steps_per_epoch=0)
