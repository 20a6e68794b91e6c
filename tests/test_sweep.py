"""Multirun sweeps through the real command line: a failing job is recorded and the sweep goes on,
the exit status says a job failed, and every sweep ends with summary.csv and summary.md."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli, sigterm_once_written
from zoo import sweep

#: one short epoch per job
QUICK = ["trainer.max_epochs=1", "logger=none", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2"]


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_sweep(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    sweep_dir = tmp_path / "sweep"
    return run_cli("train.py", "-m", *args, *QUICK, f"hydra.sweep.dir={sweep_dir}"), sweep_dir


def final_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    proc, sweep_dir = run_sweep(tmp_path, "optimizer.lr=-1,0.01")
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = "optimizer.lr must be > 0, got -1.0"
    assert (sweep_dir / "0" / "error.txt").read_text() == f"error: {error}\n"
    assert f"error: {error}" in proc.stderr.splitlines()
    assert not (sweep_dir / "0" / "traceback.txt").exists() and "Traceback" not in proc.stderr
    metrics = json.loads((sweep_dir / "1" / "metrics.json").read_text())  # job 1 ran
    summary = sweep_dir / "summary.md"
    assert final_line(proc) == f"sweep: 1 of 2 jobs failed (job 0: optimizer.lr=-1: {error}); summary in {summary}"

    ok, failed = read_summary(sweep_dir)  # best first, failed jobs last
    assert [failed[c] for c in ("job", "overrides", "status", "error")] == ["0", "optimizer.lr=-1", "failed", error]
    assert failed["best"] == failed["test"] == ""
    assert [ok[c] for c in ("job", "overrides", "status", "monitor")] == ["1", "optimizer.lr=0.01", "ok", "val/acc"]
    assert ok["error"] == ""
    assert float(ok["best"]) == pytest.approx(metrics["best/val/acc"], rel=1e-5)
    assert float(ok["test"]) == pytest.approx(metrics["test"]["acc"], rel=1e-5)
    assert float(ok["wall_s"]) > 0
    table = summary.read_text().splitlines()
    assert "| job | overrides | status | monitor | best | test | wall_s | error |" in table
    assert any(line.startswith("| 0 | optimizer.lr=-1 | failed |") and line.endswith(f"| {error} |") for line in table)
    row = f"| 1 | optimizer.lr=0.01 | ok | val/acc | {ok['best']} | {ok['test']} |"
    assert any(line.startswith(row) for line in table)


def test_a_nonfinite_loss_fails_its_job_and_the_next_one_runs(tmp_path: Path) -> None:
    proc, sweep_dir = run_sweep(tmp_path, "optimizer=sgd", "scheduler=none", "optimizer.lr=1e30,0.01", "test=false")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "training loss became NaN/inf" in (sweep_dir / "0" / "error.txt").read_text()
    assert (sweep_dir / "1" / "metrics.json").is_file()
    ok, failed = read_summary(sweep_dir)  # best first, failed jobs last
    assert (failed["job"], failed["status"], ok["job"], ok["status"]) == ("0", "failed", "1", "ok")
    nan = f"sweep: 1 of 2 jobs failed (job 0: {failed['overrides']}: training loss became NaN/inf"
    assert final_line(proc).startswith(nan)


def test_a_bug_in_a_job_keeps_its_traceback_and_exits_1(tmp_path: Path) -> None:
    callbacks = "tests.helpers.BuggyCallback,zoo.engine.callbacks.Callback"  # job 0 hits a bug, job 1 does not
    proc, sweep_dir = run_sweep(tmp_path, f"+callbacks.extra._target_={callbacks}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" in proc.stderr and "RuntimeError: a bug in a callback" in proc.stderr
    trace = (sweep_dir / "0" / "traceback.txt").read_text()
    assert trace.startswith("Traceback") and "on_fit_start" in trace
    assert (sweep_dir / "0" / "error.txt").read_text() == "error: RuntimeError: a bug in a callback\n"
    rows = read_summary(sweep_dir)
    assert [(r["status"], r["error"]) for r in rows] == [("ok", ""), ("failed", "RuntimeError: a bug in a callback")]


def test_a_signal_stops_the_sweep_and_lists_the_jobs_not_run(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    last = sweep_dir / "0" / "checkpoints" / "last.pt"
    returncode, err = sigterm_once_written("train.py", last, "-m", "trainer.max_epochs=200,1,1", "logger=none",
                                           f"hydra.sweep.dir={sweep_dir}")
    assert returncode == 128 + signal.SIGTERM, err[-3000:]
    rows = read_summary(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "interrupted"), ("1", "not run"), ("2", "not run")]
    assert "stopped by SIGTERM" in rows[0]["error"] and f"ckpt_path={last}" in rows[0]["error"]
    assert not (sweep_dir / "1" / "metrics.json").exists()
    stopped = "interrupted in job 0 (trainer.max_epochs=200), 2 of 3 jobs not run"
    assert err.strip().splitlines()[-1] == f"sweep: {stopped}; summary in {sweep_dir / 'summary.md'}"


@pytest.mark.parametrize("codes, status", [([], 0), ([2, 2], 2), ([2, 1, 2], 1), ([2, 143, 1], 143)])
def test_exit_status_after_the_jobs(monkeypatch: pytest.MonkeyPatch, codes: list[int], status: int) -> None:
    monkeypatch.setattr(sweep, "_sweep", sweep._Sweep(codes=codes))
    assert sweep.exit_status() == status


@pytest.mark.parametrize("launcher", [pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], marks=pytest.mark.slow),
                                      pytest.param(["hydra/launcher=submitit_local"], marks=pytest.mark.slow)],
                         ids=["joblib", "submitit_local"])
def test_the_summary_and_exit_status_hold_with_other_launchers(tmp_path: Path, launcher: list[str]) -> None:
    """Jobs in joblib's worker processes, or submitted through submitit (its local executor standing
    in for Slurm): each job's row comes back through its job.json."""
    proc, sweep_dir = run_sweep(tmp_path, *launcher, "optimizer.lr=-1,0.01")
    assert proc.returncode == 2, proc.stderr[-3000:]
    rows = read_summary(sweep_dir)
    assert [(r["job"], r["status"]) for r in rows] == [("1", "ok"), ("0", "failed")]
    assert rows[1]["error"] == "optimizer.lr must be > 0, got -1.0" and rows[0]["monitor"] == "val/acc"
    assert final_line(proc).startswith("sweep: 1 of 2 jobs failed (job 0: optimizer.lr=-1: ")
