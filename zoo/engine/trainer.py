"""The shared trainer: one loop for every Task.

It owns the device, mixed precision, gradient accumulation and clipping, the schedule, logging,
checkpoints (``last.pt`` every epoch, ``best.pt`` on improvement of the monitored validation metric),
early stopping and exact resume at epoch boundaries. It talks to models only through a
:class:`~zoo.tasks.base.Task`.
"""

from __future__ import annotations

import logging
import itertools
import os
import shutil
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterator, Sequence

import torch
from torch import nn

from zoo.data.base import DataModule, Loader
from zoo.engine import distributed
from zoo.engine.callbacks import Callback, EarlyStopping, MetricTracker
from zoo.engine.checkpoint import FORMAT, VERSION, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from zoo.engine.loggers import NullLogger
from zoo.engine.optim import Schedule, build_optimizer
from zoo.engine.utils import autocast_dtype, resolve_device, resolve_precision
from zoo.errors import CheckpointError, ConfigError, TrainingInterrupted, ZooError
from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class NonFiniteLossError(ZooError, FloatingPointError):
    """The training loss became NaN or infinite."""


def _trainable(model: torch.nn.Module) -> frozenset[str]:
    """Names of the parameters of ``model`` that require gradients."""
    return frozenset(name for name, p in model.named_parameters() if p.requires_grad)


def _skip(loader: Any, start: int) -> Iterator[tuple[int, Any]]:
    """``enumerate`` from batch ``start`` for loaders that cannot seek: the skipped batches are drawn
    and dropped so a deterministic loader continues exactly where it stopped."""
    return itertools.islice(enumerate(loader), start, None)


@contextmanager
def _only_trainable(owned: dict[str, list[nn.Parameter]], active: str) -> Iterator[None]:
    """Freeze the parameters of the other optimizers while ``active`` takes its step (a GAN's
    generator loss back-propagates through the discriminator without touching its gradients)."""
    mine = {id(p) for p in owned[active]}
    others = [p for name, ps in owned.items() if name != active for p in ps if id(p) not in mine and p.requires_grad]
    for p in others:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in others:
            p.requires_grad_(True)


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    device: str = "auto"
    precision: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    log_every_n_steps: int = 50
    progress_bar: bool = True
    check_val_every_n_epoch: int = 1
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    limit_train_batches: int | None = None
    nonfinite: str = "raise"  # raise: stop naming the step | skip: drop the update and count it
    handle_signals: bool = True  # SIGINT/SIGTERM: save last.pt at the next step, then exit 128+N
    cudnn_benchmark: bool = True  # let cuDNN pick the fastest kernels for fixed input shapes (off when deterministic)
    sync_batchnorm: bool = False  # DDP: batch statistics over all processes' shards
    find_unused_parameters: bool = False  # DDP: needed when some parameters skip a step (stochastic depth, drop-path)
    early_stopping: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be >= 1, got {self.max_epochs}")
        if self.accumulate_grad_batches < 1:
            raise ConfigError(f"trainer.accumulate_grad_batches must be >= 1, got {self.accumulate_grad_batches}")
        if self.gradient_clip_val is not None and self.gradient_clip_val <= 0:
            raise ConfigError(f"trainer.gradient_clip_val must be > 0 or null, got {self.gradient_clip_val}")
        if self.gradient_clip_algorithm not in ("norm", "value"):
            raise ConfigError(f"trainer.gradient_clip_algorithm must be norm or value, got {self.gradient_clip_algorithm!r}")
        if self.nonfinite not in ("raise", "skip"):
            raise ConfigError(f"trainer.nonfinite must be raise or skip, got {self.nonfinite!r}")
        if self.log_every_n_steps < 1 or self.check_val_every_n_epoch < 1:
            raise ConfigError("trainer.log_every_n_steps and trainer.check_val_every_n_epoch must be >= 1")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainerConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown trainer option(s) {unknown}; known: {sorted(known)}")
        return cls(**cfg)


class Trainer:
    """Fits and evaluates a :class:`Task` on a :class:`DataModule`.

    ``run_dir`` receives ``checkpoints/`` and the logger's files; ``run_info`` (the resolved config,
    model name, data description) is stored in every checkpoint so evaluation needs no flags;
    ``callbacks`` get the :class:`Callback` hooks.
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        run_dir: str | Path,
        logger: NullLogger | None = None,
        run_info: dict[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.logger = logger or NullLogger()
        self.run_info = run_info or {}
        self.device = distributed.local_device(resolve_device(cfg.device))
        self.dist = distributed.env()
        if self.device.type == "cuda" and cfg.cudnn_benchmark and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        self.precision = resolve_precision(cfg.precision, self.device)
        self._amp_dtype = autocast_dtype(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")
        self.epoch = 0  # next epoch to run
        self._unwrapped: torch.nn.Module | None = None  # the model inside DistributedDataParallel ...
        self._ddp_trainable: frozenset[str] = frozenset()  # ... and the parameters it all-reduces
        self.global_step = 0
        self.monitor = "val/loss"
        self.best = MetricTracker("min")
        self.early_stopping = EarlyStopping(None, "min")
        self.skipped_steps = 0
        self._signal: int | None = None
        self._resume_partial: dict[str, Any] | None = None  # mid-epoch position from a checkpoint
        self._first_bad_step: torch.Tensor | None = None  # device-side, so no sync per step

    # ---- helpers -----------------------------------------------------------------------------------------------

    def autocast(self) -> ContextManager[Any]:
        if self._amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            if batch.device == self.device:
                return batch
            batch = batch.to(self.device, non_blocking=True)
            if self.cfg.channels_last and batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return batch
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    def setup(self, task: Task) -> Task:
        task.to(self.device)
        if self.cfg.channels_last:
            task.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        return task

    # ---- evaluation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, task: Task, loader: Loader, desc: str = "eval") -> dict[str, float]:
        """Run ``validation_step`` over ``loader`` in eval mode and return the task's metrics."""
        task.eval()
        task.reset_metrics()
        with self._progress(loader, desc) as bar:
            for batch in bar:
                with self.autocast():
                    task.validation_step(self._to_device(batch))
        return task.compute_metrics()

    def _progress(self, loader: Loader, desc: str) -> Any:
        from tqdm.auto import tqdm

        show = self.cfg.progress_bar and self.dist.is_main
        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None if show else True)

    # ---- training --------------------------------------------------------------------------------------------------

    def fit(
        self,
        task: Task,
        data: DataModule,
        optimizer_cfg: dict[str, Any],
        scheduler_cfg: dict[str, Any],
        ckpt_path: str | Path | None = None,
    ) -> dict[str, Any]:
        """Train for ``max_epochs`` (or until early stopping); resume from ``ckpt_path`` if given."""
        cfg = self.cfg
        task = self.setup(task)
        self.monitor = f"val/{task.monitor}"
        es_cfg = dict(cfg.early_stopping)
        es_cfg.pop("monitor", None)
        self.best = MetricTracker(task.monitor_mode, keep_ties=True)
        self.early_stopping = EarlyStopping(es_cfg.get("patience"), task.monitor_mode, float(es_cfg.get("min_delta", 0.0)))

        optimizers = self._build_optimizers(task, optimizer_cfg)
        train_batches = len(data.train) if cfg.limit_train_batches is None else min(len(data.train), cfg.limit_train_batches)
        if train_batches == 0:
            raise ConfigError("the training loader yields no batches; check the dataset and data.batch_size")
        steps_per_epoch = math.ceil(train_batches / cfg.accumulate_grad_batches)
        schedules = {
            name: Schedule(opt, scheduler_cfg, steps_per_epoch, cfg.max_epochs, task.monitor_mode)
            for name, opt in optimizers.items()
        }
        self.model_for_state = task.model
        step_fn = task.training_step
        if cfg.compile:
            step_fn = torch.compile(task.training_step)

        if ckpt_path:
            self._resume(ckpt_path, task, optimizers, schedules)

        fit_start = time.perf_counter()
        model = task.model
        if self.dist.enabled:
            if not hasattr(data.train, "shard"):
                raise ConfigError(f"the training loader ({type(data.train).__name__}) cannot be sharded across processes")
            data.train.shard(self.dist.rank, self.dist.world_size)
            self._wrap_distributed(task, model)
        try:
            with self._signal_guard():
                history, stopped_early = self._fit_epochs(task, step_fn, data, optimizers, schedules, train_batches)
        finally:
            task.model = model
        self.logger.flush()
        return {
            "history": history,
            "epochs_run": self.epoch,
            "global_step": self.global_step,
            "best_epoch": self.best.best_epoch,
            f"best/{self.monitor}": self.best.best,
            "stopped_early": stopped_early,
            "skipped_steps": self.skipped_steps,
            "fit_time_s": time.perf_counter() - fit_start,
        }

    def _wrap_distributed(self, task: Task, model: torch.nn.Module) -> None:
        """Put ``model`` in DistributedDataParallel as ``task.model``. DDP all-reduces the gradients of
        the parameters that require them when it is built, so a change of the trainable set (gradual
        unfreezing) builds a new wrapper; the parameters, and so the optimizer state, stay the same."""
        self._unwrapped, self._ddp_trainable = model, _trainable(model)
        task.model = distributed.wrap_model(model, self.device, self.cfg.sync_batchnorm, self.cfg.find_unused_parameters)

    def _fit_epochs(
        self,
        task: Task,
        step_fn: Any,
        data: DataModule,
        optimizers: dict[str, torch.optim.Optimizer],
        schedules: dict[str, Schedule],
        train_batches: int,
    ) -> tuple[list[dict[str, float]], bool]:
        cfg = self.cfg
        has_val = len(data.val) > 0
        history: list[dict[str, float]] = []
        stopped_early = False
        val_metrics: dict[str, float] = {}
        for epoch in range(self.epoch, cfg.max_epochs):
            for callback in self.callbacks:
                callback.on_train_epoch_start(epoch)
            if self.dist.enabled and _trainable(self._unwrapped) != self._ddp_trainable:
                self._wrap_distributed(task, self._unwrapped)  # e.g. gradual unfreezing made more parameters trainable
            t0 = time.perf_counter()
            train_metrics = self._train_epoch(task, step_fn, data.train, optimizers, schedules, epoch, train_batches)
            epoch_time = time.perf_counter() - t0
            if has_val and (epoch + 1) % cfg.check_val_every_n_epoch == 0 or epoch + 1 == cfg.max_epochs and has_val:
                val_metrics = self.evaluate(task, data.val, desc="val")
                with torch.no_grad():
                    task.on_validation_end(self.logger, self.global_step)
            monitored = val_metrics.get(task.monitor) if val_metrics else train_metrics.get(task.monitor)
            for schedule in schedules.values():
                schedule.step_epoch(monitored)
            self.epoch = epoch + 1
            row = {"epoch": epoch, **{f"train/{k}": v for k, v in train_metrics.items()}}
            row.update({f"val/{k}": v for k, v in val_metrics.items()})
            row.update(self._learning_rates(optimizers))
            row["time/epoch_s"] = epoch_time
            history.append(row)
            self.logger.log_scalars({k: v for k, v in row.items() if k != "epoch"}, self.global_step)
            self.logger.log_scalars({"epoch": float(epoch)}, self.global_step)
            log.info(self._summary_line(row, cfg.max_epochs))

            improved = monitored is not None and self.best.update(monitored, epoch)
            stop = monitored is not None and self.early_stopping.step(monitored, epoch)
            self._save(task, optimizers, schedules, row, improved)
            if stop:
                log.info(
                    "early stopping: %s did not improve for %d epochs (best %.4f at epoch %d)",
                    self.monitor, self.early_stopping.bad_epochs, self.best.best, self.best.best_epoch,
                )
                stopped_early = True
                break
        return history, stopped_early

    def _build_optimizers(self, task: Task, optimizer_cfg: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
        optimizers = {}
        for name in task.optimizer_names:
            opt_cfg = dict(task.optimizer_config(name, dict(optimizer_cfg)))
            decay_nb = bool(opt_cfg.get("decay_norm_and_bias", False))
            groups = task.optimizer_param_groups(name, float(opt_cfg.get("weight_decay", 0.0)), decay_nb)
            optimizers[name] = build_optimizer(opt_cfg, groups)
        return optimizers

    @staticmethod
    def _learning_rates(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        if len(optimizers) == 1:
            return {"lr": next(iter(optimizers.values())).param_groups[0]["lr"]}
        return {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in optimizers.items()}

    def _train_epoch(
        self,
        task: Task,
        step_fn: Any,
        loader: Loader,
        optimizers: dict[str, torch.optim.Optimizer],
        schedules: dict[str, Schedule],
        epoch: int,
        num_batches: int,
    ) -> dict[str, float]:
        cfg = self.cfg
        task.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        start, sums, n = self._start_position(loader, epoch)
        accum = cfg.accumulate_grad_batches
        multi = len(optimizers) > 1
        owned = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimizers.items()}
        every = self.cfg.checkpoint.get("every_n_steps")
        with self._progress(loader, f"epoch {epoch + 1}/{cfg.max_epochs}") as bar:
            batches = enumerate(bar, start) if start == 0 or hasattr(loader, "load_state_dict") else _skip(bar, start)
            for i, batch in batches:
                if i >= num_batches:
                    break
                batch = self._to_device(batch)
                boundary = (i + 1) % accum == 0 or i + 1 == num_batches
                outs: dict[str, torch.Tensor] = {}
                skip = False
                for name, optimizer in optimizers.items():
                    with _only_trainable(owned, name) if multi else nullcontext():
                        with self.autocast():
                            out = step_fn(batch, name) if multi else step_fn(batch)
                        loss = out["loss"]
                        if cfg.nonfinite == "skip" and distributed.any_rank(not bool(torch.isfinite(loss.detach())), self.device):
                            skip = True  # drop this batch's update for every optimizer
                            optimizer.zero_grad(set_to_none=True)
                            break
                        self._track_finite(loss)
                        self.scaler.scale(loss / accum if accum > 1 else loss).backward()
                        if boundary:
                            self._optimizer_step(optimizer, owned[name])
                    outs.update({(f"loss/{name}" if multi and k == "loss" else k): v for k, v in out.items()})
                if skip:
                    self.skipped_steps += 1
                    for optimizer in optimizers.values():
                        optimizer.zero_grad(set_to_none=True)
                    log.warning("non-finite loss at step %d (epoch %d, batch %d): update skipped (%d so far)",
                                self.global_step + 1, epoch + 1, i + 1, self.skipped_steps)
                else:
                    for k, v in outs.items():
                        v = v.detach()
                        sums[k] = sums[k] + v if k in sums else v
                    n += 1
                if boundary:
                    if not skip:
                        self.scaler.update()
                    for schedule in schedules.values():
                        schedule.step_batch()
                    self.global_step += 1
                    if self.global_step % cfg.log_every_n_steps == 0 and not skip:
                        self._check_first_bad()
                        self._log_step(outs, optimizers, bar)
                    if self.dist.enabled and distributed.any_rank(self._signal is not None, self.device):
                        self._signal = self._signal or signal.SIGTERM  # every rank stops at the same step
                    if self._signal is not None or (every and self.global_step % int(every) == 0):
                        self._check_first_bad()
                        partial = {"batches": i + 1, "n": n, "sums": {k: float(v) for k, v in sums.items()}}
                        if hasattr(loader, "state_dict"):
                            partial["loader"] = loader.state_dict()
                        self._save(task, optimizers, schedules, {}, improved=False, partial=partial)
                        if self._signal is not None:
                            self._interrupted(epoch, i + 1)
        self._check_first_bad()
        self._check_finite(sums, n, epoch)
        means = distributed.all_reduce_mean({k: v / n for k, v in sums.items()}) if n else {}
        return {k: float(v) for k, v in means.items()}

    def _start_position(self, loader: Loader, epoch: int) -> tuple[int, dict[str, torch.Tensor], int]:
        """Where this epoch starts: batch 0, or the mid-epoch position a resumed checkpoint recorded."""
        partial, self._resume_partial = self._resume_partial, None
        if partial is None or partial["epoch"] != epoch:
            return 0, {}, 0
        if "loader" in partial and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(partial["loader"])
        sums = {k: torch.tensor(v, device=self.device) for k, v in partial["sums"].items()}
        return int(partial["batches"]), sums, int(partial["n"])

    def _track_finite(self, loss: torch.Tensor) -> None:
        """Stop at a non-finite loss: at once on CPU; on an accelerator remember the first such step
        on the device (no synchronisation per step) for the next :meth:`_check_first_bad`."""
        if self.cfg.nonfinite != "raise":
            return
        bad = ~torch.isfinite(loss.detach())
        if loss.device.type == "cpu":
            if bool(bad):
                self._raise_first_bad(self.global_step + 1)
            return
        step = torch.tensor(self.global_step + 1, device=loss.device)
        first = self._first_bad_step if self._first_bad_step is not None else torch.tensor(-1, device=loss.device)
        self._first_bad_step = torch.where(bad & (first < 0), step, first)

    def _check_first_bad(self) -> None:
        if self._first_bad_step is not None and int(self._first_bad_step) >= 0:
            step = int(self._first_bad_step)
            self._first_bad_step = None
            self._raise_first_bad(step)

    @staticmethod
    def _raise_first_bad(step: int) -> None:
        raise NonFiniteLossError(
            f"training loss became NaN/inf at step {step}; lower optimizer.lr, set trainer.gradient_clip_val, "
            "set trainer.nonfinite=skip to drop such updates, or check the data"
        )

    @contextmanager
    def _signal_guard(self) -> Iterator[None]:
        """Turn SIGINT/SIGTERM into a request to save ``last.pt`` and stop after the current step."""
        if not self.cfg.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self._signal = signum
            log.warning("received %s: saving last.pt after the current step", signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _interrupted(self, epoch: int, batches: int) -> None:
        assert self._signal is not None
        name = signal.Signals(self._signal).name
        distributed.barrier()  # rank 0 has finished writing last.pt
        saved = self.ckpt_dir / "last.pt"
        where = f"saved {saved}; resume with ckpt_path={saved}" if saved.exists() else "checkpointing is off, nothing saved"
        raise TrainingInterrupted(f"stopped by {name} in epoch {epoch + 1} after batch {batches} (step {self.global_step}); {where}",
                                  self._signal)

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        cfg = self.cfg
        if cfg.gradient_clip_val is not None:
            self.scaler.unscale_(optimizer)
            if cfg.gradient_clip_algorithm == "norm":
                nn.utils.clip_grad_norm_(params, cfg.gradient_clip_val)
            else:
                nn.utils.clip_grad_value_(params, cfg.gradient_clip_val)
        self.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    def _log_step(self, out: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer], bar: Any) -> None:
        losses = {k: float(v.detach()) for k, v in out.items() if k == "loss" or k.startswith("loss/")}
        for value in losses.values():
            if not math.isfinite(value):
                self._raise_nonfinite(value)
        lrs = self._learning_rates(optimizers)
        self.logger.log_scalars({**{f"train/{k}_step": v for k, v in losses.items()}, **lrs}, self.global_step)
        bar.set_postfix({**{k: f"{v:.4f}" for k, v in losses.items()}, **{k: f"{v:.2e}" for k, v in lrs.items()}}, refresh=False)

    def _check_finite(self, sums: dict[str, torch.Tensor], n: int, epoch: int) -> None:
        for k, v in sums.items():
            if (k == "loss" or k.startswith("loss/")) and not math.isfinite(float(v)):
                self._raise_nonfinite(float(v), epoch)

    def _raise_nonfinite(self, value: float, epoch: int | None = None) -> None:
        where = f"in epoch {epoch + 1}" if epoch is not None else f"at step {self.global_step}"
        raise NonFiniteLossError(
            f"training loss became {value} {where}; lower optimizer.lr, set trainer.gradient_clip_val, or check the data"
        )

    @staticmethod
    def _summary_line(row: dict[str, float], max_epochs: int) -> str:
        parts = [f"epoch {int(row['epoch']) + 1}/{max_epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("train/", "val/"))]
        parts += [f"{k} {v:.2e}" for k, v in row.items() if k == "lr" or k.startswith("lr/")]
        parts.append(f"{row['time/epoch_s']:.2f}s")
        return " | ".join(parts)

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(
        self, task: Task, optimizers: dict[str, torch.optim.Optimizer], schedules: dict[str, Schedule], metrics: dict[str, float]
    ) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            **self.run_info,
            "model": self.model_for_state.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in schedules.items()},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch - 1,
            "global_step": self.global_step,
            "best": self.best.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "rng": capture_rng_state(),
            "skipped_steps": self.skipped_steps,
            "metrics": {k: float(v) for k, v in metrics.items()},
        }

    def _save(
        self,
        task: Task,
        optimizers: dict[str, Any],
        schedules: dict[str, Schedule],
        metrics: dict[str, float],
        improved: bool,
        partial: dict[str, Any] | None = None,
    ) -> None:
        """Write ``last.pt`` (and ``best.pt``/``epoch_N.pt``); ``partial`` marks a mid-epoch save,
        which only updates ``last.pt``."""
        ck = self.cfg.checkpoint
        if not ck.get("enabled", True) or not self.dist.is_main:
            return
        state = self.state_dict(task, optimizers, schedules, metrics)
        if partial is not None:
            state["partial_epoch"] = {"epoch": self.epoch, **partial}
            if ck.get("save_last", True):
                save_checkpoint(state, self.ckpt_dir / "last.pt")
            return
        # best before last: a crash in between leaves last.pt behind best.pt, and resuming re-runs the epoch
        if improved and ck.get("save_best", True):
            save_checkpoint(state, self.ckpt_dir / "best.pt")
        if ck.get("save_last", True):
            save_checkpoint(state, self.ckpt_dir / "last.pt")
        every = ck.get("every_n_epochs")
        if every and self.epoch % int(every) == 0:
            save_checkpoint(state, self.ckpt_dir / f"epoch_{self.epoch}.pt")

    def _carry_best(self, path: Path) -> None:
        """A resumed run continues its source run: bring that run's ``best.pt`` along, so the best
        weights so far are not lost when no later epoch beats them."""
        source, target = path.parent / "best.pt", self.ckpt_dir / "best.pt"
        if not source.is_file() or target.exists() or source.resolve() == target.resolve():
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.copy")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)

    def _resume(self, path: str | Path, task: Task, optimizers: dict[str, Any], schedules: dict[str, Schedule]) -> None:
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a zoo training checkpoint; to start from its weights use model.pretrained={path}")
        want, have = self.run_info.get("model_name"), state.get("model_name")
        if want and have and want != have:
            raise CheckpointError(f"{path} was trained with model={have}, but this run uses model={want}; pass model={have} or drop ckpt_path")
        try:
            self.model_for_state.load_state_dict(state["model"])
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise CheckpointError(f"{path} does not fit model {want}: {first}; check num_classes/in_chans against the checkpoint's config") from None
        if set(state.get("optimizers", {})) != set(optimizers):
            raise CheckpointError(f"{path} holds optimizers {sorted(state.get('optimizers', {}))}, this run has {sorted(optimizers)}")
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            schedules[name].load_state_dict(state["schedulers"][name])
        self.scaler.load_state_dict(state["scaler"])
        self.best.load_state_dict(state["best"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch = int(state["epoch"]) + 1
        self.global_step = int(state["global_step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._resume_partial = state.get("partial_epoch")
        self._carry_best(Path(path))
        restore_rng_state(state["rng"])
        within = f", batch {self._resume_partial['batches'] + 1}" if self._resume_partial else ""
        log.info("resumed from %s: continuing at epoch %d%s (step %d)", path, self.epoch + 1, within, self.global_step)
        if self.epoch >= self.cfg.max_epochs:
            log.warning("checkpoint already reached trainer.max_epochs=%d; nothing left to train", self.cfg.max_epochs)
