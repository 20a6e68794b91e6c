"""The shared trainer: an epoch loop, the optimisation step, and callbacks for everything else.

The loop owns the device, mixed precision, gradient accumulation (DDP ``no_sync`` between updates)
and clipping, closures for optimizers that evaluate the loss again inside their step (L-BFGS), the
schedules, the batch limits and debug switches, and exact resume; it talks to
models only through a :class:`~zoo.tasks.base.Task`. Checkpoints, early stopping, progress, signal
handling, the non-finite-loss policy and anything a user adds are :mod:`~zoo.engine.callbacks`
with the hooks listed in :mod:`zoo.engine.callbacks.base`.
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Sequence

import torch
from torch import nn

from zoo.engine import distributed
from zoo.engine.callbacks import Callback, ModelCheckpoint, TorchProfiler, learning_rates
from zoo.engine.checkpoint import restore_training, training_checkpoint
from zoo.engine.loggers import LoggerCollection
from zoo.engine.optim import Schedule, build_optimizer, check_closure, needs_closure
from zoo.engine.state import TrainerConfig, TrainState, limit_batches
from zoo.engine.utils import autocast_dtype, resolve_device, resolve_precision, to_device
from zoo.errors import ConfigError, TrainingInterrupted

if TYPE_CHECKING:
    from zoo.data.types import DataModule, Loader
    from zoo.tasks.base import Task

log = logging.getLogger(__name__)


def _trainable(model: nn.Module) -> frozenset[str]:
    """Names of the parameters of ``model`` that require gradients."""
    return frozenset(name for name, p in model.named_parameters() if p.requires_grad)


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


class FixedBatches(list):
    """The same batches every epoch (``trainer.overfit_batches``)."""

    def set_epoch(self, epoch: int) -> None:
        pass


class Trainer:
    """Fits and evaluates a :class:`Task` on a :class:`DataModule`.

    ``run_dir`` receives ``checkpoints/`` (written by the checkpoint callback); ``run_info`` (the
    resolved config, model name, data description) is stored in every checkpoint so evaluation
    needs no flags; ``logger`` receives epoch and step scalars; ``callbacks`` get the hooks.
    """

    def __init__(self, cfg: TrainerConfig, run_dir: str | Path, logger: LoggerCollection | None = None,
                 run_info: dict[str, Any] | None = None, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.logger = logger if logger is not None else LoggerCollection([])
        self.run_info = run_info or {}
        self.device = distributed.local_device(resolve_device(cfg.device))
        self.dist = distributed.env()
        if self.device.type == "cuda" and cfg.cudnn_benchmark and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        self.precision = resolve_precision(cfg.precision, self.device)
        self._amp_dtype = autocast_dtype(self.precision)
        extra = [TorchProfiler()] if cfg.profiler and not any(isinstance(c, TorchProfiler) for c in callbacks) else []
        self.callbacks = sorted([*callbacks, *extra], key=lambda c: c.order)
        self.state = TrainState(scaler=torch.amp.GradScaler(self.device.type, enabled=self.precision == "16"),
                                max_epochs=1 if cfg.fast_dev_run else cfg.max_epochs)
        self.resumed_from: Path | None = None
        self.has_val = True
        self._model: nn.Module | None = None  # the model outside any DistributedDataParallel wrapper ...
        self._ddp_trainable: frozenset[str] = frozenset()  # ... and the parameters the wrapper all-reduces
        self._train_loader: Any = None
        self._resume_partial: dict[str, Any] | None = None  # the mid-epoch position a resumed checkpoint recorded
        self._owned: dict[str, list[nn.Parameter]] = {}  # each optimizer's parameters
        self._closures: set[str] = set()  # the optimizers that evaluate the loss again inside their step (L-BFGS)
        self._hooks: dict[str, list[Any]] = {}

    @property
    def model(self) -> nn.Module | None:
        """The task's model outside any DistributedDataParallel wrapper, once ``fit`` has begun."""
        return self._model

    @property
    def train_loader(self) -> Any:
        """The loader ``fit`` trains on (sharded under DDP; the fixed batches of ``overfit_batches``)."""
        return self._train_loader

    @property
    def best_checkpoint(self) -> Path | None:
        """``best.pt`` of the checkpoint callback, if it kept one."""
        return next((c.best_model_path for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    def call(self, hook: str, task: Task, *args: Any) -> None:
        """Call ``hook`` of every callback that implements it, in order."""
        if hook not in self._hooks:  # bound once; the base class's no-ops are left out
            base = getattr(Callback, hook)
            self._hooks[hook] = [f for f in (getattr(c, hook) for c in self.callbacks) if getattr(f, "__func__", None) is not base]
        for fn in self._hooks[hook]:
            fn(self, task, *args)

    def autocast(self) -> ContextManager[Any]:
        return nullcontext() if self._amp_dtype is None else torch.autocast(self.device.type, dtype=self._amp_dtype)

    def _to_device(self, batch: Any) -> Any:
        return to_device(batch, self.device, self.cfg.channels_last)

    def setup(self, task: Task) -> Task:
        task.to(self.device)
        if self.cfg.channels_last:
            task.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        return task

    def _limit(self, stage: str) -> int | float | None:
        return 1 if self.cfg.fast_dev_run else getattr(self.cfg, f"limit_{stage}_batches")

    # ---- evaluation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, task: Task, loader: Loader, stage: str = "val") -> dict[str, float]:
        """Run ``validation_step`` over ``loader`` (within ``limit_<stage>_batches``) in eval mode."""
        task.eval()
        task.reset_metrics()
        total = limit_batches(len(loader), self._limit("test" if stage == "test" else "val"))
        self.call("on_eval_start", task, stage, total)
        for i, batch in zip(range(total), loader):
            with self.autocast():
                task.validation_step(self._to_device(batch))
            self.call("on_eval_batch_end", task, stage, i)
        self.call("on_eval_end", task, stage)
        return task.compute_metrics()

    def validate(self, task: Task, loader: Loader) -> dict[str, float]:
        metrics = self.evaluate(task, loader, "val")
        with torch.no_grad():
            task.on_validation_end(self.logger, self.state.global_step)
        self.state.validated, self.state.val_metrics = True, metrics
        self.call("on_validation_end", task, metrics)
        return metrics

    def test(self, task: Task, loader: Loader, stage: str = "test") -> dict[str, float]:
        """A final pass (``task.final_evaluation``: costly metrics such as a VAE's log-likelihood)."""
        task.final_evaluation = True
        metrics = self.evaluate(task, loader, stage)
        self.call("on_test_end", task, metrics)
        return metrics

    # ---- training ------------------------------------------------------------------------------------

    def fit(self, task: Task, data: DataModule, optimizer_cfg: dict[str, Any], scheduler_cfg: dict[str, Any],
            ckpt_path: str | Path | None = None) -> dict[str, Any]:
        """Train for ``max_epochs`` (or until a callback stops it); resume from ``ckpt_path`` if given."""
        cfg, s = self.cfg, self.state
        for callback in self.callbacks:
            callback.check_trainer(cfg)
        task = self.setup(task)
        self._model = task.model
        train, val = data.train, data.val
        if cfg.overfit_batches:
            train.set_epoch(0)
            train = val = FixedBatches(self._to_device(b) for b in itertools.islice(train, cfg.overfit_batches))
        s.num_train_batches = limit_batches(len(train), self._limit("train"))
        if s.num_train_batches == 0:
            raise ConfigError("the training loader yields no batches; check the dataset, data.batch_size and trainer.limit_train_batches")
        self.has_val = limit_batches(len(val), self._limit("val")) > 0
        s.optimizers = self._build_optimizers(task, optimizer_cfg)
        steps_per_epoch = math.ceil(s.num_train_batches / cfg.accumulate_grad_batches)
        schedule_epochs = cfg.max_epochs if cfg.fast_dev_run else s.max_epochs  # a dry run keeps the run's schedule
        s.schedules = {name: Schedule(opt, scheduler_cfg, steps_per_epoch, schedule_epochs, task.monitor_mode)
                       for name, opt in s.optimizers.items()}
        step_fn = torch.compile(task.training_objective) if cfg.compile else task.training_objective
        if ckpt_path:
            self._resume_partial, self.resumed_from = restore_training(self, ckpt_path), Path(ckpt_path)
        if self.dist.enabled:
            if not hasattr(train, "shard"):
                raise ConfigError(f"the training loader ({type(train).__name__}) cannot be sharded across processes")
            train.shard(self.dist.rank, self.dist.world_size)
            self._wrap_distributed(task)
        self._train_loader, history, fit_start = train, [], time.perf_counter()
        try:
            self.call("on_fit_start", task)
            for epoch in range(s.epoch, s.max_epochs):
                history.append(self._run_epoch(task, step_fn, train, val, epoch))
                if self.dist.enabled and distributed.any_rank(s.interrupt is not None, self.device):
                    s.interrupt = s.interrupt or signal.SIGTERM
                if s.interrupt is not None:  # a signal after the epoch's last step (in validation): last.pt is
                    self._interrupted()      # the epoch's end; stop before another epoch or the test
                if s.should_stop:
                    break
            self.call("on_fit_end", task)
        except BaseException as e:
            self.call("on_exception", task, e)
            raise
        finally:
            task.undistribute()
            self.call("teardown", task)
            self.logger.flush()
        result = {"history": history, "epochs_run": s.epoch + 1 if s.epoch_done else s.epoch, "global_step": s.global_step,
                  "stopped_early": s.should_stop, "skipped_steps": s.skipped_steps, "fit_time_s": time.perf_counter() - fit_start}
        for callback in self.callbacks:
            result.update(callback.summary())
        return result

    def _wrap_distributed(self, task: Task) -> None:
        """Put the model in DistributedDataParallel as ``task.model``. DDP all-reduces the gradients of
        the parameters that require them when it is built, so a change of the trainable set (gradual
        unfreezing) builds a new wrapper; the parameters, and so the optimizer state, stay the same."""
        assert self._model is not None
        self._ddp_trainable = _trainable(self._model)
        task.distribute(lambda m: distributed.wrap_model(m, self.device, self.cfg.sync_batchnorm, self.cfg.find_unused_parameters))

    def _run_epoch(self, task: Task, step_fn: Any, train: Loader, val: Loader, epoch: int) -> dict[str, float]:
        s = self.state
        s.epoch, s.epoch_done, s.validated = epoch, False, False
        self.call("on_train_epoch_start", task)
        if self.dist.enabled and _trainable(self._model) != self._ddp_trainable:  # type: ignore[arg-type]
            self._wrap_distributed(task)  # e.g. gradual unfreezing made more parameters trainable
        t0 = time.perf_counter()
        train_metrics = self._train_epoch(task, step_fn, train, epoch)
        epoch_time = time.perf_counter() - t0
        val_metrics = {}
        if self.has_val and ((epoch + 1) % self.cfg.check_val_every_n_epoch == 0 or epoch + 1 == s.max_epochs):
            val_metrics = self.validate(task, val)
        monitored = (s.val_metrics or train_metrics).get(task.monitor)
        for schedule in s.schedules.values():
            schedule.step_epoch(monitored)
        row = {"epoch": epoch, **{f"train/{k}": v for k, v in train_metrics.items()},
               **{f"val/{k}": v for k, v in val_metrics.items()}, "time/epoch_s": epoch_time}
        self.logger.log_scalars({**{k: v for k, v in row.items() if k != "epoch"}, "epoch": float(epoch)}, s.global_step)
        row.update({k: v for k, v in learning_rates(s.optimizers).items() if "_pg" not in k})
        s.epoch_done, s.metrics = True, row
        self.call("on_train_epoch_end", task, row)
        return row

    def _build_optimizers(self, task: Task, optimizer_cfg: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
        optimizers = {}
        for name in task.optimizer_names:
            opt_cfg = dict(task.optimizer_config(name, dict(optimizer_cfg)))
            check_closure(opt_cfg["name"], self.precision, self.cfg.accumulate_grad_batches)
            if needs_closure(opt_cfg["name"]):
                self._closures.add(name)
            decay_nb = bool(opt_cfg.get("decay_norm_and_bias", False))
            groups = task.optimizer_param_groups(name, float(opt_cfg.get("weight_decay", 0.0)), decay_nb)
            optimizers[name] = build_optimizer(opt_cfg, groups)
        return optimizers

    def _train_epoch(self, task: Task, step_fn: Any, loader: Loader, epoch: int) -> dict[str, float]:
        s = self.state
        task.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        start = self._start_position(loader, epoch)
        if start:
            task.resume_epoch(start)
        self._owned = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in s.optimizers.items()}
        seekable = start == 0 or hasattr(loader, "load_state_dict")  # else: draw and drop the batches done
        batches = enumerate(loader, start) if seekable else itertools.islice(enumerate(loader), start, None)
        for i, batch in batches:
            if i >= s.num_train_batches:
                break
            s.batch_idx = i
            batch = self._to_device(batch)
            self.call("on_train_batch_start", task, batch, i)
            outputs = self._step(task, step_fn, batch, (i + 1) % self.cfg.accumulate_grad_batches == 0 or i + 1 == s.num_train_batches)
            s.batch_idx = i + 1
            self.call("on_train_batch_end", task, outputs, batch, i)
            if s.interrupt is not None and s.stepped:
                self._interrupted()
        means = distributed.all_reduce_mean({k: v / s.n for k, v in s.sums.items()}) if s.n else {}
        return {k: float(v) for k, v in means.items()}

    def _step(self, task: Task, step_fn: Any, batch: Any, boundary: bool) -> dict[str, torch.Tensor]:
        """Forward, backward and (at an accumulation boundary) the update of every optimizer for one batch."""
        s = self.state
        multi = len(s.optimizers) > 1
        outs: dict[str, torch.Tensor] = {}
        s.skip_batch = False
        if not s.optimizers:  # a task with nothing to optimise (optimizer_names = ()): the step is a forward pass
            with self.autocast():
                outs = {k: v.detach() for k, v in step_fn(batch).items()}
        for name, optimizer in s.optimizers.items():
            with _only_trainable(self._owned, name) if multi else nullcontext():
                out = self._forward_backward(task, step_fn, batch, name, boundary)
                if s.skip_batch:
                    break
                if boundary:
                    closure = self._closure(task, step_fn, batch, name, optimizer, out["loss"]) if name in self._closures else None
                    self._optimizer_step(task, name, optimizer, closure)
            outs.update({(f"loss/{name}" if multi and k == "loss" else k): v.detach() for k, v in out.items()})
        if s.skip_batch:
            s.skipped_steps += 1
            for optimizer in s.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
        else:
            for k, v in outs.items():
                s.sums[k] = s.sums[k] + v if k in s.sums else v
            s.n += 1
        s.stepped = boundary
        if boundary:
            if not s.skip_batch and s.optimizers:
                s.scaler.update()
            for schedule in s.schedules.values():
                schedule.step_batch()
            s.global_step += 1
            if s.global_step % self.cfg.log_every_n_steps == 0 and not s.skip_batch:
                losses = {f"train/{k}_step": float(v) for k, v in outs.items() if k == "loss" or k.startswith("loss/")}
                self.logger.log_scalars(losses, s.global_step)
        return outs

    def _forward_backward(self, task: Task, step_fn: Any, batch: Any, name: str, boundary: bool) -> dict[str, torch.Tensor]:
        """The forward pass of optimizer ``name`` and, unless a callback skips the batch, its backward pass."""
        s, accum = self.state, self.cfg.accumulate_grad_batches
        with self.autocast():
            out = step_fn(batch, name) if len(s.optimizers) > 1 else step_fn(batch)
        loss = out["loss"]
        self.call("on_before_backward", task, loss)
        if s.skip_batch:
            return out
        no_sync = getattr(task.model, "no_sync", None) if self.dist.enabled and not boundary else None
        with no_sync() if no_sync is not None else nullcontext():  # all-reduce once per update
            s.scaler.scale(loss / accum if accum > 1 else loss).backward()
        self.call("on_after_backward", task)
        return out

    def _closure(self, task: Task, step_fn: Any, batch: Any, name: str, optimizer: torch.optim.Optimizer,
                 loss: torch.Tensor) -> Any:
        """The closure of an optimizer that evaluates the loss again inside its step (L-BFGS' iterations and
        line search): its first call returns ``loss``, the batch's loss whose gradients are in place; every
        further call runs the batch again (forward, backward, their hooks, ``on_before_optimizer_step`` and
        clipping, as Lightning does). Under DDP the loss is the mean over the processes, as the gradients are."""
        calls = itertools.count()

        def closure() -> torch.Tensor:
            if next(calls) == 0:
                return distributed.all_reduce_mean({"loss": loss.detach()})["loss"]
            optimizer.zero_grad(set_to_none=True)
            out = self._forward_backward(task, step_fn, batch, name, True)
            if self.state.skip_batch:  # the step has moved the weights already: nothing to drop it to
                raise ConfigError(f"a callback skipped the batch inside a step of optimizer {name!r} (e.g. a non-finite loss "
                                  "in its line search), which cannot be undone; set callbacks.nonfinite.policy=raise, "
                                  "or lower optimizer.lr / set optimizer.line_search_fn=strong_wolfe")
            self._before_update(task, name, optimizer)
            return distributed.all_reduce_mean({"loss": out["loss"].detach()})["loss"]

        return closure

    def _before_update(self, task: Task, name: str, optimizer: torch.optim.Optimizer) -> None:
        self.call("on_before_optimizer_step", task, optimizer, name)
        if self.cfg.gradient_clip_val is not None:
            clip = nn.utils.clip_grad_norm_ if self.cfg.gradient_clip_algorithm == "norm" else nn.utils.clip_grad_value_
            clip(self._owned[name], self.cfg.gradient_clip_val)

    def _optimizer_step(self, task: Task, name: str, optimizer: torch.optim.Optimizer, closure: Any = None) -> None:
        scaler = self.state.scaler
        if scaler.is_enabled():
            scaler.unscale_(optimizer)  # hooks and clipping see the true gradients
        self._before_update(task, name, optimizer)
        if closure is None:
            scaler.step(optimizer)
        else:  # closure optimizers never run with an enabled scaler (check_closure)
            scaler.step(optimizer, closure)
        optimizer.zero_grad(set_to_none=True)
        task.after_optimizer_step(name)

    def _interrupted(self) -> None:
        s = self.state
        assert s.interrupt is not None
        distributed.barrier()  # rank 0 has finished writing last.pt
        saved = s.last_checkpoint if s.last_checkpoint and Path(s.last_checkpoint).is_file() else None
        where = f"saved {saved}; resume with ckpt_path={saved}" if saved else "checkpointing is off, nothing saved"
        raise TrainingInterrupted(f"stopped by {signal.Signals(s.interrupt).name} in epoch {s.epoch + 1} after batch "
                                  f"{s.batch_idx} (step {s.global_step}); {where}", s.interrupt)

    # ---- checkpoints (contents and restore: zoo.engine.checkpoint) -------------------------------------

    def checkpoint_state(self, task: Task) -> dict[str, Any]:
        """Everything a resume needs, now: at an epoch end, or inside an epoch (``partial_epoch``)."""
        state = training_checkpoint(self)
        self.call("on_save_checkpoint", task, state)
        return state

    def _start_position(self, loader: Loader, epoch: int) -> int:
        """Where this epoch starts: batch 0, or the mid-epoch position a resumed checkpoint recorded."""
        s = self.state
        partial, self._resume_partial = self._resume_partial, None
        s.sums, s.n, s.batch_idx = {}, 0, 0
        if partial is None or partial["epoch"] != epoch:
            return 0
        if "loader" in partial and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(partial["loader"])
        s.sums = {k: torch.tensor(v, device=self.device) for k, v in partial["sums"].items()}
        s.n = int(partial["n"])
        return int(partial["batches"])
