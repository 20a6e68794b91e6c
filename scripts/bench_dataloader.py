#!/usr/bin/env python
"""Samples/s of the in-memory fast path against a default ``torch.utils.data.DataLoader``.

Same data (CIFAR-shaped: uint8 3x32x32 images, 10 classes), same augmentation (random horizontal
flip + random 32x32 crop of the image padded by 4, the flip_crop preset), same normalisation and
batch size. The fast path is zoo's ``TensorLoader`` with the batched ops; the baseline is a
``DataLoader`` over a dataset applying the equivalent ``torchvision.transforms.v2`` pipeline per
sample (``num_workers=0``, the default, and with workers). Each loader is iterated for whole epochs
and every batch is materialised (on the GPU, synchronised).

    OMP_NUM_THREADS=1 python scripts/bench_dataloader.py [--n 20000] [--epochs 2] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.data.augment import Compose, parse_augmentation  # noqa: E402
from zoo.data.loaders import TensorLoader  # noqa: E402
from zoo.data.sources import to_float  # noqa: E402
from zoo.data.stats import Normalize, stats_of  # noqa: E402

AUGMENTATION = {"ops": {"hflip": {"p": 0.5}, "random_crop": {"padding": 4}}}


class UInt8Images(Dataset):
    """Per-sample view of the same uint8 tensors, through a v2 pipeline."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Any) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.x[i]), int(self.y[i])


def samples_per_second(loader: Iterable[Any], epochs: int, device: torch.device) -> float:
    """Whole epochs after one warm-up batch; every batch moved to ``device``."""
    next(iter(loader))
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images (CIFAR-10 has 50,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="workers of the second DataLoader run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (args.n,), generator=gen)
    stats = stats_of([to_float(x)], "channel")
    normalize = Normalize(stats)
    ops = parse_augmentation(AUGMENTATION)
    per_sample = v2.Compose([*(op.v2(32) for op in ops), v2.ToDtype(torch.float32, scale=True), normalize])
    batched = Compose([to_float, *ops, normalize])

    cpu = torch.device("cpu")
    rows: dict[str, float] = {}
    rows["DataLoader, v2 per sample, num_workers=0 (default)"] = samples_per_second(
        DataLoader(UInt8Images(x, y, per_sample), batch_size=args.batch_size, shuffle=True), args.epochs, cpu)
    if args.workers:
        rows[f"DataLoader, v2 per sample, num_workers={args.workers}"] = samples_per_second(
            DataLoader(UInt8Images(x, y, per_sample), batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                       persistent_workers=True), args.epochs, cpu)
    rows["zoo TensorLoader, batched ops, CPU"] = samples_per_second(
        TensorLoader(x, y, args.batch_size, shuffle=True, transform=batched), args.epochs, cpu)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        rows["DataLoader, v2 per sample, num_workers=0, to GPU"] = samples_per_second(
            DataLoader(UInt8Images(x, y, per_sample), batch_size=args.batch_size, shuffle=True, pin_memory=True),
            args.epochs, gpu)
        rows[f"zoo TensorLoader, batched ops, on GPU ({torch.cuda.get_device_name()})"] = samples_per_second(
            TensorLoader(x, y, args.batch_size, shuffle=True, transform=batched).to(gpu), args.epochs, gpu)

    base = rows["DataLoader, v2 per sample, num_workers=0 (default)"]
    print(f"{args.n} CIFAR-shaped images, batch {args.batch_size}, flip + pad-4 crop + normalise, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| loader | samples/s | vs default DataLoader |\n|---|---:|---:|")
    for name, rate in rows.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "batch_size": args.batch_size, "samples_per_s": rows}, indent=2))


if __name__ == "__main__":
    main()
