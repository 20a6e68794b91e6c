"""Loaders the trainer iterates.

* :class:`TensorLoader`, the in-memory fast path: a whole dataset held as tensors (on the training
  device), batched augmentation, and a shuffle order that is a pure function of ``(seed, epoch)``, so
  an interrupted run resumed at an epoch boundary sees exactly the batches an uninterrupted run would.
* :class:`ImageLoader`, for data that does not fit in memory: a ``torch.utils.data.DataLoader`` over
  per-sample ``torchvision.transforms.v2`` pipelines, with the same ``(seed, epoch)`` shuffle contract.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from zoo.errors import CorruptDataError

log = logging.getLogger(__name__)

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorLoader:
    """Iterates ``(x, y)`` mini-batches over tensors without per-sample Python work.

    ``transform`` (training only) receives a whole batch and a generator seeded from
    ``(seed, epoch)`` so augmentation is reproducible too.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        transform: BatchTransform | None = None,
        seed: int = 0,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    @property
    def dataset_size(self) -> int:
        return len(self.x)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def to(self, device: torch.device | str) -> TensorLoader:
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=gen).to(self.x.device) if self.shuffle else None
        for i in range(len(self)):
            if order is None:
                xb, yb = self.x[i * self.batch_size : (i + 1) * self.batch_size], self.y[i * self.batch_size : (i + 1) * self.batch_size]
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb, gen)
            yield xb, yb


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation."""
    return seed * 1_000_003 + epoch


def resolve_workers(num_workers: int | str) -> int:
    """``auto``: one worker per CPU core, at most 8 (beyond that decoding rarely limits a GPU)."""
    if num_workers == "auto":
        return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return int(num_workers)


class TransformedDataset(Dataset):
    """``(transform(image), label)`` of a dataset; ``None`` items (skipped corrupt files) pass through."""

    def __init__(self, base: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        item = self.base[index]
        if item is None:
            return None
        image, label = item
        return self.transform(image), label


def collate_skipping(items: Sequence[tuple[torch.Tensor, int] | None]) -> tuple[Any, Any, int]:
    """Collate the readable items of a batch; the third element counts the skipped ones."""
    kept = [item for item in items if item is not None]
    if not kept:
        return None, None, len(items)
    x, y = default_collate(kept)
    return x, y, len(items) - len(kept)


def _one_line(error: CorruptDataError) -> str:
    """The original message of an error re-raised from a DataLoader worker (which adds a traceback)."""
    last = str(error).strip().splitlines()[-1]
    name = type(error).__name__
    return last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last


def one_line_errors(loader: DataLoader) -> Iterator[Any]:
    """Iterate ``loader``; an unreadable file raised in a worker keeps its one-line message."""
    try:
        yield from loader
    except CorruptDataError as e:
        raise CorruptDataError(_one_line(e)) from None


class ImageLoader:
    """A ``DataLoader`` over a :class:`TransformedDataset` that the trainer uses like a :class:`TensorLoader`."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        split: str = "train",
    ) -> None:
        self.seed, self.epoch, self.split = seed, 0, split
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            collate_fn=collate_skipping,
            generator=self.generator,
        )
        self.skipped = 0

    @property
    def dataset_size(self) -> int:
        return len(self.loader.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        self.skipped = 0
        for x, y, skipped in one_line_errors(self.loader):
            self.skipped += skipped
            if x is not None:
                yield x, y
        if self.skipped:
            log.warning("skipped %d unreadable image(s) in the %s split (data.skip_corrupt=true)", self.skipped, self.split)
