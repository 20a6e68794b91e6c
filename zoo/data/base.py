"""Dataset registry and the :class:`DataModule` the trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from zoo.data.loaders import BatchTransform, ImageLoader, TensorLoader, collate_skipping
from zoo.data.stats import Normalize, resolve_stats, stats_of
from zoo.errors import ConfigError
from zoo.registry import Registry

DATASETS: Registry["ArraySplits"] = Registry("dataset")

#: mask value of pixels no loss or metric counts (Pascal VOC's object outlines and padding, digit scenes' faint rims)
IGNORE_INDEX = 255


@dataclass
class ArraySplits:
    """A dataset small enough to hold in memory: ``(images, labels)`` per split."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    class_names: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


@dataclass
class SampleSplits:
    """A dataset of ``(image, target)`` samples whose targets are not class indices (boxes, masks,
    captions): one ``torch.utils.data.Dataset`` per split, read through a DataLoader.

    Images are float ``(C, H, W)`` tensors, already normalised with ``mean``/``std``; ``target`` is a
    dict of tensors and plain values that the task reads. ``info`` carries what a model or task needs
    from the data beyond classes (e.g. a captioning vocabulary); it is stored in every checkpoint.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    in_chans: int
    image_size: int
    mean: list[float]
    std: list[float]
    info: dict[str, Any] = field(default_factory=dict)


def normalize_splits(splits: ArraySplits, mode: str | None, mean: Any = None, std: Any = None) -> ArraySplits:
    """Normalise every split with statistics of the training split only (``data.normalize``,
    ``data.mean``/``data.std``: see :func:`zoo.data.stats.resolve_stats`)."""
    x = splits.train[0]
    if len(x) == 0:
        raise ConfigError("the training split is empty; lower data.val_fraction/data.test_fraction or add data")
    stats = resolve_stats(mode, x.shape[1], mean, std, lambda m: stats_of([x], m))
    fn = Normalize(stats)
    return replace(
        splits,
        train=(fn(splits.train[0]), splits.train[1]),
        val=(fn(splits.val[0]), splits.val[1]),
        test=(fn(splits.test[0]), splits.test[1]),
        mean=list(stats["mean"]),
        std=list(stats["std"]),
    )


class Loader(Protocol):
    """What the trainer needs of a loader: iteration, a length, and an optional ``set_epoch``."""

    def __iter__(self) -> Any: ...

    def __len__(self) -> int: ...


@dataclass
class DataModule:
    """Loaders for the three splits plus what models and metrics need to know about the data."""

    train: Loader
    val: Loader
    test: Loader
    num_classes: int
    in_chans: int
    image_size: int
    class_names: list[str]
    mean: list[float]
    std: list[float]
    #: what models and tasks need from the data beyond classes (e.g. a vocabulary); stored in checkpoints
    info: dict[str, Any] = field(default_factory=dict)

    def loader(self, split: str) -> Loader:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {split!r}; use train, val or test")
        return getattr(self, split)

    def sizes(self) -> dict[str, int]:
        return {s: getattr(self.loader(s), "dataset_size", 0) for s in ("train", "val", "test")}


@dataclass
class LoaderOptions:
    """The ``data.*`` keys about loading rather than about the dataset itself."""

    batch_size: int
    eval_batch_size: int
    in_memory: bool = True  # whole dataset as tensors with batched augmentation (the fast path)
    on_device: bool = True  # ... held on the training device
    drop_last: bool = False
    num_workers: int | str = "auto"  # DataLoader path only
    pin_memory: bool | str = "auto"  # auto: when training on CUDA
    persistent_workers: bool = True

    @classmethod
    def pop_from(cls, cfg: dict[str, Any]) -> LoaderOptions:
        batch_size = int(cfg.pop("batch_size"))
        eval_batch_size = int(cfg.pop("eval_batch_size", None) or batch_size)
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size} (eval_batch_size {eval_batch_size})")
        opts = cls(batch_size, eval_batch_size)
        for key in ("in_memory", "on_device", "drop_last", "num_workers", "pin_memory", "persistent_workers"):
            if cfg.get(key) is not None:
                setattr(opts, key, cfg.pop(key))
            cfg.pop(key, None)
        if opts.num_workers != "auto" and (not str(opts.num_workers).isdigit()):
            raise ConfigError(f"data.num_workers must be auto or an integer >= 0, got {opts.num_workers!r}")
        return opts


def tensor_loaders(
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    opts: LoaderOptions,
    train_transform: BatchTransform | None,
    eval_transform: BatchTransform | None,
    device: torch.device | str,
    seed: int,
) -> dict[str, TensorLoader]:
    """The fast-path loaders of three in-memory splits (on ``device`` when ``on_device``)."""
    target = torch.device(device) if opts.on_device else torch.device("cpu")
    return {
        split: TensorLoader(
            x,
            y,
            opts.batch_size if split == "train" else opts.eval_batch_size,
            shuffle=split == "train",
            drop_last=opts.drop_last and split == "train",
            transform=train_transform if split == "train" else eval_transform,
            seed=seed,
        ).to(target)
        for split, (x, y) in splits.items()
    }


def image_loaders(
    datasets: dict[str, Dataset],
    opts: LoaderOptions,
    workers: int,
    device: torch.device | str,
    seed: int,
    collate_fn: Any = collate_skipping,
) -> dict[str, ImageLoader]:
    """The DataLoader-path loaders of three per-sample datasets (shuffled training split, pinned memory
    when ``pin_memory=auto`` and training on CUDA)."""
    pin = torch.device(device).type == "cuda" if opts.pin_memory == "auto" else bool(opts.pin_memory)
    return {
        split: ImageLoader(
            dataset,
            opts.batch_size if split == "train" else opts.eval_batch_size,
            shuffle=split == "train",
            drop_last=opts.drop_last and split == "train",
            seed=seed,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=bool(opts.persistent_workers),
            split=split,
            collate_fn=collate_fn,
        )
        for split, dataset in datasets.items()
    }


def build_datamodule(
    cfg: dict[str, Any],
    augmentation: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> DataModule:
    """Build ``cfg["name"]`` from :data:`DATASETS`; loader keys are taken out, the rest go to the dataset.

    In-memory datasets (the embedded digits) and on-disk datasets with ``in_memory=true`` (default for
    MNIST/CIFAR/SVHN) use the tensor fast path; others a DataLoader with per-sample v2 transforms.
    """
    from zoo.data.augment import build_batch_augmentation

    cfg = dict(cfg)
    name = cfg.pop("name")
    opts = LoaderOptions.pop_from(cfg)
    entry = DATASETS.get(name)
    if "root" in cfg and cfg["root"] is None:
        raise ConfigError(f"data.root is null; set data.root=<the folder holding the {name} files>, or drop the "
                          "override for the default (under paths.data_dir)")
    if entry.metadata.get("source"):
        from zoo.data.sources import build_source_datamodule

        return build_source_datamodule(name, entry, cfg, augmentation, opts, device, seed)
    if entry.metadata.get("samples"):
        return _sample_datamodule(name, cfg, opts, device, seed)
    for key in ("root", "download", "eval_crop", "resize_size", "interpolation"):
        cfg.pop(key, None)  # on-disk options; unused by embedded datasets
    splits = DATASETS.build_from({**cfg, "name": name}, group="dataset", key="data")
    num_classes, in_chans = cfg.get("num_classes", entry.metadata["num_classes"]), splits.train[0].shape[1]
    loaders = tensor_loaders(
        {"train": splits.train, "val": splits.val, "test": splits.test}, opts, build_batch_augmentation(augmentation), None,
        device, seed,
    )
    return DataModule(
        **loaders,
        num_classes=int(num_classes),
        in_chans=int(in_chans),
        image_size=int(splits.train[0].shape[-1]),
        class_names=list(splits.class_names),
        mean=splits.mean,
        std=splits.std,
    )


def _sample_datamodule(name: str, cfg: dict[str, Any], opts: LoaderOptions, device: torch.device | str,
                       seed: int) -> DataModule:
    """A :class:`DataModule` of DataLoaders over the splits of a :class:`SampleSplits` dataset.

    Samples are collated by :func:`~zoo.data.loaders.collate_samples`: images stacked when they share a
    size (else a list), targets a list of dicts. Augmentation configs do not apply (flips and crops would
    have to move boxes, masks and caption words too); such datasets vary their samples themselves.
    """
    from zoo.data.loaders import collate_samples, resolve_workers

    cfg.pop("download", None)
    splits: SampleSplits = DATASETS.build_from({**cfg, "name": name}, group="dataset", key="data")
    datasets = {split: getattr(splits, split) for split in ("train", "val", "test")}
    loaders = image_loaders(datasets, opts, resolve_workers(opts.num_workers), device, seed, collate_samples)
    return DataModule(**loaders, num_classes=len(splits.class_names), in_chans=splits.in_chans,
                      image_size=splits.image_size, class_names=list(splits.class_names), mean=list(splits.mean),
                      std=list(splits.std), info=dict(splits.info))
