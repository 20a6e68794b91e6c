"""The shared trainer: one loop for every Task.

It owns the device, mixed precision, gradient accumulation and clipping, the schedule, logging,
checkpoints (``last.pt`` every epoch, ``best.pt`` on improvement of the monitored validation metric),
early stopping and exact resume at epoch boundaries. It talks to models only through a
:class:`~zoo.tasks.base.Task`.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Sequence

import torch
from torch import nn

from zoo.data.base import DataModule, Loader
from zoo.engine.callbacks import Callback, EarlyStopping, MetricTracker
from zoo.engine.checkpoint import FORMAT, VERSION, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from zoo.engine.loggers import NullLogger
from zoo.engine.optim import Schedule, build_optimizer
from zoo.engine.utils import autocast_dtype, resolve_device, resolve_precision
from zoo.errors import CheckpointError, ConfigError, ZooError
from zoo.tasks.base import Task

log = logging.getLogger(__name__)


class NonFiniteLossError(ZooError, FloatingPointError):
    """The training loss became NaN or infinite."""


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
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self._amp_dtype = autocast_dtype(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")
        self.epoch = 0  # next epoch to run
        self.global_step = 0
        self.monitor = "val/loss"
        self.best = MetricTracker("min")
        self.early_stopping = EarlyStopping(None, "min")

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

        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None if self.cfg.progress_bar else True)

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

        opt_cfg = dict(optimizer_cfg)
        decay_nb = bool(opt_cfg.get("decay_norm_and_bias", False))
        optimizer = build_optimizer(opt_cfg, task.param_groups(float(opt_cfg.get("weight_decay", 0.0)), decay_nb))
        train_batches = len(data.train) if cfg.limit_train_batches is None else min(len(data.train), cfg.limit_train_batches)
        if train_batches == 0:
            raise ConfigError("the training loader yields no batches; check the dataset and data.batch_size")
        steps_per_epoch = math.ceil(train_batches / cfg.accumulate_grad_batches)
        schedule = Schedule(optimizer, scheduler_cfg, steps_per_epoch, cfg.max_epochs, task.monitor_mode)
        self.model_for_state = task.model
        step_fn = task.training_step
        if cfg.compile:
            step_fn = torch.compile(task.training_step)

        if ckpt_path:
            self._resume(ckpt_path, task, optimizer, schedule)

        has_val = len(data.val) > 0
        history: list[dict[str, float]] = []
        stopped_early = False
        fit_start = time.perf_counter()
        val_metrics: dict[str, float] = {}
        for epoch in range(self.epoch, cfg.max_epochs):
            for callback in self.callbacks:
                callback.on_train_epoch_start(epoch)
            t0 = time.perf_counter()
            train_metrics = self._train_epoch(task, step_fn, data.train, optimizer, schedule, epoch, train_batches)
            epoch_time = time.perf_counter() - t0
            if has_val and (epoch + 1) % cfg.check_val_every_n_epoch == 0 or epoch + 1 == cfg.max_epochs and has_val:
                val_metrics = self.evaluate(task, data.val, desc="val")
            monitored = val_metrics.get(task.monitor) if val_metrics else train_metrics.get(task.monitor)
            schedule.step_epoch(monitored)
            self.epoch = epoch + 1
            row = {"epoch": epoch, **{f"train/{k}": v for k, v in train_metrics.items()}}
            row.update({f"val/{k}": v for k, v in val_metrics.items()})
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["time/epoch_s"] = epoch_time
            history.append(row)
            self.logger.log_scalars({k: v for k, v in row.items() if k != "epoch"}, self.global_step)
            self.logger.log_scalars({"epoch": float(epoch)}, self.global_step)
            log.info(self._summary_line(row, cfg.max_epochs))

            improved = monitored is not None and self.best.update(monitored, epoch)
            stop = monitored is not None and self.early_stopping.step(monitored, epoch)
            self._save(task, optimizer, schedule, row, improved)
            if stop:
                log.info(
                    "early stopping: %s did not improve for %d epochs (best %.4f at epoch %d)",
                    self.monitor, self.early_stopping.bad_epochs, self.best.best, self.best.best_epoch,
                )
                stopped_early = True
                break
        self.logger.flush()
        return {
            "history": history,
            "epochs_run": self.epoch,
            "global_step": self.global_step,
            "best_epoch": self.best.best_epoch,
            f"best/{self.monitor}": self.best.best,
            "stopped_early": stopped_early,
            "fit_time_s": time.perf_counter() - fit_start,
        }

    def _train_epoch(
        self,
        task: Task,
        step_fn: Any,
        loader: Loader,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        epoch: int,
        num_batches: int,
    ) -> dict[str, float]:
        cfg = self.cfg
        task.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        accum = cfg.accumulate_grad_batches
        params = [p for g in optimizer.param_groups for p in g["params"]]
        sums: dict[str, torch.Tensor] = {}
        n = 0
        with self._progress(loader, f"epoch {epoch + 1}/{cfg.max_epochs}") as bar:
            for i, batch in enumerate(bar):
                if i >= num_batches:
                    break
                with self.autocast():
                    out = step_fn(self._to_device(batch))
                loss = out["loss"]
                self.scaler.scale(loss / accum if accum > 1 else loss).backward()
                if (i + 1) % accum == 0 or i + 1 == num_batches:
                    if cfg.gradient_clip_val is not None:
                        self.scaler.unscale_(optimizer)
                        if cfg.gradient_clip_algorithm == "norm":
                            nn.utils.clip_grad_norm_(params, cfg.gradient_clip_val)
                        else:
                            nn.utils.clip_grad_value_(params, cfg.gradient_clip_val)
                    self.scaler.step(optimizer)
                    self.scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    schedule.step_batch()
                    self.global_step += 1
                    if self.global_step % cfg.log_every_n_steps == 0:
                        self._log_step(sums, n, out, optimizer, bar)
                for k, v in out.items():
                    v = v.detach()
                    sums[k] = sums[k] + v if k in sums else v
                n += 1
        self._check_finite(sums, n, epoch)
        return {k: float(v) / n for k, v in sums.items()} if n else {}

    def _log_step(self, sums: dict[str, torch.Tensor], n: int, out: dict[str, torch.Tensor], optimizer: Any, bar: Any) -> None:
        loss = float(out["loss"].detach())
        if not math.isfinite(loss):
            self._raise_nonfinite(loss)
        lr = optimizer.param_groups[0]["lr"]
        self.logger.log_scalars({"train/loss_step": loss, "lr": lr}, self.global_step)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)

    def _check_finite(self, sums: dict[str, torch.Tensor], n: int, epoch: int) -> None:
        if "loss" in sums and not math.isfinite(float(sums["loss"])):
            self._raise_nonfinite(float(sums["loss"]), epoch)

    def _raise_nonfinite(self, value: float, epoch: int | None = None) -> None:
        where = f"in epoch {epoch + 1}" if epoch is not None else f"at step {self.global_step}"
        raise NonFiniteLossError(
            f"training loss became {value} {where}; lower optimizer.lr, set trainer.gradient_clip_val, or check the data"
        )

    @staticmethod
    def _summary_line(row: dict[str, float], max_epochs: int) -> str:
        parts = [f"epoch {int(row['epoch']) + 1}/{max_epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("train/", "val/"))]
        parts += [f"lr {row['lr']:.2e}", f"{row['time/epoch_s']:.2f}s"]
        return " | ".join(parts)

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def state_dict(self, task: Task, optimizer: torch.optim.Optimizer, schedule: Schedule, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            **self.run_info,
            "model": self.model_for_state.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch - 1,
            "global_step": self.global_step,
            "best": self.best.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "rng": capture_rng_state(),
            "metrics": {k: float(v) for k, v in metrics.items()},
        }

    def _save(self, task: Task, optimizer: Any, schedule: Schedule, metrics: dict[str, float], improved: bool) -> None:
        ck = self.cfg.checkpoint
        if not ck.get("enabled", True):
            return
        state = self.state_dict(task, optimizer, schedule, metrics)
        if ck.get("save_last", True):
            save_checkpoint(state, self.ckpt_dir / "last.pt")
        if improved and ck.get("save_best", True):
            save_checkpoint(state, self.ckpt_dir / "best.pt")
        every = ck.get("every_n_epochs")
        if every and self.epoch % int(every) == 0:
            save_checkpoint(state, self.ckpt_dir / f"epoch_{self.epoch}.pt")

    def _resume(self, path: str | Path, task: Task, optimizer: Any, schedule: Schedule) -> None:
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
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best.load_state_dict(state["best"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch = int(state["epoch"]) + 1
        self.global_step = int(state["global_step"])
        restore_rng_state(state["rng"])
        log.info("resumed from %s: continuing at epoch %d (step %d)", path, self.epoch + 1, self.global_step)
        if self.epoch >= self.cfg.max_epochs:
            log.warning("checkpoint already reached trainer.max_epochs=%d; nothing left to train", self.cfg.max_epochs)
