"""The embedded dataset: scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes;
UCI "Optical Recognition of Handwritten Digits"), shipped with scikit-learn, so it works offline.

A fixed stratified train/val/test split from ``split_seed``; the builder returns the 8x8 images as an
in-memory :class:`~zoo.data.types.ImageSource` (pixels in [0, 1]), which the image pipeline resizes
to the model's input side, augments and normalises like MNIST or CIFAR.

For transfer experiments, ``classes`` keeps a subset of the digits (relabelled ``0..k-1`` in the
given order; val/test are the fixed split's images of those digits) and ``train_per_class`` keeps
that many training images per class, drawn with ``train_subset_seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from zoo.data.types import DATASETS, ArrayDataset, ImageSource
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


def class_subset(labels: np.ndarray, classes: list[int] | None, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """The kept original labels (``classes`` in their order, default all) and the map from original to
    new label (-1: dropped)."""
    all_classes = list(range(int(labels.max()) + 1))
    chosen = all_classes if classes is None else [int(c) for c in classes]
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(all_classes):
        raise ConfigError(f"data.classes must be distinct labels from {all_classes}, got {classes}")
    if num_classes != len(chosen):
        raise ConfigError(f"data.classes keeps {len(chosen)} classes, but data.num_classes={num_classes}; set data.num_classes={len(chosen)}")
    mapping = np.full(len(all_classes), -1, dtype=np.int64)
    mapping[chosen] = np.arange(len(chosen))
    return mapping, chosen


def per_class_subset(indices: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` indices of each class among ``indices``, drawn with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels[indices]):
        pool = indices[labels[indices] == c]
        if per_class > len(pool):
            raise ConfigError(f"data.train_per_class={per_class} but class {c} has only {len(pool)} training images")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


@DATASETS.register("digits", num_classes=10, in_chans=1)
def digits(
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    num_classes: int = 10,
    classes: list[int] | None = None,
    train_per_class: int | None = None,
    train_subset_seed: int = 0,
) -> ImageSource:
    """Load and split the digits (optionally a subset of classes and of training images)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    mapping, kept = class_subset(bunch.target, classes, num_classes)
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    labels = torch.from_numpy(mapping[bunch.target])
    split = stratified_split(bunch.target, val_fraction, test_fraction, split_seed)  # of all ten digits: fixed
    train, val, test = (idx[mapping[bunch.target[idx]] >= 0] for idx in split)
    if train_per_class is not None:
        if train_per_class < 1:
            raise ConfigError(f"data.train_per_class must be >= 1 or null, got {train_per_class}")
        train = per_class_subset(train, bunch.target, train_per_class, train_subset_seed)
    train_set, val_set, test_set = (ArrayDataset(images[idx], labels[idx]) for idx in (train, val, test))
    return ImageSource("digits", None, train_set, val_set, test_set, [str(bunch.target_names[c]) for c in kept],
                       native_size=8, in_chans=1)
