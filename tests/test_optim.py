from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.engine.callbacks import Callback
from zoo.engine.optim import OPTIMIZERS, Schedule, build_optimizer, param_groups
from zoo.errors import ConfigError


def _lrs(sched_cfg: dict, steps_per_epoch: int = 10, epochs: int = 10, metric=None) -> list[float]:
    model = nn.Linear(2, 2)
    opt = build_optimizer({"name": "sgd", "lr": 1.0}, param_groups(model, 0.0))
    schedule = Schedule(opt, sched_cfg, steps_per_epoch, epochs)
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step_batch()
        schedule.step_epoch(metric(epoch) if metric else None)
    return lrs


def test_step_schedule() -> None:
    lrs = _lrs({"name": "step", "step_size": 3, "gamma": 0.1})
    assert lrs[0] == lrs[29] == 1.0 and lrs[30] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)


def test_multistep_schedule_at_fractional_milestones() -> None:
    lrs = _lrs({"name": "multistep", "milestones": [2.5, 6], "gamma": 0.2})  # 10 steps per epoch
    assert lrs[24] == 1.0 and lrs[25] == pytest.approx(0.2) and lrs[59] == pytest.approx(0.2)
    assert lrs[60] == pytest.approx(0.04) and lrs[-1] == pytest.approx(0.04)
    for bad in ([], [5, 3], [0, 2], [3, 3]):
        with pytest.raises(ConfigError, match="scheduler.milestones must be increasing positive epochs"):
            _lrs({"name": "multistep", "milestones": bad})


def test_exponential_and_inverse_time() -> None:
    assert _lrs({"name": "exponential", "gamma": 0.5})[25] == pytest.approx(0.25)
    assert _lrs({"name": "inverse_time", "decay": 0.5})[40] == pytest.approx(1 / (1 + 0.5 * 4))


def test_cosine_with_warmup() -> None:
    lrs = _lrs({"name": "cosine", "warmup_epochs": 1, "warmup_start_factor": 0.0})
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.05)) * 0.5)
    assert lrs[50] == pytest.approx(0.5) and lrs[-1] < 0.01
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))  # rising during warmup


def test_onecycle_shape() -> None:
    lrs = _lrs({"name": "onecycle", "pct_start": 0.3, "div_factor": 25, "final_div_factor": 1e4})
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0, abs=1e-3) and lrs.index(max(lrs)) == 30
    assert lrs[-1] < 1e-3


def test_plateau_reduces_after_patience() -> None:
    lrs = _lrs({"name": "plateau", "factor": 0.5, "patience": 2}, metric=lambda epoch: 0.5)  # never improves
    # epoch 0 sets the best; epochs 1, 2 are bad -> patience 2 exceeded at epoch 3
    assert lrs[30] == 1.0 and lrs[40] == pytest.approx(0.5)


def test_schedule_state_round_trip() -> None:
    model = nn.Linear(2, 2)
    opt = build_optimizer({"name": "sgd", "lr": 1.0}, param_groups(model, 0.0))
    a = Schedule(opt, {"name": "cosine"}, 10, 5)
    for _ in range(17):
        opt.step()
        a.step_batch()
    opt2 = build_optimizer({"name": "sgd", "lr": 1.0}, param_groups(model, 0.0))
    b = Schedule(opt2, {"name": "cosine"}, 10, 5)
    b.load_state_dict(a.state_dict())
    opt.step(), a.step_batch(), opt2.step(), b.step_batch()
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_param_groups_skip_decay_on_bias_and_norm() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    groups = param_groups(model, weight_decay=0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert groups[1]["weight_decay"] == 0.0
    assert len(param_groups(model, 0.1, decay_norm_and_bias=True)) == 1


def test_every_optimizer_steps() -> None:
    for name in OPTIMIZERS:
        model = nn.Linear(2, 1)
        opt = build_optimizer({"name": name, "lr": 0.1}, param_groups(model, 0.0))
        before = model.weight.detach().clone()

        def closure() -> torch.Tensor:  # what lbfgs evaluates again; every torch optimizer takes one
            opt.zero_grad()
            loss = model(torch.ones(1, 2)).sum()
            loss.backward()
            return loss

        opt.step(closure)
        assert not torch.equal(before, model.weight), name


def test_bad_optimizer_values() -> None:
    groups = param_groups(nn.Linear(2, 1), 0.0)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        build_optimizer({"name": "adam", "lr": 0.0}, groups)
    with pytest.raises(ConfigError, match="unknown optimizer 'adan'"):
        build_optimizer({"name": "adan", "lr": 0.1}, groups)
    with pytest.raises(ConfigError, match="optimizer 'adam'"):
        build_optimizer({"name": "adam", "lr": 0.1, "bogus": 1}, groups)


# ---- closure optimizers (lbfgs) through the trainer ------------------------------------------------------------------


def _convex_problem(n: int = 256, features: int = 20, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on data labelled by a random linear teacher: a convex loss."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, features, generator=g)
    return x, (x @ torch.randn(features, classes, generator=g)).argmax(1)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: dict, epochs: int, callbacks=(), **trainer) -> dict:
    """``epochs`` full-batch optimizer steps of the real Trainer (no label smoothing: the plain loss)."""
    from zoo.data.loaders import TensorLoader
    from zoo.data.types import DataModule
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.classification import ClassificationTask

    data = DataModule(TensorLoader(x, y, len(x)), TensorLoader(x, y, len(x)), TensorLoader(x, y, len(x)), 3, 1, 1,
                      ["a", "b", "c"], [0.0], [1.0])
    trainer = Trainer(TrainerConfig(max_epochs=epochs, device="cpu", **trainer), "unused", callbacks=list(callbacks))
    result = trainer.fit(ClassificationTask(model, 3, label_smoothing=0.0), data, optimizer, {"name": "none"})
    return {**result, "optimizer": trainer.state.optimizers["model"]}


LBFGS = {"name": "lbfgs", "lr": 1.0, "max_iter": 10, "history_size": 10, "line_search_fn": "strong_wolfe"}


def _lbfgs_by_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, clip: float | None = None) -> None:
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=10, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y, reduction="none").mean()
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        return loss

    for _ in range(steps):
        opt.step(closure)


@pytest.mark.parametrize("clip", [None, 0.05], ids=["plain", "clipped"])
def test_lbfgs_in_the_trainer_is_torchs_lbfgs_with_the_same_closure(clip: float | None) -> None:
    """The trainer's closure is the one a user writes (with ``trainer.gradient_clip_val``: clipping in it)."""
    x, y = _convex_problem()
    model, by_hand = nn.Linear(20, 3), nn.Linear(20, 3)
    by_hand.load_state_dict(model.state_dict())
    start = float(nn.functional.cross_entropy(model(x), y, reduction="none").mean().detach())
    result = _fit(model, x, y, LBFGS, epochs=3, gradient_clip_val=clip)
    _lbfgs_by_hand(by_hand, x, y, steps=3, clip=clip)
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.equal(a, b)  # bit for bit
    end = float(nn.functional.cross_entropy(model(x), y, reduction="none").mean().detach())
    assert result["global_step"] == 3 and end < 0.5 * start
    assert result["history"][0]["train/loss"] == pytest.approx(start)  # an epoch reports the loss before its step
    if clip is None:
        assert end < 0.2 * start  # three steps of a quasi-Newton method


class _Evaluations(Callback):
    """Counts the hooks of loss evaluations; ``skip_at``: sets ``skip_batch`` in that evaluation (1-based)."""

    def __init__(self, skip_at: int | None = None) -> None:
        self.skip_at, self.before, self.after, self.updates = skip_at, 0, 0, 0

    def on_before_backward(self, trainer, task, loss) -> None:
        self.before += 1
        if self.before == self.skip_at:
            trainer.state.skip_batch = True

    def on_after_backward(self, trainer, task) -> None:
        self.after += 1

    def on_before_optimizer_step(self, trainer, task, optimizer, name) -> None:
        self.updates += 1


def test_lbfgs_runs_the_backward_and_update_hooks_for_every_evaluation() -> None:
    x, y = _convex_problem()
    seen, model = _Evaluations(), nn.Linear(20, 3)
    result = _fit(model, x, y, LBFGS, epochs=2, callbacks=[seen])
    evaluations = result["optimizer"].state[model.weight]["func_evals"]
    assert evaluations > 2 and seen.before == seen.after == seen.updates == evaluations
    assert all(p.grad is None for p in model.parameters())  # the step ended with zero_grad


def test_lbfgs_skip_on_the_first_evaluation_drops_the_step_and_later_is_one_error() -> None:
    x, y = _convex_problem()
    model = nn.Linear(20, 3)
    before = copy.deepcopy(model.state_dict())
    result = _fit(model, x, y, LBFGS, epochs=1, callbacks=[_Evaluations(skip_at=1)])
    assert result["skipped_steps"] == 1 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="cannot be undone; set callbacks.nonfinite.policy=raise") as info:
        _fit(model, x, y, LBFGS, epochs=1, callbacks=[_Evaluations(skip_at=3)])
    assert "\n" not in str(info.value)


def test_lbfgs_refusals_are_one_error_line(tmp_path: Path) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.pipeline import train

    for override, message in (("trainer.accumulate_grad_batches=2", "cannot accumulate gradients over batches; set trainer.accumulate_grad_batches=1"),
                              ("trainer.precision=16", "fp16's gradient scaler cannot do; use trainer.precision=bf16 or 32"),
                              ("transfer=finetune_all", "optimizer=lbfgs takes one learning rate for all parameters")):
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            train(make_cfg(tmp_path / "run", *FAST, "optimizer=lbfgs", override))
        assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run" / "checkpoints").glob("*.pt"))
    with pytest.raises(ConfigError, match="line_search_fn must be strong_wolfe or null"):
        build_optimizer({**LBFGS, "line_search_fn": "armijo"}, param_groups(nn.Linear(2, 1), 0.0))
    with pytest.raises(ConfigError, match="unknown option optimizer.weight_decay"):
        build_optimizer({**LBFGS, "weight_decay": 1e-4}, param_groups(nn.Linear(2, 1), 0.0))


def test_adadelta_composes_with_the_papers_defaults_and_trains(tmp_path: Path) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.engine.checkpoint import load_checkpoint
    from zoo.pipeline import train

    result = train(make_cfg(tmp_path, *FAST, "optimizer=adadelta", "test=false"))
    assert result["optimizer"] == "adadelta"
    history = result["history"]
    assert history[1]["train/loss"] < history[0]["train/loss"] and history[1]["val/acc"] > 0.5
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizers"]["model"]
    assert {(g["rho"], g["eps"]) for g in state["param_groups"]} == {(0.95, 1e-6)}
    assert all("acc_delta" in s for s in state["state"].values())
