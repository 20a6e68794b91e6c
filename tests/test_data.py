from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data import build_datamodule
from zoo.data.augment import RandomAffine
from zoo.data.digits import stratified_split
from zoo.data.loaders import TensorLoader
from zoo.errors import ConfigError, UnknownNameError

DIGITS = {"name": "digits", "batch_size": 64, "image_size": 32}


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
    x = dm.train.x
    assert x.shape[1:] == (1, 32, 32)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert dm.test.x.mean().item() != pytest.approx(0.0, abs=1e-6)  # other splits use the train stats only


def test_digits_resize_and_channels() -> None:
    dm = build_datamodule({**DIGITS, "image_size": 64, "in_chans": 3})
    assert dm.train.x.shape[1:] == (3, 64, 64)


def test_bad_data_config() -> None:
    with pytest.raises(UnknownNameError, match="digits"):
        build_datamodule({**DIGITS, "name": "digit"})
    with pytest.raises(ConfigError, match="batch_size"):
        build_datamodule({**DIGITS, "batch_size": 0})
    with pytest.raises(ConfigError, match="test_fraction"):
        build_datamodule({**DIGITS, "test_fraction": 0.95})
    with pytest.raises(ConfigError, match="normalize"):
        build_datamodule({**DIGITS, "normalize": "zca"})


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
    raw = build_datamodule({**DIGITS, "normalize": "none"}).train.x
    explicit = build_datamodule({**DIGITS, "mean": 0.3, "std": [0.2]})
    torch.testing.assert_close(explicit.train.x, (raw - 0.3) / 0.2)
    assert (explicit.mean, explicit.std) == ([0.3], [0.2])
    torch.testing.assert_close(build_datamodule({**DIGITS, "normalize": "symmetric"}).train.x, raw * 2 - 1)
    with pytest.raises(ConfigError, match=r"^data.mean=\[0.1, 0.2\] needs one number"):
        build_datamodule({**DIGITS, "mean": [0.1, 0.2]})
