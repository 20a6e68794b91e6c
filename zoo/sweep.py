"""Sweeps that survive failing jobs (``python train.py -m ...``).

* :func:`run_job` runs one job of a multirun for :func:`zoo.cli.guarded`. A failing job is recorded
  (``<job>/error.txt``, plus ``traceback.txt`` for a bug) and the sweep goes on with the next job.
  After a job stopped by SIGINT/SIGTERM the remaining jobs are not run.
* :class:`SweepSummary` is a Hydra callback (``configs/hydra/default.yaml``). At the end of a
  multirun it writes ``summary.csv`` and ``summary.md`` into the sweep directory (best job first;
  for jobs that differ only in ``data.fold``, the mean and standard deviation over the folds, also in
  ``cross_validation.csv``) and prints a final ``sweep:`` line.
* :func:`exit_status` is the exit status once the sweep is over: 128+N after signal N, 1 if a job
  hit a bug, 2 if jobs failed on user errors only, 0 otherwise (and outside a multirun).

The jobs may run in this process (Hydra's basic launcher, one after the other), in parallel worker
processes (``hydra/launcher=joblib``) or on a cluster (``hydra/launcher=submitit_slurm``): each
leaves its row in ``<job>/job.json`` and the summary is assembled from those files.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from zoo.errors import TrainingInterrupted, ZooError

OK, FAILED, INTERRUPTED, NOT_RUN = "ok", "failed", "interrupted", "not run"
COLUMNS = ["job", "overrides", "status", "monitor", "best", "test", "wall_s", "error"]
EXIT_BUG = 1
#: what each job leaves in its directory for the summary (jobs may run in other processes or machines)
JOB_FILE = "job.json"


@dataclass
class _Outcome:
    status: str = OK
    error: str = ""
    code: int = 0


@dataclass
class _Sweep:
    """What this process's jobs have reported: the last job's outcome (taken by
    :meth:`SweepSummary.on_job_end`) and the exit codes of the failed jobs."""

    outcome: _Outcome | None = None
    codes: list[int] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return any(code >= 128 for code in self.codes)


_sweep = _Sweep()


def in_sweep() -> bool:
    """Whether this is a job of a multirun (``-m``), whichever launcher runs it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def interrupted() -> bool:
    """Whether a job of this sweep was stopped by a signal (the remaining jobs are not run)."""
    return _sweep.interrupted


def exit_status() -> int:
    """The process's exit status after the jobs it ran (see the module docstring)."""
    signals = [code for code in _sweep.codes if code >= 128]
    if signals:
        return signals[0]
    return EXIT_BUG if EXIT_BUG in _sweep.codes else max(_sweep.codes, default=0)


def _write(path: Path, text: str) -> None:
    from zoo.engine.utils import write_atomic

    write_atomic(path, lambda f: f.write(text))


def _failed(job_dir: Path, status: str, message: str, code: int) -> None:
    line = f"error: {message}"
    if code != EXIT_BUG:  # a bug's traceback is already on stderr
        print(line, file=sys.stderr, flush=True)
    _write(job_dir / "error.txt", line + "\n")
    _sweep.outcome = _Outcome(status, message, code)
    _sweep.codes.append(code)


def run_job(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one multirun job: its return value, or ``None`` after recording why it failed."""
    from hydra.core.hydra_config import HydraConfig

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    if _sweep.interrupted:
        _sweep.outcome = _Outcome(NOT_RUN)
        return None
    try:
        value = fn(*args, **kwargs)
    except TrainingInterrupted as e:
        _failed(job_dir, INTERRUPTED, str(e), e.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        _failed(job_dir, INTERRUPTED, "interrupted by SIGINT", 128 + signal.SIGINT)
    except ZooError as e:
        _failed(job_dir, FAILED, str(e), e.exit_code)
    except Exception as e:  # noqa: BLE001 - a bug: keep its traceback, go on with the next job
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        _write(job_dir / "traceback.txt", trace)
        _failed(job_dir, FAILED, f"{type(e).__name__}: {e}", EXIT_BUG)
    else:
        _sweep.outcome = _Outcome(OK)
        return value
    return None


def monitored(path: Path) -> dict[str, Any]:
    """The monitored metric, its best value, its test value and its mode from a job's ``metrics.json``
    (empty without one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    monitor, best = next(((k[len("best/"):], v) for k, v in data.items() if k.startswith("best/")), (None, None))
    if monitor is None:
        return {}
    test = (data.get("test") or {}).get(monitor.split("/", 1)[-1])
    return {"monitor": monitor, "best": best, "test": test, "mode": data.get("monitor_mode")}


def best_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs with the best monitored value first, when they all monitor one metric in one mode
    (jobs without a value last); otherwise in job order."""
    scored = [r for r in rows if isinstance(r.get("best"), (int, float))]
    kinds = {(r.get("monitor"), r.get("mode")) for r in scored}
    if len(kinds) != 1 or next(iter(kinds))[1] not in ("min", "max"):
        return rows
    sign = -1.0 if next(iter(kinds))[1] == "max" else 1.0
    return sorted(scored, key=lambda r: sign * float(r["best"])) + [r for r in rows if r not in scored]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _common(overrides: list[list[str]]) -> list[str]:
    """The overrides every job shares (none for a single job)."""
    if len(overrides) < 2:
        return []
    return [o for o in overrides[0] if all(o in job for job in overrides[1:])]


FOLD = "data.fold="
CV_COLUMNS = ["overrides", "folds", "monitor", "best_mean", "best_std", "test_mean", "test_std"]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def cross_validation(rows: list[dict[str, Any]], common: list[str]) -> list[dict[str, Any]]:
    """One row per group of jobs that differ only in ``data.fold``: the folds that finished and the
    mean and sample standard deviation of their best and test values (k-fold cross-validation,
    :mod:`zoo.data.folds`)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if any(o.startswith(FOLD) for o in row["overrides"]):
            rest = " ".join(o for o in row["overrides"] if not o.startswith(FOLD) and o not in common)
            groups.setdefault(rest, []).append(row)
    out = []
    for rest, jobs in groups.items():
        done = [j for j in jobs if j["status"] == OK and isinstance(j.get("best"), (int, float))]
        if len(jobs) < 2 or not done:
            continue
        best_mean, best_std = _mean_std([float(j["best"]) for j in done])
        test_mean, test_std = _mean_std([float(j["test"]) for j in done if isinstance(j.get("test"), (int, float))])
        out.append({"overrides": rest or "-", "folds": f"{len(done)} of {len(jobs)}", "monitor": done[0].get("monitor"),
                    "best_mean": best_mean, "best_std": best_std, "test_mean": test_mean, "test_std": test_std})
    return out


def _pm(mean: Any, std: Any) -> str:
    return "" if mean is None else f"{mean:.4g} ± {std:.2g}"


def _final_line(rows: list[dict[str, str]], summary: Path, cv: list[dict[str, Any]] | None = None) -> str:
    n = len(rows)
    failed = [r for r in rows if r["status"] == FAILED]
    parts = []
    if failed:
        listed = "; ".join(f"job {r['job']}: {r['overrides']}: {r['error']}" for r in failed[:3])
        more = f"; {len(failed) - 3} more" if len(failed) > 3 else ""
        parts.append(f"{len(failed)} of {n} jobs failed ({listed}{more})")
    stopped = next((r for r in rows if r["status"] == INTERRUPTED), None)
    if stopped:
        not_run = sum(r["status"] == NOT_RUN for r in rows)
        parts.append(f"interrupted in job {stopped['job']} ({stopped['overrides']}), {not_run} of {n} jobs not run")
    if not parts:
        parts.append(f"{n} of {n} jobs ok")
    if cv and len(cv) == 1:
        test = f" (test {_pm(cv[0]['test_mean'], cv[0]['test_std'])})" if cv[0]["test_mean"] is not None else ""
        parts.append(f"{cv[0]['monitor']} {_pm(cv[0]['best_mean'], cv[0]['best_std'])} over {cv[0]['folds']} folds{test}")
    return f"sweep: {', '.join(parts)}; summary in {summary}"


def _markdown(rows: list[dict[str, str]], common: list[str], sweep_dir: Path, cv: list[dict[str, Any]]) -> str:
    lines = [f"# sweep {sweep_dir}", ""]
    if common:
        lines += [f"every job: `{' '.join(common)}`", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|").replace("\n", " ") for c in COLUMNS) + " |" for r in rows]
    if cv:
        lines += ["", "## cross-validation (mean ± sample standard deviation over the folds)", "",
                  "| overrides | folds | monitor | best | test |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {g['overrides']} | {g['folds']} | {g['monitor']} | {_pm(g['best_mean'], g['best_std'])} | "
                  f"{_pm(g['test_mean'], g['test_std'])} |" for g in cv]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Hydra callback: a row per multirun job; at the end ``summary.csv``, ``summary.md`` (job,
    overrides, status, monitored metric, best and test value, wall time, error) and a final line.

    Each job writes its row to ``<job>/job.json`` where it runs, and the sweep reads them back from
    the sweep directory at the end, so the summary and the exit status hold whichever launcher ran
    the jobs (in this process, joblib's workers, Slurm nodes sharing the directory)."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        completed = job_return.status == JobStatus.COMPLETED
        outcome = _sweep.outcome or _Outcome(OK if completed else FAILED, "" if completed else
                                             f"{type(job_return._return_value).__name__}: {job_return._return_value}",
                                             0 if completed else EXIT_BUG)
        _sweep.outcome = None
        job_dir = Path(config.hydra.runtime.output_dir)
        row = {"job": int(config.hydra.job.num), "overrides": list(job_return.overrides or []),
               "status": outcome.status, "code": outcome.code,
               "wall_s": None if outcome.status == NOT_RUN else round(time.perf_counter() - self._started, 1),
               "error": outcome.error, **monitored(job_dir / "metrics.json")}
        job_dir.mkdir(parents=True, exist_ok=True)
        _write(job_dir / JOB_FILE, json.dumps(row) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = []
        for path in sweep_dir.glob(f"**/{JOB_FILE}"):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        if not found:
            return
        found.sort(key=lambda r: r["job"])
        _sweep.codes = [int(r.get("code", 0)) for r in found if r.get("code")]  # the jobs may have run elsewhere
        jobs = best_first(found)
        common = _common([r["overrides"] for r in jobs])
        rows = [{c: _cell(r.get(c)) for c in COLUMNS} for r in jobs]
        for row, job in zip(rows, jobs):  # what sets each job apart
            row["overrides"] = " ".join(o for o in job["overrides"] if o not in common)

        def write_csv(f: Any) -> None:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

        from zoo.engine.utils import write_atomic

        write_atomic(sweep_dir / "summary.csv", write_csv)
        cv = cross_validation(jobs, common)
        if cv:
            def write_cv(f: Any) -> None:
                writer = csv.DictWriter(f, CV_COLUMNS)
                writer.writeheader()
                writer.writerows([{c: _cell(g[c]) for c in CV_COLUMNS} for g in cv])

            write_atomic(sweep_dir / "cross_validation.csv", write_cv)
        _write(sweep_dir / "summary.md", _markdown(rows, common, sweep_dir, cv))
        print(_final_line(rows, sweep_dir / "summary.md", cv), file=sys.stderr, flush=True)
