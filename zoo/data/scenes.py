"""Digit scenes: an embedded, deterministic dataset for detection, segmentation and captioning.

Each scene pastes a few of scikit-learn's handwritten digits (8x8, see :mod:`zoo.data.digits`) at random
scales and non-overlapping positions on a blank canvas. One generator gives every target the three
dense-prediction issues need, always consistent with each other:

* ``boxes`` (``(n, 4)`` float, ``x1, y1, x2, y2`` in pixels, tight around the ink) and ``labels``
  (``(n,)`` long, digit + 1: index 0 is the background, as in torchvision's detection models and VOC),
* ``mask`` (``(H, W)`` long): 0 background, digit + 1 where a digit's ink is, :data:`IGNORE_INDEX` on
  the faint anti-aliased rim around each digit (VOC marks object boundaries the same way),
* ``caption`` (str): the digits from left to right with the relation of each consecutive pair,
  e.g. ``"a 3 left of a 7"`` or ``"a 3 above a 1 and a 1 left of a 8"``.

Scene ``i`` of a split is a pure function of ``(seed, split, i)`` and the generator's options, and the
train/val/test scenes draw their digits from the disjoint train/val/test images of the fixed digits split,
so no test digit image is ever seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.data.types import DATASETS, IGNORE_INDEX, SampleSplits
from zoo.data.digits import stratified_split
from zoo.data.stats import WHITEN_MODES, check_mode, resolve_stats
from zoo.errors import ConfigError

#: ink above this intensity (of 1) is the digit: its box and mask
INK = 0.3
#: ink between RIM and INK is the ambiguous rim (ignored in masks)
RIM = 0.1
SPLITS = ("train", "val", "test")
CLASS_NAMES = ["background"] + [str(d) for d in range(10)]


def relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Where centre ``a`` is relative to centre ``b`` (``b`` not left of ``a``): left of, above or below."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    if dx >= abs(dy):
        return "left of"
    return "above" if dy > 0 else "below"


def describe(digits: list[int], centres: list[tuple[float, float]]) -> str:
    """The caption of a scene: digits left to right, each consecutive pair with its relation."""
    order = sorted(range(len(digits)), key=lambda i: (centres[i][0], centres[i][1]))
    if len(order) == 1:
        return f"a {digits[order[0]]}"
    pairs = [f"a {digits[i]} {relation(centres[i], centres[j])} a {digits[j]}" for i, j in zip(order, order[1:])]
    return " and ".join(pairs)


@dataclass(frozen=True)
class SceneOptions:
    """How scenes look: canvas side, digits per scene, digit side range (pixels), gap between digits."""

    image_size: int = 64
    min_digits: int = 1
    max_digits: int = 3
    min_scale: int = 16
    max_scale: int = 28
    gap: int = 2
    noise: float = 0.0  # std of Gaussian pixel noise added to the canvas (clipped to [0, 1])

    def check(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(f"need 1 <= data.min_digits <= data.max_digits, got {self.min_digits} and {self.max_digits}")
        if not 4 <= self.min_scale <= self.max_scale <= self.image_size:
            raise ConfigError(f"need 4 <= data.min_scale <= data.max_scale <= data.image_size, got "
                              f"{self.min_scale}, {self.max_scale}, {self.image_size}")
        room = (self.image_size // (self.max_scale + self.gap)) ** 2
        if room < self.max_digits:
            raise ConfigError(f"{self.max_digits} digits of up to {self.max_scale} px do not reliably fit a {self.image_size} px "
                              f"canvas; raise data.image_size or lower data.max_scale/data.max_digits")
        if self.noise < 0:
            raise ConfigError(f"data.noise must be >= 0, got {self.noise}")


class DigitScenes(Dataset):
    """``num_scenes`` scenes built from ``digit_images`` (``(N, 8, 8)`` in [0, 1]) and ``digit_labels``.

    Items are ``(image, target)``: ``image`` a float ``(in_chans, H, W)`` tensor in [0, 1] (normalised
    when ``mean``/``std`` are given), ``target`` a dict with ``boxes``, ``labels``, ``mask``, ``caption``
    and ``image_id``.
    """

    def __init__(
        self,
        digit_images: np.ndarray,
        digit_labels: np.ndarray,
        num_scenes: int,
        options: SceneOptions,
        seed: int,
        in_chans: int = 1,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        options.check()
        if in_chans not in (1, 3):
            raise ConfigError(f"data.in_chans must be 1 or 3 for digit scenes, got {in_chans}")
        self.digits = torch.from_numpy(digit_images.astype(np.float32))
        self.digit_labels = np.asarray(digit_labels, dtype=np.int64)
        self.num_scenes, self.options, self.seed, self.in_chans = int(num_scenes), options, int(seed), in_chans
        self.mean = None if mean is None else torch.tensor(mean).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return self.num_scenes

    def _layout(self, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        """Non-overlapping ``(x, y, side)`` squares (a ``gap`` apart) for this scene's digits."""
        o = self.options
        count = int(rng.integers(o.min_digits, o.max_digits + 1))
        placed: list[tuple[int, int, int]] = []
        for _ in range(200 * count):  # rejection sampling; check() guarantees the digits fit a grid
            if len(placed) == count:
                break
            side = int(rng.integers(o.min_scale, o.max_scale + 1))
            x, y = (int(v) for v in rng.integers(0, o.image_size - side + 1, size=2))
            if all(x + side + o.gap <= px or px + ps + o.gap <= x or y + side + o.gap <= py or py + ps + o.gap <= y
                   for px, py, ps in placed):
                placed.append((x, y, side))
        return placed

    def scene(self, index: int) -> dict[str, Any]:
        """Scene ``index`` unnormalised: ``image`` ``(H, W)`` in [0, 1] plus its targets."""
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"scene {index} out of range for {self.num_scenes} scenes")
        rng = np.random.default_rng([self.seed, index])
        size = self.options.image_size
        canvas = torch.zeros(size, size)
        mask = torch.zeros(size, size, dtype=torch.long)
        boxes, labels, centres = [], [], []
        for x, y, side in self._layout(rng):
            k = int(rng.integers(len(self.digits)))
            patch = F.interpolate(self.digits[k][None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
            patch = patch.clamp(0, 1)
            ink = patch > INK
            if not ink.any():  # a digit too faint to see would be an unlearnable box
                continue
            digit = int(self.digit_labels[k])
            region = canvas[y : y + side, x : x + side]
            torch.maximum(region, patch, out=region)
            mask_region = mask[y : y + side, x : x + side]
            mask_region[(patch > RIM) & ~ink] = IGNORE_INDEX
            mask_region[ink] = digit + 1
            rows, cols = ink.any(dim=1).nonzero()[:, 0], ink.any(dim=0).nonzero()[:, 0]
            box = [x + float(cols[0]), y + float(rows[0]), x + float(cols[-1]) + 1, y + float(rows[-1]) + 1]
            boxes.append(box)
            labels.append(digit + 1)
            centres.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        if self.options.noise > 0:
            noise = torch.from_numpy(rng.standard_normal((size, size)).astype(np.float32))
            canvas = (canvas + self.options.noise * noise).clamp_(0, 1)
        return {
            "image": canvas,
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long),
            "mask": mask,
            "caption": describe([lab - 1 for lab in labels], centres),
            "image_id": index,
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        scene = self.scene(index)
        image = scene.pop("image")[None].expand(self.in_chans, -1, -1)
        if self.mean is not None and self.std is not None:
            image = (image - self.mean) / self.std
        return image.contiguous(), scene


def _stats(dataset: DigitScenes, count: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the first ``count`` training scenes."""
    images = torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])
    mean = images.mean(dim=(0, 2, 3)).tolist()
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    return mean, std


@DATASETS.register("digit_scenes", num_classes=len(CLASS_NAMES), in_chans=1)
def digit_scenes(
    image_size: int = 64,
    train_scenes: int = 2000,
    val_scenes: int = 200,
    test_scenes: int = 500,
    min_digits: int = 1,
    max_digits: int = 3,
    min_scale: int = 16,
    max_scale: int = 28,
    gap: int = 2,
    noise: float = 0.0,
    seed: int = 0,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    normalize: str | None = "channel",
    mean: list[float] | float | None = None,
    std: list[float] | float | None = None,
    in_chans: int = 1,
    num_classes: int = len(CLASS_NAMES),
) -> SampleSplits:
    """Train/val/test digit scenes; each split's digits come from that split of the fixed digits split."""
    from sklearn.datasets import load_digits

    if num_classes != len(CLASS_NAMES):
        raise ConfigError(f"digit scenes have {len(CLASS_NAMES)} classes (background + 10 digits); set data.num_classes={len(CLASS_NAMES)}")
    if check_mode(normalize) in ("image_mean", *WHITEN_MODES):
        raise ConfigError(f"data.normalize={normalize} is for classification images; for digit scenes use channel, symmetric or none")
    options = SceneOptions(int(image_size), int(min_digits), int(max_digits), int(min_scale), int(max_scale), int(gap), float(noise))
    counts = {"train": train_scenes, "val": val_scenes, "test": test_scenes}
    if any(int(n) < 0 for n in counts.values()) or int(train_scenes) < 1:
        raise ConfigError(f"data.train_scenes must be >= 1 and val/test_scenes >= 0, got {counts}")
    bunch = load_digits()
    images = bunch.images / 16.0
    parts = dict(zip(SPLITS, stratified_split(bunch.target, val_fraction, test_fraction, split_seed)))
    for split, idx in parts.items():
        if len(idx) == 0 and int(counts[split]) > 0:
            raise ConfigError(f"the digits {split} split is empty but data.{split}_scenes={counts[split]}; raise data.{split}_fraction")

    def make(split: str, mean: list[float] | None = None, std: list[float] | None = None) -> DigitScenes:
        idx = parts[split]
        return DigitScenes(images[idx], bunch.target[idx], int(counts[split]), options, seed * 3 + SPLITS.index(split),
                           in_chans, mean, std)

    stats = resolve_stats(normalize, in_chans, mean, std,
                          lambda mode: dict(zip(("mean", "std"), _stats(make("train"))), mode=mode))
    scaled = stats["mode"] != "none"
    splits = {split: make(split, stats["mean"], stats["std"]) if scaled else make(split) for split in SPLITS}
    return SampleSplits(**splits, class_names=list(CLASS_NAMES), in_chans=in_chans, image_size=options.image_size,
                        mean=list(stats["mean"]), std=list(stats["std"]))
