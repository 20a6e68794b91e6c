"""Run directories never lose anything (issue 19, items 1, 2 and 9): claims belong to the process
that made them, a refused run leaves the existing one byte for byte unchanged, and a run directory
that is empty, the current directory, under a file or read-only is one error line before Hydra
writes anything."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.helpers import FAST, make_cfg, run_cli
from zoo.errors import ConfigError
from zoo.pipeline import train
from zoo.rundir import RUN_CLAIM, prepare_run_dir, release_run_dir

QUICK = ["trainer.max_epochs=1", "logger=none", "trainer.limit_train_batches=2", "data.eval_batch_size=16",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run made through the real command line (with its .hydra/ and train.log)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = run_cli("train.py", f"hydra.run.dir={run}", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log", "metrics.json"} <= set(_checksums(run))
    return run


def test_a_refused_run_never_removes_another_process_claim(tmp_path: Path) -> None:
    """Item 1: while a run holds its claim (here: made by "another process"), every other run into
    that directory is refused, and refusing does not free the directory for the next one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_CLAIM).write_text("")  # a live run's claim, not ours
    for _ in range(2):
        with pytest.raises(ConfigError, match="already holds a run"):
            train(make_cfg(run, *FAST))
        assert (run / RUN_CLAIM).exists()
    assert sorted(p.name for p in run.iterdir()) == [RUN_CLAIM]


def test_only_the_claiming_process_releases(tmp_path: Path) -> None:
    mine = prepare_run_dir(tmp_path / "mine")
    release_run_dir(mine)
    assert not (mine / RUN_CLAIM).exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / RUN_CLAIM).write_text("")
    release_run_dir(theirs)
    assert (theirs / RUN_CLAIM).exists()


@pytest.mark.parametrize("command", [
    ["train.py", "model=resnet20"],
    ["evaluate.py", "ckpt_path={run}/checkpoints/best.pt"],
    ["train.py", "ckpt_path={run}/checkpoints/last.pt"],
], ids=["train", "evaluate", "resume"])
def test_a_refused_run_changes_nothing_of_the_existing_run(finished: Path, command: list[str]) -> None:
    """Item 2: Hydra used to rewrite .hydra/*.yaml (and add an empty evaluate.log) before zoo refused."""
    before = _checksums(finished)
    script, *args = command
    proc = run_cli(script, f"hydra.run.dir={finished}", *[a.format(run=finished) for a in args], "logger=none")
    _one_error(proc, "already holds a run")
    assert _checksums(finished) == before


@pytest.mark.parametrize("value", ["", "."])
def test_an_empty_run_dir_is_refused(tmp_path: Path, value: str) -> None:
    """Item 9: ``hydra.run.dir=`` wrote a whole run into the current directory."""
    proc = run_cli("train.py", f"hydra.run.dir={value}", *QUICK, cwd=tmp_path)
    _one_error(proc, "current directory")
    assert list(tmp_path.iterdir()) == []


def test_a_run_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'afile' / 'run'}", *QUICK, cwd=tmp_path)
    _one_error(proc, "is a file")


def test_a_read_only_run_dir_is_one_line(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        proc = run_cli("train.py", f"hydra.run.dir={ro / 'run'}", *QUICK, cwd=tmp_path)
        _one_error(proc, "not writable")
    finally:
        subprocess.run(["umount", str(ro)], check=False)
