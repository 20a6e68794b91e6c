"""Every config value is checked once, up front (issue 19, items 6 and 7): an ill-typed or
out-of-range value is one error line, exit 2, and leaves the run directory unclaimed, so the
corrected command runs in the same directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FAST, make_cfg, run_cli
from zoo.errors import ConfigError
from zoo.pipeline import train

BAD = [
    ("optimizer.lr=abc", "optimizer.lr must be a number, got 'abc'"),
    ("seed=abc", "seed must be an integer, got 'abc'"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be an integer, got 1.5"),
    ("data.batch_size=abc", "data.batch_size must be an integer, got 'abc'"),
    ("trainer.gradient_clip_val=abc", "trainer.gradient_clip_val must be a number or null, got 'abc'"),
    ("callbacks.checkpoint.every_n_steps=abc", "callbacks.checkpoint.every_n_steps must be an integer or null, got 'abc'"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience must be >= 1 or null, got -1"),
    ("test=no", "test must be true or false, got 'no'"),
    ("trainer.deterministic=maybe", "trainer.deterministic must be true or false, got 'maybe'"),
    ("callbacks.checkpoint.save_last=no", "callbacks.checkpoint.save_last must be true or false, got 'no'"),
    ("callbacks.checkpoint.every_n_steps=0", "callbacks.checkpoint.every_n_steps must be >= 1 or null, got 0"),
    ("callbacks.checkpoint.every_n_steps=-3", "callbacks.checkpoint.every_n_steps must be >= 1 or null, got -3"),
    ("scheduler.warmup_epochs=50", "scheduler.warmup_epochs=50 must be less than trainer.max_epochs=2"),
    ("model.num_classes=ten", "model.num_classes must be an integer, got 'ten'"),
    ("augmentation.ops.affine.degrees=abc", None),
    ("+logger.tensorboard.flush_secs=soon", "logger.tensorboard.flush_secs must be an integer, got 'soon'"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_one_line_and_claim_nothing(tmp_path: Path, override: str, message: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path, *FAST, override))
    if message is not None:
        assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []  # nothing claimed, nothing written


@pytest.mark.slow  # the default suite checks the same values in-process: one line, nothing claimed
def test_bad_value_from_the_command_line_then_the_fix_runs_in_the_same_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli("train.py", f"hydra.run.dir={run}", "logger=none", "trainer.max_epochs=1.5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        "error: trainer.max_epochs must be an integer, got 1.5"]
    proc = run_cli("train.py", f"hydra.run.dir={run}", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "metrics.json").is_file()


def test_good_values_of_other_types_pass(tmp_path: Path) -> None:
    """A number where a string is expected (trainer.precision=32), an integer for a float
    (optimizer.lr=1), null for an option that is off."""
    result = train(make_cfg(tmp_path, *FAST, "trainer.precision=32", "optimizer.lr=1", "optimizer=sgd", "test=false",
                            "callbacks.checkpoint.every_n_steps=null", "scheduler.warmup_epochs=1"))
    assert result["epochs_run"] == 2
