"""From raw on-disk splits (:class:`~zoo.data.vision.ImageSource`) to the :class:`DataModule` the trainer uses.

Two paths, one augmentation config:

* ``data.in_memory=true`` (MNIST, CIFAR, SVHN by default): the splits are decoded once into uint8
  tensors at the model's input size (on the training device with ``data.on_device``); each batch is
  converted to float, augmented by the batched ops and normalised, all as whole-batch tensor ops.
* ``data.in_memory=false`` (image folders by default): a DataLoader with per-sample
  ``torchvision.transforms.v2`` pipelines. Evaluation resizes the short side to ``data.resize_size``
  and takes the central ``data.image_size`` crop (``data.eval_crop=false`` keeps the whole
  ``resize_size`` square, which test-time augmentation crops itself).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from zoo.data.augment import BatchOp, Compose, has_geometry, parse_augmentation
from zoo.data.base import DATASETS, DataModule, LoaderOptions, image_loaders, tensor_loaders
from zoo.data.loaders import ImageLoader, TransformedDataset, collate_skipping, one_line_errors, resolve_workers
from zoo.data.stats import Normalize, Stats, cached_stats, check_mode, files_fingerprint, resolve_stats, stats_of
from zoo.data.vision import ImageSource, data_files, tensors_of
from zoo.errors import ConfigError
from zoo.registry import Entry

log = logging.getLogger(__name__)

#: ImageNet's evaluation crop: resize the short side to 256, take the central 224 (ratio 0.875)
CROP_RATIO = 224 / 256
#: images converted per call when the in-memory path resizes a whole split
CHUNK = 4096
#: images per batch when a split is decoded once (for statistics, or into memory)
DECODE_BATCH = 256


def to_float(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """uint8 pixels to float in [0, 1] (a batched transform)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class Geometry:
    """Sizes and channels of one dataset as configured: the per-sample v2 steps that produce them."""

    def __init__(self, image_size: int, resize_size: int, in_chans: int, native_chans: int,
                 interpolation: str | None = None) -> None:
        if in_chans not in (1, 3):
            raise ConfigError(f"data.in_chans must be 1 or 3 for image datasets, got {in_chans}")
        if image_size < 1 or resize_size < image_size:
            raise ConfigError(f"need 1 <= data.image_size <= data.resize_size; got {image_size} and {resize_size}")
        self.image_size, self.resize_size, self.in_chans = image_size, resize_size, in_chans
        modes = [m.value for m in v2.InterpolationMode]
        if (interpolation or "bilinear") not in modes:
            raise ConfigError(f"unknown data.interpolation {interpolation!r}; use one of: {', '.join(modes)}")
        self.interpolation = v2.InterpolationMode(interpolation or "bilinear")
        self.channels: list[v2.Transform] = []
        if in_chans == 3:
            self.channels = [v2.RGB()]
        elif native_chans != 1:
            self.channels = [v2.Grayscale(1)]

    def resize(self) -> v2.Resize:
        """The short side to ``resize_size`` with ``data.interpolation`` (default bilinear)."""
        return v2.Resize(self.resize_size, interpolation=self.interpolation, antialias=True)

    def eval_steps(self, crop: bool = True) -> list[Any]:
        """Channels, short side to ``resize_size``, central crop (``image_size``, or the whole square)."""
        return [*self.channels, self.resize(),
                v2.CenterCrop(self.image_size if crop else self.resize_size)]

    def train_steps(self, ops: list[BatchOp], fill: list[int]) -> list[Any]:
        """Channels, the geometry the ops do not take over, then the ops' v2 transforms."""
        if has_geometry(ops, "resize"):
            steps: list[Any] = list(self.channels)
        elif has_geometry(ops, "crop"):
            steps = [*self.channels, self.resize()]
        else:
            steps = self.eval_steps()
        return steps + [op.v2(self.image_size, fill) for op in ops]


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
    loader = DataLoader(TransformedDataset(ds, v2.Compose([v2.ToImage(), *steps])), batch_size=DECODE_BATCH,
                        num_workers=workers, collate_fn=collate_skipping)
    for x, y, _ in one_line_errors(loader):
        if x is not None:
            yield x, y


def _materialize(ds: Dataset, geometry: Geometry, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as ``(uint8 images at image_size, labels)``: straight from torchvision's arrays
    where it keeps them, else decoded once."""
    arrays = tensors_of(ds)
    if arrays is None:
        pairs = list(_decoded(ds, geometry.eval_steps(), workers))
        if not pairs:
            side = geometry.image_size
            return torch.zeros(0, geometry.in_chans, side, side, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])
    x, y = arrays
    fit = v2.Compose(geometry.eval_steps())
    if x.shape[-1] != geometry.image_size or x.shape[1] != geometry.in_chans or x.shape[-2] != x.shape[-1]:
        x = torch.cat([fit(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]) if len(x) else fit(x)
    return x, y


def build_source_datamodule(
    name: str,
    entry: Entry[Any],
    cfg: dict[str, Any],
    augmentation: dict[str, Any] | None,
    opts: LoaderOptions,
    device: torch.device | str,
    seed: int,
) -> DataModule:
    """Open the dataset ``entry`` with the dataset keys of ``cfg`` and wrap it for the trainer."""
    mode = check_mode(cfg.pop("normalize", None))
    in_chans = int(cfg.pop("in_chans", None) or entry.metadata["in_chans"])
    given = cfg.pop("mean", None), cfg.pop("std", None)
    num_classes = cfg.pop("num_classes", None)
    eval_crop = bool(cfg.pop("eval_crop", True))
    sizes = cfg.pop("image_size", None), cfg.pop("resize_size", None)
    interpolation = cfg.pop("interpolation", None)
    dataset_kwargs = dict(cfg)
    ops = parse_augmentation(augmentation)  # a bad augmentation fails before any data is read
    source: ImageSource = DATASETS.build_from({**cfg, "name": name}, group="dataset", key="data")
    if num_classes is not None and int(num_classes) != len(source.class_names):
        raise ConfigError(f"data.num_classes={num_classes} but {name} has {len(source.class_names)} classes; "
                          f"drop the override or set data.num_classes={len(source.class_names)}")
    image_size, resize_size = _resolve_sizes(*sizes, source)
    geometry = Geometry(image_size, resize_size, in_chans, entry.metadata["in_chans"], interpolation)
    workers = resolve_workers(opts.num_workers)
    key = {"dataset": name, "root": str(source.root.resolve()), "normalize": mode, "image_size": image_size,
           "resize_size": resize_size, "in_chans": in_chans, "train_size": len(source.train),  # type: ignore[arg-type]
           "files": files_fingerprint(data_files(source.train)),
           **{k: v for k, v in dataset_kwargs.items() if k not in ("root", "download", "skip_corrupt")}}
    if geometry.interpolation != v2.InterpolationMode.BILINEAR:  # (the default keeps the caches of earlier runs)
        key["interpolation"] = geometry.interpolation.value

    cache = source.root / ".zoo_stats"
    if opts.in_memory:
        arrays = {split: _materialize(getattr(source, split), geometry, workers) for split in ("train", "val", "test")}
        train_x = arrays["train"][0]
        stats = resolve_stats(mode, in_chans, *given, lambda m: cached_stats(cache, key, lambda: stats_of(
            (to_float(train_x[i : i + CHUNK]) for i in range(0, len(train_x), CHUNK)), m)))
        normalize = Normalize(stats)
        loaders: dict[str, Any] = tensor_loaders(arrays, opts, Compose([to_float, *ops, normalize]),
                                                 Compose([to_float, normalize]), device, seed)
    else:
        stats = resolve_stats(mode, in_chans, *given, lambda m: cached_stats(cache, key, lambda: stats_of(
            (to_float(x) for x, _ in _decoded(source.train, geometry.eval_steps(), workers)), m,
            total=len(source.train))))  # type: ignore[arg-type]
        loaders = _image_loaders(source, geometry, ops, stats, opts, workers, eval_crop, device, seed)
    return DataModule(
        **loaders,
        num_classes=len(source.class_names),
        in_chans=in_chans,
        image_size=image_size,
        class_names=list(source.class_names),
        mean=list(stats["mean"]),
        std=list(stats["std"]),
    )


def _image_loaders(source: ImageSource, geometry: Geometry, ops: list[BatchOp], stats: Stats, opts: LoaderOptions,
                   workers: int, eval_crop: bool, device: torch.device | str, seed: int) -> dict[str, ImageLoader]:
    fill = [round(255 * m) for m in stats["mean"]] if stats["mode"] != "none" else [0] * geometry.in_chans
    tail = [v2.ToDtype(torch.float32, scale=True), Normalize(stats)]
    pipelines = {"train": v2.Compose([v2.ToImage(), *geometry.train_steps(ops, fill), *tail]),
                 "eval": v2.Compose([v2.ToImage(), *geometry.eval_steps(eval_crop), *tail])}
    datasets = {split: TransformedDataset(getattr(source, split), pipelines["train" if split == "train" else "eval"])
                for split in ("train", "val", "test")}
    return image_loaders(datasets, opts, workers, device, seed)
