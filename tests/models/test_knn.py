"""k-nearest neighbours: the same predictions as scikit-learn's KNeighborsClassifier, k chosen on the
validation split, the memory in the checkpoint (train, then evaluate), and a zoo checkpoint's features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from tests.helpers import FAST, make_cfg
from zoo.engine.checkpoint import load_checkpoint
from zoo.errors import CheckpointError, ConfigError
from zoo.models import create_model
from zoo.pipeline import evaluate, train
from zoo.tasks import TASKS


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 8x8 digits with a little uniform noise: integer pixels make many distances tie exactly, and
    the order of tied neighbours is each library's own."""
    x, y = load_digits(return_X_y=True)
    x = x + np.random.default_rng(0).uniform(0, 0.01, x.shape)
    return x[:1200].astype(np.float32), y[:1200], x[1200:].astype(np.float32), y[1200:]


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).view(-1, 1, 8, 8)


@pytest.mark.parametrize("distance", ["l2", "l1"])
@pytest.mark.parametrize("k", [1, 3])
def test_same_predictions_as_sklearn(digits: tuple[np.ndarray, ...], k: int, distance: str) -> None:
    x_train, y_train, x_test, _ = digits
    model = create_model("knn", num_classes=10, in_chans=1, k=k, distance=distance)
    model.chunk_size = 97  # several chunks of the memory, merged
    for start in range(0, 1200, 64):  # memorised batch by batch, as in training
        model.memorise(_images(x_train[start:start + 64]), torch.from_numpy(y_train[start:start + 64]))
    ours = model(_images(x_test)).argmax(1).numpy()
    reference = KNeighborsClassifier(n_neighbors=k, metric="euclidean" if distance == "l2" else "manhattan",
                                     algorithm="brute").fit(x_train, y_train)
    np.testing.assert_array_equal(ours, reference.predict(x_test))
    distances, _ = model.neighbours(_images(x_test), k)
    np.testing.assert_allclose(distances.numpy(), reference.kneighbors(x_test)[0], rtol=1e-4, atol=1e-3)


def test_vote_ties_go_to_the_smallest_class() -> None:
    model = create_model("knn", num_classes=3, in_chans=1, k=2)
    model.memorise(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1), torch.tensor([2, 0]))  # one vote each for classes 2, 0
    shares = model(torch.zeros(1, 1, 1, 1))
    assert shares.tolist() == [[0.5, 0.0, 0.5]] and int(shares.argmax(1)) == 0
    reference = KNeighborsClassifier(n_neighbors=2).fit(np.array([[-1.0], [1.0]]), np.array([2, 0]))
    assert reference.predict(np.zeros((1, 1)))[0] == 0


def test_validation_chooses_k(digits: tuple[np.ndarray, ...]) -> None:
    """Each candidate's validation accuracy is scikit-learn's; the most accurate (smallest of equals) is kept
    in the model and used by the final evaluation."""
    x_train, y_train, x_val, y_val = digits
    x_train, y_train = x_train[:300], y_train[:300]  # fewer samples: k matters more
    candidates = [1, 3, 5, 9, 15]
    task = TASKS.build("knn", model=create_model("knn", num_classes=10, in_chans=1, k_candidates=candidates), num_classes=10)
    task.train()
    for start in range(0, 300, 64):
        assert task.training_step((_images(x_train[start:start + 64]), torch.from_numpy(y_train[start:start + 64]))) == {}
    task.eval()
    task.reset_metrics()
    for start in range(0, len(y_val), 200):
        task.validation_step((_images(x_val[start:start + 200]), torch.from_numpy(y_val[start:start + 200])))
    metrics = task.compute_metrics()
    accuracy = {k: KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(x_train, y_train).score(x_val, y_val)
                for k in candidates}
    for k in candidates:
        assert metrics[f"acc_k{k}"] == pytest.approx(accuracy[k])
    best = max(candidates, key=lambda k: (accuracy[k], -k))
    assert metrics["k"] == best and int(task.model.k) == best and metrics["acc"] == pytest.approx(accuracy[best])
    task.final_evaluation = True  # a test pass: the stored k, no choice
    task.reset_metrics()
    task.validation_step((_images(x_val), torch.from_numpy(y_val)))
    assert task.compute_metrics() == {"acc": pytest.approx(accuracy[best])}


def test_bad_options_and_distributed_runs() -> None:
    with pytest.raises(ConfigError, match="model.distance must be l1 or l2"):
        create_model("knn", distance="cosine")
    with pytest.raises(ConfigError, match="model.k must be >= 1 or null"):
        create_model("knn", k=0)
    model = create_model("knn", k=5)
    model.memorise(torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="k=5 neighbours asked of 3 stored training samples"):
        model(torch.randn(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="task=knn runs in one process"):
        TASKS.build("knn", model=model, num_classes=10).distribute(lambda m: m)


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("knn")
    return run_dir, train(make_cfg(run_dir, "experiment=knn_digits", "logger=none"))


def test_knn_digits_trains_and_evaluates_from_its_checkpoint(knn_run: tuple[Path, dict], tmp_path: Path) -> None:
    """``python train.py experiment=knn_digits``: >= 97% test accuracy; the memory and the chosen k are in the
    checkpoint, so ``evaluate.py`` gives the same accuracy without training data."""
    run_dir, result = knn_run
    assert result["test"]["acc"] >= 0.97 and result["params"] == 0
    assert result["global_step"] == 20  # one step per training batch (1,257 samples, batches of 64), no optimizer
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert state["model"]["memory"].shape == (1257, 64) and state["optimizers"] == {}
    assert int(state["model"]["k"]) == result["final"]["val/k"]
    metrics = evaluate(make_cfg(tmp_path, f"ckpt_path={run_dir}/checkpoints/best.pt", "logger=none", "progress_bar=false",
                                config_name="evaluate"))
    assert metrics["test"]["acc"] == result["test"]["acc"]


def test_every_epoch_stores_the_training_split_once(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, "experiment=knn_digits", *FAST, "trainer.max_epochs=2", "test=false"))
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]["memory"].shape == (1257, 64)


def test_a_mid_epoch_resume_keeps_the_memory_stored_so_far(knn_run: tuple[Path, dict], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that dies after step 12 leaves the step-10 checkpoint (10 of 20 batches memorised); resumed, it
    ends with the uninterrupted run's memory, not with the last 10 batches alone."""
    from zoo.tasks.knn import KNNTask

    step, calls = KNNTask.training_step, []

    def dies_after_12(self: KNNTask, batch: object) -> dict:
        calls.append(1)
        if len(calls) > 12:
            raise RuntimeError("killed")
        return step(self, batch)

    options = ["experiment=knn_digits", "logger=none", "test=false", "callbacks.checkpoint.every_n_steps=5"]
    with monkeypatch.context() as patch:
        patch.setattr(KNNTask, "training_step", dies_after_12)
        with pytest.raises(RuntimeError, match="killed"):
            train(make_cfg(tmp_path / "a", *options))
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["partial_epoch"]["batches"] == 10
    train(make_cfg(tmp_path / "b", *options, f"ckpt_path={last}"))
    resumed = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    reference = load_checkpoint(knn_run[0] / "checkpoints" / "last.pt")["model"]
    assert torch.equal(resumed["memory"], reference["memory"]) and torch.equal(resumed["memory_labels"], reference["memory_labels"])


def test_features_of_a_zoo_checkpoint(knn_run: tuple[Path, dict], tmp_path: Path) -> None:
    """A linear classifier's features are its flattened pixels: kNN on them is kNN on the pixels."""
    train(make_cfg(tmp_path / "linear", *FAST, "model=linear", "trainer.max_epochs=1", "test=false"))
    ckpt = tmp_path / "linear" / "checkpoints" / "best.pt"
    result = train(make_cfg(tmp_path / "knn", "experiment=knn_digits", "logger=none", f"model.features={ckpt}"))
    assert result["test"]["acc"] == knn_run[1]["test"]["acc"]
    with pytest.raises(ConfigError, match="model.features was trained on 8-pixel images, the data has 16; set model.input_size=8"):
        train(make_cfg(tmp_path / "bad", "experiment=knn_digits", "logger=none", f"model.features={ckpt}", "model.input_size=16"))
    with pytest.raises(CheckpointError, match="model.features: checkpoint not found"):
        train(make_cfg(tmp_path / "missing", "experiment=knn_digits", "logger=none", "model.features=/no/such.pt"))


def test_a_regularizer_is_refused_for_knn() -> None:
    from zoo.engine.regularizers import Regularizer
    from zoo.errors import ConfigError
    from zoo.models import create_model
    from zoo.tasks import build_task

    model = create_model("knn", num_classes=10)
    build_task({"name": "knn"}, model, "knn", regularizer=Regularizer(), num_classes=10)  # none: fine
    with pytest.raises(ConfigError, match=r"^task=knn has no weights to optimise, so a regularizer would do nothing"):
        build_task({"name": "knn"}, model, "knn", regularizer=Regularizer(l1=1e-4), num_classes=10)


def test_model_knn_alone_brings_its_task_and_no_augmentation(tmp_path: Path) -> None:
    """``python train.py model=knn``: the model config picks task=knn and augmentation=none (the trainer
    knows nothing of kNN); the stored, unaugmented training split gives the experiment's accuracy."""
    cfg = make_cfg(tmp_path, "model=knn", "trainer.max_epochs=1", "logger=none")
    assert cfg.task.name == "knn" and dict(cfg.augmentation.ops) == {}
    assert train(cfg)["test"]["acc"] >= 0.97
