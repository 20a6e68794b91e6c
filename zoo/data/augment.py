"""Training augmentation, one config for both data paths.

An augmentation config is an ordered mapping of operations, e.g. ``{"ops": {"hflip": {"p": 0.5},
"random_crop": {"padding": 4}}}``; presets in ``configs/augmentation/`` are such mappings, and
``augmentation=[flip_crop,color_jitter]`` merges presets (a ``null`` entry switches one off).

Every image operation (:class:`BatchOp`) has two implementations of the same distribution:

* ``op(batch, generator)``: batched, for the in-memory fast path. ``batch`` is an ``(N, C, H, W)``
  float tensor on any device; one call per mini-batch, no per-sample Python, except for the v2
  policies, which have no batched form with per-image parameters (:class:`PerSampleOp`).
* ``op.v2(size)``: a per-sample ``torchvision.transforms.v2`` transform for the DataLoader path.

Batch mixing (:class:`MixOp`) is one v2 batch transform of images and labels for both paths.

Every operation runs at its :attr:`~AugmentOp.stage`, whatever its place in the config (within a
stage, in config order):

1. ``pixels``: images with pixel values in [0, 1], before normalisation, so colour operations clamp to
   the real pixel range and pixels moved in from outside the image (padding, affine warps, the
   policies' shears) are black on every dataset and both paths. The policies (RandAugment,
   TrivialAugment, AutoAugment) are torchvision's v2 transforms drawn anew for every image
   (:class:`PerSampleOp`).
2. ``normalized``: after normalisation (random erasing, whose value 0 is the mean, as in
   torchvision's classification references; batched on the fast path).
3. ``mix``: whole batches with their labels, last (MixUp, CutMix: :class:`BatchMix`); the targets
   become class probabilities, on both paths the same v2 transforms on collated batches.

The v2 transforms draw from torch's global generator; the fast path seeds it from the loader's
``(seed, epoch)`` generator for each batch (:func:`_global_rng_from`), so its augmentation stays a
function of ``(seed, epoch)`` and an exactly resumable stream.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from zoo.data.loaders import BatchTransform
from zoo.errors import ConfigError
from zoo.registry import Registry

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform


def _v2() -> Any:
    """``torchvision.transforms.v2``, imported when a DataLoader pipeline is built (the batched path needs none)."""
    from torchvision.transforms import v2

    return v2


#: where operations run, in this order (see the module docstring)
STAGES = ("pixels", "normalized", "mix")


class AugmentOp:
    """What every augmentation operation declares: its stage and its geometry."""

    #: one of :data:`STAGES`
    stage: str = "pixels"
    #: ``"resize"``: takes the raw image and produces the output size itself (random-resized crop);
    #: ``"crop"``: takes the resized image and crops the output size from it; ``None``: size-preserving
    geometry: str | None = None


class BatchOp(AugmentOp):
    """An augmentation operation with a batched and a per-sample (v2) implementation."""

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def v2(self, size: int) -> Transform:
        """The per-sample transform producing ``size``-sided images (torchvision imported when called)."""
        raise NotImplementedError


AUGMENTATIONS: Registry[AugmentOp] = Registry("augmentation")


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _log_uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.exp(_uniform(n, math.log(low), math.log(high), gen))


def _warp(x: torch.Tensor, theta: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Resample each image of ``x`` through its ``(2, 3)`` affine map (output -> input coordinates)."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _check(ok: bool, name: str, rule: str, **got: Any) -> None:
    if not ok:
        values = ", ".join(f"{k}={list(v) if isinstance(v, (list, tuple)) else v}" for k, v in got.items())
        raise ConfigError(f"augmentation {name} needs {rule}; got {values}")


def _check_area(name: str, scale: Sequence[float], ratio: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """A rectangle's area fraction range ``scale`` and aspect-ratio range ``ratio``, checked, as float pairs."""
    _check(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, name, "0 < scale[0] <= scale[1] <= 1", scale=scale)
    _check(len(ratio) == 2 and 0 < ratio[0] <= ratio[1], name, "0 < ratio[0] <= ratio[1]", ratio=ratio)
    return (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))


@AUGMENTATIONS.register("hflip")
class HorizontalFlip(BatchOp):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        _check(0 <= p <= 1, "hflip", "0 <= p <= 1", p=p)
        self.p = p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = (torch.rand(x.shape[0], generator=gen) < self.p).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    def v2(self, size: int) -> Transform:
        return _v2().RandomHorizontalFlip(self.p)


@AUGMENTATIONS.register("random_crop")
class RandomCrop(BatchOp):
    """Pad by ``padding`` pixels per side, then crop the original size at a random offset
    (the CIFAR recipe of He et al. 2015, sec. 4.2). Constant padding is black (0) on both paths."""

    geometry = "crop"

    def __init__(self, padding: int = 4, padding_mode: str = "constant") -> None:
        _check(padding >= 0, "random_crop", "padding >= 0", padding=padding)
        _check(padding_mode in ("constant", "reflect", "edge"), "random_crop", "padding_mode constant|reflect|edge",
               padding_mode=padding_mode)
        self.padding, self.padding_mode = int(padding), padding_mode

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = self.padding
        if p == 0:
            return x
        n, _, h, w = x.shape
        mode = {"edge": "replicate"}.get(self.padding_mode, self.padding_mode)
        windows = F.pad(x, (p, p, p, p), mode=mode).unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 2p+1, 2p+1, H, W) view
        offsets = torch.randint(0, 2 * p + 1, (2, n), generator=gen).to(x.device)
        return windows[torch.arange(n, device=x.device), :, offsets[0], offsets[1]]

    def v2(self, size: int) -> Transform:
        return _v2().RandomCrop(size, padding=self.padding or None, padding_mode=self.padding_mode, fill=0)


@AUGMENTATIONS.register("random_resized_crop")
class RandomResizedCrop(BatchOp):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform) and
    resize it to the output size (Szegedy et al. 2015, "Going deeper with convolutions", sec. 6).
    The batched version samples once per image and clips the crop to the image instead of retrying."""

    geometry = "resize"

    def __init__(self, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        self.scale, self.ratio = _check_area("random_resized_crop", scale, ratio)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        area = _uniform(n, *self.scale, gen)
        aspect = _log_uniform(n, *self.ratio, gen)
        w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop side as a fraction of the image side
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        cx = (2 * torch.rand(n, generator=gen) - 1) * (1 - w)
        cy = (2 * torch.rand(n, generator=gen) - 1) * (1 - h)
        zero = torch.zeros(n)
        theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        return _warp(x, theta)

    def v2(self, size: int) -> Transform:
        return _v2().RandomResizedCrop(size, scale=self.scale, ratio=self.ratio, antialias=True)


@AUGMENTATIONS.register("color_jitter")
class ColorJitter(BatchOp):
    """Random brightness, contrast and saturation factors in ``[1 - v, 1 + v]``, applied in that order
    (torchvision's formulas; the v2 transform shuffles the order per image)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4) -> None:
        _check(min(brightness, contrast, saturation) >= 0, "color_jitter", "non-negative strengths",
               brightness=brightness, contrast=contrast, saturation=saturation)
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    @staticmethod
    def _factors(n: int, strength: float, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        return _uniform(n, max(0.0, 1 - strength), 1 + strength, gen).to(like.device, like.dtype).view(-1, 1, 1, 1)

    @staticmethod
    def _gray(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            return x.mean(1, keepdim=True)
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        if self.brightness:
            x = (x * self._factors(n, self.brightness, gen, x)).clamp(0, 1)
        if self.contrast:
            mean = self._gray(x).mean(dim=(1, 2, 3), keepdim=True)
            c = self._factors(n, self.contrast, gen, x)
            x = (c * x + (1 - c) * mean).clamp(0, 1)
        if self.saturation and x.shape[1] == 3:
            s = self._factors(n, self.saturation, gen, x)
            x = (s * x + (1 - s) * self._gray(x)).clamp(0, 1)
        return x

    def v2(self, size: int) -> Transform:
        return _v2().ColorJitter(self.brightness, self.contrast, self.saturation)


@AUGMENTATIONS.register("affine")
class RandomAffine(BatchOp):
    """Per-sample random rotation, isotropic scale and translation, applied with one ``grid_sample``.

    ``degrees`` is the maximum absolute rotation, ``translate`` the maximum shift as a fraction of
    the image side, ``scale`` the (min, max) zoom. Pixels moved in from outside are black on both paths.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1, scale: Sequence[float] = (0.9, 1.1)) -> None:
        _check(degrees >= 0 and 0 <= translate < 1 and len(scale) == 2 and 0 < scale[0] <= scale[1], "affine",
               "degrees >= 0, 0 <= translate < 1, 0 < scale[0] <= scale[1]", degrees=degrees, translate=translate, scale=scale)
        self.degrees, self.translate, self.scale = degrees, translate, (float(scale[0]), float(scale[1]))

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        angle = _uniform(n, -math.radians(self.degrees), math.radians(self.degrees), gen)
        zoom = _uniform(n, *self.scale, gen)
        # affine_grid maps output to input coordinates in [-1, 1]: a shift of t*side is 2t there
        shift = _uniform(2 * n, -2 * self.translate, 2 * self.translate, gen).view(n, 2)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        return _warp(x, theta, padding_mode="zeros")

    def v2(self, size: int) -> Transform:
        return _v2().RandomAffine(self.degrees, translate=(self.translate, self.translate), scale=self.scale, fill=0)


@contextmanager
def _global_rng_from(gen: torch.Generator) -> Iterator[None]:
    """torch's global CPU generator seeded from ``gen`` inside the block and restored after it: the v2
    transforms draw their parameters from it, so the fast path's stream stays ``gen``'s."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class PerSampleOp(BatchOp):
    """A torchvision v2 transform with parameters drawn anew for every image. Given a batch, a v2
    transform draws one set for all of it, so the fast path loops over the images of the batch."""

    #: whether the fast path hands the transform 8-bit pixels, as the DataLoader path does (the
    #: policies' posterize, solarize and equalize are defined on them), converting back after it
    uint8: bool = True

    def transform(self) -> Transform:
        """The v2 transform of one image (torchvision imported when called)."""
        raise NotImplementedError

    @cached_property
    def _transform(self) -> Transform:
        return self.transform()

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        images = x.mul(255).round_().to(torch.uint8) if self.uint8 else x
        with _global_rng_from(gen):
            out = torch.stack([self._transform(image) for image in images]) if len(images) else images
        return out.to(x.dtype).div_(255) if self.uint8 else out

    def v2(self, size: int) -> Transform:
        return self.transform()


def _check_bins(name: str, num_magnitude_bins: int, magnitude: int = 0) -> None:
    _check(num_magnitude_bins >= 2 and 0 <= magnitude < num_magnitude_bins, name,
           "num_magnitude_bins >= 2 and 0 <= magnitude < num_magnitude_bins",
           num_magnitude_bins=num_magnitude_bins, magnitude=magnitude)


@AUGMENTATIONS.register("randaugment")
class RandAugment(PerSampleOp):
    """``num_ops`` operations drawn uniformly per image from 14 (identity, shears, translations, rotation,
    colour, posterize, solarize, ...) at magnitude ``magnitude`` of ``num_magnitude_bins - 1`` (Cubuk et
    al. 2020, "RandAugment: Practical automated data augmentation with a reduced search space"; v2.RandAugment)."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        _check(num_ops >= 1, "randaugment", "num_ops >= 1", num_ops=num_ops)
        _check_bins("randaugment", num_magnitude_bins, magnitude)
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins

    def transform(self) -> Transform:
        return _v2().RandAugment(self.num_ops, self.magnitude, self.num_magnitude_bins)


@AUGMENTATIONS.register("trivialaugment")
class TrivialAugment(PerSampleOp):
    """One operation per image at a uniformly drawn magnitude (Müller & Hutter 2021, "TrivialAugment:
    Tuning-free yet state-of-the-art data augmentation"; v2.TrivialAugmentWide, the wide ranges)."""

    def __init__(self, num_magnitude_bins: int = 31) -> None:
        _check_bins("trivialaugment", num_magnitude_bins)
        self.num_magnitude_bins = num_magnitude_bins

    def transform(self) -> Transform:
        return _v2().TrivialAugmentWide(self.num_magnitude_bins)


#: the learned policies of Cubuk et al. 2019 torchvision has
AUTOAUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")


@AUGMENTATIONS.register("autoaugment")
class AutoAugment(PerSampleOp):
    """One of the 25 sub-policies (two operations, each with a probability and magnitude) searched on
    ``policy``'s data, drawn per image (Cubuk et al. 2019, "AutoAugment: Learning augmentation
    strategies from data"; v2.AutoAugment)."""

    def __init__(self, policy: str = "imagenet") -> None:
        _check(policy in AUTOAUGMENT_POLICIES, "autoaugment", f"policy {'|'.join(AUTOAUGMENT_POLICIES)}", policy=policy)
        self.policy = policy

    def transform(self) -> Transform:
        v2 = _v2()
        return v2.AutoAugment(v2.AutoAugmentPolicy(self.policy))


@AUGMENTATIONS.register("random_erasing")
class RandomErasing(BatchOp):
    """With probability ``p``, replace a rectangle of area fraction in ``scale`` and aspect ratio in
    ``ratio`` (log-uniform) by ``value`` (Zhong et al. 2020, "Random erasing data augmentation";
    v2.RandomErasing on the DataLoader path). It runs on the normalised image, as in torchvision's
    references: ``value`` 0 is the mean pixel, ``random`` per-pixel standard-normal noise. The batched
    version draws v2's up to :attr:`ATTEMPTS` rectangles per image at once and keeps the first that
    fits, as v2 does one after the other (none fits: the image stays as it is)."""

    stage = "normalized"
    ATTEMPTS = 10

    def __init__(self, p: float = 0.25, scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3),
                 value: float | str = 0.0) -> None:
        _check(0 <= p <= 1, "random_erasing", "0 <= p <= 1", p=p)
        self.scale, self.ratio = _check_area("random_erasing", scale, ratio)
        _check(not isinstance(value, str) or value == "random", "random_erasing", "value a number or random",
               value=value)
        self.p, self.value = p, value if isinstance(value, str) else float(value)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, height, width = x.shape
        tries = n * self.ATTEMPTS
        area = height * width * _uniform(tries, *self.scale, gen).view(n, -1)
        aspect = _log_uniform(tries, *self.ratio, gen).view(n, -1)
        h, w = torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()
        fits = (h < height) & (w < width)
        first = fits.float().argmax(1, keepdim=True)  # the first attempt that fits (0 if none does)
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        erase = (torch.rand(n, generator=gen) < self.p) & fits.any(1)
        top = (torch.rand(n, generator=gen) * (height - h + 1)).long()  # uniform in [0, height - h]
        left = (torch.rand(n, generator=gen) * (width - w + 1)).long()
        rows, cols = torch.arange(height).view(1, -1), torch.arange(width).view(1, -1)
        inside = ((rows >= top[:, None]) & (rows < (top + h)[:, None]))[:, :, None] \
            & ((cols >= left[:, None]) & (cols < (left + w)[:, None]))[:, None, :]
        mask = (inside & erase.view(-1, 1, 1)).unsqueeze(1).to(x.device)
        if self.value == "random":
            fill = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        else:
            fill = torch.full((), float(self.value), device=x.device, dtype=x.dtype)
        return torch.where(mask, fill, x)

    def v2(self, size: int) -> Transform:
        return _v2().RandomErasing(self.p, scale=self.scale, ratio=self.ratio, value=self.value)


class MixOp(AugmentOp):
    """An operation on a whole batch and its labels, whose targets become class probabilities."""

    stage = "mix"
    #: the registered name (error messages)
    name: str = ""

    def __init__(self, alpha: float) -> None:
        _check(alpha > 0, self.name, "alpha > 0", alpha=alpha)
        self.alpha = float(alpha)

    def v2(self, num_classes: int) -> Transform:
        """The v2 batch transform: ``(images, class indices or probabilities)`` to mixed ones."""
        raise NotImplementedError


@AUGMENTATIONS.register("mixup")
class MixUp(MixOp):
    """Each image and its one-hot target blended with its neighbour in the (shuffled) batch by one
    ``lam ~ Beta(alpha, alpha)`` per batch (Zhang et al. 2018, "mixup: Beyond empirical risk
    minimization"; v2.MixUp; 0.2 as in torchvision's references and timm)."""

    name = "mixup"

    def __init__(self, alpha: float = 0.2) -> None:
        super().__init__(alpha)

    def v2(self, num_classes: int) -> Transform:
        return _v2().MixUp(alpha=self.alpha, num_classes=num_classes)


@AUGMENTATIONS.register("cutmix")
class CutMix(MixOp):
    """A random box of the neighbour image pasted into each image of the batch, its area fraction
    ``~ 1 - Beta(alpha, alpha)`` (clipped at the border), the targets mixed by the pasted area (Yun et
    al. 2019, "CutMix: Regularization strategy to train strong classifiers with localizable
    features"; v2.CutMix; alpha 1 as in torchvision's references and timm)."""

    name = "cutmix"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)

    def v2(self, num_classes: int) -> Transform:
        return _v2().CutMix(alpha=self.alpha, num_classes=num_classes)


class BatchMix:
    """Mix collated batches and their labels with one of ``ops``, chosen with equal probability per
    batch where there are several (torchvision's references' RandomChoice of MixUp and CutMix, timm's
    ``switch_prob`` 0.5): class indices in, class probabilities out. Both paths call it."""

    def __init__(self, ops: Sequence[MixOp], num_classes: int) -> None:
        transforms = [op.v2(num_classes) for op in ops]
        self.transform = transforms[0] if len(transforms) == 1 else _v2().RandomChoice(transforms)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with _global_rng_from(gen):
            return self.transform(x, y)


class Compose:
    """Apply batched operations in order; the composite is itself a :data:`BatchTransform`."""

    def __init__(self, ops: Sequence[BatchTransform]) -> None:
        self.ops = list(ops)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x


def enabled_ops(cfg: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The options of each operation an augmentation config switches on, in config order (``null``
    entries are switched off)."""
    if not cfg:
        return {}
    cfg = dict(cfg)
    if "name" in cfg:  # a single operation written flat: {name: affine, degrees: 10}
        name = cfg.pop("name")
        ops: dict[str, Any] = {} if name == "none" else {name: cfg}
    else:
        ops = dict(cfg.get("ops") or {})
        unknown = sorted(set(cfg) - {"ops"})
        if unknown:
            raise ConfigError(f"augmentation has unknown key(s) {unknown}; operations go under augmentation.ops")
    return {name: {} if params is True else dict(params) for name, params in ops.items()
            if params is not None and params is not False}


def parse_augmentation(cfg: Mapping[str, Any] | None) -> list[AugmentOp]:
    """The operations of an augmentation config, in config order (``null`` entries are switched off)."""
    return [AUGMENTATIONS.build_from({**options, "name": name}, group="augmentation", key=f"augmentation.ops.{name}")
            for name, options in enabled_ops(cfg).items()]


@dataclass
class Stages:
    """The operations of an augmentation config by :data:`STAGES`, each in config order."""

    pixels: list[BatchOp] = field(default_factory=list)
    normalized: list[BatchOp] = field(default_factory=list)
    mix: list[MixOp] = field(default_factory=list)

    @classmethod
    def of(cls, ops: Sequence[AugmentOp]) -> Stages:
        return cls(*([op for op in ops if op.stage == stage] for stage in STAGES))  # type: ignore[arg-type]

    def mixer(self, num_classes: int) -> BatchMix | None:
        """The batch mixing of the ``mix`` operations, or ``None`` without any."""
        return BatchMix(self.mix, num_classes) if self.mix else None


def mixing(cfg: Mapping[str, Any] | None) -> list[str]:
    """The names of the batch-mixing operations (soft targets) of an augmentation config."""
    return [op.name for op in Stages.of(parse_augmentation(cfg)).mix]


def has_geometry(ops: Sequence[AugmentOp], kind: str) -> bool:
    return any(op.geometry == kind for op in ops)
