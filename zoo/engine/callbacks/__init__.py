"""Callbacks: what a run adds to the trainer's loop, each configured under ``callbacks.<key>``.

``configs/callbacks/default.yaml`` lists the built-in ones every run gets; ``callbacks=none`` turns
them all off, ``callbacks.<key>=null`` one of them, and a user's own class comes in as
``+callbacks.<key>._target_=pkg.module.MyCallback`` (a :class:`Callback` subclass). See
:mod:`zoo.engine.callbacks.base` for the hooks.
"""

from __future__ import annotations

from typing import Any, Mapping

from zoo.engine.callbacks.base import Callback, MetricTracker, Monitored
from zoo.engine.callbacks.checkpoint import ModelCheckpoint
from zoo.engine.callbacks.averaging import WeightAveraging
from zoo.engine.callbacks.diagnostics import Diagnostics
from zoo.engine.callbacks.early_stopping import EarlyStopping
from zoo.engine.callbacks.ema import EMA
from zoo.engine.callbacks.lr_monitor import LearningRateMonitor, learning_rates
from zoo.engine.callbacks.nonfinite import NonFiniteLoss, NonFiniteLossError
from zoo.engine.callbacks.profiler import TorchProfiler
from zoo.engine.callbacks.progress import Progress
from zoo.engine.callbacks.signals import SignalHandler
from zoo.engine.callbacks.swa import SWA
from zoo.engine.callbacks.unfreeze import Unfreeze
from zoo.engine.plugins import build_all
from zoo.registry import Registry

CALLBACKS: Registry[Callback] = Registry("callback")
for _name, _cls in (("checkpoint", ModelCheckpoint), ("early_stopping", EarlyStopping), ("lr_monitor", LearningRateMonitor),
                    ("nonfinite", NonFiniteLoss), ("signals", SignalHandler), ("progress", Progress),
                    ("profiler", TorchProfiler), ("ema", EMA), ("swa", SWA), ("diagnostics", Diagnostics)):
    CALLBACKS.register(_name)(_cls)


def build_callbacks(cfg: Mapping[str, Any] | None) -> list[Callback]:
    """The callbacks of a ``callbacks`` config, each keyed in checkpoints by its config key."""
    built = build_all(CALLBACKS, "callbacks", cfg, Callback)
    for key, callback in built.items():
        callback.state_key = key
    return list(built.values())


__all__ = [
    "CALLBACKS", "Callback", "Diagnostics", "EMA", "EarlyStopping", "LearningRateMonitor", "MetricTracker", "ModelCheckpoint",
    "Monitored", "NonFiniteLoss", "NonFiniteLossError", "Progress", "SWA", "SignalHandler", "TorchProfiler", "Unfreeze",
    "WeightAveraging", "build_callbacks", "learning_rates",
]
