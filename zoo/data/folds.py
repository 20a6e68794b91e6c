"""k-fold cross-validation of a classification dataset: ``data.folds=K data.fold=i``.

The training and validation splits are pooled and cut into ``K`` stratified folds (scikit-learn's
``StratifiedKFold``, shuffled with ``data.split_seed``); fold ``i`` is the validation split and the
other ``K - 1`` the training split. The test split is left as it is, so every fold is tested on the
same images. ``python train.py -m data.folds=5 'data.fold=range(5)'`` trains all five; the sweep
summary gives the mean and standard deviation over the folds (:mod:`zoo.sweep`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from zoo.data.types import ArrayDataset, ImageSource
from zoo.errors import ConfigError


class _Pooled(ConcatDataset):
    """Two datasets as one, with their labels (``targets``) for splitting."""

    def __init__(self, parts: list[Dataset], targets: np.ndarray) -> None:
        super().__init__(parts)
        self.targets = targets


def _pool(train: Dataset, val: Dataset) -> tuple[Dataset, np.ndarray]:
    """One dataset of ``train`` then ``val``, and its labels; subsets of one dataset stay a subset of
    it (so the in-memory path still reads its arrays whole)."""
    from zoo.data.vision import labels_of

    if isinstance(train, ArrayDataset) and isinstance(val, ArrayDataset):
        pooled = ArrayDataset(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))
        return pooled, pooled.labels.numpy()
    if isinstance(train, Subset) and isinstance(val, Subset) and train.dataset is val.dataset:
        pooled_subset = Subset(train.dataset, [*train.indices, *val.indices])
        return pooled_subset, labels_of(pooled_subset)
    labels = np.concatenate([labels_of(train), labels_of(val)])
    return _Pooled([train, val], labels), labels


def _take(ds: Dataset, idx: np.ndarray) -> Dataset:
    if isinstance(ds, ArrayDataset):
        return ArrayDataset(ds.images[torch.as_tensor(idx)], ds.labels[torch.as_tensor(idx)])
    if isinstance(ds, Subset):
        return Subset(ds.dataset, [ds.indices[i] for i in idx.tolist()])
    return Subset(ds, idx.tolist())


def fold_indices(labels: np.ndarray, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` indices of fold ``fold`` of ``folds`` stratified folds of ``labels``."""
    from sklearn.model_selection import StratifiedKFold

    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"data.folds must be an integer >= 2 (or null: no cross-validation), got {folds}")
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
        raise ConfigError(f"data.fold must be in 0..{folds - 1} for data.folds={folds}, got {fold}")
    present = np.bincount(labels)
    smallest = int(present[present > 0].min()) if len(labels) else 0
    if smallest < folds:
        raise ConfigError(f"data.folds={folds}: a class has only {smallest} images in train+val; use at most "
                          f"data.folds={max(smallest, 2)}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    train, val = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(train), np.sort(val)


def kfold_source(source: ImageSource, folds: int, fold: int, seed: int) -> ImageSource:
    """``source`` with fold ``fold`` of the pooled train+val as validation and the rest as training."""
    pooled, labels = _pool(source.train, source.val)
    train, val = fold_indices(labels, folds, fold, seed)
    return ImageSource(source.name, source.root, _take(pooled, train), _take(pooled, val), source.test,
                       source.class_names, source.native_size, source.in_chans)
