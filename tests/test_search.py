"""Hyperparameter search (zoo/search.py, hydra/sweeper=optuna): search spaces from Hydra's sweep
syntax, a seeded random search on digits through the real command line, its summary (best first),
best.yaml, the figure and the TensorBoard events, and the refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tests.helpers import run_cli
from zoo.errors import ConfigError
from zoo.search import SearchOptions, best_trial, search_space
from zoo.sweep import best_first

QUICK = ["trainer.max_epochs=1", "logger=none", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=1"]


def test_sweep_syntax_becomes_optuna_distributions() -> None:
    space, fixed = search_space(
        {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "optimizer.momentum": "interval(0.5, 0.99)",
         "data.batch_size": "choice(32, 64)"},
        ["model.width=range(8, 33, 8)", "optimizer=sgd,adam", "trainer.max_epochs=3", "data.batch_size=choice(16)"],
    )
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["optimizer.momentum"] == FloatDistribution(0.5, 0.99)
    assert space["model.width"] == IntDistribution(8, 32, step=8)
    assert space["optimizer"] == CategoricalDistribution(["sgd", "adam"])
    assert space["data.batch_size"] == CategoricalDistribution([16])  # the command line wins
    assert fixed == ["trainer.max_epochs=3"]


@pytest.mark.parametrize(("params", "message"), [
    ({"optimizer.lr": "tag(log, interval(0, 1))"}, "low > 0 for a log scale"),
    ({"optimizer.lr": "interval(1, 0.5)"}, "needs low < high"),
    ({"optimizer.lr": "0.1"}, "not a search space"),
    ({"optimizer.lr": "interval(1,"}, "does not parse"),
    ({}, "nothing to search"),
])
def test_bad_search_spaces_are_one_line(params: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space(params, [])


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown hydra.sweeper option 'trials'"):
        SearchOptions.from_dict({"trials": 3})
    with pytest.raises(ConfigError, match="sampler=grid is not one of tpe, random"):
        SearchOptions.from_dict({"sampler": "grid"})
    with pytest.raises(ConfigError, match="direction=up"):
        SearchOptions.from_dict({"direction": "up"})


def test_best_first_orders_by_the_monitor_mode() -> None:
    rows = [{"job": 0, "best": 0.5, "monitor": "val/acc", "mode": "max"}, {"job": 1, "best": None},
            {"job": 2, "best": 0.9, "monitor": "val/acc", "mode": "max"}]
    assert [r["job"] for r in best_first(rows)] == [2, 0, 1]
    low = [{**r, "monitor": "val/loss", "mode": "min"} if r["best"] is not None else r for r in rows]
    assert [r["job"] for r in best_first(low)] == [0, 2, 1]
    mixed = [rows[0], {**rows[2], "monitor": "val/loss", "mode": "min"}]
    assert best_first(mixed) == mixed  # nothing to compare: job order
    trials = [{"number": 0, "value": 0.2}, {"number": 1, "value": None}, {"number": 2, "value": 0.1}]
    assert best_trial(trials, "minimize")["number"] == 2 and best_trial(trials, "maximize")["number"] == 0


def test_a_seeded_random_search_on_digits(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "hparams_search=digits_lenet5", "hydra.sweeper.n_trials=3", *QUICK,
                   f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"sweep: 3 of 3 jobs ok; summary in {sweep_dir / 'summary.md'}"

    # the trials are the random sampler's with seed 0, over the config's log-uniform ranges
    space = {"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
             "optimizer.weight_decay": FloatDistribution(1e-6, 1e-2, log=True)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    expected = [study.ask(space).params for _ in range(3)]
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["job"] for r in rows) == ["0", "1", "2"]
    for row in rows:
        lr, wd = (float(o.split("=")[1]) for o in row["overrides"].split())
        assert {"optimizer.lr": lr, "optimizer.weight_decay": wd} == expected[int(row["job"])]
    best = [float(r["best"]) for r in rows]
    assert best == sorted(best, reverse=True)  # best first

    from omegaconf import OmegaConf

    result = OmegaConf.load(sweep_dir / "best.yaml")
    assert result.best_value == pytest.approx(best[0], rel=1e-5) and result.monitor == "val/acc"
    assert result.best_params["optimizer.lr"] == pytest.approx(expected[result.best_trial]["optimizer.lr"])
    assert Path(result.best_run_dir) == sweep_dir / str(result.best_trial)
    assert (sweep_dir / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(sweep_dir / "tensorboard")).Reload()
    assert events.Tags()["images"] == ["search/val/acc"]
    assert sorted(p.name for p in (sweep_dir / "tensorboard").iterdir() if p.is_dir()) == ["trial-0", "trial-1", "trial-2"]


def test_a_search_against_the_monitor_mode_stops_with_one_line(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "hparams_search=digits_lenet5", "hydra.sweeper.n_trials=2", *QUICK,
                   "callbacks.checkpoint.monitor=val/loss", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.direction=maximize, but the trials monitor val/loss (mode min); "
        "set hydra.sweeper.direction=minimize")
    assert not (sweep_dir / "1").exists()  # stopped after the first trial
