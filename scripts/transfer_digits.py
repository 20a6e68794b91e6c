#!/usr/bin/env python
"""Transfer learning on the embedded digits: pretrain ResNet-20 on digits 0-4, then learn digits 5-9
from 10 labelled images per class from scratch, with a linear probe, by fine-tuning the last stage,
by fine-tuning everything (pretrained layers at a tenth of the rate) and by gradual unfreezing; over
several seeds (each draws other training images and initialisations). Writes a Markdown table of
the mean and standard deviation of the test accuracy.

    python scripts/transfer_digits.py                      # seeds 0 1 2, 2 runs at a time
    python scripts/transfer_digits.py --seeds 0 1 2 3 4 --update-readme

Every run is ``python train.py experiment=transfer_digits_<variant> seed=<s>`` in its own process and
directory (OUT/<variant>/seed<s>; finished runs are reused, never overwritten).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_results import REPO, update_readme  # noqa: E402

VARIANTS = {
    "scratch": "from scratch",
    "linear_probe": "linear probe (classifier only)",
    "finetune_last": "fine-tune last stage + classifier",
    "finetune_all": "fine-tune all, pretrained layers at 0.1x lr",
    "gradual": "gradual unfreezing (one stage every 8 epochs)",
}
START, END = "<!-- transfer:start -->", "<!-- transfer:end -->"


def run(experiment: str, run_dir: Path, overrides: list[str], threads: int) -> dict:
    """Metrics of ``experiment`` run into ``run_dir`` (reused when it already finished)."""
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, str(REPO / "train.py"), f"experiment={experiment}", f"hydra.run.dir={run_dir}",
               "trainer.progress_bar=false", "logger=none", *overrides]
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise SystemExit(f"error: {experiment} {' '.join(overrides)} failed: {tail[0]}")
    result = json.loads(metrics.read_text())
    print(f"  {run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir}: test acc {100 * result['test']['acc']:.1f}%",
          file=sys.stderr)
    return result


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| variant | trainable parameters (at the start) | test top-1, mean ± std | runs |", "|---|---:|---:|---:|"]
    for variant, runs in results.items():
        accs = [100 * r["test"]["acc"] for r in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| `{variant}`: {VARIANTS[variant]} | {runs[0]['trainable_params']:,} | "
                     f"{statistics.mean(accs):.1f}% ± {std:.1f} | {len(runs)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "transfer_digits")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each with OMP_NUM_THREADS=1)")
    parser.add_argument("--update-readme", action="store_true", help=f"write the table between {START} and {END}")
    args = parser.parse_args()

    pretrained = args.out / "pretrain" / "checkpoints" / "best.pt"
    run("transfer_digits_pretrain", args.out / "pretrain", [], threads=args.jobs)
    common = [f"model.pretrained={pretrained}"]
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda job: run(f"transfer_digits_{job[0]}", args.out / job[0] / f"seed{job[1]}",
                                             [f"seed={job[1]}", *(common if job[0] != "scratch" else [])], 1), jobs))
    results: dict[str, list[dict]] = {}
    for (variant, _), metrics in zip(jobs, done):
        results.setdefault(variant, []).append(metrics)
    text = table(results)
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
