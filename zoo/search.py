"""Hyperparameter search with Optuna, as a Hydra sweeper (``hydra/sweeper=optuna``).

``python train.py hparams_search=digits_lenet5`` (``configs/hparams_search/``) runs
``hydra.sweeper.n_trials`` trials. Each trial is an ordinary run directory of the multirun, with the
values Optuna asked for as overrides; ``train.py`` returns the run's best monitored validation
metric, which goes back to Optuna (ask-and-tell). Random search (Bergstra & Bengio 2012) or TPE
(Bergstra et al. 2011), seeded by ``hydra.sweeper.seed``.

Search spaces use Hydra's sweep syntax, in ``hydra.sweeper.params`` or on the command line:
``interval(a, b)`` (uniform; ``tag(log, interval(a, b))`` log-uniform), ``range(a, b[, step])``
(integers), ``choice(x, y, ...)`` or ``x,y`` (categorical: values or config-group options). Other
command-line overrides hold for every trial.

At the end the sweep directory has, next to the trial runs and the sweep summary (best first,
:mod:`zoo.sweep`): ``search.png`` (the monitored metric against each hyperparameter, log axes for
log ranges, the best trial marked), ``best.yaml`` (the best trial's values, metric and directory)
and ``tensorboard/`` (the figure, and each trial's values and metric in the HParams dashboard).
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from zoo.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from hydra.core.utils import JobReturn
    from hydra.plugins.launcher import Launcher
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")
#: the monitor mode (metrics.json ``monitor_mode``) each direction expects
_MODE = {"maximize": "max", "minimize": "min"}


@dataclass(frozen=True)
class SearchOptions:
    """``hydra.sweeper`` of ``configs/hydra/sweeper/optuna.yaml``."""

    sampler: str = "tpe"
    direction: str = "maximize"
    n_trials: int = 20
    n_jobs: int = 1  # trials per launch: in parallel with a parallel launcher (hydra/launcher=joblib)
    seed: int | None = None
    n_startup_trials: int = 10  # TPE: random trials before the model of good and bad values takes over
    params: Mapping[str, Any] = field(default_factory=dict)
    study_name: str | None = None
    storage: str | None = None  # e.g. sqlite:///search.db: a study to continue in a later sweep

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> SearchOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known - {"_target_"})
        if unknown:
            raise ConfigError(f"unknown hydra.sweeper option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        opts = cls(**{k: v for k, v in options.items() if k in known})
        if opts.sampler not in SAMPLERS:
            raise ConfigError(f"hydra.sweeper.sampler={opts.sampler} is not one of {', '.join(SAMPLERS)}")
        if opts.direction not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction={opts.direction} is not one of {', '.join(DIRECTIONS)}")
        if int(opts.n_trials) < 1 or int(opts.n_jobs) < 1:
            raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1")
        return opts


def _parse(key: str, value: Any) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = value if isinstance(value, str) else repr(value)
    try:
        return OverridesParser.create().parse_overrides([f"{key}={text}"])[0]
    except Exception as e:  # noqa: BLE001 - Hydra's parse errors span several lines
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"hydra.sweeper.params.{key}={text} does not parse ({first}); "
                          "use interval(a, b), tag(log, interval(a, b)), range(a, b) or choice(x, y)") from None


def distribution(key: str, sweep: Any) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one Hydra sweep value (``ChoiceSweep``, ``RangeSweep``, ``IntervalSweep``)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    log_scale = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution([c if isinstance(c, (bool, int, float, str)) or c is None else str(c)
                                        for c in sweep.list])
    if isinstance(sweep, RangeSweep):
        values = list(range(int(sweep.start), int(sweep.stop), int(sweep.step))) if all(
            isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)) else None
        if not values:
            raise ConfigError(f"hydra.sweeper.params.{key}: range() takes integers and at least one value")
        step = int(sweep.step)
        if log_scale and step != 1:
            raise ConfigError(f"hydra.sweeper.params.{key}: a log range needs step 1")
        return IntDistribution(min(values), max(values), step=abs(step), log=log_scale)
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if low >= high or (log_scale and low <= 0):
            raise ConfigError(f"hydra.sweeper.params.{key}: interval({low}, {high}) needs low < high"
                              + (" and low > 0 for a log scale" if log_scale else ""))
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    raise ConfigError(f"hydra.sweeper.params.{key}: not a search space; "
                      "use interval(a, b), tag(log, interval(a, b)), range(a, b) or choice(x, y)")


def search_space(params: Mapping[str, Any], arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The distributions (``hydra.sweeper.params`` updated by the command line's sweep overrides) and
    the command line's other overrides, which every trial takes as they are."""
    space = {str(k): distribution(str(k), _parse(str(k), v).value()) for k, v in params.items()}
    fixed = []
    for arg in arguments:
        override = _parse(arg.split("=", 1)[0], arg.split("=", 1)[1]) if "=" in arg else None
        if override is not None and override.is_sweep_override():
            space[override.get_key_element()] = distribution(override.get_key_element(), override.value())
        else:
            fixed.append(arg)
    if not space:
        raise ConfigError("nothing to search: set hydra.sweeper.params (hparams_search=...) or give a range "
                          "on the command line, e.g. 'optimizer.lr=tag(log, interval(1e-4, 1e-1))'")
    return space, fixed


def _sampler(opts: SearchOptions) -> optuna.samplers.BaseSampler:
    import optuna

    if opts.sampler == "random":
        return optuna.samplers.RandomSampler(seed=opts.seed)
    return optuna.samplers.TPESampler(seed=opts.seed, n_startup_trials=int(opts.n_startup_trials))


def _override(key: str, value: Any) -> str:
    if value is None:
        return f"{key}=null"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"  # repr: the float exactly


def _run_dir(ret: JobReturn) -> Path | None:
    try:
        return Path(str(ret.hydra_cfg.hydra.runtime.output_dir))  # type: ignore[union-attr]
    except AttributeError:
        return None


def _value(ret: JobReturn) -> float | None:
    """The trial's objective: ``train.py``'s return value, None for a failed or non-finite trial."""
    from hydra.core.utils import JobStatus

    if ret.status != JobStatus.COMPLETED:
        return None
    value = ret.return_value
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _check_direction(opts: SearchOptions, info: Mapping[str, Any]) -> None:
    """``info``: :func:`zoo.sweep.monitored` of a trial."""
    mode = info.get("mode")
    if mode is not None and mode != _MODE[opts.direction]:
        other = next(d for d, m in _MODE.items() if m == mode)
        monitor = info.get("monitor") or "the monitor"
        raise ConfigError(f"hydra.sweeper.direction={opts.direction}, but the trials monitor {monitor} "
                          f"(mode {mode}); set hydra.sweeper.direction={other}")


def run_search(options: Mapping[str, Any], arguments: Sequence[str], config: DictConfig, launcher: Launcher,
               validate: Callable[[Sequence[Sequence[str]]], None]) -> list[Sequence[JobReturn]]:
    """The sweep of :class:`hydra_plugins.zoo_optuna_sweeper.OptunaSweeper`; a :class:`ConfigError`
    is one ``error:`` line and exit status 2, like a run's."""
    try:
        from zoo.extras import require

        require("search", "hyperparameter search (hydra/sweeper=optuna)")
        return _run(SearchOptions.from_dict(options), arguments, config, launcher, validate)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


def _run(opts: SearchOptions, arguments: Sequence[str], config: DictConfig, launcher: Launcher,
         validate: Callable[[Sequence[Sequence[str]]], None]) -> list[Sequence[JobReturn]]:
    import optuna
    from omegaconf import OmegaConf

    from zoo import sweep as zoo_sweep

    space, fixed = search_space(opts.params, arguments)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=opts.study_name, storage=opts.storage, load_if_exists=opts.storage is not None,
                                sampler=_sampler(opts), direction=opts.direction)
    log.info("search: %d trials, %s sampler (seed %s), %s over %s", opts.n_trials, opts.sampler, opts.seed,
             opts.direction, ", ".join(space))
    returns: list[Sequence[JobReturn]] = []
    trials: list[dict[str, Any]] = []
    done = 0
    while done < int(opts.n_trials) and not zoo_sweep.interrupted():
        batch = [study.ask(space) for _ in range(min(int(opts.n_jobs), int(opts.n_trials) - done))]
        overrides = [[*fixed, *(_override(k, v) for k, v in trial.params.items())] for trial in batch]
        validate(overrides)
        results = launcher.launch(overrides, initial_job_idx=done)
        for trial, ret in zip(batch, results):
            value, run_dir = _value(ret), _run_dir(ret)
            info = zoo_sweep.monitored(run_dir / "metrics.json") if run_dir is not None else {}
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                _check_direction(opts, info)
                study.tell(trial, value)
            trials.append({"number": done, "params": trial.params, "value": value,
                           "run_dir": None if run_dir is None else str(run_dir), "monitor": info.get("monitor")})
            done += 1
        returns.append(results)
    report(trials, space, opts.direction, sweep_dir)
    return returns


def best_trial(trials: Sequence[Mapping[str, Any]], direction: str) -> Mapping[str, Any] | None:
    scored = [t for t in trials if t["value"] is not None]
    if not scored:
        return None
    return (max if direction == "maximize" else min)(scored, key=lambda t: t["value"])


def report(trials: Sequence[Mapping[str, Any]], space: Mapping[str, Any], direction: str, sweep_dir: Path) -> None:
    """``best.yaml``, ``search.png`` and ``tensorboard/`` in the sweep directory (module docstring)."""
    from omegaconf import OmegaConf

    from zoo.engine.utils import write_atomic

    best = best_trial(trials, direction)
    monitor = next((t["monitor"] for t in trials if t.get("monitor")), None) or "objective"
    if best is None:
        log.warning("search: no trial finished with a value")
        return
    summary = {"monitor": monitor, "direction": direction, "best_value": best["value"], "best_trial": best["number"],
               "best_run_dir": best["run_dir"], "best_params": dict(best["params"]),
               "trials": len(trials), "failed": sum(t["value"] is None for t in trials)}
    write_atomic(sweep_dir / "best.yaml", lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(summary))))
    figure = search_figure(trials, space, monitor, best)
    write_atomic(sweep_dir / "search.png", lambda f: figure.savefig(f, format="png", dpi=100), binary=True)
    _tensorboard(trials, figure, monitor, sweep_dir / "tensorboard")
    import matplotlib.pyplot as plt

    plt.close(figure)
    params = " ".join(_override(k, v) for k, v in best["params"].items())
    log.info("search: best %s %.6g in trial %d (%s); %s", monitor, best["value"], best["number"], params,
             sweep_dir / "best.yaml")


def search_figure(trials: Sequence[Mapping[str, Any]], space: Mapping[str, Any], monitor: str,
                  best: Mapping[str, Any]) -> Any:
    """The monitored metric against each hyperparameter, one panel each: log axes for log ranges,
    categories side by side, failed trials left out, the best trial in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.distributions import CategoricalDistribution

    names = list(space)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    scored = [t for t in trials if t["value"] is not None]
    for ax, name in zip(axes[0], names):
        dist = space[name]
        xs = [t["params"][name] for t in scored]
        if isinstance(dist, CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels)
        else:
            if getattr(dist, "log", False):
                ax.set_xscale("log")
            ax.set_xlim(dist.low, dist.high)  # the whole range: where the trials fell in it
        ax.scatter(xs, [t["value"] for t in scored], s=18, color="tab:blue")
        best_x = best["params"][name]
        ax.scatter([labels.index(str(best_x)) if isinstance(dist, CategoricalDistribution) else best_x], [best["value"]],
                   s=40, color="tab:red", label=f"best (trial {best['number']})")
        ax.set_xlabel(name)
        ax.set_ylabel(monitor)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{monitor} of {len(scored)} trials")
    fig.tight_layout()
    return fig


def _tensorboard(trials: Sequence[Mapping[str, Any]], figure: Any, monitor: str, logdir: Path) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an install option of torch
        return
    writer = SummaryWriter(str(logdir))
    try:
        writer.add_figure(f"search/{monitor}", figure, close=False)
        for t in trials:
            if t["value"] is not None:
                hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in t["params"].items()}
                writer.add_hparams(hparams, {f"hparam/{monitor}": t["value"]}, run_name=f"trial-{t['number']}")
    finally:
        writer.close()
