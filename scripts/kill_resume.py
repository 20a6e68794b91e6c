#!/usr/bin/env python
"""Kill a training run at random moments (SIGKILL: no handler runs, possibly mid-checkpoint-write),
resume it from ``last.pt`` each time, and check the final weights and metrics equal those of an
uninterrupted run.

    python scripts/kill_resume.py                      # LeNet-5 on digits, 4 kills
    python scripts/kill_resume.py --kills 6 --seed 3 -- model=resnet20 trainer.max_epochs=4
    python scripts/kill_resume.py -- trainer.max_epochs=6 'callbacks=[default,swa]'   # the averaged and the raw weights

Runs use ``trainer.deterministic=true`` on CPU and a periodic mid-epoch checkpoint
(``callbacks.checkpoint.every_n_steps``) so kills land both inside epochs and between them.
Exit status 0 when the resumed run matches exactly, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

BASE = ["trainer.device=cpu", "trainer.deterministic=true", "logger=none",
        "trainer.max_epochs=20", "callbacks.checkpoint.every_n_steps=7"]


def launch(run_dir: Path, overrides: list[str], ckpt: Path | None) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *BASE, *overrides]
    if ckpt is not None:
        args.append(f"ckpt_path={ckpt}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> int:
    from zoo_results import split_overrides

    argv, extra = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from zoo.engine.checkpoint import load_checkpoint

    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    t0 = time.perf_counter()
    ref = launch(work / "reference", extra, None)
    if ref.wait() != 0:
        print(ref.stderr.read().decode() if ref.stderr else "", file=sys.stderr)
        return 1
    duration = time.perf_counter() - t0
    ref_metrics_all = json.loads((work / "reference" / "metrics.json").read_text())
    fit_time = float(ref_metrics_all["fit_time_s"])
    total_steps = int(ref_metrics_all["global_step"])
    print(f"uninterrupted run: {duration:.1f} s ({fit_time:.1f} s training, {total_steps} steps)")

    ckpt: Path | None = None
    kills, attempt, done = 0, 0, 0
    while True:
        attempt += 1
        run_dir = work / f"attempt_{attempt}"
        proc = launch(run_dir, extra, ckpt)
        if kills < args.kills:
            # once this attempt has written its first checkpoint, kill it somewhere in the training left
            last = run_dir / "checkpoints" / "last.pt"
            while not last.exists() and proc.poll() is None:
                time.sleep(0.01)
            remaining = fit_time * (1 - done / total_steps)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.6) * remaining)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        code = proc.wait()
        last = run_dir / "checkpoints" / "last.pt"
        if last.exists():
            state = load_checkpoint(last)  # never torn: raises if a kill left a corrupt file
            where = state.get("partial_epoch")
            pos = f"epoch {where['epoch'] + 1} batch {where['batches']}" if where else f"end of epoch {state['epoch'] + 1}"
            done = int(state["global_step"])
            print(f"attempt {attempt}: exit {code}, last.pt at step {done} ({pos})")
            ckpt = last
        else:
            print(f"attempt {attempt}: exit {code}, no new checkpoint")
        if code == 0:
            break

    ref_state = load_checkpoint(work / "reference" / "checkpoints" / "last.pt")
    final = load_checkpoint(ckpt)  # type: ignore[arg-type]
    weights = [key for key in ("model", "training_model") if key in ref_state]  # weight averaging: both
    same = all(torch.equal(final[key][k], v) for key in weights for k, v in ref_state[key].items())
    ref_metrics = ref_metrics_all["test"]
    run_metrics = json.loads((work / f"attempt_{attempt}" / "metrics.json").read_text())["test"]
    print(f"kills: {kills}; final weights identical: {same}; test metrics {run_metrics} vs {ref_metrics}")
    return 0 if same and run_metrics == ref_metrics else 1


if __name__ == "__main__":
    sys.exit(main())
