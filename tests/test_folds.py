"""k-fold cross-validation (zoo/data/folds.py): folds disjoint, stratified, covering train+val with
the test split untouched; the refusals; a sweep over the folds ends with their mean and std."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from tests.helpers import run_cli
from zoo.data.digits import digits
from zoo.data.folds import fold_indices, kfold_source
from zoo.data.types import ImageSource
from zoo.errors import ConfigError
from zoo.sweep import cross_validation


def _keys(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in images}


def test_digits_folds_are_disjoint_stratified_and_cover_train_and_val() -> None:
    source = digits()
    pool = torch.cat([source.train.images, source.val.images])
    pool_labels = torch.cat([source.train.labels, source.val.labels])
    vals, k = [], 5
    for i in range(k):
        fold = kfold_source(source, k, i, seed=0)
        assert fold.test is source.test  # the test split is untouched
        assert len(fold.train) + len(fold.val) == len(pool)
        assert not _keys(fold.train.images) & _keys(fold.val.images)
        # each class's share of the fold is its share of the pool, within one image
        counts, pool_counts = np.bincount(fold.val.labels, minlength=10), np.bincount(pool_labels, minlength=10)
        assert np.all(np.abs(counts - pool_counts / k) <= 1)
        vals.append(fold.val.images)
    all_val = torch.cat(vals)
    assert len(all_val) == len(pool) and _keys(all_val) == _keys(pool)  # the folds cover train+val once


def test_subsets_of_one_dataset_stay_subsets_of_it() -> None:
    base = TensorDataset(torch.arange(40.0))
    base.targets = np.arange(40) % 2
    source = ImageSource("t", None, Subset(base, list(range(30))), Subset(base, list(range(30, 36))),
                         Subset(base, list(range(36, 40))), ["a", "b"])
    fold = kfold_source(source, 3, 1, seed=0)
    assert fold.train.dataset is base and fold.val.dataset is base
    assert sorted([*fold.train.indices, *fold.val.indices]) == list(range(36))


@pytest.mark.parametrize(("folds", "fold", "message"), [
    (1, 0, "data.folds must be an integer >= 2"), (5, 5, r"data.fold must be in 0..4"),
    (5, -1, r"data.fold must be in 0..4"), (4, 0, "a class has only 3 images in train\\+val; use at most data.folds=3"),
])
def test_bad_folds_are_one_line(folds: int, fold: int, message: str) -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    with pytest.raises(ConfigError, match=message):
        fold_indices(labels, folds, fold, 0)


def test_cross_validation_groups_the_folds_of_each_setting() -> None:
    rows = [{"overrides": [f"data.fold={i}", f"optimizer.lr={lr}", "data.folds=2"], "status": "ok", "best": b,
             "test": t, "monitor": "val/acc"} for i, lr, b, t in
            [(0, 0.1, 0.8, 0.7), (1, 0.1, 0.9, 0.8), (0, 0.01, 0.5, 0.5), (1, 0.01, 0.7, 0.6)]]
    groups = {g["overrides"]: g for g in cross_validation(rows, ["data.folds=2"])}
    assert set(groups) == {"optimizer.lr=0.1", "optimizer.lr=0.01"}
    assert groups["optimizer.lr=0.1"]["best_mean"] == pytest.approx(0.85)
    assert groups["optimizer.lr=0.1"]["best_std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert groups["optimizer.lr=0.01"]["test_mean"] == pytest.approx(0.55)


def test_a_sweep_over_the_folds_ends_with_mean_and_std(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "-m", "data.folds=3", "data.fold=range(3)", "trainer.max_epochs=1", "logger=none",
                   "trainer.limit_train_batches=3", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep_dir / "summary.csv", newline="") as f:
        best = [float(r["best"]) for r in csv.DictReader(f)]
    with open(sweep_dir / "cross_validation.csv", newline="") as f:
        (cv,) = list(csv.DictReader(f))
    assert cv["folds"] == "3 of 3" and cv["monitor"] == "val/acc"
    assert float(cv["best_mean"]) == pytest.approx(np.mean(best), rel=1e-4)
    assert float(cv["best_std"]) == pytest.approx(np.std(best, ddof=1), rel=1e-3, abs=1e-6)
    assert f"val/acc {float(cv['best_mean']):.4g} ± " in proc.stderr.strip().splitlines()[-1]
    assert "## cross-validation" in (sweep_dir / "summary.md").read_text()


def test_folds_are_refused_for_datasets_that_are_not_classification(tmp_path: Path) -> None:
    from tests.helpers import make_cfg
    from zoo.data.build import build_datamodule

    cfg = dict(make_cfg(tmp_path, "data=digit_scenes").data)
    with pytest.raises(ConfigError, match="data.folds: cross-validation splits classification datasets"):
        build_datamodule({**cfg, "folds": 3})
