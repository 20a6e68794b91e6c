#!/usr/bin/env python
"""The zoo leaderboard: accuracy against operations (marker area = parameters) and forward time,
the comparison charts of the course notes, for models trained with their experiment configs.

    python scripts/leaderboard.py                          # every classification *_digits experiment
    python scripts/leaderboard.py resnet20_digits vgg16_small_digits --from-runs
    python scripts/leaderboard.py --update-readme

Training runs go through scripts/zoo_results.py (finished runs under ``--out`` are reused, so
``python scripts/zoo_results.py`` followed by this script trains nothing twice). Operations are
forward FLOPs per image (``torch.utils.flop_counter``); forward time is the median per-image time
of a batch of ``--batch-size`` on this machine's CPU (or ``--device``). Writes
``docs/leaderboard_accuracy_vs_ops.png``, ``docs/leaderboard_forward_time.png``, the measured rows as
``docs/leaderboard.json`` (``--replot`` redraws the charts from it without training or timing anything)
and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

import benchmark  # noqa: E402
import zoo_results  # noqa: E402

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def measure(metrics: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from zoo.models import create_model, model_info

    name = metrics["model"]
    size = model_info(name)["input_size"]
    opts = SimpleNamespace(batch_size=args.batch_size, in_chans=1, num_classes=10, channels_last=False,
                           precision="32", compile=False)
    bench = benchmark.Bench(create_model(name, num_classes=10, in_chans=1), opts, size, torch.device(args.device))
    flops = benchmark.forward_flops(bench.model, bench.x)
    times = [benchmark._timed(bench.infer_step, args.steps, 2, bench.device) for _ in range(3)]
    return {
        "model": name,
        "top1": 100 * metrics["test"]["acc"],
        "params": metrics["params"],
        "mflops": flops / 1e6,
        "forward_ms_per_image": 1e3 * sorted(times)[1] / args.batch_size,
    }


def place_labels(fig: Any, ax: Any, points: list[tuple[str, float, float, float]], fontsize: int = 8) -> None:
    """Label each ``(text, x, y, marker radius in points)`` beside its marker where it overlaps no label
    placed before (nor leaves the axes): above, below, right, left, then the diagonals, then farther
    out; the position with the least overlap when none is free. Big markers are labelled first."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    scale = fig.dpi / 72  # points to pixels
    markers = []
    for _, x, y, radius in points:
        cx, cy = ax.transData.transform((x, y))
        r = radius * scale
        markers.append(Bbox([[cx - r, cy - r], [cx + r, cy + r]]))
    placed: list[Any] = list(markers)  # labels avoid every marker and every label placed before them

    def overlap(box: Any) -> float:
        inside = max(0.0, min(box.x1, frame.x1) - max(box.x0, frame.x0)) * max(0.0, min(box.y1, frame.y1) - max(box.y0, frame.y0))
        outside = box.width * box.height - inside
        return outside + sum(max(0.0, min(box.x1, b.x1) - max(box.x0, b.x0)) * max(0.0, min(box.y1, b.y1) - max(box.y0, b.y0))
                             for b in placed)

    for text, x, y, radius in sorted(points, key=lambda p: -p[3]):
        best: tuple[float, Any] | None = None
        for gap in (3.0, 10.0, 18.0):
            d = radius + gap
            for dx, dy, ha, va in ((0, d, "center", "bottom"), (0, -d, "center", "top"), (d, 0, "left", "center"),
                                   (-d, 0, "right", "center"), (d, d, "left", "bottom"), (-d, d, "right", "bottom"),
                                   (d, -d, "left", "top"), (-d, -d, "right", "top")):
                label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha, va=va)
                box = label.get_window_extent(renderer).expanded(1.05, 1.1)
                cost = overlap(box)
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, label)
                else:
                    label.remove()
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        placed.append(best[1].get_window_extent(renderer).expanded(1.05, 1.1))


def plot(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    biggest = max(r["params"] for r in rows)
    areas = [40 + 1500 * r["params"] / biggest for r in rows]
    for r, area in zip(rows, areas):
        ax.scatter(r["mflops"], r["top1"], s=area, alpha=0.5)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.2)
    place_labels(fig, ax, [(r["model"], r["mflops"], r["top1"], (area ** 0.5) / 2) for r, area in zip(rows, areas)])
    ax.set_xlabel("forward operations per image (MFLOPs, log scale)")
    ax.set_ylabel("top-1 test accuracy on digits (%)")
    ax.set_title("Accuracy vs operations (marker area ~ parameters)")
    ax.grid(alpha=0.3)
    acc_png = out_dir / "leaderboard_accuracy_vs_ops.png"
    fig.tight_layout()
    fig.savefig(acc_png, dpi=110)
    plt.close(fig)

    ordered = sorted(rows, key=lambda r: r["forward_ms_per_image"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    ax.barh([r["model"] for r in ordered], [r["forward_ms_per_image"] for r in ordered], color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("forward time per image (ms, log scale)")
    ax.set_title("Forward time per image")
    ax.grid(axis="x", alpha=0.3)
    time_png = out_dir / "leaderboard_forward_time.png"
    fig.tight_layout()
    fig.savefig(time_png, dpi=110)
    plt.close(fig)
    return [acc_png, time_png]


def table(rows: list[dict[str, Any]], device: str) -> str:
    lines = ["| model | top-1 | params | MFLOPs / image | forward ms / image (" + device + ") |", "|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: -r["top1"]):
        lines.append(f"| `{r['model']}` | {r['top1']:.2f}% | {r['params']:,} | {r['mflops']:,.1f} | {r['forward_ms_per_image']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiment names (default: every classification *_digits experiment)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "results")
    parser.add_argument("--from-runs", action="store_true", help="only use runs already under --out")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--replot", action="store_true", help="redraw the charts from <docs>/leaderboard.json only")
    args = parser.parse_args()

    if args.replot:
        saved = json.loads((args.docs / "leaderboard.json").read_text())
        for png in plot(saved["rows"], args.docs):
            print(png)
        return
    rows = []
    for name in zoo_results.experiments(args.names):
        path = args.out / name / "metrics.json"
        if args.from_runs:
            metrics = json.loads(path.read_text()) if path.exists() else None
        else:
            metrics = zoo_results.run_one(name, args.out, [], threads=2)
        if metrics and "acc" in metrics.get("test", {}) and metrics["params"]:  # knn: no network to time
            rows.append(measure(metrics, args))
            print(f"  {name}: {rows[-1]}", file=sys.stderr)
    if not rows:
        raise SystemExit("error: no finished classification runs; run python scripts/zoo_results.py first")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "leaderboard.json").write_text(json.dumps({"device": args.device, "rows": rows}, indent=1) + "\n")
    pngs = plot(rows, args.docs)
    text = table(rows, args.device) + "\n\n" + "\n".join(
        f"![{p.stem}]({p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else p})" for p in pngs)
    print(text)
    if args.update_readme:
        zoo_results.update_readme(text, START, END)


if __name__ == "__main__":
    main()
