"""End-to-end: the real configs, the real pipeline, LeNet-5 on the embedded digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import FAST, make_cfg
from zoo.engine.checkpoint import load_checkpoint
from zoo.pipeline import evaluate, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    cfg = make_cfg(run_dir, "trainer.max_epochs=4", "logger=tensorboard")
    return run_dir, train(cfg)


def test_train_writes_run_files(trained: tuple[Path, dict]) -> None:
    run_dir, result = trained
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "lenet5" and metrics["dataset"] == "digits"
    assert metrics["params"] == 61_706
    assert metrics["epochs_run"] == 4 and len(metrics["history"]) == 4
    assert set(metrics["test"]) == {"loss", "acc", "acc5"}


def test_train_learns(trained: tuple[Path, dict]) -> None:
    _, result = trained
    history = result["history"]
    assert history[-1]["train/loss"] < 0.5 * history[0]["train/loss"]
    assert result["test"]["acc"] > 0.9  # four epochs of LeNet-5 on digits
    assert result["test"]["acc5"] >= result["test"]["acc"]


def test_tensorboard_scalars(trained: tuple[Path, dict]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = trained
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "test/acc"} <= tags
    assert len(acc.Scalars("val/acc")) == 4
    assert "test/confusion_matrix" in acc.Tags()["images"]
    grid = acc.Images("data/train_augmented")[0]  # 64 augmented 32x32 digits, 8 per row, 2-pixel gaps
    assert (grid.step, grid.width, grid.height) == (0, 8 * 34 + 2, 8 * 34 + 2)


def test_checkpoint_contents(trained: tuple[Path, dict]) -> None:
    run_dir, _ = trained
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["model_name"] == "lenet5" and state["epoch"] == 3
    assert state["config"]["model"]["name"] == "lenet5"
    assert {"optimizers", "schedulers", "scaler", "rng", "callbacks"} <= set(state)
    assert state["callbacks"]["checkpoint"]["monitor"] == "val/acc" and len(state["callbacks"]["checkpoint"]["top"]) == 1
    assert set(state["optimizers"]) == {"model"}


def test_evaluate_uses_stored_config(trained: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, result = trained
    cfg = make_cfg(tmp_path, f"ckpt_path={run_dir}/checkpoints/best.pt", "progress_bar=false", config_name="evaluate")
    out = evaluate(cfg)
    assert out["test"]["acc"] == pytest.approx(result["test"]["acc"])
    assert out["epoch"] == result["best_epoch"]  # one epoch count: metrics.json, evaluate.py, the kept file's name
    assert list((run_dir / "checkpoints").glob(f"epoch={result['best_epoch']}-*.pt"))
    matrix = torch.tensor(out["confusion_matrix"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == 360
    assert float(matrix.diagonal().sum()) / 360 == pytest.approx(out["test"]["acc"])
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == out["test"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    common = [*FAST, "trainer.max_epochs=4", "trainer.deterministic=true", "test=false"]
    full = train(make_cfg(tmp_path / "full", *common, "callbacks.checkpoint.every_n_epochs=2"))
    resumed = train(
        make_cfg(tmp_path / "resumed", *common, f"ckpt_path={tmp_path}/full/checkpoints/epoch_2.pt")
    )
    assert [h["epoch"] for h in resumed["history"]] == [2, 3]  # continued at the next epoch
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert resumed["history"][-1]["val/loss"] == pytest.approx(full["history"][-1]["val/loss"], abs=0)


def test_early_stopping(tmp_path: Path) -> None:
    # lr tiny enough that validation accuracy cannot improve after the first epoch
    cfg = make_cfg(tmp_path, *FAST, "trainer.max_epochs=20", "optimizer.lr=1e-9", "scheduler=none",
                   "callbacks.early_stopping.patience=2")
    result = train(cfg)
    assert result["stopped_early"] and result["epochs_run"] == 3


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_every_optimizer_config_trains(optimizer: str, tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *FAST, "test=false", f"optimizer={optimizer}", "scheduler=none", "trainer.max_epochs=5", "augmentation=none"))
    history = result["history"]
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert history[-1]["val/acc"] > 0.5, (optimizer, history[-1])


@pytest.mark.parametrize("scheduler", ["none", "step", "exponential", "inverse_time", "cosine", "plateau", "onecycle"])
def test_every_scheduler_config_trains(scheduler: str, tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *FAST, "test=false", f"scheduler={scheduler}", "scheduler.warmup_epochs=1"
                            if scheduler != "onecycle" else "seed=1"))
    assert result["history"][-1]["val/acc"] > 0.5, scheduler


def test_accumulation_and_clipping(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *FAST, "test=false", "trainer.accumulate_grad_batches=2",
                            "trainer.gradient_clip_val=1.0"))
    # 1257 training images in batches of 64: 20 batches -> 10 optimizer steps per epoch
    assert result["global_step"] == 20
    assert result["history"][-1]["val/acc"] > 0.5


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *FAST, "test=false", "trainer.precision=bf16"))
    assert result["history"][-1]["val/acc"] > 0.5


@pytest.mark.slow
def test_default_run_reaches_99_percent(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, "logger=none"))
    assert result["test"]["acc"] >= 0.99
