#!/usr/bin/env python
"""Measure the foundation targets (issue 2) and print a Markdown report.

1. ``python train.py`` with defaults, as a user runs it: wall time and test accuracy (several seeds).
2. Trainer overhead: time per optimizer step of the shared trainer against a hand-written PyTorch
   loop over the same model, data, augmentation, optimizer, schedule and batch size (interleaved
   repeats, median).

    python scripts/measure_foundation.py [--seeds 42 1 2] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_run(seed: int | None, workdir: Path) -> dict[str, float]:
    run_dir = workdir / f"default_{seed}"
    args = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}"] + ([f"seed={seed}"] if seed is not None else [])
    t0 = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"seed": seed, "wall_s": wall, "test_acc": metrics["test"]["acc"], "fit_s": metrics["fit_time_s"]}


def trainer_step_time(workdir: Path, epochs: int) -> tuple[float, float]:
    """Seconds per optimizer step inside the trainer's training epochs (default config): the mean
    over the run, and that of its fastest epoch (the least disturbed by other load)."""
    from hydra import compose, initialize_config_dir

    from zoo.pipeline import train

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={workdir / f'trainer_{time.time_ns()}'}",
                                          f"trainer.max_epochs={epochs}", "test=false"])
    result = train(cfg)
    times = [h["time/epoch_s"] for h in result["history"]]
    per_epoch = result["global_step"] / len(times)
    return sum(times) / result["global_step"], min(times) / per_epoch


def hand_loop_step_time(epochs: int) -> tuple[float, float]:
    """The same work written as a plain PyTorch loop (mean and fastest epoch, as above)."""
    import torch
    import torch.nn.functional as F

    from zoo.data import build_datamodule
    from zoo.engine.optim import Schedule
    from zoo.models import create_model

    torch.manual_seed(42)
    data = build_datamodule({"name": "digits", "batch_size": 64, "image_size": 32},
                            {"name": "affine", "degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]})
    model = create_model("lenet5", num_classes=10, in_chans=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    sched = Schedule(opt, {"name": "onecycle"}, len(data.train), epochs)
    augment_and_normalize = data.train.transform  # the same per-batch work as the trainer's loader
    x_all, y_all = data.train.x, data.train.y
    steps, total, fastest = 0, 0.0, float("inf")
    for epoch in range(epochs):
        model.train()
        gen = torch.Generator().manual_seed(epoch)
        t0 = time.perf_counter()
        order = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(x_all), 64):
            idx = order[i : i + 64]
            x, y = augment_and_normalize(x_all[idx], gen), y_all[idx]
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step_batch()
            steps += 1
        total += time.perf_counter() - t0
        fastest = min(fastest, (time.perf_counter() - t0) / -(-len(x_all) // 64))
    return total / steps, fastest


def fixed_overhead(repeats: int) -> tuple[float, float]:
    """Seconds per step of the trainer (default callbacks) and of a hand-written loop on a one-layer
    model, where the framework's own per-step cost is all there is to time (fastest epoch of each)."""
    import torch
    import torch.nn.functional as F
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from zoo.data.types import DataModule
    from zoo.data.loaders import TensorLoader
    from zoo.engine.callbacks import build_callbacks
    from zoo.engine.optim import Schedule
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.classification import ClassificationTask

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        callbacks = OmegaConf.to_container(compose("train").callbacks)
    x, y, steps = torch.randn(64 * 200, 8), torch.randint(0, 2, (64 * 200,)), 200

    def trainer() -> float:
        torch.manual_seed(0)
        task = ClassificationTask(torch.nn.Linear(8, 2), 2, label_smoothing=0.1)
        small = TensorLoader(x[:64], y[:64], 64)
        data = DataModule(TensorLoader(x, y, 64, shuffle=True), small, small, 2, 8, 1, ["a", "b"], [0.0], [1.0])
        with tempfile.TemporaryDirectory() as tmp:
            fit = Trainer(TrainerConfig(max_epochs=3, device="cpu"), tmp, callbacks=build_callbacks(callbacks)).fit(
                task, data, {"name": "adam", "lr": 1e-3}, {"name": "onecycle"})
        return min(h["time/epoch_s"] for h in fit["history"]) / steps

    def hand() -> float:
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched, fastest = Schedule(opt, {"name": "onecycle"}, steps, 3), float("inf")
        for epoch in range(3):
            t0 = time.perf_counter()
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
            for i in range(0, len(x), 64):
                idx = order[i : i + 64]
                loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step_batch()
            fastest = min(fastest, (time.perf_counter() - t0) / steps)
        return fastest

    t, h = [], []
    for _ in range(repeats):
        t.append(trainer())
        h.append(hand())
    return min(t), min(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per overhead measurement")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [default_run(None, work)] + [default_run(s, work) for s in args.seeds if s != 42]
        report["default_runs"] = runs
        trainer, hand = [], []
        for _ in range(args.repeats):  # interleaved so load changes hit both alike
            trainer.append(trainer_step_time(work, args.epochs))
            hand.append(hand_loop_step_time(args.epochs))
    fixed_t, fixed_h = fixed_overhead(args.repeats)
    t, h = statistics.median(m for m, _ in trainer), statistics.median(m for m, _ in hand)
    tf, hf = min(f for _, f in trainer), min(f for _, f in hand)
    report["overhead"] = {"trainer_ms_per_step": 1e3 * t, "hand_loop_ms_per_step": 1e3 * h, "ratio": t / h,
                          "fastest_epoch_ratio": tf / hf, "fixed_overhead_us": 1e6 * (fixed_t - fixed_h),
                          "fixed_share": (fixed_t - fixed_h) / tf, "trainer_all": trainer, "hand_all": hand}

    print("## `python train.py` (LeNet-5, digits, defaults)\n")
    print("| seed | test accuracy | wall time (s) | fit time (s) |\n|---|---|---|---|")
    for r in runs:
        print(f"| {r['seed'] if r['seed'] is not None else '42 (default)'} | {100 * r['test_acc']:.2f}% | {r['wall_s']:.1f} | {r['fit_s']:.1f} |")
    print("\n## Trainer overhead per optimizer step (median of", args.repeats, "interleaved repeats)\n")
    print("| estimate | trainer | hand-written loop | ratio |\n|---|---|---|---|")
    print(f"| median of the runs' mean step | {1e3 * t:.3f} ms | {1e3 * h:.3f} ms | {t / h:.3f} |")
    print(f"| fastest epoch of all runs | {1e3 * tf:.3f} ms | {1e3 * hf:.3f} ms | {tf / hf:.3f} |")
    print(f"\nFixed per-step cost of the trainer (a one-layer model, fastest epochs): {1e6 * (fixed_t - fixed_h):.0f} us "
          f"({1e6 * fixed_t:.0f} vs {1e6 * fixed_h:.0f} us per step), {100 * (fixed_t - fixed_h) / tf:.1f}% of a LeNet-5 step.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
