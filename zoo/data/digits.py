"""The embedded dataset: scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes;
UCI "Optical Recognition of Handwritten Digits"), shipped with scikit-learn, so it works offline.

A fixed stratified train/val/test split from ``split_seed``; images resized to the model's input
side with bilinear interpolation and normalised with training-split statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.base import DATASETS, ArraySplits, normalize_splits
from zoo.errors import ConfigError


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/val/test split (each class in the same proportions)."""
    from sklearn.model_selection import train_test_split

    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction and data.test_fraction must be in [0, 1) with a sum below 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    if val_fraction == 0:
        return np.sort(train), np.array([], dtype=int), np.sort(test)
    val_size = val_fraction / (1 - test_fraction)
    train, val = train_test_split(train, test_size=val_size, stratify=labels[train], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


@DATASETS.register("digits", num_classes=10, in_chans=1)
def digits(
    image_size: int = 32,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    normalize: str = "channel",
    in_chans: int = 1,
    num_classes: int = 10,
) -> ArraySplits:
    """Load, split, resize and normalise the digits."""
    from sklearn.datasets import load_digits

    if num_classes != 10:
        raise ConfigError(f"digits has 10 classes, but data.num_classes={num_classes}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if in_chans != 1:
        images = images.expand(-1, in_chans, -1, -1).contiguous()
    train, val, test = stratified_split(bunch.target, val_fraction, test_fraction, split_seed)
    splits = ArraySplits(
        train=(images[train], labels[train]),
        val=(images[val], labels[val]),
        test=(images[test], labels[test]),
        class_names=[str(c) for c in bunch.target_names],
    )
    return normalize_splits(splits, normalize)
