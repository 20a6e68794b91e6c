from __future__ import annotations

import math

import pytest
import torch
from torch import nn

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
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        assert not torch.equal(before, model.weight), name


def test_bad_optimizer_values() -> None:
    groups = param_groups(nn.Linear(2, 1), 0.0)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        build_optimizer({"name": "adam", "lr": 0.0}, groups)
    with pytest.raises(ConfigError, match="unknown optimizer 'adan'"):
        build_optimizer({"name": "adan", "lr": 0.1}, groups)
    with pytest.raises(ConfigError, match="optimizer 'adam'"):
        build_optimizer({"name": "adam", "lr": 0.1, "bogus": 1}, groups)
