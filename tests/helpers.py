"""Shared test helpers: compose the real Hydra configs and run the real entry points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from zoo.cli import register_resolvers
from zoo.engine.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

register_resolvers()  # ${zoo_input_size:...} in configs/model/_base.yaml, as train.py and evaluate.py have them

#: settings that keep a digits run to a second or two
FAST = ["trainer.max_epochs=2", "logger=none"]


def make_cfg(run_dir: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=[f"paths.output_dir={run_dir}", *overrides])


def run_cli(script: str, *args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args`` from the repo as a user would; outputs go under ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sigterm_once_written(script: str, path: Path, *args: str) -> tuple[int, str]:
    """Start ``python <script> args``, send SIGTERM once ``path`` exists; its exit status and stderr."""
    proc = subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def tree_snapshot(root: Path) -> dict[str, Any]:
    """Path -> (size, mtime_ns) of every file under ``root``: compare before/after to prove nothing changed."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


class BuggyCallback(Callback):
    """``+callbacks.bug._target_=tests.helpers.BuggyCallback``: a run that hits a bug, not a user error."""

    def on_fit_start(self, trainer: Any, task: Any) -> None:
        raise RuntimeError("a bug in a callback")


def one_error(capsys: Any, argv: list[str], match: str) -> None:
    """``python -m zoo <argv>`` exits 2 with one ``error:`` line on stderr containing ``match``, and prints nothing
    else."""
    from zoo.__main__ import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and match in captured.err, captured.err
    assert captured.out == ""
