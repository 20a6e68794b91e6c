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
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from zoo.errors import ConfigError, CorruptDataError

log = logging.getLogger(__name__)

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
#: batch mixing (MixUp, CutMix: :class:`zoo.data.augment.BatchMix`): ``(x, y, generator)`` to mixed
#: images and class-probability targets
BatchMixer = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class TensorLoader:
    """Iterates ``(x, y)`` mini-batches over tensors without per-sample Python work.

    ``transform`` (training only) receives a whole batch and a generator seeded from
    ``(seed, epoch)`` so augmentation is reproducible too; ``mix`` then mixes the batch and its labels
    with the same generator.
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
        mix: BatchMixer | None = None,
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
        self.mix = mix
        self.seed = seed
        self.epoch = 0
        self._position: tuple[int, torch.Generator] | None = None  # batches yielded, generator, this epoch
        self._resume: dict[str, Any] | None = None
        self.rank, self.world_size = 0, 1

    @property
    def dataset_size(self) -> int:
        return len(self.x)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """The position inside the current epoch: batches yielded and the augmentation generator's state."""
        if self._position is None:
            return {"epoch": self.epoch, "batches": 0, "generator": None}
        batches, gen = self._position
        return {"epoch": self.epoch, "batches": batches, "generator": gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration over epoch ``state["epoch"]`` continue after ``state["batches"]``."""
        self._resume = dict(state)

    def to(self, device: torch.device | str) -> TensorLoader:
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def shard(self, rank: int, world_size: int) -> TensorLoader:
        """Serve only process ``rank``'s share of every global batch of ``batch_size * world_size``
        samples (distributed training). All ranks draw the same order; the data is padded by
        wrapping around to a multiple of ``world_size`` so every rank gets as many batches."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.rank, self.world_size = rank, world_size
        return self

    def _padded_size(self) -> int:
        n = len(self.x)
        return -(-n // self.world_size) * self.world_size

    def __len__(self) -> int:
        n, global_batch = self._padded_size(), self.batch_size * self.world_size
        return n // global_batch if self.drop_last else -(-n // global_batch)

    def _batch_indices(self, order: torch.Tensor | None, i: int) -> torch.Tensor | slice:
        """Rows of batch ``i`` for this rank: its equal part of the ``i``-th global batch."""
        start = i * self.batch_size * self.world_size
        stop = min(start + self.batch_size * self.world_size, self._padded_size())
        part = (stop - start) // self.world_size
        lo, hi = start + self.rank * part, start + (self.rank + 1) * part
        return slice(lo, hi) if order is None else order[lo:hi]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=gen).to(self.x.device) if self.shuffle else None
        if self.world_size > 1:
            base = order if order is not None else torch.arange(n, device=self.x.device)
            order = torch.cat([base, base[: self._padded_size() - n]])
            # each rank augments its own samples with its own stream
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) * 997 + self.rank + 1)
        start, resume, self._resume = 0, self._resume, None
        if resume is not None and resume["epoch"] == self.epoch and resume["batches"] > 0:
            start = int(resume["batches"])
            if resume["generator"] is not None:
                gen.set_state(resume["generator"])
        self._position = (start, gen)
        for i in range(start, len(self)):
            idx = self._batch_indices(order, i)
            xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb, gen)
            if self.mix is not None:
                xb, yb = self.mix(xb, yb, gen)
            self._position = (i + 1, gen)
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


def collate_samples(items: Sequence[tuple[torch.Tensor, Any] | None]) -> tuple[Any, Any, int]:
    """Collate ``(image, target)`` samples whose targets stay per-sample (boxes, masks, captions).

    Images are stacked into one tensor when they share a shape, else kept as a list (detection on
    variable-size photos); targets are always a list. The third element counts skipped items."""
    kept = [item for item in items if item is not None]
    if not kept:
        return None, None, len(items)
    images = [image for image, _ in kept]
    same = all(image.shape == images[0].shape for image in images)
    return (torch.stack(images) if same else images), [target for _, target in kept], len(items) - len(kept)


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
    """A ``DataLoader`` over a :class:`TransformedDataset` that the trainer uses like a :class:`TensorLoader`.

    ``mix`` mixes each collated batch and its labels in the main process, with a generator seeded from
    ``(seed, epoch)`` and the rank."""

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
        collate_fn: Callable[[Sequence[Any]], tuple[Any, Any, int]] = collate_skipping,
        mix: BatchMixer | None = None,
    ) -> None:
        self.seed, self.epoch, self.split, self.rank = seed, 0, split, 0
        self.mix = mix
        self.generator = torch.Generator()
        self.sampler: DistributedSampler | None = None
        self._options = {
            "batch_size": batch_size,
            "drop_last": drop_last,
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers and num_workers > 0,
            "collate_fn": collate_fn,
            "generator": self.generator,
        }
        self._shuffle = shuffle
        self.loader = DataLoader(dataset, shuffle=shuffle, **self._options)
        self.skipped = 0

    def shard(self, rank: int, world_size: int) -> ImageLoader:
        """Read only process ``rank``'s share of the data each epoch (``DistributedSampler``)."""
        self.rank = rank
        self.sampler = DistributedSampler(self.loader.dataset, num_replicas=world_size, rank=rank, shuffle=self._shuffle,
                                          seed=self.seed, drop_last=bool(self._options["drop_last"]))
        self.loader = DataLoader(self.loader.dataset, sampler=self.sampler, **self._options)
        return self

    @property
    def dataset_size(self) -> int:
        return len(self.loader.dataset)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        mix_gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) * 997 + self.rank + 1)
        self.skipped = 0
        for x, y, skipped in one_line_errors(self.loader):
            self.skipped += skipped
            if x is not None:
                yield self.mix(x, y, mix_gen) if self.mix is not None else (x, y)
        if self.skipped:
            log.warning("skipped %d unreadable image(s) in the %s split (data.skip_corrupt=true)", self.skipped, self.split)


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
    mix: BatchMixer | None = None,
) -> dict[str, TensorLoader]:
    """The fast-path loaders of three in-memory splits (on ``device`` when ``on_device``); ``mix``
    (training only) mixes batches and labels."""
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
            mix=mix if split == "train" else None,
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
    mix: BatchMixer | None = None,
) -> dict[str, ImageLoader]:
    """The DataLoader-path loaders of three per-sample datasets (shuffled training split, pinned memory
    when ``pin_memory=auto`` and training on CUDA; ``mix``, training only, mixes collated batches)."""
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
            mix=mix if split == "train" else None,
        )
        for split, dataset in datasets.items()
    }
