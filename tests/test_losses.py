"""The classification losses (``task.loss``) against hand computations, a naive loop and scikit-learn, and
through the classification task and the real configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.helpers import FAST, make_cfg, run_cli
from zoo.errors import ConfigError
from zoo.losses import LOSSES, build_loss
from zoo.tasks.classification import ClassificationTask

# The notes' Figure 3.0.1: scores of a linear classifier for three images, classes (cat, car, frog).
SCORES = torch.tensor([[3.2, 5.1, -1.7],   # a cat
                       [1.3, 4.9, 2.0],    # a car
                       [2.2, 2.5, -3.1]])  # a frog
TARGET = torch.tensor([0, 1, 2])


def _close(value: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(value, torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_hinge_is_the_notes_multiclass_svm_loss() -> None:
    # L_i = sum_{j != y} max(0, s_j - s_y + 1), the notes' equations 3.1.3-3.1.11:
    cat = max(0, 5.1 - 3.2 + 1) + max(0, -1.7 - 3.2 + 1)  # 2.9 + 0
    car = max(0, 1.3 - 4.9 + 1) + max(0, 2.0 - 4.9 + 1)  # 0 + 0
    frog = max(0, 2.2 - (-3.1) + 1) + max(0, 2.5 - (-3.1) + 1)  # 6.3 + 6.6
    assert (round(cat, 6), round(car, 6), round(frog, 6)) == (2.9, 0.0, 12.9)
    _close(build_loss("hinge")(SCORES, TARGET), [cat, car, frog])
    # margin 0.5: cat 5.1 - 3.2 + 0.5 = 2.4; car none; frog (2.2 + 3.1 + 0.5) + (2.5 + 3.1 + 0.5) = 11.9
    _close(build_loss("hinge", margin=0.5)(SCORES, TARGET), [2.4, 0.0, 11.9])
    # squared: 2.9^2 = 8.41; 0; 6.3^2 + 6.6^2 = 39.69 + 43.56 = 83.25
    _close(build_loss("squared_hinge")(SCORES, TARGET), [8.41, 0.0, 83.25])


def test_cross_entropy_and_label_smoothing_by_hand() -> None:
    def lse(s: list[float]) -> float:
        return math.log(sum(math.exp(v) for v in s))

    rows = SCORES.tolist()
    plain = [lse(s) - s[y] for s, y in zip(rows, TARGET.tolist())]  # -log softmax(s)_y
    # the cat: log(e^3.2 + e^5.1 + e^-1.7) - 3.2 = log(24.533 + 164.022 + 0.183) - 3.2 = 5.2404 - 3.2 = 2.0404
    assert round(plain[0], 4) == 2.0404
    _close(build_loss("cross_entropy", label_smoothing=0.0)(SCORES, TARGET), plain)
    # smoothing 0.1 over 3 classes: target 0.9 + 0.1/3 on y, 0.1/3 elsewhere, so
    # loss = 0.9 (lse - s_y) + 0.1 (lse - mean(s)); the cat: 0.9 * 2.0404 + 0.1 * (5.2404 - 2.2) = 2.1404
    smooth = [0.9 * (lse(s) - s[y]) + 0.1 * (lse(s) - sum(s) / 3) for s, y in zip(rows, TARGET.tolist())]
    assert round(smooth[0], 4) == 2.1404
    _close(build_loss("cross_entropy")(SCORES, TARGET), smooth)  # 0.1 is the default


def test_bce_is_one_vs_all_averaged_over_classes() -> None:
    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    # -[t log sigmoid(s) + (1 - t) log(1 - sigmoid(s))] = softplus(-s) for the true class, softplus(s) for the others
    # the cat: (softplus(-3.2) + softplus(5.1) + softplus(-1.7)) / 3 = (0.03996 + 5.10608 + 0.16779) / 3 = 1.77127
    expected = [sum(softplus(-v if j == y else v) for j, v in enumerate(s)) / 3 for s, y in zip(SCORES.tolist(), TARGET.tolist())]
    assert round(expected[0], 5) == 1.77127
    _close(build_loss("bce")(SCORES, TARGET), expected)


def test_hinge_against_a_naive_loop_and_sklearn() -> None:
    from sklearn.metrics import hinge_loss

    g = torch.Generator().manual_seed(0)
    scores, target = torch.randn(64, 7, generator=g) * 2, torch.randint(0, 7, (64,), generator=g)
    naive = torch.zeros(64)
    for i in range(64):
        for j in range(7):
            if j != target[i]:
                naive[i] += max(0.0, float(scores[i, j] - scores[i, target[i]] + 1))
    torch.testing.assert_close(build_loss("hinge")(scores, target), naive)
    torch.testing.assert_close(build_loss("squared_hinge", margin=2.0)(scores, target),
                               ((scores - scores.gather(1, target[:, None]) + 2).clamp_min(0) ** 2).sum(1) - 4.0)
    # two classes: max(0, 1 - y f) with y = +-1 and the decision f = s_1 - s_0, scikit-learn's binary hinge loss
    two, y2 = scores[:, :2], target % 2
    ours = float(build_loss("hinge")(two, y2).mean())
    assert ours == pytest.approx(hinge_loss(2 * y2.numpy() - 1, (two[:, 1] - two[:, 0]).numpy()), rel=1e-6)


def test_the_task_trains_on_the_loss_and_validates_without_smoothing() -> None:
    model = torch.nn.Identity()  # the "logits" are the scores themselves
    for loss, train_expected, val_expected in (
        ("hinge", (2.9 + 0 + 12.9) / 3, (2.9 + 0 + 12.9) / 3),
        ("cross_entropy", float(build_loss("cross_entropy")(SCORES, TARGET).mean()),
         float(build_loss("cross_entropy", label_smoothing=0.0)(SCORES, TARGET).mean())),
    ):
        task = ClassificationTask(model, 3, loss=loss)
        assert float(task.training_step((SCORES, TARGET))["loss"]) == pytest.approx(train_expected, rel=1e-6)
        task.reset_metrics()
        task.validation_step((SCORES[:2], TARGET[:2]))
        task.validation_step((SCORES[2:], TARGET[2:]))
        metrics = task.compute_metrics()
        assert metrics["loss"] == pytest.approx(val_expected, rel=1e-6)
        assert metrics["acc"] == pytest.approx(1 / 3)  # only the car is right


@pytest.mark.parametrize(("options", "message"), [
    ({"loss": "hinge", "label_smoothing": 0.1}, "task.label_smoothing=0.1 applies to task.loss=cross_entropy only; "
                                                "set task.label_smoothing=null with task.loss=hinge"),
    ({"loss": "cross_entropy", "margin": 2.0}, "task.margin=2.0 applies to task.loss=hinge|squared_hinge only"),
    ({"loss": "hing"}, "task.loss: unknown loss 'hing'; did you mean: hinge"),
    ({"loss": "hinge", "margin": -1.0}, "task.margin must be >= 0"),
    ({"label_smoothing": 1.5}, r"task.label_smoothing must be in \[0, 1\]"),
])
def test_bad_loss_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClassificationTask(torch.nn.Identity(), 3, **options)  # type: ignore[arg-type]


def test_zero_smoothing_goes_with_any_loss() -> None:
    for name in LOSSES:
        ClassificationTask(torch.nn.Identity(), 3, loss=name, label_smoothing=0.0)


def test_hinge_run_through_the_configs(tmp_path: Path) -> None:
    from zoo.pipeline import train

    result = train(make_cfg(tmp_path, *FAST, "model=linear", "task.loss=hinge", "task.margin=0.5", "trainer.max_epochs=3"))
    assert result["history"][-1]["train/loss"] < result["history"][0]["train/loss"]
    assert result["test"]["acc"] > 0.5
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'cli'}", "task.loss=bce", "task.label_smoothing=0.2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines == ["error: task.label_smoothing=0.2 applies to task.loss=cross_entropy only; "
                                              "set task.label_smoothing=null with task.loss=bce"], proc.stderr


@pytest.mark.slow
def test_hinge_loss_lenet5_reaches_95_percent(tmp_path: Path) -> None:
    """``python train.py task.loss=hinge``: the default LeNet-5 recipe with the multiclass SVM loss."""
    from zoo.pipeline import train

    result = train(make_cfg(tmp_path, "task.loss=hinge", "logger=none"))
    assert result["test"]["acc"] >= 0.95


@pytest.mark.parametrize("name", ["cross_entropy", "bce"])
def test_soft_target_losses_take_class_probabilities(name: str) -> None:
    """A one-hot probability target gives the index target's loss; a mixed one the same mix of the two losses
    (both losses are linear in the target): what MixUp and CutMix train on."""
    loss = build_loss(name)
    onehot = torch.eye(3)[TARGET]
    torch.testing.assert_close(loss(SCORES, onehot), loss(SCORES, TARGET))
    other = TARGET.roll(1)
    mixed = 0.3 * onehot + 0.7 * torch.eye(3)[other]
    torch.testing.assert_close(loss(SCORES, mixed), 0.3 * loss(SCORES, TARGET) + 0.7 * loss(SCORES, other))
    assert LOSSES.metadata(name)["soft_targets"] and not LOSSES.metadata("hinge").get("soft_targets")


def test_train_accuracy_with_mixed_targets_counts_the_dominant_class() -> None:
    task = ClassificationTask(torch.nn.Identity(), num_classes=3)
    mixed = 0.6 * torch.eye(3)[TARGET] + 0.4 * torch.eye(3)[TARGET.roll(1)]
    out = task.training_step((SCORES, mixed))
    assert out["acc"] == task.training_step((SCORES, TARGET))["acc"] and torch.isfinite(out["loss"])
    assert task.soft_targets_refused() is None
    hinge = ClassificationTask(torch.nn.Identity(), 3, loss="hinge", label_smoothing=0.0)
    assert "task.loss=hinge" in (hinge.soft_targets_refused() or "")
