"""From an :class:`~zoo.data.types.ImageSource` (raw classification splits) to the :class:`DataModule`
the trainer uses. Every image goes through the same order: channels and size, then (training only)
augmentation on pixels in [0, 1], then normalisation (:mod:`zoo.data.stats`). Two paths, one config:

* ``data.in_memory=true`` (digits, MNIST, CIFAR, SVHN by default): the splits are resized once into
  tensors at the model's input size (on the training device with ``data.on_device``); each batch is
  converted to float, augmented by the batched ops and normalised, all as whole-batch tensor ops.
Random erasing runs after normalisation, batch mixing (MixUp, CutMix) on the collated batch with its
labels, last (:mod:`zoo.data.augment`).

* ``data.in_memory=false`` (image folders by default): a DataLoader with per-sample
  ``torchvision.transforms.v2`` pipelines. Evaluation resizes the short side to ``data.resize_size``
  and takes the central ``data.image_size`` crop (``data.eval_crop=false`` keeps the whole
  ``resize_size`` square, which test-time augmentation crops itself).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from zoo.data.augment import AugmentOp, BatchMix, BatchOp, Compose, Stages, has_geometry
from zoo.data.loaders import (ImageLoader, LoaderOptions, TransformedDataset, collate_skipping, image_loaders,
                              one_line_errors, resolve_workers, tensor_loaders)
from zoo.data.stats import (WHITEN_EPS, WHITEN_MODES, Normalize, Stats, cached_stats, check_mode, check_whiten_eps,
                             files_fingerprint, resolve_stats, stats_of)
from zoo.data.types import DataModule, ImageSource
from zoo.data.vision import data_files, tensors_of
from zoo.errors import ConfigError

if TYPE_CHECKING:
    from torchvision.transforms import v2

log = logging.getLogger(__name__)

#: the ``data.*`` keys of the image pipeline (rather than of a dataset builder)
IMAGE_KEYS = ("normalize", "mean", "std", "whiten_eps", "in_chans", "num_classes", "image_size", "resize_size",
              "interpolation", "eval_crop")
#: ImageNet's evaluation crop: resize the short side to 256, take the central 224 (ratio 0.875)
CROP_RATIO = 224 / 256
#: images converted per call when the in-memory path resizes a whole split
CHUNK = 4096
#: images per batch when a split is decoded once (for statistics, or into memory)
DECODE_BATCH = 256
#: ``data.interpolation`` values (torchvision's ``InterpolationMode``); the in-memory path resizes tensors
#: with ``torch.nn.functional.interpolate``, which has the first four
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
TENSOR_INTERPOLATIONS = INTERPOLATIONS[:4]


def to_float(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """uint8 pixels to float in [0, 1] (a batched transform)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class Geometry:
    """Sizes and channels of one dataset as configured: resizing whole tensors (the in-memory path) or
    the per-sample v2 steps that produce them (the DataLoader path)."""

    def __init__(self, image_size: int, resize_size: int, in_chans: int, native_chans: int,
                 interpolation: str | None = None) -> None:
        if in_chans not in (1, 3):
            raise ConfigError(f"data.in_chans must be 1 or 3 for image datasets, got {in_chans}")
        if image_size < 1 or resize_size < image_size:
            raise ConfigError(f"need 1 <= data.image_size <= data.resize_size; got {image_size} and {resize_size}")
        if (interpolation or "bilinear") not in INTERPOLATIONS:
            raise ConfigError(f"unknown data.interpolation {interpolation!r}; use one of: {', '.join(INTERPOLATIONS)}")
        self.image_size, self.resize_size, self.in_chans = image_size, resize_size, in_chans
        self.native_chans = native_chans
        self.interpolation = interpolation or "bilinear"

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of ``(N, C, H, W)`` images (uint8 or float, on the CPU) with the configured channels,
        the short side resized to ``resize_size`` and the central ``image_size`` crop: what
        :meth:`eval_steps` does per image (the same kernels: torchvision resizes CPU tensors with
        ``interpolate``, uint8 natively, and converts to grey with the ITU-R 601 weights)."""
        if self.interpolation not in TENSOR_INTERPOLATIONS:
            raise ConfigError(f"data.interpolation={self.interpolation} needs PIL images; with data.in_memory=true "
                              f"use one of: {', '.join(TENSOR_INTERPOLATIONS)}")
        if x.shape[1] != self.in_chans:
            if self.in_chans == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                weights = torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
                x = (x.float() * weights).sum(1, keepdim=True).to(x.dtype)
        h, w = x.shape[-2:]
        short = min(h, w)
        size = (self.resize_size, self.resize_size * w // short) if h == short else (self.resize_size * h // short, self.resize_size)
        if size != (h, w) and len(x):
            smooth = self.interpolation in ("bilinear", "bicubic")
            x = F.interpolate(x, size=size, mode=self.interpolation, antialias=smooth,
                              **({"align_corners": False} if smooth else {}))
        top, left = round((size[0] - self.image_size) / 2), round((size[1] - self.image_size) / 2)
        return x[..., top : top + self.image_size, left : left + self.image_size].contiguous()

    def _channels(self) -> list[v2.Transform]:
        from torchvision.transforms import v2

        if self.in_chans == 3:
            return [v2.RGB()]
        return [v2.Grayscale(1)] if self.native_chans != 1 else []

    def _resize(self) -> v2.Resize:
        """The short side to ``resize_size`` with ``data.interpolation`` (default bilinear)."""
        from torchvision.transforms import v2

        return v2.Resize(self.resize_size, interpolation=v2.InterpolationMode(self.interpolation), antialias=True)

    def eval_steps(self, crop: bool = True) -> list[Any]:
        """Channels, short side to ``resize_size``, central crop (``image_size``, or the whole square)."""
        from torchvision.transforms import v2

        return [*self._channels(), self._resize(), v2.CenterCrop(self.image_size if crop else self.resize_size)]

    def train_steps(self, ops: list[BatchOp]) -> list[Any]:
        """Channels, the geometry the ops do not take over, then the ops' v2 transforms."""
        if has_geometry(ops, "resize"):
            steps: list[Any] = self._channels()
        elif has_geometry(ops, "crop"):
            steps = [*self._channels(), self._resize()]
        else:
            steps = self.eval_steps()
        return steps + [op.v2(self.image_size) for op in ops]


def _resolve_sizes(image_size: int | None, resize_size: int | None, source: ImageSource) -> tuple[int, int]:
    image_size = image_size or source.native_size
    if image_size is None:
        raise ConfigError(f"data={source.name} needs data.image_size (the model's input side, e.g. 224)")
    image_size = int(image_size)
    if resize_size is None:  # fixed-size data is just resized; variable-size photos get ImageNet's crop ratio
        resize_size = image_size if source.native_size else round(image_size / CROP_RATIO)
    return image_size, int(resize_size)


def _decoded(ds: Dataset, steps: list[Any], workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Decode ``ds`` once through ``steps`` (ending at a fixed size): uint8 ``(N, C, H, W)`` batches and labels."""
    from torchvision.transforms import v2

    loader = DataLoader(TransformedDataset(ds, v2.Compose([v2.ToImage(), *steps])), batch_size=DECODE_BATCH,
                        num_workers=workers, collate_fn=collate_skipping)
    for x, y, _ in one_line_errors(loader):
        if x is not None:
            yield x, y


def _materialize(ds: Dataset, geometry: Geometry, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as ``(images at image_size, labels)``: straight from the arrays where the dataset
    keeps them (digits, torchvision's MNIST/CIFAR/SVHN), else decoded once to uint8."""
    arrays = tensors_of(ds)
    if arrays is None:
        pairs = list(_decoded(ds, geometry.eval_steps(), workers))
        if not pairs:
            side = geometry.image_size
            return torch.zeros(0, geometry.in_chans, side, side, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])
    x, y = arrays
    return torch.cat([geometry.fit(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]) if len(x) else geometry.fit(x), y


def build_source_datamodule(
    source: ImageSource,
    pipeline: dict[str, Any],
    ops: list[AugmentOp],
    opts: LoaderOptions,
    device: torch.device | str,
    seed: int,
    dataset_kwargs: dict[str, Any],
) -> DataModule:
    """Wrap the raw splits of ``source`` for the trainer with the ``pipeline`` keys (:data:`IMAGE_KEYS`):
    channels and size, then (training) the augmentation ``ops``, then normalisation. ``dataset_kwargs``
    (the builder's options) enter the key of the cached statistics."""
    cfg = dict(pipeline)
    mode = check_mode(cfg.pop("normalize", None))
    in_chans = int(cfg.pop("in_chans", None) or source.in_chans)
    given = cfg.pop("mean", None), cfg.pop("std", None)
    eps = cfg.pop("whiten_eps", None)
    whiten_eps = WHITEN_EPS if eps is None else check_whiten_eps(eps)
    if mode in WHITEN_MODES and not opts.in_memory:
        raise ConfigError(f"data.normalize={mode} needs data.in_memory=true (the whitening is one matrix product per "
                          "batch of whole images); set it, or use normalize=channel")
    num_classes = cfg.pop("num_classes", None)
    eval_crop = bool(cfg.pop("eval_crop", True))
    sizes = cfg.pop("image_size", None), cfg.pop("resize_size", None)
    interpolation = cfg.pop("interpolation", None)
    if num_classes is not None and int(num_classes) != len(source.class_names):
        raise ConfigError(f"data.num_classes={num_classes} but {source.name} has {len(source.class_names)} classes; "
                          f"drop the override or set data.num_classes={len(source.class_names)}")
    if len(source.train) == 0:  # type: ignore[arg-type]
        raise ConfigError("the training split is empty; lower data.val_fraction/data.test_fraction or add data")
    image_size, resize_size = _resolve_sizes(*sizes, source)
    geometry = Geometry(image_size, resize_size, in_chans, source.in_chans, interpolation)
    workers = resolve_workers(opts.num_workers)
    cache = None if source.root is None else source.root / ".zoo_stats"
    key = {"dataset": source.name, "root": str(source.root.resolve()) if source.root else None, "normalize": mode,
           "image_size": image_size, "resize_size": resize_size, "in_chans": in_chans,
           "train_size": len(source.train),  # type: ignore[arg-type]
           "files": files_fingerprint(data_files(source.train)),
           **{k: v for k, v in dataset_kwargs.items() if k not in ("root", "download", "skip_corrupt")}}
    if geometry.interpolation != "bilinear":  # (the default keeps the caches of earlier runs)
        key["interpolation"] = geometry.interpolation
    if mode in WHITEN_MODES:
        key["whiten_eps"] = whiten_eps

    stages = Stages.of(ops)
    mix = stages.mixer(len(source.class_names))
    if opts.in_memory:
        arrays = {split: _materialize(getattr(source, split), geometry, workers) for split in ("train", "val", "test")}
        train_x = arrays["train"][0]
        stats = resolve_stats(mode, in_chans, *given, lambda m: cached_stats(cache, key, lambda: stats_of(
            (to_float(train_x[i : i + CHUNK]) for i in range(0, len(train_x), CHUNK)), m, whiten_eps=whiten_eps)))
        normalize = Normalize(stats)
        train_transform = Compose([to_float, *stages.pixels, normalize, *stages.normalized])
        loaders: dict[str, Any] = tensor_loaders(arrays, opts, train_transform, Compose([to_float, normalize]), device,
                                                 seed, mix)
    else:
        stats = resolve_stats(mode, in_chans, *given, lambda m: cached_stats(cache, key, lambda: stats_of(
            (to_float(x) for x, _ in _decoded(source.train, geometry.eval_steps(), workers)), m,
            total=len(source.train))))  # type: ignore[arg-type]
        loaders = _image_loaders(source, geometry, stages, stats, opts, workers, eval_crop, device, seed, mix)
    return DataModule(
        **loaders,
        num_classes=len(source.class_names),
        in_chans=in_chans,
        image_size=image_size,
        class_names=list(source.class_names),
        mean=list(stats["mean"]),
        std=list(stats["std"]),
        # how evaluation prepares an image (short side to resize_size, central image_size crop): what a
        # checkpoint's predictions on new image files repeat (zoo.trained.load_image)
        info={"eval_resize": {"resize_size": resize_size, "interpolation": geometry.interpolation}},
    )


def _image_loaders(source: ImageSource, geometry: Geometry, stages: Stages, stats: Stats, opts: LoaderOptions,
                   workers: int, eval_crop: bool, device: torch.device | str, seed: int,
                   mix: BatchMix | None) -> dict[str, ImageLoader]:
    from torchvision.transforms import v2

    tail = [v2.ToDtype(torch.float32, scale=True), Normalize(stats)]
    erase = [op.v2(geometry.image_size) for op in stages.normalized]
    pipelines = {"train": v2.Compose([v2.ToImage(), *geometry.train_steps(stages.pixels), *tail, *erase]),
                 "eval": v2.Compose([v2.ToImage(), *geometry.eval_steps(eval_crop), *tail])}
    datasets = {split: TransformedDataset(getattr(source, split), pipelines["train" if split == "train" else "eval"])
                for split in ("train", "val", "test")}
    return image_loaders(datasets, opts, workers, device, seed, mix=mix)
