#!/usr/bin/env python
"""Train LeNet-5 on the embedded digits with each augmentation preset and write the README's
augmentation table.

Every row is ``python train.py augmentation=<preset> seed=<s>`` (LeNet-5, Adam 5e-3, one-cycle, 40
epochs, cross-entropy with label smoothing 0.1: plain ``python train.py`` but for the augmentation) in
its own process and run directory OUT/<row>/seed<s>; finished runs are reused, never overwritten. Test
accuracy (best-validation weights) and training time come from each run's ``metrics.json``.

    python scripts/augment_digits.py                       # every row, seeds 0 1 2
    python scripts/augment_digits.py --rows none mixup --seeds 0
    python scripts/augment_digits.py --update-readme       # rewrite the table between the markers
    python scripts/augment_digits.py --from-runs           # table from finished runs only

Options after ``--`` go to every run as Hydra overrides (e.g. ``-- trainer.device=cuda``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from zoo_results import REPO, finished, publish, split_overrides, train_run

START, END = "<!-- augment:start -->", "<!-- augment:end -->"
#: row name -> (augmentation choice, what it is)
ROWS: dict[str, tuple[str, str]] = {
    "none": ("none", "no augmentation"),
    "digits": ("digits", "random affine (the default)"),
    "mixup": ("mixup", "MixUp, alpha 0.2"),
    "cutmix": ("cutmix", "CutMix, alpha 1"),
    "mixup_cutmix": ("[mixup,cutmix]", "MixUp or CutMix per batch"),
    "randaugment": ("randaugment", "RandAugment, 2 ops, magnitude 9"),
    "trivialaugment": ("trivialaugment", "TrivialAugment (wide)"),
    "autoaugment": ("autoaugment", "AutoAugment, ImageNet policy"),
    "autoaugment_svhn": ("autoaugment", "AutoAugment, SVHN policy"),
    "random_erasing": ("random_erasing", "random erasing, p 0.25"),
    "digits_random_erasing": ("[digits,random_erasing]", "random affine + random erasing"),
    "digits_mixup": ("[digits,mixup]", "random affine + MixUp"),
    "digits_trivialaugment": ("[digits,trivialaugment]", "random affine + TrivialAugment"),
}
#: extra overrides of a row
EXTRA: dict[str, tuple[str, ...]] = {"autoaugment_svhn": ("augmentation.ops.autoaugment.policy=svhn",)}


def run_dir(out: Path, row: str, seed: int) -> Path:
    return out / row / f"seed{seed}"


def table(rows: list[tuple[str, list[dict]]]) -> str:
    """Mean ± standard deviation of the test accuracy over the seeds, and the mean training time."""
    lines = ["| `augmentation=` | what | test top-1, mean ± std | train time (s) | seeds |",
             "|---|---|---:|---:|---:|"]
    for row, runs in rows:
        accs = [100 * m["test"]["acc"] for m in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        choice = ROWS[row][0] + "".join(f" {o}" for o in EXTRA.get(row, ()))
        lines.append(f"| `{choice}` | {ROWS[row][1]} | {statistics.mean(accs):.1f}% ± {std:.1f} | "
                     f"{statistics.mean(m['fit_time_s'] for m in runs):.0f} | {len(runs)} |")
    return "\n".join(lines)


def main() -> None:
    argv, overrides = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "augment")
    parser.add_argument("--from-runs", action="store_true", help="only tabulate runs already under --out")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS per run")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)

    rows = []
    for row in args.rows:
        runs = []
        for seed in args.seeds:
            directory = run_dir(args.out, row, seed)
            cmd = [f"augmentation={ROWS[row][0]}", *EXTRA.get(row, ()), f"seed={seed}", "logger=none", *overrides]
            metrics = finished(directory) if args.from_runs else train_run(directory, cmd, args.threads)
            if metrics is not None and "test" in metrics:
                print(f"  {row} seed {seed}: test acc {100 * metrics['test']['acc']:.1f}% "
                      f"in {metrics['fit_time_s']:.0f} s", file=sys.stderr)
                runs.append(metrics)
        if runs:
            rows.append((row, runs))
    publish(rows, table, args.update_readme, START, END)


if __name__ == "__main__":
    main()
