from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from zoo.data import build_datamodule
from zoo.data.augment import RandomAffine
from zoo.data.digits import stratified_split
from zoo.data.loaders import TensorLoader
from zoo.errors import ConfigError, UnknownNameError

DIGITS = {"name": "digits", "batch_size": 64, "image_size": 32}


def images(loader: TensorLoader) -> torch.Tensor:
    """Every image a loader yields (augmented and normalised), in its order."""
    return torch.cat([x for x, _ in loader])


def test_digits_split_sizes_and_stratification() -> None:
    dm = build_datamodule(DIGITS)
    assert dm.sizes() == {"train": 1257, "val": 180, "test": 360}
    assert dm.num_classes == 10 and dm.in_chans == 1 and dm.image_size == 32
    test_counts = torch.bincount(dm.test.y, minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # 20% of ~180 per class


def test_digits_split_is_fixed_and_disjoint() -> None:
    labels = np.repeat(np.arange(10), 50)
    a = stratified_split(labels, 0.1, 0.2, seed=0)
    b = stratified_split(labels, 0.1, 0.2, seed=0)
    c = stratified_split(labels, 0.1, 0.2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    assert len(set(a[0]) | set(a[1]) | set(a[2])) == 500 and sum(map(len, a)) == 500


def test_digits_normalized_with_training_statistics() -> None:
    dm = build_datamodule(DIGITS)
    x = images(dm.train)
    assert x.shape[1:] == (1, 32, 32) and dm.train.x.min() >= 0  # stored raw, normalised per batch
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert images(dm.test).mean().item() != pytest.approx(0.0, abs=1e-6)  # other splits use the train stats only


def test_digits_resize_and_channels() -> None:
    dm = build_datamodule({**DIGITS, "image_size": 64, "in_chans": 3})
    assert images(dm.val).shape[1:] == (3, 64, 64)
    bunch = load_digits()
    first = stratified_split(bunch.target, 0.1, 0.2, seed=0)[0][:1]  # the first training image
    raw = torch.from_numpy(bunch.images[first].astype(np.float32) / 16).unsqueeze(1)
    torch.testing.assert_close(dm.train.x[:1], F.interpolate(raw, size=(64, 64), mode="bilinear").expand(-1, 3, -1, -1))


def test_bad_data_config() -> None:
    with pytest.raises(UnknownNameError, match="digits"):
        build_datamodule({**DIGITS, "name": "digit"})
    with pytest.raises(ConfigError, match="batch_size"):
        build_datamodule({**DIGITS, "batch_size": 0})
    with pytest.raises(ConfigError, match="test_fraction"):
        build_datamodule({**DIGITS, "test_fraction": 0.95})
    with pytest.raises(ConfigError, match="normalize"):
        build_datamodule({**DIGITS, "normalize": "whiten"})


def test_tensor_loader_order_depends_only_on_seed_and_epoch() -> None:
    x, y = torch.arange(100).float().view(100, 1, 1, 1), torch.arange(100)
    loader = TensorLoader(x, y, batch_size=32, shuffle=True, seed=3)
    assert len(loader) == 4
    loader.set_epoch(1)
    first = torch.cat([b for _, b in loader])
    second = torch.cat([b for _, b in loader])
    loader.set_epoch(2)
    third = torch.cat([b for _, b in loader])
    assert torch.equal(first, second) and not torch.equal(first, third)
    assert sorted(first.tolist()) == list(range(100))
    assert len(TensorLoader(x, y, 32, drop_last=True)) == 3


def test_random_affine_is_reproducible_and_moves_pixels() -> None:
    x = torch.zeros(8, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1
    aug = RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1))
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.allclose(a, x)
    identity = RandomAffine(degrees=0, translate=0, scale=(1, 1))(x, torch.Generator())
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)


def test_digits_explicit_statistics_and_symmetric() -> None:
    raw = images(build_datamodule({**DIGITS, "normalize": "none"}).val)
    explicit = build_datamodule({**DIGITS, "mean": 0.3, "std": [0.2]})
    torch.testing.assert_close(images(explicit.val), (raw - 0.3) / 0.2)
    assert (explicit.mean, explicit.std) == ([0.3], [0.2])
    torch.testing.assert_close(images(build_datamodule({**DIGITS, "normalize": "symmetric"}).val), raw * 2 - 1)
    with pytest.raises(ConfigError, match=r"^data.mean=\[0.1, 0.2\] needs one number"):
        build_datamodule({**DIGITS, "mean": [0.1, 0.2]})


def test_digits_augment_pixels_before_normalising() -> None:
    """Crops pad black and colour jitter clamps to [0, 1] on the pixels, then normalisation: on both paths."""
    cfg = {**DIGITS, "mean": 0.5, "std": 0.25}
    crop = build_datamodule(cfg, {"ops": {"random_crop": {"padding": 16}}})
    white = crop.train.transform(torch.ones(64, 1, 32, 32), torch.Generator().manual_seed(0))
    assert set(white.unique().tolist()) == {-2.0, 2.0}  # black padding (0 - 0.5) / 0.25 beside white (1 - 0.5) / 0.25
    jitter = build_datamodule(cfg, {"ops": {"color_jitter": {"brightness": 0.5, "contrast": 0, "saturation": 0}}})
    x = images(jitter.train)
    assert x.min().item() == -2.0 and x.max().item() == 2.0  # black stays black; clamped at white, not at 0 and 1
    loader = build_datamodule({**cfg, "in_memory": False, "num_workers": 0}, {"ops": {"random_crop": {"padding": 16}}})
    torch.testing.assert_close(images(loader.val), images(crop.val))
    padded = images(loader.train)
    assert padded.min().item() == -2.0 and (padded == -2.0).float().mean() > (images(crop.val) == -2.0).float().mean()


def test_in_memory_resize_matches_torchvision() -> None:
    """The in-memory path resizes whole tensors; the DataLoader path uses v2 per image: the same pixels."""
    from torchvision.transforms import v2

    from zoo.data.sources import Geometry

    gen = torch.Generator().manual_seed(0)
    for images_, chans, native in ((torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=gen), 1, 3),
                                   (torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=gen), 3, 1),
                                   (torch.rand(5, 1, 8, 8, generator=gen), 1, 1)):
        for mode, size, resize in (("bilinear", 32, 32), ("bilinear", 20, 24), ("bicubic", 64, 72), ("nearest", 16, 16)):
            geometry = Geometry(size, resize, chans, native, mode)
            reference = torch.stack([v2.Compose(geometry.eval_steps())(v2.functional.to_image(im)) for im in images_])
            torch.testing.assert_close(geometry.fit(images_), reference.as_subclass(torch.Tensor), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="data.interpolation=lanczos needs PIL images"):
        Geometry(16, 16, 1, 1, "lanczos").fit(torch.zeros(1, 1, 8, 8))
