#!/usr/bin/env python
"""Model selection on the embedded digits, for the README's table: the default LeNet-5 run against
the best of a random search, 5-fold cross-validation, single models against a 3-model ensemble, a
snapshot ensemble and weight averaging (EMA, SWA).

Every step is the command a user runs (``train.py``, ``train.py -m``/``hparams_search``,
``evaluate.py``), each in its own process and directory under ``--out``; finished steps are reused.

    python scripts/model_selection_digits.py
    python scripts/model_selection_digits.py --trials 20 --update-readme
    python scripts/model_selection_digits.py --from-runs            # the table from finished runs only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from zoo_results import REPO, update_readme

START, END = "<!-- selection:start -->", "<!-- selection:end -->"
SEEDS = (1, 2, 3)
SNAPSHOT = ("scheduler=cosine_restarts", "scheduler.t_0=10", "scheduler.t_mult=1", "callbacks.checkpoint.snapshots=true")


def run(script: str, args: list[str], done: Path, threads: int, from_runs: bool) -> bool:
    """``python <script> args`` unless ``done`` exists; whether ``done`` exists afterwards."""
    if done.exists() or from_runs:
        return done.exists()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not done.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        print(f"  {script} {' '.join(args)}: FAILED ({tail[0]})", file=sys.stderr)
        return False
    return True


def metrics(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "selection")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--from-runs", action="store_true")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    out, threads, cached = args.out.resolve(), args.threads, args.from_runs
    rows: list[tuple[str, str, str, str]] = []

    def train(name: str, *overrides: str) -> dict[str, Any] | None:
        done = out / name / "metrics.json"
        ok = run("train.py", [*overrides, f"hydra.run.dir={out / name}"], done, threads, cached)
        return metrics(done) if ok else None

    default = train("default")
    if default:
        rows.append(("default config (LeNet-5, Adam 5e-3)", "`python train.py`", pct(default["test"]["acc"]),
                     f"val {pct(default['best/val/acc'])}"))

    search = out / "search"
    if run("train.py", ["hparams_search=digits_lenet5", f"hydra.sweeper.n_trials={args.trials}",
                        f"hydra.sweep.dir={search}"], search / "best.yaml", threads, cached):
        from omegaconf import OmegaConf

        best = OmegaConf.load(search / "best.yaml")
        trial = metrics(Path(best.best_run_dir) / "metrics.json")
        values = ", ".join(f"{k.split('.')[-1]} {v:.3g}" for k, v in best.best_params.items())
        rows.append((f"best of {best.trials} random trials ({values})",
                     f"`python train.py hparams_search=digits_lenet5 hydra.sweeper.n_trials={args.trials}`",
                     pct(trial["test"]["acc"]), f"val {pct(best.best_value)} (chosen on it)"))

    cv = out / "cv5"
    if run("train.py", ["-m", "data.folds=5", "data.fold=range(5)", f"hydra.sweep.dir={cv}"],
           cv / "cross_validation.csv", threads, cached):
        with open(cv / "cross_validation.csv", newline="") as f:
            (row,) = list(csv.DictReader(f))
        rows.append(("5-fold cross-validation, mean ± std", "`python train.py -m data.folds=5 'data.fold=range(5)'`",
                     f"{100 * float(row['test_mean']):.2f} ± {100 * float(row['test_std']):.2f}%",
                     f"val {100 * float(row['best_mean']):.2f} ± {100 * float(row['best_std']):.2f}%"))

    members = [(seed, train(f"seed{seed}", f"seed={seed}")) for seed in SEEDS]
    finished = [(seed, m) for seed, m in members if m]
    for seed, m in finished:
        rows.append((f"single model, seed {seed}", f"`python train.py seed={seed}`", pct(m["test"]["acc"]), ""))
    if len(finished) == len(SEEDS):
        ckpts = ",".join(m["best_checkpoint"] for _, m in finished)
        done = out / "ensemble" / "metrics.json"
        if run("evaluate.py", [f"ckpt_path=[{ckpts}]", f"hydra.run.dir={out / 'ensemble'}"], done, threads, cached):
            rows.append((f"ensemble of the {len(SEEDS)} seeds (mean probability)",
                         "`python evaluate.py 'ckpt_path=[<seed1>/best.pt,<seed2>/best.pt,<seed3>/best.pt]'`",
                         pct(metrics(done)["ensemble"]["acc"]), "members " + ", ".join(
                             pct(m["test"]["acc"]) for m in metrics(done)["members"])))

    snap = train("snapshot", *SNAPSHOT)
    if snap:
        rows.append(("SGDR, 4 cycles of 10 epochs: its best checkpoint", f"`python train.py {' '.join(SNAPSHOT)}`",
                     pct(snap["test"]["acc"]), ""))
        done = out / "snapshot_ensemble" / "metrics.json"
        if run("evaluate.py", [f"ckpt_path={out / 'snapshot' / 'checkpoints'}", f"hydra.run.dir={out / 'snapshot_ensemble'}"],
               done, threads, cached):
            rows.append((f"snapshot ensemble of its {len(metrics(done)['members'])} cycle ends",
                         "`python evaluate.py ckpt_path=<run>/checkpoints`", pct(metrics(done)["ensemble"]["acc"]), ""))

    for name, option in (("ema", "callbacks=[default,ema]"), ("swa", "callbacks=[default,swa]")):
        m = train(name, option)
        if m:
            rows.append((f"weight averaging: {name.upper()}", f"`python train.py {option}`", pct(m["test"]["acc"]),
                         f"val {pct(m['best/val/acc'])}"))

    if not rows:
        raise SystemExit("error: no finished runs to tabulate")
    lines = ["| setting | command | test top-1 | note |", "|---|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(lines)
    print(text)
    if args.update_readme:
        update_readme(text, START, END)
        if (search / "search.png").exists():  # the README's figure of the search
            shutil.copyfile(search / "search.png", REPO / "docs" / "search_digits_lenet5.png")


if __name__ == "__main__":
    main()
