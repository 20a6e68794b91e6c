#!/usr/bin/env python
"""Transfer learning on the embedded digits: pretrain on digits 0-4, then learn digits 5-9 from 10
labelled images per class from scratch, with a linear probe, by fine-tuning the last stage, by
fine-tuning everything (pretrained layers at the full rate and at the notes' 0.1x) and by gradual
unfreezing; for each chosen model, over several seeds (each draws other training images and
initialisations). Writes a Markdown table of the mean and standard deviation of the test accuracy.

    python scripts/transfer_digits.py                                   # AlexNet small + VGG16 small, seeds 0-4
    python scripts/transfer_digits.py --models alexnet_small --seeds 0 1 2
    python scripts/transfer_digits.py --update-readme

Every run is ``python train.py experiment=transfer_digits_<variant> model=<m> optimizer.lr=<lr> seed=<s>``
in its own process and directory (OUT/<model>/<variant>/seed<s>; finished runs are reused, never
overwritten); the pretraining run is ``experiment=transfer_digits_pretrain model=<m>`` (OUT/<model>/pretrain).
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

#: Adam learning rate of each model (pretraining and fine-tuning), from its digits experiment
MODELS = {"alexnet_small": 0.002, "vgg16_small": 0.001}
#: variant -> (experiment, extra overrides, learning-rate factor, description)
VARIANTS: dict[str, tuple[str, list[str], float, str]] = {
    "scratch": ("scratch", [], 1.0, "from scratch"),
    "linear_probe": ("linear_probe", [], 5.0, "linear probe (classifier only, 5x lr)"),
    "finetune_last": ("finetune_last", [], 1.0, "fine-tune last stage + classifier"),
    "finetune_all": ("finetune_all", [], 1.0, "fine-tune all"),
    "finetune_all_0.1x": ("finetune_all", ["transfer.backbone_lr_mult=0.1"], 1.0,
                          "fine-tune all, pretrained layers at 0.1x lr"),
    "gradual": ("gradual", [], 1.0, "gradual unfreezing (one stage every 8 epochs)"),
}
START, END = "<!-- transfer:start -->", "<!-- transfer:end -->"


def run(experiment: str, run_dir: Path, overrides: list[str], threads: int) -> dict:
    """Metrics of ``experiment`` run into ``run_dir`` (reused when it already finished)."""
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, str(REPO / "train.py"), f"experiment={experiment}", f"hydra.run.dir={run_dir}",
               "logger=none", *overrides]
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise SystemExit(f"error: {experiment} {' '.join(overrides)} failed: {tail[0]}")
    result = json.loads(metrics.read_text())
    print(f"  {run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir}: test acc {100 * result['test']['acc']:.1f}%",
          file=sys.stderr)
    return result


def table(results: dict[tuple[str, str], list[dict]], pretrain: dict[str, dict]) -> str:
    """Mean ± std of the test accuracy per model and variant, and the difference to scratch paired by
    seed (same seed = same 50 training images), with how many seeds it is better / equal / worse."""
    lines = ["| model (0-4 pretraining test acc) | variant | trainable parameters (at the start) | test top-1 on 5-9, mean ± std "
             "| vs scratch, same seed: mean Δ (better/equal/worse) | runs |", "|---|---|---:|---:|---:|---:|"]
    for (model, variant), runs in results.items():
        accs = [100 * r["test"]["acc"] for r in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        paired = ""
        scratch = {Path(r["run_dir"]).name: 100 * r["test"]["acc"] for r in results.get((model, "scratch"), [])}
        deltas = [a - scratch[Path(r["run_dir"]).name] for a, r in zip(accs, runs) if Path(r["run_dir"]).name in scratch]
        if variant != "scratch" and deltas:
            counts = (sum(d > 1e-9 for d in deltas), sum(abs(d) <= 1e-9 for d in deltas), sum(d < -1e-9 for d in deltas))
            paired = f"{statistics.mean(deltas):+.1f} ({'/'.join(map(str, counts))})"
        lines.append(f"| `{model}` ({100 * pretrain[model]['test']['acc']:.1f}%) | `{variant}`: {VARIANTS[variant][3]} | "
                     f"{runs[0]['trainable_params']:,} | {statistics.mean(accs):.1f}% ± {std:.1f} | {paired} | {len(runs)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"models (known rates: {MODELS})")
    parser.add_argument("--lr", type=float, default=None, help="Adam rate for a model not in the list above")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "transfer_digits")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each with OMP_NUM_THREADS=1)")
    parser.add_argument("--update-readme", action="store_true", help=f"write the table between {START} and {END}")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown and args.lr is None:
        parser.error(f"no learning rate known for {unknown}; pass --lr")

    results: dict[tuple[str, str], list[dict]] = {}
    pretrain: dict[str, dict] = {}
    for model in args.models:
        lr = MODELS.get(model, args.lr)
        base = [f"model={model}"]
        pretrain[model] = run("transfer_digits_pretrain", args.out / model / "pretrain", [*base, f"optimizer.lr={lr}"],
                              threads=args.jobs)
        pretrained = args.out / model / "pretrain" / "checkpoints" / "best.pt"
        jobs = [(v, s) for v in args.variants for s in args.seeds]

        def one(job: tuple[str, int], model: str = model, lr: float = lr, pretrained: Path = pretrained) -> dict:
            variant, seed = job
            experiment, extra, factor, _ = VARIANTS[variant]
            overrides = [f"model={model}", f"optimizer.lr={lr * factor:g}", f"seed={seed}", *extra]
            if variant != "scratch":
                overrides.append(f"model.pretrained={pretrained}")
            return run(f"transfer_digits_{experiment}", args.out / model / variant / f"seed{seed}", overrides, 1)

        with ThreadPoolExecutor(args.jobs) as pool:
            done = list(pool.map(one, jobs))
        for (variant, _), metrics in zip(jobs, done):
            results.setdefault((model, variant), []).append(metrics)
    text = table(results, pretrain)
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
