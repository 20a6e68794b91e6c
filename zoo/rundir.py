"""Run directories that never lose anything.

* A run claims its directory by creating ``.zoo-run`` exclusively (``O_EXCL``): of two processes
  given one directory exactly one proceeds. Only the process that created a claim removes it (a
  run that fails on bad input before writing results gives its directory back).
* A directory that already holds a run (checkpoints, ``metrics.json`` or a claim) is refused before
  anything is written into it: Hydra is configured not to write ``.hydra/`` or the job log itself
  (``configs/hydra/default.yaml``); :func:`record_hydra_run` writes both once the claim is ours.
* :func:`check_output_location` (called before Hydra starts) refuses an empty or current-directory
  ``hydra.run.dir`` and one that cannot be created (read-only, under a regular file) in one line.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from zoo.errors import ConfigError

#: empty marker file a run creates first in its directory (exclusive create = the directory is ours)
RUN_CLAIM = ".zoo-run"
_OWNED: set[Path] = set()  # the claims this process created


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run's results (checkpoints or metrics)."""
    ckpts = run_dir / "checkpoints"
    return (ckpts.is_dir() and any(ckpts.iterdir())) or (run_dir / "metrics.json").exists()


def _refusal(run_dir: Path) -> ConfigError:
    return ConfigError(f"run directory {run_dir} already holds a run; refusing to overwrite it (choose a new hydra.run.dir)")


def prepare_run_dir(path: str | Path, claim: bool = True) -> Path:
    """The run directory, refusing one that already holds another run's checkpoints or metrics.

    ``claim=False`` (the non-zero ranks of a distributed job) uses the directory rank 0 claims."""
    run_dir = Path(path)
    if str(path) in ("", ".") or run_dir.resolve() == Path.cwd().resolve():
        raise ConfigError(f"the run directory is the current directory ({Path.cwd()}); give each run its own, "
                          "e.g. hydra.run.dir=outputs/my_run")
    if holds_run(run_dir):
        raise _refusal(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not claim:
            return run_dir
        os.close(os.open(run_dir / RUN_CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise _refusal(run_dir) from None
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {run_dir}: {e.strerror}; choose a writable hydra.run.dir") from None
    _OWNED.add(run_dir.resolve())
    return run_dir


def release_run_dir(run_dir: Path, remove_if_empty: bool = False) -> None:
    """Give ``run_dir`` back if this process claimed it and nothing was written: a run that failed
    on bad input; a claim of another process is never touched. ``remove_if_empty`` then also
    removes the directory if nothing else is in it (``trainer.fast_dev_run``)."""
    key = run_dir.resolve()
    if key in _OWNED and not holds_run(run_dir):
        (run_dir / RUN_CLAIM).unlink(missing_ok=True)
        _OWNED.discard(key)
        if remove_if_empty and not any(run_dir.iterdir()):
            run_dir.rmdir()


@contextmanager
def record_hydra_run(run_dir: Path, task_cfg: Any) -> Iterator[None]:
    """Inside a ``@hydra.main`` job: write ``.hydra/{config,hydra,overrides}.yaml`` (``config.yaml``:
    the config the run uses, a resumed run's restored one included) and log to
    ``<run_dir>/<job name>.log`` (what Hydra would write itself, but only once the directory is
    ours); nothing outside Hydra (tests, the Python API)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        yield
        return
    hydra_cfg = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    for name, node in (("config.yaml", task_cfg), ("hydra.yaml", {"hydra": hydra_cfg}), ("overrides.yaml", hydra_cfg.overrides.task)):
        OmegaConf.save(node, out / name)
    handler = logging.FileHandler(run_dir / f"{hydra_cfg.job.name}.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _value(args: Sequence[str], key: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{key}="):
            return arg.split("=", 1)[1]
    return None


def check_output_location(args: Sequence[str]) -> str | None:
    """Before Hydra starts: the problem with where this run would write, as one message, or None."""
    if "-m" in args or "--multirun" in args:
        return None
    run_dir = _value(args, "hydra.run.dir")
    if run_dir is not None:
        if run_dir.strip() in ("", ".", "''", '""'):
            return "hydra.run.dir is empty: the run would be written into the current directory; give it its own directory"
        if "${" in run_dir:
            return None
        target = Path(run_dir)
    else:
        log_dir = _value(args, "paths.log_dir")
        root = _value(args, "paths.root_dir") or os.environ.get("PROJECT_ROOT", ".")
        if log_dir is not None and "${" in log_dir or "${" in root:
            return None
        target = Path(log_dir) if log_dir is not None else Path(root) / "outputs"
    for parent in (target, *target.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"cannot create the run directory {target}: {parent} is a file; choose another hydra.run.dir"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"cannot create the run directory {target}: {parent} is not writable (read-only?); choose another hydra.run.dir"
            return None
    return None
