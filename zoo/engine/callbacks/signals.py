"""SIGINT/SIGTERM (Ctrl-C, a cluster's pre-emption): save ``last.pt`` at the next step, then stop."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from zoo.engine import distributed
from zoo.engine.callbacks.base import Callback

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class SignalHandler(Callback):
    """Turns the first SIGINT/SIGTERM during a fit into ``trainer.state.interrupt``: after the current
    optimizer step the checkpoint callback writes ``last.pt`` (with the position in the epoch) and
    the trainer exits with status 128+N and one line saying how to resume; a signal after an epoch's
    last step (during its validation) stops at the epoch's end, before another epoch or the test. A second signal stops at
    once. In a distributed job every rank stops at the same step. Previous handlers come back at the
    end of the fit."""

    order = 0

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, frame: Any) -> None:
            if trainer.state.interrupt is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            trainer.state.interrupt = signum
            log.warning("received %s: saving last.pt after the current step", signal.Signals(signum).name)

        self._previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        state = trainer.state
        if state.stepped and trainer.dist.enabled and distributed.any_rank(state.interrupt is not None, trainer.device):
            state.interrupt = state.interrupt or signal.SIGTERM  # every rank stops at the same step

    def teardown(self, trainer: Trainer, task: Task) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
