"""Regularisers (``configs/regularizer``): the L1/L2 penalty on the weights being trained (never biases
or normalisation parameters), the max-norm constraint after every optimizer step, their config values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import FAST, make_cfg
from zoo.engine.checkpoint import load_checkpoint
from zoo.engine.regularizers import Regularizer, build_regularizer
from zoo.errors import ConfigError
from zoo.pipeline import train


def _tiny() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.linspace(-1.5, 2.0, p.numel()).view_as(p) * (i + 1))
    return model


def test_penalty_is_the_hand_computed_sum_over_the_weights() -> None:
    model = _tiny()
    w1, w2 = model[0].weight, model[2].weight
    with torch.no_grad():
        l1 = float(w1.abs().sum() + w2.abs().sum())
        l2 = float(w1.pow(2).sum() + w2.pow(2).sum())  # no biases, no batch-norm weight or bias
    assert float(Regularizer(l1=0.1, l2=0.01).penalty(model).detach()) == pytest.approx(0.1 * l1 + 0.01 * l2, rel=1e-6)
    assert float(build_regularizer({"name": "l1", "l1": 0.1}).penalty(model).detach()) == pytest.approx(0.1 * l1, rel=1e-6)
    model[0].weight.requires_grad_(False)  # frozen (a transfer stage, the other network of a GAN): not penalised
    assert float(Regularizer(l2=1.0).penalty(model).detach()) == pytest.approx(float(w2.detach().pow(2).sum()), rel=1e-6)
    assert build_regularizer(None).penalty(model) is None


def test_penalty_joins_the_loss_and_is_reported() -> None:
    from zoo.tasks.classification import ClassificationTask

    model = nn.Linear(4, 3)
    task = ClassificationTask(model, 3)
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    plain = task.training_objective(batch)
    task.regularizer = Regularizer(l1=0.5)
    out = task.training_objective(batch)
    expected = 0.5 * model.weight.abs().sum()
    assert torch.allclose(out["loss"], plain["loss"] + expected) and torch.allclose(out["penalty"], expected)
    assert "penalty" not in plain


def _digits_logistic_regression(regularizer: Regularizer, steps_per_epoch: int = 15, epochs: int = 20) -> nn.Linear:
    """Multinomial logistic regression on the 64 pixel features of the digits, plain SGD, through the trainer."""
    from sklearn.datasets import load_digits

    from zoo.data.loaders import TensorLoader
    from zoo.data.types import DataModule
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.classification import ClassificationTask

    digits = load_digits()
    x, y = torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target)
    n = steps_per_epoch * 120
    train_loader, eval_loader = TensorLoader(x[:n], y[:n], 120, shuffle=True), TensorLoader(x[n:], y[n:], 512)
    data = DataModule(train_loader, eval_loader, eval_loader, 10, 1, 8, [str(i) for i in range(10)], [0.0], [1.0])
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    task = ClassificationTask(model, 10)
    task.regularizer = regularizer
    Trainer(TrainerConfig(max_epochs=epochs, device="cpu"), "unused").fit(task, data, {"name": "sgd", "lr": 0.2}, {"name": "none"})
    return model


def test_l1_drives_more_weights_to_zero_than_l2_at_equal_strength() -> None:
    near_zero = {}
    for name, regularizer in (("l1", Regularizer(l1=5e-3)), ("l2", Regularizer(l2=5e-3)), ("none", Regularizer())):
        weight = _digits_logistic_regression(regularizer).weight.detach()
        near_zero[name] = float((weight.abs() < 2e-3).float().mean())
    # the digits' always-blank border pixels get no gradient from the data: L1 takes their weights to ~0 in a
    # few hundred steps (a constant pull), L2 only shrinks them by a constant factor per step
    assert near_zero["l1"] > 0.3 and near_zero["l1"] > 5 * near_zero["l2"], near_zero
    assert near_zero["l2"] < 0.1 and near_zero["none"] < 0.1, near_zero


def _unit_norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1).norm(dim=1)


def test_max_norm_holds_after_every_step_and_clips(tmp_path: Path) -> None:
    """LeNet-5 on the digits with a tight bound: every unit of every Linear and Conv layer at most c after
    training, and many at c (clipped); with layers=[linear] the convolutions stay unconstrained."""
    run = [*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=5", "test=false", "regularizer=max_norm", "regularizer.c=0.5"]
    result = train(make_cfg(tmp_path / "all", *run))
    assert result["global_step"] == 5
    weights = load_checkpoint(tmp_path / "all" / "checkpoints" / "last.pt")["model"]
    layers = [k for k, v in weights.items() if k.endswith("weight") and v.dim() >= 2]
    assert len(layers) == 5  # C1, C3, C5 (conv), F6 and the output layer
    clipped = 0
    for key in layers:
        norms = _unit_norms(weights[key])
        assert (norms <= 0.5 + 1e-5).all(), key
        clipped += int(((norms - 0.5).abs() < 1e-4).sum())
    assert clipped > 50
    train(make_cfg(tmp_path / "linear", *run, "regularizer.layers=[linear]"))
    weights = load_checkpoint(tmp_path / "linear" / "checkpoints" / "last.pt")["model"]
    assert max(float(_unit_norms(weights[k]).max()) for k in layers if weights[k].dim() == 4) > 0.5
    assert all((_unit_norms(weights[k]) <= 0.5 + 1e-5).all() for k in layers if weights[k].dim() == 2)


def test_l1_runs_from_the_train_config_and_its_settings_are_stored(tmp_path: Path) -> None:
    """``python train.py regularizer=l1``: the penalty is logged, and the checkpoint keeps the setting,
    so a resume trains with it and refuses to change it."""
    result = train(make_cfg(tmp_path / "run", *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=3", "test=false",
                            "regularizer=l1", "regularizer.l1=1e-3"))
    penalty = result["final"]["train/penalty"]
    assert 0 < penalty < result["final"]["train/loss"]
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert load_checkpoint(ckpt)["config"]["regularizer"] == {"name": "l1", "l1": 1e-3}
    resume = [f"ckpt_path={ckpt}", "trainer.max_epochs=2", "logger=none"]  # today's default is regularizer=none
    resumed = train(make_cfg(tmp_path / "resumed", *resume), overrides=resume)
    assert [h["epoch"] for h in resumed["history"]] == [1] and resumed["final"]["train/penalty"] > 0
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["config"]["regularizer"]["l1"] == 1e-3
    change = [f"ckpt_path={ckpt}", "regularizer=l1", "regularizer.l1=1e-2"]
    with pytest.raises(ConfigError, match="regularizer=l1 would change it"):
        train(make_cfg(tmp_path / "changed", *change), overrides=change)


@pytest.mark.parametrize(("overrides", "message"), [
    (["regularizer=l1", "regularizer.l1=-1e-4"], "regularizer.l1 must be >= 0, got -0.0001"),
    (["regularizer=elastic", "regularizer.l2=-1"], "regularizer.l2 must be >= 0, got -1"),
    (["regularizer=elastic", "regularizer.l2=abc"], "regularizer.l2 must be a number, got 'abc'"),
    (["regularizer=max_norm", "regularizer.c=0"], "regularizer.c must be > 0, got 0.0"),
    (["regularizer=max_norm", "regularizer.layers=[linear,lstm]"], "regularizer.layers must name some of linear, conv"),
    (["regularizer=l1", "+regularizer.l2=1e-4"], "unknown option regularizer.l2; known: l1"),
])
def test_bad_regularizer_values_are_one_error_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path / "run", *FAST, *overrides))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # checked before the run claims its directory
