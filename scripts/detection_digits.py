#!/usr/bin/env python
"""Faster R-CNN on the digit scenes: ResNet-20 backbone from scratch vs pretrained on the digits.

Trains the backbone classifier (``experiment=fasterrcnn_digit_scenes_backbone``), then
``fasterrcnn_digit_scenes`` (scratch) and ``fasterrcnn_digit_scenes_pretrained`` for the same epochs
(each of ``--epochs``), one run at a time, and prints (or writes into README.md) a Markdown table of
the test mAP@0.5, mAP@[.5:.95] and training times.

    OMP_NUM_THREADS=1 python scripts/detection_digits.py                     # 5 epochs, as the experiments
    OMP_NUM_THREADS=1 python scripts/detection_digits.py --epochs 5 1 --update-readme

Hydra overrides after ``--`` go to every detector run. Runs go to OUT/<variant>_<epochs>ep[_<overrides>]
and finished ones are reused, never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_results import REPO, split_overrides, update_readme  # noqa: E402

VARIANTS = {"scratch": "fasterrcnn_digit_scenes", "pretrained": "fasterrcnn_digit_scenes_pretrained"}
START, END = "<!-- detection:start -->", "<!-- detection:end -->"


def run(experiment: str, run_dir: Path, overrides: list[str]) -> dict:
    """Metrics of ``experiment`` run into ``run_dir`` (reused when it already finished)."""
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, str(REPO / "train.py"), f"experiment={experiment}", f"hydra.run.dir={run_dir}",
               *overrides]
        print(f"running {' '.join(cmd[1:])}", file=sys.stderr)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise SystemExit(f"error: {experiment} {' '.join(overrides)} failed: {tail[0]}")
    return json.loads(metrics.read_text())


def table(results: dict[tuple[str, int], dict]) -> str:
    lines = ["| backbone | epochs | test mAP@0.5 | test mAP@[.5:.95] | best val mAP@[.5:.95] (epoch) | training time |",
             "|---|---:|---:|---:|---:|---:|"]
    for (variant, _), r in results.items():
        lines.append(f"| {variant} | {r['epochs_run']} | {r['test']['map50']:.3f} | {r['test']['map']:.3f} | "
                     f"{r['best/val/map']:.3f} ({r['best_epoch']}) | {r['fit_time_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    argv, overrides = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "detection_digits")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, nargs="+", default=[5], help="training epochs of each pair of runs")
    parser.add_argument("--update-readme", action="store_true", help=f"write the table between {START} and {END}")
    args = parser.parse_args(argv)

    backbone = args.out / "backbone"
    acc = run("fasterrcnn_digit_scenes_backbone", backbone, [])["test"]["acc"]
    print(f"backbone classifier: test accuracy {100 * acc:.2f}%", file=sys.stderr)
    suffix = "_" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", "_".join(overrides)) if overrides else ""
    results = {}
    for epochs in args.epochs:
        for variant in args.variants:
            extra = [f"trainer.max_epochs={epochs}"]
            if variant == "pretrained":
                extra.append(f"model.backbone_pretrained={backbone / 'checkpoints' / 'best.pt'}")
            results[variant, epochs] = run(VARIANTS[variant], args.out / f"{variant}_{epochs}ep{suffix}", [*extra, *overrides])
    text = table(results)
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
