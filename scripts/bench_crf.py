#!/usr/bin/env python
"""Dense-CRF time per image on the CPU: Krähenbühl's densecrf (the ``pydensecrf`` package, when
installed: ``pip install pydensecrf2``) against every message passing of :class:`zoo.models.crf.DenseCRF`
(``lattice``, ``window``, and ``exact`` up to ``--exact-max`` pixels), on the same images, unaries and
parameters.

Images are synthetic RGB scenes (:func:`scene`: coloured ellipses of random labels on a shaded
background, with pixel noise); unaries the one-hot labels plus Gaussian noise. The kernel defaults to
DeepLab v2's CRF (``configs/data/voc_seg.yaml``). Reported: milliseconds per image (the fastest of
``--repeats``, every method timed in turn), and for each zoo method the fraction of labels equal to the
reference's and the mean absolute difference of the marginals (against ``exact`` without pydensecrf).

    OMP_NUM_THREADS=1 python scripts/bench_crf.py                         # 64x64, 96x96, 256x256, 500x375
    OMP_NUM_THREADS=1 python scripts/bench_crf.py --update-readme         # also rewrite README's table
    OMP_NUM_THREADS=1 python scripts/bench_crf.py --sizes 128x128 --labels 5 --window 3
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, not an installed one
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from zoo_results import update_readme  # noqa: E402

from zoo.models.crf import DenseCRF, reference_marginals  # noqa: E402

START, END = "<!-- bench_crf:start -->", "<!-- bench_crf:end -->"

DEEPLAB = {"w1": 4.0, "theta_alpha": 67.0, "theta_beta": 3.0, "w2": 3.0, "theta_gamma": 1.0, "iterations": 10}


def scene(height: int, width: int, labels: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(1, 3, H, W)`` 8-bit RGB scene (values 0..255, both reached) and ``(1, labels, H, W)`` noisy unaries."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    mask = torch.zeros(height, width, dtype=torch.long)
    colours = torch.rand(labels, 3, generator=g) * 200 + 30
    image = colours[0].view(3, 1, 1) * (0.7 + 0.3 * xs / width)
    for _ in range(max(2, height * width // 4000)):
        cy, cx = torch.rand(2, generator=g) * torch.tensor([height, width])
        ry, rx = (0.05 + 0.2 * torch.rand(2, generator=g)) * torch.tensor([height, width])
        inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
        label = int(torch.randint(1, labels, (1,), generator=g))
        mask[inside] = label
        image[:, inside] = colours[label].view(3, 1)
    image = (image + 8 * torch.randn(image.shape, generator=g)).clamp(0, 255).round()
    image[:, 0, 0], image[:, -1, -1] = 0, 255
    logits = 2.0 * F.one_hot(mask, labels).permute(2, 0, 1).float() + noise * torch.randn(labels, height, width, generator=g)
    return image[None], logits[None]


def time_ms(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, 1000 * (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["64x64", "96x96", "256x256", "500x375"], help="WIDTHxHEIGHT")
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--window", type=int, default=5, help="the window method's radius")
    parser.add_argument("--exact-max", type=int, default=96 * 96, help="largest image (pixels) for method=exact")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=1.5, help="std of the noise added to the unaries")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the table between the README markers")
    for key, value in DEEPLAB.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    params = {key: getattr(args, key) for key in DEEPLAB}
    has_reference = importlib.util.find_spec("pydensecrf") is not None
    crfs = {"lattice": DenseCRF(args.labels, method="lattice", **params),
            "window": DenseCRF(args.labels, method="window", window=args.window, **params),
            "exact": DenseCRF(args.labels, method="exact", **params)}
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.labels} labels, kernel `{params}`, "
             f"window radius {args.window}; reference: {'pydensecrf' if has_reference else 'exact (pydensecrf not installed)'}",
             "",
             "| image | pixels | densecrf (ms) | lattice (ms) | window (ms) | exact (ms) | lattice: same labels, marginal diff. | "
             "window | exact |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines))
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        image, logits = scene(height, width, args.labels, args.noise)
        methods: dict[str, Callable[[], torch.Tensor]] = {name: (lambda c=crf: c(logits, image).exp())
                                                          for name, crf in crfs.items()}
        if height * width > args.exact_max:
            del methods["exact"]
        if has_reference:
            methods = {"densecrf": lambda: reference_marginals(crfs["lattice"], logits, image), **methods}
        with torch.no_grad():
            marginals = {name: fn() for name, fn in methods.items()}
            times = {name: float("inf") for name in methods}
            for _ in range(args.repeats):  # in turn, so that a busy moment of the machine hits all alike
                for name, fn in methods.items():
                    times[name] = min(times[name], time_ms(fn, 1))
        truth = marginals.get("densecrf", marginals.get("exact"))

        def cell(name: str) -> str:
            if name not in marginals or truth is None:
                return "-"
            same = float((marginals[name].argmax(1) == truth.argmax(1)).float().mean())
            return f"{100 * same:.2f}%, {float((marginals[name] - truth).abs().mean()):.4f}"

        ms = [f"{times[name]:.0f}" if name in times else "-" for name in ("densecrf", "lattice", "window", "exact")]
        lines.append(f"| {width}x{height} | {width * height:,} | {' | '.join(ms)} | {cell('lattice')} | {cell('window')} | "
                     f"{cell('exact')} |")
        print(lines[-1], flush=True)
    if args.update_readme:
        update_readme("\n".join(lines), START, END)


if __name__ == "__main__":
    main()
