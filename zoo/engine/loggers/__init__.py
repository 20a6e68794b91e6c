"""Experiment loggers: one :class:`Logger` protocol, a registry of backends, and :func:`build_loggers`.

The ``logger`` config group composes like a list, each option under its own key::

    logger=tensorboard                  {tensorboard: {flush_secs: 30}}       (the default)
    logger=[tensorboard,csv]            both
    logger=none                         {}
    logger.tensorboard=null             switches that one off
    +logger.mine._target_=pkg.MyLogger  your own Logger subclass (built with run_dir=<the run directory>)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoo.engine.loggers import csv, mlflow, tensorboard  # noqa: F401 - register the backends
from zoo.engine.loggers.base import LOGGERS, STATUSES, Logger, LoggerCollection, flatten_config, image_grid
from zoo.engine.plugins import build_one, check_entry
from zoo.errors import ConfigError

__all__ = ["LOGGERS", "STATUSES", "Logger", "LoggerCollection", "build_loggers", "check_loggers", "flatten_config", "image_grid"]


def check_loggers(cfg: Mapping[str, Any] | None) -> None:
    """The names, options and option types of a ``logger`` config, and the extras its backends need
    (:mod:`zoo.extras`), without building anything."""
    from zoo.extras import require

    for name, options in (cfg or {}).items():
        if isinstance(options, Mapping) and "_target_" not in options:
            backend = check_entry(LOGGERS, "logger", str(name), options, {"run_dir": None})
            for extra in getattr(backend, "extras", ()):
                require(extra, f"logger={name}")


def build_loggers(cfg: Mapping[str, Any] | None, run_dir: Path) -> LoggerCollection:
    """The loggers of a ``logger`` config: ``{name: options}``, a null ``options`` leaving one out.
    If one cannot be built, those built before it are closed as ``failed``."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ConfigError(f"logger must be a mapping of logger names to their options, not {cfg!r}")
    built = LoggerCollection([])
    try:
        for name, options in (cfg or {}).items():
            if options is None:
                continue
            if not isinstance(options, Mapping):
                raise ConfigError(f"logger.{name} must be a mapping of options (or null to switch it off), not {options!r}")
            built.loggers.append(build_one(LOGGERS, "logger", str(name), options, Logger, {"run_dir": Path(run_dir)}))
    except BaseException:
        built.close("failed")
        raise
    return built
