#!/usr/bin/env python
"""What ``callbacks=[default,diagnostics]`` costs: the training time per epoch of LeNet-5 on digits without the
callback, with it once per epoch (its default), and on every optimizer step (its worst case), TensorBoard logging
in all. Per configuration: the median over the epochs after the first (warm-up), the least of ``--rounds`` rounds
(run interleaved, so that other load on the machine spoils every configuration alike, and the least is the least
disturbed).

    OMP_NUM_THREADS=2 python scripts/diagnostics_cost.py [--epochs 3] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from zoo.cli import register_resolvers  # noqa: E402
from zoo.pipeline import train  # noqa: E402

COMMON = ["model=lenet5", "data=digits", "augmentation=none", "test=false", "logger=tensorboard",
          "logger.tensorboard.log_graph=false"]
VARIANTS = {
    "off": ["callbacks=none"],
    "every epoch": ["callbacks=[none,diagnostics]"],
    "every step": ["callbacks=[none,diagnostics]", "callbacks.diagnostics.every_n_epochs=null",
                   "callbacks.diagnostics.every_n_steps=1"],
    "every step, no histograms": ["callbacks=[none,diagnostics]", "callbacks.diagnostics.every_n_epochs=null",
                                  "callbacks.diagnostics.every_n_steps=1", "callbacks.diagnostics.histograms=false"],
}


def epoch_seconds(overrides: list[str], epochs: int) -> list[float]:
    """``time/epoch_s`` of each epoch of one run (the training loop: the diagnostics happen inside it)."""
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp}", f"trainer.max_epochs={epochs}", *COMMON, *overrides])
        return [row["time/epoch_s"] for row in train(cfg)["history"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    register_resolvers()
    epoch_seconds(VARIANTS["every step"], 1)  # warm every code path once
    results: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, overrides in VARIANTS.items():
            times = epoch_seconds(overrides, args.epochs)
            results[name] = min(results.get(name, float("inf")), statistics.median(times[1:] or times))
    base = results["off"]
    print(f"LeNet-5 on digits, {args.epochs} epochs, median training time per epoch after the first, least of "
          f"{args.rounds} rounds:")
    for name, seconds in results.items():
        print(f"  {name:<28} {seconds * 1000:7.1f} ms  ({seconds / base:4.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
