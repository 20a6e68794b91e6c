"""Digits class subsets and per-class training limits (the few-label transfer experiments)."""

from __future__ import annotations

import pytest
import torch

from zoo.data import build_datamodule
from zoo.errors import ConfigError

DIGITS = {"name": "digits", "batch_size": 64, "image_size": 8, "normalize": "none"}
SUBSET = {**DIGITS, "classes": [5, 6, 7, 8, 9], "num_classes": 5}


def test_class_subset_relabels_and_keeps_the_fixed_split() -> None:
    full, sub = build_datamodule(DIGITS), build_datamodule(SUBSET)
    assert sub.num_classes == 5 and sub.class_names == ["5", "6", "7", "8", "9"]
    for split in ("train", "val", "test"):
        a, b = full.loader(split), sub.loader(split)
        keep = a.y >= 5
        torch.testing.assert_close(b.x, a.x[keep])  # the same held-out images of those digits
        assert torch.equal(b.y, a.y[keep] - 5)


def test_train_per_class_draws_a_seeded_subset_of_the_training_split() -> None:
    a = build_datamodule({**SUBSET, "train_per_class": 10})
    b = build_datamodule({**SUBSET, "train_per_class": 10})
    c = build_datamodule({**SUBSET, "train_per_class": 10, "train_subset_seed": 1})
    full = build_datamodule(SUBSET)
    assert torch.equal(torch.bincount(a.train.y), torch.full((5,), 10))
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert torch.equal(a.test.x, full.test.x) and torch.equal(a.val.y, full.val.y)
    rows = {tuple(r.flatten().tolist()) for r in full.train.x}
    assert all(tuple(r.flatten().tolist()) in rows for r in a.train.x)


def test_bad_subsets() -> None:
    with pytest.raises(ConfigError, match="num_classes=5"):
        build_datamodule({**DIGITS, "classes": [5, 6, 7, 8, 9]})
    with pytest.raises(ConfigError, match="distinct labels"):
        build_datamodule({**DIGITS, "classes": [5, 5, 10], "num_classes": 3})
    with pytest.raises(ConfigError, match="only"):
        build_datamodule({**SUBSET, "train_per_class": 1000})
    with pytest.raises(ConfigError, match="num_classes"):
        build_datamodule({**DIGITS, "num_classes": 7})
