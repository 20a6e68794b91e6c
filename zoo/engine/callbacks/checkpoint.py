"""Checkpointing: the ``save_top_k`` best epochs by a monitored metric, ``best.pt``, ``last.pt``.

Files in ``<run>/checkpoints/``: ``epoch=<N>-<monitor>=<value>.pt`` for each of the k best epochs
(``N`` counts completed epochs), ``best.pt`` (a hard link to the best of them, so no extra disk),
``last.pt`` after every epoch (and every ``every_n_steps`` optimizer steps, with the position inside
the epoch, for exact mid-epoch resume), ``epoch_<N>.pt`` every ``every_n_epochs`` epochs, and with
``snapshots`` ``snapshot-<k>.pt`` at the end of cycle ``k`` of a restarting schedule (``scheduler=cosine_restarts``,
whose config says where its cycles end): the members of a snapshot ensemble (Huang et al. 2017), evaluated
together by ``evaluate.py ckpt_path=<run>/checkpoints``. Every write is atomic
(:func:`~zoo.engine.checkpoint.save_checkpoint`) and into this run's own directory; a resumed run copies
the source run's kept files (top-k, ``best.pt``, snapshots) into its directory and leaves the source's alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.engine.callbacks.base import Monitored
from zoo.engine.checkpoint import save_checkpoint
from zoo.engine.utils import atomic_path
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


def _place(source: Path, target: Path, link: bool) -> None:
    """``target`` becomes ``source``'s content atomically: a hard link where the file system allows, else a copy."""
    with atomic_path(target) as tmp:
        try:
            if not link:
                raise OSError
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


class ModelCheckpoint(Monitored):
    """Keeps the ``save_top_k`` best checkpoints by ``monitor`` (-1: every epoch, 0: none), ``best.pt``
    and ``last.pt``. Among equal values the later epoch counts as better (longer trained). ``snapshots``
    keeps one checkpoint at the end of every cycle of the learning-rate schedule (snapshot ensembles)."""

    order = 90

    def __init__(self, monitor: str | None = None, mode: str | None = None, save_top_k: int = 1, save_last: bool = True,
                 every_n_epochs: int | None = None, every_n_steps: int | None = None, snapshots: bool = False) -> None:
        super().__init__(monitor, mode)
        if save_top_k < -1:
            raise ConfigError(f"callbacks.checkpoint.save_top_k must be -1 (all), 0 (none) or k >= 1, got {save_top_k}")
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and value < 1:
                raise ConfigError(f"callbacks.checkpoint.{name} must be >= 1 or null, got {value}")
        self.save_top_k, self.save_last = save_top_k, save_last
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.top: list[tuple[float, int, str]] = []  # (value, epoch, file name), best first
        self.snapshots = snapshots
        self.snapshot_files: list[str] = []  # snapshot-<k>.pt written so far (a resume's include its source's)
        self._cycle_ends: tuple[int, ...] = ()
        self.dir: Path | None = None

    # ---- where and what ------------------------------------------------------------------------------

    def _ranked(self, entries: list[tuple[float, int, str]]) -> list[tuple[float, int, str]]:
        """The ``save_top_k`` best of ``entries``, best first: a better value, or the same value at a later epoch."""
        ranked = sorted(entries, key=lambda e: (e[0] if self.mode == "max" else -e[0], e[1]), reverse=True)
        return ranked if self.save_top_k == -1 else ranked[: self.save_top_k]

    @property
    def best_model_path(self) -> Path | None:
        """``best.pt`` once some epoch has been kept."""
        path = self.dir / "best.pt" if self.dir is not None else None
        return path if path is not None and path.is_file() else None

    def _writes(self, trainer: Trainer) -> bool:
        return trainer.dist.is_main and not trainer.cfg.fast_dev_run

    def on_fit_start(self, trainer: Trainer, task: Task) -> None:
        self.resolve_monitor(trainer, task)
        self.dir = trainer.ckpt_dir
        if self.snapshots:
            self._cycle_ends = self._snapshot_epochs(trainer)
        source = trainer.resumed_from.parent if trainer.resumed_from is not None else None
        if source is None or not self._writes(trainer) or source.resolve() == self.dir.resolve():
            return
        # a resumed run continues its source run: bring its kept checkpoints along, so the best
        # weights so far are not lost when no later epoch beats them
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in [t[2] for t in self.top] + ["best.pt"] + self.snapshot_files:
            if (source / name).is_file() and not (self.dir / name).exists():
                _place(source / name, self.dir / name, link=False)

    def _snapshot_epochs(self, trainer: Trainer) -> tuple[int, ...]:
        """Where the schedule's cycles end inside this fit; a schedule without cycles is a ``ConfigError``."""
        ends = [s.cycle_ends for s in trainer.state.schedules.values() if s.cycle_ends is not None]
        name = next(iter(trainer.state.schedules.values())).name if trainer.state.schedules else "none"
        if not ends:
            raise ConfigError(f"callbacks.checkpoint.snapshots=true keeps the model at the end of each learning-rate cycle, "
                              f"and scheduler={name} has none; use scheduler=cosine_restarts (scheduler.t_0, scheduler.t_mult)")
        if not ends[0]:
            raise ConfigError(f"callbacks.checkpoint.snapshots=true: no cycle of scheduler={name} ends within "
                              f"trainer.max_epochs={trainer.state.max_epochs}; shorten scheduler.t_0 or train longer")
        log.info("snapshots at the ends of the schedule's cycles: epochs %s", ", ".join(map(str, ends[0])))
        return ends[0]

    # ---- saving ---------------------------------------------------------------------------------------

    def on_train_batch_end(self, trainer: Trainer, task: Task, outputs: dict[str, Any], batch: Any, batch_idx: int) -> None:
        state = trainer.state
        if not state.stepped or not (state.interrupt is not None
                                     or self.every_n_steps and state.global_step % self.every_n_steps == 0):
            return
        if self.save_last and self._writes(trainer):
            self._save_last(trainer, trainer.checkpoint_state(task))

    def _save_last(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        assert self.dir is not None
        trainer.state.last_checkpoint = str(save_checkpoint(checkpoint, self.dir / "last.pt"))

    def on_train_epoch_end(self, trainer: Trainer, task: Task, metrics: dict[str, float]) -> None:
        value = self.monitored(trainer, metrics) if self.save_top_k != 0 else None
        if not self._writes(trainer):
            return
        assert self.dir is not None
        epoch = trainer.state.epoch + 1
        # numbered in order (cycle k's, unless a resume changed the schedule): a name is never given twice
        snapshot = f"snapshot-{len(self.snapshot_files) + 1}.pt" if epoch in self._cycle_ends else None
        if snapshot is not None:
            self.snapshot_files.append(snapshot)  # listed in the state of every file this epoch writes
        checkpoint = trainer.checkpoint_state(task)
        # the kept checkpoints before last.pt: a crash in between leaves last.pt behind, and resuming re-runs the epoch
        if value is not None and value == value:  # NaN never ranks
            self._keep(checkpoint, (value, epoch, self._name(epoch, value)))
        if snapshot is not None:
            save_checkpoint(checkpoint, self.dir / snapshot)
        if self.save_last:
            self._save_last(trainer, checkpoint)
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            save_checkpoint(checkpoint, self.dir / f"epoch_{epoch}.pt")

    def _name(self, epoch: int, value: float) -> str:
        assert self.monitor is not None
        return f"epoch={epoch}-{self.monitor.replace('/', '_')}={value:.4f}.pt"

    def _keep(self, checkpoint: dict[str, Any], entry: tuple[float, int, str]) -> None:
        assert self.dir is not None
        ranked = self._ranked([*self.top, entry])
        if entry not in ranked:
            return
        checkpoint["callbacks"][self.state_key or "checkpoint"] = self.state_dict(extra=entry)
        save_checkpoint(checkpoint, self.dir / entry[2])
        for _, _, name in set(self.top) - set(ranked):
            (self.dir / name).unlink(missing_ok=True)
        self.top = ranked
        if self.top[0] == entry:
            _place(self.dir / entry[2], self.dir / "best.pt", link=True)
            log.info("new best %s %.4f at epoch %d: %s", self.monitor, entry[0], entry[1], entry[2])

    # ---- state ----------------------------------------------------------------------------------------

    def state_dict(self, extra: tuple[float, int, str] | None = None) -> dict[str, Any]:
        """The monitor and the kept files; ``extra`` (the file being written) is listed as if already kept."""
        top = self._ranked(self.top + ([extra] if extra else []))
        return {"monitor": self.monitor, "mode": self.mode, "top": [list(t) for t in top], "snapshots": list(self.snapshot_files)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshot_files = [str(n) for n in state.get("snapshots", [])]
        if state.get("monitor") not in (None, self.monitor) and self.monitor is not None:
            log.warning("checkpoint monitor changed from %s to %s: the kept checkpoints start afresh", state["monitor"], self.monitor)
            return
        self.monitor, self.mode = state.get("monitor", self.monitor), state.get("mode", self.mode)
        self.top = [(float(v), int(e), str(n)) for v, e, n in state.get("top", [])]

    def on_fit_end(self, trainer: Trainer, task: Task) -> None:
        if self.snapshot_files and self._writes(trainer):
            log.info("snapshots (one per learning-rate cycle): %s; evaluate them as an ensemble: python evaluate.py ckpt_path=%s",
                     ", ".join(self.snapshot_files), self.dir)

    def summary(self) -> dict[str, Any]:
        snapshots = {"snapshots": [str(self.dir / n) for n in self.snapshot_files]} if self.snapshots and self.dir else {}
        if not self.top:
            return snapshots
        value, epoch, _ = self.top[0]
        return {"best_epoch": epoch, f"best/{self.monitor}": value, "monitor_mode": self.mode,
                "best_checkpoint": str(self.best_model_path), **snapshots}
