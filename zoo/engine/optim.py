"""Optimizers and learning-rate schedules, built by name from ``configs/optimizer`` and
``configs/scheduler``.

Schedules are expressed as a multiplicative factor of the base learning rate as a function of the
(fractional) epoch, wrapped in :class:`torch.optim.lr_scheduler.LambdaLR` and stepped once per
optimizer step, so every schedule composes with linear warmup and behaves the same under gradient
accumulation. ``plateau`` uses :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`, stepped per
epoch on the monitored validation metric once warmup is over. ``cosine_restarts`` (SGDR) is such a
factor too, a :class:`WarmRestarts`, which also says where its cycles end (``Schedule.cycle_ends``:
the checkpoint callback's ``snapshots`` keep the model there).

Optimizers registered with ``closure=True`` (``lbfgs``) evaluate the loss again inside their step;
the trainer hands them a closure (:func:`needs_closure`, :func:`check_closure`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from zoo.errors import ConfigError
from zoo.registry import Registry

OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
SCHEDULERS: Registry[Callable[[float], float] | None] = Registry("scheduler")

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


LrMult = Callable[[str], "float | None"]


def is_bias_or_norm(module: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` of ``module`` (its own, not a submodule's) is a bias or belongs to a
    normalisation layer: what gets no weight decay by default, and no regulariser penalty."""
    return name.endswith("bias") or isinstance(module, _NORM_TYPES)


def param_groups(
    model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False, lr_mult: float | LrMult = 1.0
) -> list[dict[str, Any]]:
    """Split parameters into decayed weights and (by default) undecayed biases/norm parameters, per
    learning-rate multiplier (``lr_mult`` of the group; the schedule scales each group's own rate).

    ``lr_mult`` is one multiplier for every trainable parameter, or a function of a parameter's name
    giving its multiplier, or None to leave it out (discriminative rates, frozen layers: see
    :mod:`zoo.transfer`). Groups come in decreasing multiplier order, so the first has the base rate.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if callable(lr_mult):
                mult = lr_mult(f"{module_name}.{name}" if module_name else name)
            else:
                mult = lr_mult if p.requires_grad else None
            if mult is None:
                continue
            skip = not decay_norm_and_bias and is_bias_or_norm(module, name)
            groups.setdefault((float(mult), skip), []).append(p)
    return [
        {"params": params, "weight_decay": 0.0 if skip else weight_decay, "lr_mult": mult}
        for (mult, skip), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
    ]


def build_optimizer(cfg: dict[str, Any], groups: list[dict[str, Any]]) -> Optimizer:
    """Build ``cfg["name"]`` over parameter groups; a group's ``lr_mult`` scales the base ``lr``."""
    cfg = dict(cfg)
    lr = float(cfg.pop("lr"))
    cfg.pop("decay_norm_and_bias", None)
    if not lr > 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {lr}")
    if float(cfg.get("weight_decay", 0.0)) < 0:
        raise ConfigError(f"optimizer.weight_decay must be >= 0, got {cfg['weight_decay']}")
    groups = [{**g, "lr": lr * g.get("lr_mult", 1.0)} for g in groups]
    return OPTIMIZERS.build_from(cfg, params=groups, lr=lr)


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable[Any], lr: float, **kw: Any) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, **kw)


@OPTIMIZERS.register("momentum")
def _momentum(params: Iterable[Any], lr: float, momentum: float = 0.9, **kw: Any) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, **kw)


@OPTIMIZERS.register("nesterov")
def _nesterov(params: Iterable[Any], lr: float, momentum: float = 0.9, **kw: Any) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, **kw)


@OPTIMIZERS.register("adagrad")
def _adagrad(params: Iterable[Any], lr: float, **kw: Any) -> Optimizer:
    return torch.optim.Adagrad(params, lr=lr, **kw)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params: Iterable[Any], lr: float, **kw: Any) -> Optimizer:
    return torch.optim.RMSprop(params, lr=lr, **kw)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable[Any], lr: float, betas: Iterable[float] = (0.9, 0.999), **kw: Any) -> Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **kw)  # type: ignore[arg-type]


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable[Any], lr: float, betas: Iterable[float] = (0.9, 0.999), **kw: Any) -> Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), **kw)  # type: ignore[arg-type]


@OPTIMIZERS.register("adadelta")
def _adadelta(params: Iterable[Any], lr: float, rho: float = 0.95, eps: float = 1e-6, **kw: Any) -> Optimizer:
    """Zeiler 2012: no learning rate in the paper (``lr`` 1.0 scales its step); rho 0.95, eps 1e-6 as there."""
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, **kw)


@OPTIMIZERS.register("lbfgs", closure=True)
def _lbfgs(params: Iterable[Any], lr: float, max_iter: int = 20, max_eval: int | None = None, tolerance_grad: float = 1e-7,
           tolerance_change: float = 1e-9, history_size: int = 100, line_search_fn: str | None = None) -> Optimizer:
    """L-BFGS (Liu & Nocedal 1989), up to ``max_iter`` iterations (each evaluating the loss of the same batch
    again) per optimizer step. torch's LBFGS takes one parameter group: the groups become one."""
    groups = list(params)
    if len({g.get("lr_mult", 1.0) for g in groups}) > 1:
        raise ConfigError("optimizer=lbfgs takes one learning rate for all parameters; drop the transfer policy's "
                          "learning-rate multipliers (e.g. transfer.backbone_lr_mult=1) or use another optimizer")
    if line_search_fn not in (None, "strong_wolfe"):
        raise ConfigError(f"optimizer.line_search_fn must be strong_wolfe or null, got {line_search_fn!r}")
    if max_iter < 1 or history_size < 1:
        raise ConfigError(f"optimizer.max_iter and optimizer.history_size must be >= 1, got {max_iter} and {history_size}")
    first = groups[0]
    one = {"params": [p for g in groups for p in g["params"]], "lr": first.get("lr", lr), "lr_mult": first.get("lr_mult", 1.0)}
    return torch.optim.LBFGS([one], lr=lr, max_iter=max_iter, max_eval=max_eval,
                             tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, history_size=history_size,
                             line_search_fn=line_search_fn)


def needs_closure(name: str) -> bool:
    """Whether optimizer ``name`` evaluates the loss more than once per step (``step(closure)``: L-BFGS)."""
    return bool(OPTIMIZERS.metadata(name).get("closure", False))


def check_closure(name: str, precision: str, accumulate_grad_batches: int) -> None:
    """What an optimizer that re-evaluates the loss inside its step cannot do: fp16 (the grad scaler
    takes no closure) and gradient accumulation (a re-evaluation sees only the last batch)."""
    if not needs_closure(name):
        return
    if precision == "16":
        raise ConfigError(f"optimizer={name} evaluates the loss again inside its step, which fp16's gradient scaler "
                          "cannot do; use trainer.precision=bf16 or 32")
    if accumulate_grad_batches > 1:
        raise ConfigError(f"optimizer={name} evaluates the loss of one batch again inside its step, so it cannot accumulate "
                          f"gradients over batches; set trainer.accumulate_grad_batches=1 and a larger data.batch_size")


# ---- schedules: factor(epoch, total_epochs) -> multiplier of the base learning rate ----------------------------------


@SCHEDULERS.register("none")
def _constant(total_epochs: float) -> Callable[[float], float]:
    return lambda epoch: 1.0


@SCHEDULERS.register("step")
def _step(total_epochs: float, step_size: int = 30, gamma: float = 0.1) -> Callable[[float], float]:
    """Multiply by ``gamma`` every ``step_size`` epochs."""
    if step_size < 1:
        raise ConfigError(f"scheduler.step_size must be >= 1 epoch, got {step_size}")
    return lambda epoch: gamma ** math.floor(epoch / step_size)


@SCHEDULERS.register("multistep")
def _multistep(total_epochs: float, milestones: list[float] | None = None, gamma: float = 0.1) -> Callable[[float], float]:
    """Multiply by ``gamma`` at each of the increasing ``milestones`` (epochs, fractions allowed: a paper's
    iteration counts divided by the steps per epoch), e.g. ``[91, 136]`` for He et al.'s 32k and 48k iterations."""
    steps = [float(m) for m in milestones or []]
    if not steps or any(m <= 0 for m in steps) or steps != sorted(set(steps)):
        raise ConfigError(f"scheduler.milestones must be increasing positive epochs, e.g. [60, 120, 160]; got {milestones}")
    return lambda epoch: gamma ** sum(epoch >= m for m in steps)


@SCHEDULERS.register("exponential")
def _exponential(total_epochs: float, gamma: float = 0.95) -> Callable[[float], float]:
    """``lr0 * gamma^t`` with ``t`` in whole epochs."""
    return lambda epoch: gamma ** math.floor(epoch)


@SCHEDULERS.register("inverse_time")
def _inverse_time(total_epochs: float, decay: float = 0.1) -> Callable[[float], float]:
    """1/t decay, ``lr0 / (1 + decay * t)`` with ``t`` in whole epochs."""
    return lambda epoch: 1.0 / (1.0 + decay * math.floor(epoch))


@SCHEDULERS.register("cosine")
def _cosine(total_epochs: float, min_lr_factor: float = 0.0) -> Callable[[float], float]:
    """Half-cosine from ``lr0`` to ``min_lr_factor * lr0`` over the run (Loshchilov & Hutter 2017, no restarts)."""
    return lambda epoch: min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(epoch / total_epochs, 1.0)))


class WarmRestarts:
    """SGDR, stochastic gradient descent with warm restarts (Loshchilov & Hutter 2017, eq. 5): within cycle
    ``i`` the factor falls from 1 to ``min_lr_factor`` along a half-cosine over ``t_0 * t_mult**i`` epochs, then
    restarts at 1. The cycles that end inside a run are where snapshot ensembles (Huang et al. 2017) keep the model.

    The same rate as :class:`torch.optim.lr_scheduler.CosineAnnealingWarmRestarts` stepped with fractional epochs
    (``eta_min = min_lr_factor * lr``), written as a factor so it composes with warm-up and per-group learning-rate
    multipliers like every other schedule here."""

    def __init__(self, t_0: int, t_mult: int, min_lr_factor: float) -> None:
        self.t_0, self.t_mult, self.min_lr_factor = t_0, t_mult, min_lr_factor

    def _cycle(self, epoch: float) -> tuple[float, float]:
        """The start and length (epochs) of the cycle that ``epoch`` lies in."""
        if self.t_mult == 1:
            return math.floor(epoch / self.t_0) * self.t_0, float(self.t_0)
        start, length = 0.0, float(self.t_0)
        while epoch >= start + length:
            start, length = start + length, length * self.t_mult
        return start, length

    def __call__(self, epoch: float) -> float:
        start, length = self._cycle(epoch)
        return self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * (epoch - start) / length))

    def cycle_ends(self, max_epochs: int) -> tuple[int, ...]:
        """The epochs (counted from 1) at whose end a cycle ends, up to ``max_epochs``."""
        ends, length, end = [], self.t_0, self.t_0
        while end <= max_epochs:
            ends.append(end)
            length *= self.t_mult
            end += length
        return tuple(ends)


@SCHEDULERS.register("cosine_restarts")
def _cosine_restarts(total_epochs: float, t_0: int = 10, t_mult: int = 1, min_lr_factor: float = 0.0) -> WarmRestarts:
    """SGDR (Loshchilov & Hutter 2017): cosine cycles of ``t_0``, ``t_0 * t_mult``, ... epochs, each restarting at ``lr0``."""
    if t_0 < 1 or t_mult < 1:
        raise ConfigError(f"scheduler.t_0 (epochs of the first cycle) and scheduler.t_mult must be integers >= 1, "
                          f"got t_0={t_0}, t_mult={t_mult}")
    if not 0 <= min_lr_factor <= 1:
        raise ConfigError(f"scheduler.min_lr_factor must be in [0, 1], got {min_lr_factor}")
    return WarmRestarts(int(t_0), int(t_mult), float(min_lr_factor))


@SCHEDULERS.register("onecycle")
def _onecycle(
    total_epochs: float, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4
) -> Callable[[float], float]:
    """One-cycle policy (Smith & Topin 2018): cosine ramp from ``lr0/div_factor`` up to ``lr0``, then cosine
    annealing to ``lr0/(div_factor*final_div_factor)``. The learning rate only; momentum is not cycled."""
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    peak = pct_start * total_epochs

    def factor(epoch: float) -> float:
        if epoch < peak:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * epoch / peak))
        t = min((epoch - peak) / max(total_epochs - peak, 1e-12), 1.0)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


@SCHEDULERS.register("plateau")
def _plateau(total_epochs: float, **_: Any) -> None:
    """Reduce on plateau: handled by :class:`Schedule` with ``ReduceLROnPlateau``."""
    return None


def check_warmup(warmup_epochs: Any, max_epochs: int) -> None:
    """A warm-up must end inside the run: one as long as the run trains at the warm-up's low rates throughout."""
    if float(warmup_epochs) < 0:
        raise ConfigError(f"scheduler.warmup_epochs must be >= 0, got {warmup_epochs}")
    if float(warmup_epochs) > 0 and float(warmup_epochs) >= max_epochs:
        raise ConfigError(f"scheduler.warmup_epochs={warmup_epochs} must be less than trainer.max_epochs={max_epochs} "
                          "(the whole run would warm up); shorten it or train longer")


class Schedule:
    """Per-step learning-rate schedule with optional linear warmup.

    Call :meth:`step_batch` after every optimizer step and :meth:`step_epoch` with the monitored
    validation metric after every epoch. Once :attr:`paused` (another owner of the rate took over:
    stochastic weight averaging's ``SWALR``), both leave the rate and the schedule's state alone.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        cfg: dict[str, Any],
        steps_per_epoch: int,
        max_epochs: int,
        monitor_mode: str = "max",
    ) -> None:
        cfg = dict(cfg)
        name = cfg["name"]
        warmup_epochs = float(cfg.pop("warmup_epochs", 0.0))
        warmup_start = float(cfg.pop("warmup_start_factor", 0.1))
        plateau_kw = {k: cfg.pop(k) for k in ("factor", "patience", "threshold", "cooldown", "min_lr") if k in cfg}
        check_warmup(warmup_epochs, max_epochs)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.warmup_steps = round(warmup_epochs * self.steps_per_epoch)
        base = SCHEDULERS.build_from(cfg, total_epochs=float(max_epochs))
        self.name = name
        self._base = base or (lambda epoch: 1.0)
        #: the epochs (from 1) at whose end a cycle of a restarting schedule ends; None: the schedule has no cycles
        self.cycle_ends = base.cycle_ends(max_epochs) if isinstance(base, WarmRestarts) else None
        self._warmup_start = warmup_start
        self.lambda_lr = LambdaLR(optimizer, self._factor)
        self.plateau = ReduceLROnPlateau(optimizer, mode=monitor_mode, **plateau_kw) if name == "plateau" else None
        self.step_count = 0
        #: set by whoever sets the rate from now on (not stored: that owner sets it again on resume)
        self.paused = False

    def _factor(self, step: int) -> float:
        factor = self._base(step / self.steps_per_epoch)
        if step < self.warmup_steps:
            factor *= self._warmup_start + (1 - self._warmup_start) * step / self.warmup_steps
        return factor

    def step_batch(self) -> None:
        if self.paused:
            return
        self.step_count += 1
        if self.plateau is None or self.step_count <= self.warmup_steps:
            self.lambda_lr.step()

    def step_epoch(self, metric: float | None) -> None:
        if self.paused:
            return
        if self.plateau is not None and self.step_count >= self.warmup_steps and metric is not None:
            self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "lambda_lr": self.lambda_lr.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step_count"]
        self.lambda_lr.load_state_dict(state["lambda_lr"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
