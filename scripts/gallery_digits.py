#!/usr/bin/env python
"""The README's gallery of what a LeNet-5 trained on the digits learns, from the commands a user runs.

Trains ``python train.py`` (LeNet-5 on the embedded digits) unless ``--ckpt`` is given, writes a few
test-split digits as PNG files, then runs ``python -m zoo explain`` (occlusion, saliency, Grad-CAM,
guided backprop) on them and ``python -m zoo visualize`` (first-layer filters, activation maps,
t-SNE of the penultimate features, class models, DeepDream), and copies the figures to ``docs/gallery/``.

    python scripts/gallery_digits.py
    python scripts/gallery_digits.py --ckpt outputs/notes/lenet5/checkpoints/best.pt
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "gallery"
#: test-split positions of the digits shown (one 3, one 5, one 8)
SHOWN = {"three": 3, "five": 5, "eight": 8}
METHODS = "occlusion,saliency,gradcam,guided_backprop"


def sh(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(args[:3])} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def digit_pngs(out: Path) -> list[Path]:
    """One test-split image of each digit in :data:`SHOWN`, as an 8x8 grey PNG (the data's own files)."""
    from PIL import Image

    from zoo.data.digits import digits

    test = digits().test
    paths = []
    for name, label in SHOWN.items():
        index = int((test.labels == label).nonzero()[0])
        pixels = (test.images[index, 0] * 255).round().byte().numpy()
        path = out / f"{name}.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a LeNet-5 digits checkpoint (default: train one)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gallery")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt
    if ckpt is None:
        ckpt = out / "lenet5" / "checkpoints" / "best.pt"
        if not ckpt.exists():
            sh("train.py", f"hydra.run.dir={out / 'lenet5'}")
    images = digit_pngs(out)
    sh("-m", "zoo", "explain", str(ckpt), *map(str, images), "--method", METHODS, "--out", str(out / "explain"))
    vis = out / "visualize"
    sh("-m", "zoo", "visualize", str(ckpt), "--what", "filters", "--out", str(vis))
    sh("-m", "zoo", "visualize", str(ckpt), "--what", "activations", "--image", *map(str, images), "--layer", "s2,s4",
       "--out", str(vis))
    sh("-m", "zoo", "visualize", str(ckpt), "--what", "tsne", "--split", "test", "--out", str(vis))
    sh("-m", "zoo", "visualize", str(ckpt), "--what", "class_model", "--target", *map(str, SHOWN.values()),
       "--out", str(vis))
    sh("-m", "zoo", "visualize", str(ckpt), "--what", "dream", "--image", str(images[0]), "--layer", "s2",
       "--out", str(vis))

    DOCS.mkdir(parents=True, exist_ok=True)
    for old in DOCS.glob("*.png"):
        old.unlink()
    for png in sorted((out / "explain").glob("*.png")) + sorted(vis.glob("*.png")):
        shutil.copyfile(png, DOCS / png.name)
    print("\n".join(sorted(p.name for p in DOCS.glob("*.png"))))


if __name__ == "__main__":
    main()
