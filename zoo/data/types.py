"""The dataset registry and the two kinds of data a dataset builder returns (the bottom of ``zoo.data``).

* :class:`ImageSource`: classification images and labels, raw (before resizing, augmentation and
  normalisation). Its splits are per-sample datasets (torchvision's MNIST, CIFAR, image folders) or an
  :class:`ArrayDataset` of in-memory tensors (the embedded digits). :mod:`zoo.data.sources` turns it
  into loaders: the in-memory fast path or a DataLoader, one augmentation config for both.
* :class:`SampleSplits`: ``(image, target)`` samples whose targets are not class indices (boxes, masks,
  captions), already prepared by the dataset; read through a DataLoader.

:func:`zoo.data.build.build_datamodule` tells them apart by type. This module imports no other module
of ``zoo.data``, so every dataset file can import it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

import torch
from torch.utils.data import Dataset

from zoo.errors import ConfigError
from zoo.registry import Registry

DATASETS: Registry[Union["ImageSource", "SampleSplits"]] = Registry("dataset")

#: mask value of pixels no loss or metric counts (Pascal VOC's object outlines and padding, digit scenes' faint rims)
IGNORE_INDEX = 255


class ArrayDataset(Dataset):
    """Images held as one ``(N, C, H, W)`` tensor (uint8, or float in [0, 1]) with int64 labels.

    Items are ``(image, label)`` like torchvision's datasets, so the DataLoader path reads it as it
    reads MNIST; the in-memory path takes :attr:`images` whole."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"need (N, C, H, W) images and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass
class ImageSource:
    """Raw classification splits: datasets of ``(image, int label)`` (PIL images or tensors), before
    resizing, augmentation or normalisation."""

    name: str
    #: where the files are (statistics are cached under ``<root>/.zoo_stats``); ``None`` for embedded data
    root: Path | None
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    #: the native side of fixed-size datasets (CIFAR 32, MNIST 28, digits 8); ``None`` for variable-size images
    native_size: int | None = None
    #: channels of the stored images (1: grey, 3: colour)
    in_chans: int = 3


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
