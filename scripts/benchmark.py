#!/usr/bin/env python
"""Benchmark registered models on synthetic input: training and inference throughput, step time,
peak memory, parameters and FLOPs; optionally against torchvision's implementation of the same
architecture and against a hand-written training loop (the shared trainer's overhead).

    python scripts/benchmark.py resnet18 vgg16 --batch-size 32 --steps 20
    python scripts/benchmark.py 'resnet*' --input-size 64 --csv bench.csv
    python scripts/benchmark.py resnet50 --device cuda --precision bf16 --channels-last --torchvision
    python scripts/benchmark.py lenet5 --trainer-overhead

Timings are medians over ``--repeats`` repeats of ``--steps`` steps each after
``--warmup`` steps (CUDA timings synchronise). FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` for one forward pass of one sample (multiply-add = 2).
With ``--torchvision`` both models hold the same weights (the zoo's, loaded by parameter name) and
their repeats alternate, the order flipping each repeat.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from zoo.models import create_model, list_models, model_info  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return int(counter.get_total_flops())


class Bench:
    """One model's training and inference steps on a fixed synthetic batch."""

    def __init__(self, model: nn.Module, args: argparse.Namespace, size: int, device: torch.device) -> None:
        self.device = device
        self.model = model.to(device)
        self.x = torch.randn(args.batch_size, args.in_chans, size, size, device=device)
        self.y = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[args.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16")
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.fwd = torch.compile(self.model) if args.compile else self.model

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def train_step(self) -> None:
        self.model.train()
        with self._autocast():
            out = self.fwd(self.x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = nn.functional.cross_entropy(logits.float(), self.y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step(self) -> None:
        self.model.eval()
        with self._autocast():
            self.fwd(self.x)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _build(name: str, args: argparse.Namespace, source: str) -> nn.Module:
    torch.manual_seed(0)
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=args.num_classes)
    return create_model(name, num_classes=args.num_classes, in_chans=args.in_chans)


def _times(benches: list[Bench], args: argparse.Namespace, device: torch.device) -> list[tuple[float, float]]:
    """Median (train, inference) step seconds of each bench; with several, the repeats alternate between
    them and their order flips each repeat, so drifts of the machine (heat, other load) hit all alike."""
    train: list[list[float]] = [[] for _ in benches]
    infer: list[list[float]] = [[] for _ in benches]
    for r in range(args.repeats):
        order = range(len(benches)) if r % 2 == 0 else reversed(range(len(benches)))
        for k in order:
            train[k].append(_timed(benches[k].train_step, args.steps, args.warmup, device))
            infer[k].append(_timed(benches[k].infer_step, args.steps, args.warmup, device))
    return [(statistics.median(t), statistics.median(i)) for t, i in zip(train, infer)]


def bench_model(name: str, args: argparse.Namespace, device: torch.device, source: str = "zoo",
                timed: tuple[Bench, tuple[float, float]] | None = None) -> dict[str, Any]:
    """The row of one model; ``timed`` passes a bench already timed (by :func:`compare_torchvision`)."""
    size = args.input_size or model_info(name)["input_size"]
    if timed is None:
        bench = Bench(_build(name, args, source), args, size, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        (t, i), = _times([bench], args, device)
    else:
        bench, (t, i) = timed
    params = sum(p.numel() for p in bench.model.parameters())
    flops = forward_flops(bench.model, bench.x)
    return {
        "model": name, "impl": source, "device": str(device), "precision": args.precision,
        "channels_last": args.channels_last, "batch_size": args.batch_size, "input_size": size,
        "params": params, "gflops_per_sample": flops / 1e9,
        "train_step_ms": 1e3 * t, "train_samples_s": args.batch_size / t,
        "infer_step_ms": 1e3 * i, "infer_samples_s": args.batch_size / i,
        "peak_memory_mb": _peak_memory_mb(device),
    }


def compare_torchvision(name: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The zoo model and torchvision's of the same name, holding the same weights (the zoo's, loaded by
    name: the architectures match key for key) and timed in alternating repeats."""
    size = args.input_size or model_info(name)["input_size"]
    zoo_model, tv_model = _build(name, args, "zoo"), _build(name, args, "torchvision")
    tv_model.load_state_dict(zoo_model.state_dict())
    benches = [Bench(zoo_model, args, size, device), Bench(tv_model, args, size, device)]
    benches[1].x, benches[1].y = benches[0].x, benches[0].y
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = _times(benches, args, device)
    zoo = bench_model(name, args, device, "zoo", (benches[0], times[0]))
    tv = bench_model(name, args, device, "torchvision", (benches[1], times[1]))
    zoo["vs_torchvision_train"] = zoo["train_step_ms"] / tv["train_step_ms"]
    zoo["vs_torchvision_infer"] = zoo["infer_step_ms"] / tv["infer_step_ms"]
    return [zoo, tv]


def trainer_overhead(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Seconds per step of the shared trainer vs a hand-written loop on the same synthetic data."""
    import tempfile

    from zoo.data.types import DataModule
    from zoo.data.loaders import TensorLoader
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.classification import ClassificationTask

    size = args.input_size or model_info(name)["input_size"]
    n = args.batch_size * args.steps
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, args.in_chans, size, size, generator=gen).to(device)
    y = torch.randint(0, args.num_classes, (n,), generator=gen).to(device)
    precision = args.precision

    def run_trainer() -> float:
        torch.manual_seed(0)
        task = ClassificationTask(create_model(name, num_classes=args.num_classes, in_chans=args.in_chans), args.num_classes)
        loader = TensorLoader(x, y, args.batch_size, shuffle=True)
        data = DataModule(loader, TensorLoader(x[:0], y[:0], 1), TensorLoader(x[:0], y[:0], 1), args.num_classes,
                          args.in_chans, size, [str(c) for c in range(args.num_classes)], [0.0], [1.0])
        cfg = TrainerConfig(max_epochs=2, device=str(device), precision=precision, channels_last=args.channels_last)
        with tempfile.TemporaryDirectory() as tmp:
            fit = Trainer(cfg, tmp).fit(task, data, {"name": "momentum", "lr": 1e-3}, {"name": "none"})
        return fit["history"][-1]["time/epoch_s"] / len(loader)  # second epoch: warm

    def run_hand() -> float:
        torch.manual_seed(0)
        bench = Bench(create_model(name, num_classes=args.num_classes, in_chans=args.in_chans), args, size, device)
        loader = TensorLoader(x, y, args.batch_size, shuffle=True)
        per_epoch = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            _sync(device)
            t0 = time.perf_counter()
            for bench.x, bench.y in loader:
                bench.train_step()
            _sync(device)
            per_epoch.append((time.perf_counter() - t0) / len(loader))
        return per_epoch[-1]

    trainer, hand = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        trainer.append(run_trainer())
        hand.append(run_hand())
    t, h = statistics.median(trainer), statistics.median(hand)
    return {"model": name, "trainer_step_ms": 1e3 * t, "hand_loop_step_ms": 1e3 * h, "overhead_ratio": t / h}


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:,.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool)
                                else str(v) for v in r.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="registered names or wildcards ('resnet*')")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=None, help="default: the model's registered input size")
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["32", "bf16", "16"], default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torchvision", action="store_true", help="also time torchvision's model of the same name")
    parser.add_argument("--trainer-overhead", action="store_true", help="shared trainer vs a hand-written loop")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    names = sorted({n for pattern in args.models for n in list_models(pattern)})
    if not names:
        sys.exit(f"error: no registered model matches {args.models}; see python -m zoo list")

    rows: list[dict[str, Any]] = []
    overhead: list[dict[str, Any]] = []
    for name in names:
        if args.torchvision:
            import torchvision

            if name in torchvision.models.list_models():
                rows += compare_torchvision(name, args, device)
                continue
        rows.append(bench_model(name, args, device))
        if args.trainer_overhead:
            overhead.append(trainer_overhead(name, args, device))
    if args.trainer_overhead:
        overhead += [trainer_overhead(r["model"], args, device) for r in rows if r["impl"] == "zoo" and "vs_torchvision_train" in r]

    _print_table(rows)
    if overhead:
        print()
        _print_table(overhead)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        args.json.write_text(json.dumps({"models": rows, "trainer_overhead": overhead}, indent=2))


if __name__ == "__main__":
    main()
