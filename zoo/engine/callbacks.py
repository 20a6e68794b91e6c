"""Epoch-level bookkeeping with resumable state (best-metric tracking, early stopping) and the
:class:`Callback` hooks the trainer calls."""

from __future__ import annotations

import math
from typing import Any


class MetricTracker:
    """Remembers the best value of a monitored metric; ``update`` says whether it improved by ``min_delta``.

    With ``keep_ties`` an equal value also counts as the new best, so among equally scored epochs
    the later, longer-trained one wins (what a best checkpoint should hold on a small, saturated
    validation set); early stopping keeps strict improvement.
    """

    def __init__(self, mode: str = "max", min_delta: float = 0.0, keep_ties: bool = False) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.min_delta, self.keep_ties = mode, abs(min_delta), keep_ties
        self.best: float = -math.inf if mode == "max" else math.inf
        self.best_epoch: int = -1

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.keep_ties and value == self.best:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        if self.improves(value):
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class EarlyStopping:
    """Stop when the monitored metric has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int | None, mode: str = "max", min_delta: float = 0.0) -> None:
        if patience is not None and patience < 1:
            raise ValueError(f"trainer.early_stopping.patience must be >= 1 or null, got {patience}")
        self.patience = patience
        self.tracker = MetricTracker(mode, min_delta)
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True when training should stop."""
        if self.tracker.update(value, epoch):
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict(), "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.bad_epochs = int(state["bad_epochs"])


class Callback:
    """Hooks the trainer calls around training; subclasses override the ones they need.

    ``on_train_epoch_start`` runs before each training epoch (also the first one after a resume), so
    a callback whose effect depends only on the epoch (e.g. gradual unfreezing) resumes exactly.
    """

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called with the 0-based index of the epoch about to train."""
