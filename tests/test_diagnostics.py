"""Training diagnostics (``callbacks=[default,diagnostics]``): histograms, update ratios, dead ReLUs, filters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import make_cfg
from zoo.engine.callbacks.diagnostics import dead_fraction, filter_images, saturated_fraction
from zoo.errors import ConfigError
from zoo.pipeline import train

#: two epochs of five LeNet-5 batches, TensorBoard only, no checkpoints; plain SGD at a fixed rate
SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "logger=tensorboard", "logger.tensorboard.log_graph=false", "callbacks=[none,diagnostics]", "augmentation=none", "test=false",
         "optimizer=sgd", "optimizer.lr=0.1", "scheduler=none"]


def _events(run_dir: Path) -> object:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"histograms": 0, "images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_a_short_run_writes_every_diagnostic(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *SHORT))
    acc = _events(tmp_path)
    tags = acc.Tags()
    params = ["c1.weight", "c1.bias", "c3.weight", "c5.weight", "f6.weight", "fc.weight", "fc.bias"]
    assert {f"weights/{p}" for p in params} <= set(tags["histograms"])
    assert {f"gradients/{p}" for p in params} <= set(tags["histograms"])
    assert {f"activations/{m}" for m in ("c1", "act1", "c3", "act3", "c5", "act5", "f6", "act6", "fc")} <= set(tags["histograms"])
    # every epoch on its first update: steps 1 and 6
    assert [e.step for e in acc.Histograms("weights/c1.weight")] == [1, 6]
    assert acc.Histograms("activations/act1")[0].histogram_value.min == 0  # after a ReLU
    ratios = {t for t in tags["scalars"] if t.startswith("update_ratio/")}
    assert ratios == {f"update_ratio/{p}" for p in ("c1.weight", "c3.weight", "c5.weight", "f6.weight", "fc.weight")}  # weights only
    for tag in ratios:
        values = [e.value for e in acc.Scalars(tag)]
        assert len(values) == 2 and all(1e-6 < v < 1 for v in values)
    dead = {t for t in tags["scalars"] if t.startswith("dead_relu/")}
    assert dead == {"dead_relu/act1", "dead_relu/act3", "dead_relu/act5", "dead_relu/act6"}
    assert all(0 <= e.value <= 1 for t in dead for e in acc.Scalars(t))
    (grid, _) = acc.Images("filters/c1")
    assert grid.step == 1 and grid.width > 5 * 6  # six 5x5 filters, enlarged
    # plain SGD: ||dw|| = lr * ||g||; the histograms keep sums of squares (||w|| after the step: close to before)
    grad, weight = acc.Histograms("gradients/fc.weight")[0].histogram_value, acc.Histograms("weights/fc.weight")[0].histogram_value
    ratio = acc.Scalars("update_ratio/fc.weight")[0].value
    assert ratio == pytest.approx(0.1 * grad.sum_squares ** 0.5 / weight.sum_squares ** 0.5, rel=0.05)


def test_every_n_steps_and_histograms_off(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *SHORT, "callbacks.diagnostics.every_n_epochs=null", "callbacks.diagnostics.every_n_steps=4",
                   "callbacks.diagnostics.histograms=false", "callbacks.diagnostics.filters=false"))
    acc = _events(tmp_path)
    assert acc.Tags()["histograms"] == [] and not any(t.startswith("filters/") for t in acc.Tags()["images"])
    assert [e.step for e in acc.Scalars("update_ratio/c1.weight")] == [4, 8]


def test_tanh_units_get_histograms_and_saturation_instead_of_dead_fractions(tmp_path: Path) -> None:
    """Every ``model.act`` is watched, not only ReLUs: LeNet-5 with tanh (its paper's squashing function)."""
    train(make_cfg(tmp_path, *SHORT, "model.act=tanh", "optimizer.lr=2.0"))
    acc = _events(tmp_path)
    tags = acc.Tags()
    acts = ("act1", "act3", "act5", "act6")
    assert {f"activations/{m}" for m in acts} <= set(tags["histograms"])
    assert all(-1 <= acc.Histograms(f"activations/{m}")[0].histogram_value.min < 0 for m in acts)
    assert {t for t in tags["scalars"] if t.startswith("saturated/")} == {f"saturated/{m}" for m in acts}
    assert not any(t.startswith("dead_relu/") for t in tags["scalars"])
    values = [e.value for m in acts for e in acc.Scalars(f"saturated/{m}")]
    assert len(values) == 8 and all(0 <= v <= 1 for v in values) and max(values) > 0  # lr 2 drives some units to +-1


def test_dead_fraction_and_filter_images() -> None:
    act = torch.zeros(4, 3, 2, 2)
    act[1, 0, 1, 1] = 1.0  # channel 0 fires once; channels 1 and 2 never
    assert dead_fraction(act) == pytest.approx(2 / 3)
    assert dead_fraction(torch.relu(torch.randn(8, 5))) == 0.0
    assert saturated_fraction(torch.tensor([-1.0, -0.995, 0.0, 0.5, 0.99, 1.0]), -1.0, 1.0) == pytest.approx(4 / 6)
    assert saturated_fraction(torch.tensor([0.005, 0.5, 0.995, 0.2]), 0.0, 1.0) == pytest.approx(0.5)
    images = filter_images(torch.randn(6, 4, 3, 3))  # 4 input channels: one grey image per (filter, channel)
    assert images.shape == (24, 1, 3, 3) and images.amin() == 0 and images.amax() == 1


@pytest.mark.parametrize("options", [{"every_n_epochs": 0}, {"every_n_epochs": None, "every_n_steps": None}])
def test_bad_schedules_are_config_errors(options: dict[str, object]) -> None:
    from zoo.engine.callbacks import Diagnostics

    with pytest.raises(ConfigError, match="callbacks.diagnostics"):
        Diagnostics(**options)  # type: ignore[arg-type]
