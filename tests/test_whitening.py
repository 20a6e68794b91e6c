"""PCA and ZCA whitening (``data.normalize=pca_whiten|zca``): statistics of the training split, cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.data_fixtures import make_cifar
from zoo.data import build_datamodule
from zoo.data.stats import Normalize, StatsAccumulator
from zoo.errors import ConfigError

DIGITS = {"name": "digits", "batch_size": 128, "image_size": 8}


def correlated(n: int = 4000, side: int = 3, seed: int = 0) -> torch.Tensor:
    """``(n, 1, side, side)`` images of correlated Gaussian pixels (a full-rank covariance far from I)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(side * side, side * side, generator=gen, dtype=torch.float64)
    return (torch.randn(n, side * side, generator=gen, dtype=torch.float64) @ mix + 0.5).view(n, 1, side, side)


def whitened(mode: str, x: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    acc = StatsAccumulator(mode, eps)
    acc.update(x)
    return Normalize(acc.result())(x.float()).flatten(1).double()


@pytest.mark.parametrize("mode", ["pca_whiten", "zca"])
def test_whitened_training_data_has_identity_covariance(mode: str) -> None:
    x = correlated()
    out = whitened(mode, x)
    assert out.mean(0).abs().max() < 1e-4
    torch.testing.assert_close(torch.cov(out.T, correction=0), torch.eye(9, dtype=torch.float64), atol=2e-3, rtol=0)


def test_pca_orders_components_and_zca_stays_close_to_the_pixels() -> None:
    x = correlated()
    flat = (x.flatten(1) - x.flatten(1).mean(0))
    acc = StatsAccumulator("pca_whiten", 1e-9)
    acc.update(x)
    variances = torch.linalg.eigvalsh(torch.cov(flat.T, correction=0)).flip(0)
    pca = acc.result()["whiten"].double()
    projected = (flat @ (pca * variances.sqrt()[:, None]).T)  # S^1/2 of the whitened: the principal coordinates
    assert projected.var(0, correction=0).diff().le(1e-6).all()  # in order of variance
    zca = whitened("zca", x)
    acc = StatsAccumulator("zca", 1e-9)
    acc.update(x)
    matrix = acc.result()["whiten"]
    torch.testing.assert_close(matrix, matrix.T)  # ZCA's matrix is symmetric ...
    own = torch.stack([torch.corrcoef(torch.stack([zca[:, i], flat[:, i]]))[0, 1] for i in range(9)])
    assert own.min() > 0.3  # ... and each whitened pixel follows its own pixel


def test_digits_whitening_uses_training_statistics_only() -> None:
    dm = build_datamodule({**DIGITS, "normalize": "pca_whiten", "whiten_eps": 1e-4})
    train = torch.cat([x for x, _ in dm.train]).flatten(1).double()
    test = torch.cat([x for x, _ in dm.test]).flatten(1).double()
    assert train.shape[1] == 64 and train.mean(0).abs().max() < 1e-4
    top = train[:, :10].var(0, correction=0)  # the ten leading components: variance S / (S + eps), about 1
    assert ((top - 1).abs() < 1e-2).all()
    assert (test[:, :10].mean(0).abs() > 1e-3).any()  # the test split is whitened with the training statistics


def test_whitening_refusals() -> None:
    with pytest.raises(ConfigError, match=r"^data.normalize=zca needs data.in_memory=true"):
        build_datamodule({**DIGITS, "normalize": "zca", "in_memory": False})
    with pytest.raises(ConfigError, match=r"^data.normalize=zca needs images of at most 4096 values .* got 16384; lower data.image_size"):
        build_datamodule({**DIGITS, "normalize": "zca", "image_size": 128})
    with pytest.raises(ConfigError, match=r"^data.whiten_eps must be a number > 0"):
        build_datamodule({**DIGITS, "normalize": "zca", "whiten_eps": 0})
    with pytest.raises(ConfigError, match=r"data.mean/data.std apply to data.normalize=channel, not zca"):
        build_datamodule({**DIGITS, "normalize": "zca", "mean": 0.5})
    with pytest.raises(ConfigError, match=r"^data.normalize=pca_whiten is for classification images"):
        build_datamodule({"name": "digit_scenes", "batch_size": 4, "normalize": "pca_whiten", "train_scenes": 4,
                          "val_scenes": 2, "test_scenes": 2})


def test_whitening_is_cached_beside_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.data.sources as sources

    make_cifar(tmp_path, monkeypatch)
    cfg = {"name": "cifar10", "root": str(tmp_path), "batch_size": 16, "num_workers": 0, "image_size": 16, "normalize": "zca"}
    first = build_datamodule(cfg)
    stored = sorted(p.suffix for p in (tmp_path / ".zoo_stats").iterdir())
    assert stored == [".json", ".pt"]
    entry = json.loads(next((tmp_path / ".zoo_stats").glob("*.json")).read_text())
    assert entry["tensors"] == ["whiten", "whiten_mean"] and entry["key"]["whiten_eps"] == 0.1

    def no_recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(sources, "stats_of", no_recompute)
    again = build_datamodule(cfg)
    torch.testing.assert_close(torch.cat([x for x, _ in again.val]), torch.cat([x for x, _ in first.val]))
    with pytest.raises(AssertionError, match="recomputed"):  # another eps is another key
        build_datamodule({**cfg, "whiten_eps": 0.3})


def test_a_run_trains_on_zca_whitened_digits(tmp_path: Path) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.pipeline import train

    result = train(make_cfg(tmp_path, *FAST, "data.normalize=zca", "trainer.max_epochs=3"))
    assert result["test"]["acc"] > 0.8


def test_tensorboard_shows_the_whitened_images(tmp_path: Path) -> None:
    """``data/train_augmented`` is the first training batch as the model sees it, each image min-max
    scaled: per-channel normalisation is affine, so it draws the same grid as raw pixels, while ZCA's
    grid is the whitened images."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.helpers import make_cfg
    from zoo.pipeline import train

    grids = {}
    for mode in ("none", "channel", "zca"):
        run = tmp_path / mode
        train(make_cfg(run, f"data.normalize={mode}", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                       "trainer.limit_val_batches=1", "test=false", "logger=tensorboard"))
        (run_dir,) = [p.parent for p in run.rglob("tensorboard/events.*")][:1]
        events = EventAccumulator(str(run_dir)).Reload()
        grids[mode] = events.Images("data/train_augmented")[0].encoded_image_string
    assert grids["channel"] == grids["none"]
    assert grids["zca"] != grids["channel"]
