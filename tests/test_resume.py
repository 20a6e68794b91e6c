"""Resume restores its run (issue 19, item 3): ``ckpt_path=`` continues with the config stored in
the checkpoint; a documented few overrides are allowed, any other is one error line unless
``resume.allow_changes=true``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import FAST, make_cfg, run_cli
from zoo.engine.checkpoint import load_checkpoint
from zoo.errors import ConfigError
from zoo.pipeline import train

RUN = [*FAST, "optimizer=momentum", "optimizer.lr=0.05", "scheduler=cosine", "trainer.max_epochs=3", "trainer.deterministic=true",
       "test=false", "callbacks.checkpoint.every_n_epochs=1"]


@pytest.fixture(scope="module")
def momentum_cosine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("mc")
    train(make_cfg(run, *RUN))
    return run


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_plain_resume_continues_the_run_with_its_own_config(momentum_cosine: Path, tmp_path: Path) -> None:
    """Today's defaults are adam + one-cycle for 40 epochs; the run was momentum + cosine for 3."""
    ckpt = momentum_cosine / "checkpoints" / "epoch_1.pt"
    result = train(make_cfg(tmp_path, f"ckpt_path={ckpt}", "logger=none"), overrides=[f"ckpt_path={ckpt}", "logger=none"])
    assert [h["epoch"] for h in result["history"]] == [1, 2] and result["optimizer"] == "momentum"
    assert result["scheduler"] == "cosine"
    _same_weights(tmp_path / "checkpoints" / "last.pt", momentum_cosine / "checkpoints" / "last.pt")


def test_a_changing_override_is_one_error_line(momentum_cosine: Path, tmp_path: Path) -> None:
    ckpt = momentum_cosine / "checkpoints" / "epoch_1.pt"
    for override in ("optimizer.lr=0.1", "scheduler=onecycle", "data.batch_size=32", "optimizer=sgd"):
        with pytest.raises(ConfigError) as info:
            train(make_cfg(tmp_path, f"ckpt_path={ckpt}", override), overrides=[f"ckpt_path={ckpt}", override])
        message = str(info.value)
        assert f"{override} would change it" in message and "resume.allow_changes=true" in message and "\n" not in message
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_repeating_the_runs_own_settings_is_no_change(momentum_cosine: Path, tmp_path: Path) -> None:
    """The command that started the run, with ckpt_path= added (what kill_resume.py does)."""
    ckpt = momentum_cosine / "checkpoints" / "epoch_1.pt"
    again = [*RUN, f"ckpt_path={ckpt}"]
    result = train(make_cfg(tmp_path, *again), overrides=again)
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    _same_weights(tmp_path / "checkpoints" / "last.pt", momentum_cosine / "checkpoints" / "last.pt")


def test_allowed_overrides_and_allow_changes(momentum_cosine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = momentum_cosine / "checkpoints" / "last.pt"
    more = ["trainer.max_epochs=4", "trainer.limit_val_batches=1", "logger=none"]
    result = train(make_cfg(tmp_path / "longer", f"ckpt_path={ckpt}", *more), overrides=[f"ckpt_path={ckpt}", *more])
    assert [h["epoch"] for h in result["history"]] == [3]
    changes = ["optimizer=sgd", "optimizer.lr=0.01", "resume.allow_changes=true"]
    with caplog.at_level("INFO"):
        result = train(make_cfg(tmp_path / "changed", f"ckpt_path={ckpt}", "trainer.max_epochs=4", *changes),
                       overrides=[f"ckpt_path={ckpt}", "trainer.max_epochs=4", *changes])
    assert result["optimizer"] == "sgd" and [h["epoch"] for h in result["history"]] == [3]
    text = caplog.text
    assert "optimizer: {'name': 'momentum'" in text and "-> {'name': 'sgd', 'lr': 0.01" in text and "optimizer changed from momentum to sgd; it starts with a fresh state" in text


@pytest.mark.slow  # the default suite resumes in-process (the run's own config; a changed override refused)
def test_resume_from_the_command_line_keeps_the_finished_run(momentum_cosine: Path, tmp_path: Path) -> None:
    """The README's command on a finished 3-epoch run: nothing left to train (not 37 more epochs of
    today's defaults), the run's schedule and optimizer; the restored config lands in .hydra/."""
    ckpt = momentum_cosine / "checkpoints" / "last.pt"
    proc = run_cli("train.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing left to train" in proc.stdout + proc.stderr
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["optimizer"] == "momentum" and metrics["epochs_run"] == 3 and metrics["history"] == []
    assert "name: momentum" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    proc = run_cli("train.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'bad'}", "optimizer.lr=0.5")
    assert proc.returncode == 2 and "optimizer.lr=0.5 would change it" in proc.stderr and "Traceback" not in proc.stderr


def test_lbfgs_resumes_exactly(tmp_path: Path) -> None:
    """L-BFGS's state (its curvature pairs, last direction and step) travels in the checkpoint: a resumed
    full-batch run ends on the weights of the uninterrupted one."""
    run = ["experiment=lbfgs_digits", "logger=none", "trainer.max_epochs=3", "optimizer.max_iter=5", "data.train_per_class=20",
           "data.batch_size=200", "trainer.deterministic=true", "test=false", "callbacks.checkpoint.every_n_epochs=1"]
    whole = train(make_cfg(tmp_path / "whole", *run))
    assert whole["optimizer"] == "lbfgs" and whole["global_step"] == 3
    ckpt = tmp_path / "whole" / "checkpoints" / "epoch_1.pt"
    assert len(load_checkpoint(ckpt)["optimizers"]["model"]["state"][0]["old_dirs"]) > 0
    result = train(make_cfg(tmp_path / "resumed", f"ckpt_path={ckpt}", "logger=none"), overrides=[f"ckpt_path={ckpt}", "logger=none"])
    assert [h["epoch"] for h in result["history"]] == [1, 2] and result["optimizer"] == "lbfgs"
    _same_weights(tmp_path / "resumed" / "checkpoints" / "last.pt", tmp_path / "whole" / "checkpoints" / "last.pt")
