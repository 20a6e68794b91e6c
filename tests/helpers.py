"""Shared test helpers: compose the real Hydra configs and run the real entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

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


def tree_snapshot(root: Path) -> dict[str, Any]:
    """Path -> (size, mtime_ns) of every file under ``root``: compare before/after to prove nothing changed."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}
