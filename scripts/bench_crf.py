#!/usr/bin/env python
"""Dense-CRF time per image on the CPU: local-window message passing against the naive all-pairs
implementation, on the same digit-scene images (:class:`zoo.models.crf.DenseCRF`, ``window=None``).

Unaries are the one-hot ground truth plus Gaussian noise (11 labels); both versions run the same
number of mean-field iterations with the same kernel parameters. Reported: milliseconds per image
(median of ``--repeats``), and how far the local result is from the exact all-pairs one (mean absolute
difference of the marginals, and the fraction of pixels whose label differs).

    OMP_NUM_THREADS=1 python scripts/bench_crf.py                  # sides 32, 64, 96
    OMP_NUM_THREADS=1 python scripts/bench_crf.py --sizes 32 64 --window 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, not an installed one

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from zoo.data.scenes import digit_scenes  # noqa: E402
from zoo.models.crf import DenseCRF  # noqa: E402


def scene(size: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``size`` x ``size`` digit scene and noisy unaries from its mask (ignored rim: background)."""
    splits = digit_scenes(image_size=size, min_scale=max(4, size // 4), max_scale=max(4, size * 7 // 16), max_digits=2,
                          train_scenes=4, val_scenes=0, test_scenes=0, normalize="none")
    image, target = splits.train[0]
    mask = target["mask"].clamp(max=10)
    logits = 3.0 * F.one_hot(mask, 11).permute(2, 0, 1).float()
    logits += noise * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    return image[None], logits[None]


def time_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96], help="image sides in pixels")
    parser.add_argument("--window", type=int, default=5, help="local message-passing radius")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--noise", type=float, default=2.0, help="std of the noise added to the unaries")
    args = parser.parse_args()
    params = {"w1": 1.0, "w2": 0.5, "theta_alpha": 8.0, "theta_beta": 20.0, "theta_gamma": 1.0, "iterations": args.iterations}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.iterations} mean-field iterations, "
          f"11 labels, kernel {params}")
    print(f"| image | pixels | local window {2 * args.window + 1}x{2 * args.window + 1} (ms) | all pairs (ms) | speed-up | "
          "mean marginal difference | labels that differ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    local, dense = DenseCRF(11, window=args.window, **params), DenseCRF(11, window=None, **params)
    for size in args.sizes:
        image, logits = scene(size, args.noise)
        with torch.no_grad():
            q_local, q_dense = local(logits, image).exp(), dense(logits, image).exp()
            t_local = time_ms(lambda: local(logits, image), args.repeats)
            t_dense = time_ms(lambda: dense(logits, image), args.repeats)
        diff = float((q_local - q_dense).abs().mean())
        flips = float((q_local.argmax(1) != q_dense.argmax(1)).float().mean())
        print(f"| {size}x{size} | {size * size:,} | {t_local:.1f} | {t_dense:.1f} | {t_dense / t_local:.1f}x | {diff:.3f} | "
              f"{100 * flips:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
