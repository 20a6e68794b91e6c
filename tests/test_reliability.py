"""Exact mid-epoch resume, SIGINT/SIGTERM handling and non-finite losses in the shared trainer."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from zoo.data import build_datamodule
from zoo.data.types import DataModule
from zoo.engine.checkpoint import load_checkpoint
from zoo.engine.callbacks import ModelCheckpoint, NonFiniteLoss, NonFiniteLossError, SignalHandler
from zoo.engine.state import TrainerConfig
from zoo.engine.trainer import Trainer
from zoo.errors import TrainingInterrupted
from zoo.models import create_model
from zoo.tasks.classification import ClassificationTask

DATA = {"name": "digits", "batch_size": 64, "image_size": 32}
AUG = {"name": "affine", "degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]}
OPT = {"name": "adam", "lr": 0.005}
SCHED = {"name": "onecycle"}


class Scripted(ClassificationTask):
    """Classification with hooks to misbehave at a given training step (1-based)."""

    def __init__(self, *args: Any, signal_at: int | None = None, nan_at: int | tuple[int, ...] = (), kill_at: int | None = None,
                 signal_at_val: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = self.val_calls = 0
        self.signal_at, self.kill_at, self.signal_at_val = signal_at, kill_at, signal_at_val
        self.nan_at = {nan_at} if isinstance(nan_at, int) else set(nan_at)

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == self.kill_at + 1 if self.kill_at else False:
            raise RuntimeError("killed")  # the process dies before this step: nothing more is written
        out = super().training_step(batch)
        if self.calls == self.signal_at:
            signal.raise_signal(signal.SIGTERM)  # delivered to the trainer's handler, as `kill` would
        if self.calls in self.nan_at:
            out["loss"] = out["loss"] * float("nan")
        return out


    def validation_step(self, batch: Any) -> None:
        self.val_calls += 1
        super().validation_step(batch)
        if self.val_calls == self.signal_at_val:
            signal.raise_signal(signal.SIGTERM)


class Unseekable:
    """A loader without state_dict/load_state_dict (like a plain DataLoader)."""

    def __init__(self, loader: Any) -> None:
        self.inner = loader

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.inner)


def _data(unseekable: bool = False) -> DataModule:
    data = build_datamodule(DATA, AUG, seed=42)
    if unseekable:
        data.train = Unseekable(data.train)  # type: ignore[assignment]
    return data


def _fit(run_dir: Path, epochs: int = 2, ckpt: Path | None = None, unseekable: bool = False, **kw: Any) -> tuple[Scripted, dict]:
    torch.manual_seed(0)
    callbacks = [ModelCheckpoint(every_n_steps=kw.pop("every_n_steps", None)), NonFiniteLoss(kw.pop("nonfinite", "raise")),
                 SignalHandler()]
    cfg = TrainerConfig(max_epochs=epochs, device="cpu")
    task = Scripted(create_model("lenet5", num_classes=10, in_chans=1), num_classes=10, label_smoothing=0.1, **kw)
    result = Trainer(cfg, run_dir, run_info={"model_name": "lenet5"}, callbacks=callbacks).fit(task, _data(unseekable), OPT, SCHED, ckpt_path=ckpt)
    return task, result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    task, _ = _fit(tmp_path_factory.mktemp("ref"))
    return {k: v.clone() for k, v in task.model.state_dict().items()}


def _assert_same(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), k


@pytest.mark.parametrize("unseekable", [False, True], ids=["seek", "replay"])
def test_sigterm_mid_epoch_saves_and_resumes_exactly(tmp_path: Path, reference: dict, unseekable: bool) -> None:
    # 20 batches per epoch: stop in the middle of the second epoch
    with pytest.raises(TrainingInterrupted) as info:
        _fit(tmp_path / "a", signal_at=27, unseekable=unseekable)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert "SIGTERM" in str(info.value) and "ckpt_path=" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["global_step"] == 27 and state["partial_epoch"]["epoch"] == 1 and state["partial_epoch"]["batches"] == 7

    resumed, result = _fit(tmp_path / "b", ckpt=last, unseekable=unseekable)
    assert result["global_step"] == 40
    _assert_same(resumed.model, reference)


def test_sigterm_in_the_last_validation_stops_before_the_test(tmp_path: Path, reference: dict) -> None:
    """A signal after the last optimizer step (here in the final epoch's validation) is not lost: the
    fit stops once the epoch's last.pt is written, instead of going on to the test (or the next job of
    a sweep); resuming from it finishes the run with the uninterrupted run's weights."""
    val_batches = 3  # digits' 180 validation images in batches of 64
    with pytest.raises(TrainingInterrupted) as info:
        _fit(tmp_path / "a", signal_at_val=val_batches + 2)  # in the second (last) epoch's validation
    assert info.value.exit_code == 128 + signal.SIGTERM and "in epoch 2" in str(info.value)
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["global_step"] == 40 and "partial_epoch" not in state
    resumed, result = _fit(tmp_path / "b", ckpt=last)
    assert result["global_step"] == 40
    _assert_same(resumed.model, reference)


def test_periodic_step_checkpoint_resumes_exactly(tmp_path: Path, reference: dict) -> None:
    _fit(tmp_path / "a", epochs=1, every_n_steps=7)  # last mid-epoch save at step 14, then epoch end at 20
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert "partial_epoch" not in state and state["global_step"] == 20

    # a run that dies (SIGKILL: no handler runs) after step 30 leaves the periodic save of step 28
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path / "c", every_n_steps=7, kill_at=30)
    state = load_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")
    assert state["global_step"] == 28 and state["partial_epoch"]["batches"] == 8
    resumed, _ = _fit(tmp_path / "d", ckpt=tmp_path / "c" / "checkpoints" / "last.pt")
    _assert_same(resumed.model, reference)


def test_nonfinite_loss_stops_naming_the_step(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="at step 5;"):
        _fit(tmp_path, epochs=1, nan_at=5)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # nothing trained on NaN was saved


def test_nonfinite_loss_skipped_when_configured(tmp_path: Path) -> None:
    task, result = _fit(tmp_path, epochs=1, nan_at=5, nonfinite="skip")
    assert result["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    assert result["history"][-1]["val/acc"] > 0.5


def test_skipped_updates_are_summed_up_once_per_epoch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="zoo.engine.callbacks.nonfinite"):
        _, result = _fit(tmp_path, epochs=2, nan_at=(5, 7, 27), nonfinite="skip")  # 20 batches per epoch
    assert result["skipped_steps"] == 3
    assert [r.getMessage() for r in caplog.records if r.name == "zoo.engine.callbacks.nonfinite"] == [
        "2 updates skipped in epoch 1 (2 so far): non-finite loss, first at step 5",
        "1 updates skipped in epoch 2 (3 so far): non-finite loss, first at step 27",
    ]


def test_skipped_nan_batch_leaves_no_nan_in_the_model_or_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN batch's forward pass runs into the batch-norm statistics before its loss is seen: skipping
    it must put them back, or every later evaluation is NaN; metrics.json is strict JSON."""
    import json

    from tests.helpers import FAST, make_cfg
    from zoo.pipeline import train

    original, calls = ClassificationTask.training_step, []

    def nan_batch_at_step_5(self: ClassificationTask, batch: Any) -> dict[str, torch.Tensor]:
        calls.append(1)
        return original(self, (batch[0] * float("nan"), batch[1]) if len(calls) == 5 else batch)

    monkeypatch.setattr(ClassificationTask, "training_step", nan_batch_at_step_5)
    result = train(make_cfg(tmp_path, *FAST, "trainer.max_epochs=1", "model=resnet20", "model.input_size=16",
                            "callbacks.nonfinite.policy=skip"))
    assert result["skipped_steps"] == 1

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in metrics.json")

    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["history"][0]["val/loss"] < 3 and metrics["test"]["loss"] < 3
    weights = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_metrics_json_is_strict(tmp_path: Path) -> None:
    import json

    import numpy as np

    from zoo.engine.utils import write_json

    write_json({"a": float("nan"), "b": [float("inf"), 1.0], "c": np.float32("nan"), "t": torch.tensor(2.5), "n": 3},
               tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": None, "t": 2.5, "n": 3}


def test_run_directory_is_claimed_once(tmp_path: Path) -> None:
    from zoo.errors import ConfigError
    from zoo.pipeline import prepare_run_dir

    prepare_run_dir(tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run"):
        prepare_run_dir(tmp_path / "run")  # a concurrent job handed the same directory


def test_failed_run_gives_its_directory_back(tmp_path: Path) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.errors import ConfigError
    from zoo.pipeline import train

    with pytest.raises(ConfigError, match="batch_size"):
        train(make_cfg(tmp_path, *FAST, "data.batch_size=0"))
    result = train(make_cfg(tmp_path, *FAST, "trainer.max_epochs=1"))  # same directory, input fixed
    assert (tmp_path / "checkpoints" / "last.pt").exists() and result["epochs_run"] == 1


def test_sigterm_from_the_command_line(tmp_path: Path) -> None:
    from tests.helpers import sigterm_once_written

    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    returncode, err = sigterm_once_written("train.py", last, f"hydra.run.dir={run}", "trainer.max_epochs=200",
                                           "logger=none")
    assert returncode == 128 + signal.SIGTERM, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and f"ckpt_path={last}" in lines[0]
    state = load_checkpoint(last)
    assert state["global_step"] > 0


@pytest.mark.parametrize("classes", [[], ["a"]], ids=["no-class-folders", "empty-class-folder"])
def test_empty_dataset_is_one_clear_error(tmp_path: Path, classes: list[str]) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.errors import ZooError
    from zoo.pipeline import train

    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True)
        for c in classes:
            (tmp_path / "data" / split / c).mkdir()
    with pytest.raises(ZooError) as info:
        train(make_cfg(tmp_path / "run", *FAST, "data=imagefolder", f"data.root={tmp_path / 'data'}"))
    message = str(info.value)
    assert "\n" not in message and f"{tmp_path / 'data' / 'train'}" in message
    assert not (tmp_path / "run" / "checkpoints").exists()
