"""Experiment loggers: one :class:`Logger` protocol, a registry of backends, and :func:`build_loggers`.

The ``logger`` config group composes like a list, each option under its own key::

    logger=tensorboard                  {tensorboard: {flush_secs: 30}}       (the default)
    logger=[tensorboard,csv]            both
    logger=none                         {}
    logger.tensorboard=null             switches that one off
    +logger.mine._target_=pkg.MyLogger  your own Logger subclass (built with run_dir=<the run directory>)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoo.engine.loggers import csv, mlflow, tensorboard  # noqa: F401 - register the backends
from zoo.engine.loggers.base import LOGGERS, STATUSES, Logger, LoggerCollection, flatten_config, image_grid
from zoo.errors import ConfigError, UnknownNameError

__all__ = ["LOGGERS", "STATUSES", "Logger", "LoggerCollection", "build_loggers", "flatten_config", "image_grid"]


def build_loggers(cfg: Mapping[str, Any] | None, run_dir: Path) -> LoggerCollection:
    """The loggers of a ``logger`` config: ``{name: options}``, a null ``options`` leaving one out."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ConfigError(f"logger must be a mapping of logger names to their options, not {cfg!r}")
    loggers = LoggerCollection([])
    try:
        for name, options in (cfg or {}).items():
            if options is not None:
                loggers.loggers.append(_build(str(name), options, Path(run_dir)))
    except BaseException:
        loggers.close("failed")  # those built before the bad one
        raise
    return loggers


def _build(name: str, options: Any, run_dir: Path) -> Logger:
    if not isinstance(options, Mapping):
        raise ConfigError(f"logger.{name} must be a mapping of options (or null to switch it off), not {options!r}")
    if "run_dir" in options:
        raise ConfigError(f"logger.{name}.run_dir is set by zoo (the run directory); remove it")
    if "_target_" in options:
        return _instantiate(name, dict(options), run_dir)
    if name not in LOGGERS:
        raise UnknownNameError(f"unknown logger {name!r}; known: {', '.join(LOGGERS.list())} "
                               "(or _target_: for your own class)")
    cls = LOGGERS.get(name).obj
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        known = [p for p in parameters if p != "run_dir"]
        for key in options:
            if key not in known:
                raise ConfigError(f"unknown option logger.{name}.{key}; known: {', '.join(known) or '(none)'}")
    return cls(run_dir=run_dir, **options)


def _instantiate(name: str, options: dict[str, Any], run_dir: Path) -> Logger:
    """A user's logger: ``options`` with a ``_target_``, called with ``run_dir`` and the other options."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        logger = instantiate(options, run_dir=run_dir)
    except InstantiationException as e:
        if e.__cause__ is not None and not isinstance(e.__cause__, (ImportError, AttributeError, TypeError)):
            raise  # a bug in the user's class keeps its traceback
        raise ConfigError(f"logger.{name}: {' '.join(str(e).split())}") from None
    if not isinstance(logger, Logger):
        raise ConfigError(f"logger.{name}: {options['_target_']} made a {type(logger).__name__}, "
                          "not a zoo.engine.loggers.Logger subclass")
    return logger


# TEMPORARY: removed when pipeline/trainer switch to build_loggers / LoggerCollection.
class NullLogger(LoggerCollection):
    """TEMPORARY: an empty collection, what ``build_logger`` returns when no logger is configured."""

    def __init__(self) -> None:
        super().__init__([])


def build_logger(cfg: Mapping[str, Any] | None, run_dir: Path) -> LoggerCollection:
    """TEMPORARY: :func:`build_loggers`, but a :class:`NullLogger` when empty (for ``type(logger) is NullLogger``)."""
    return build_loggers(cfg, run_dir) or NullLogger()
