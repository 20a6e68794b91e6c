"""``build_datamodule``: a ``data`` config to the :class:`~zoo.data.types.DataModule` the trainer consumes.

The dataset builder named by ``data.name`` returns one of the two kinds of :mod:`zoo.data.types`, and
the kind picks the path: an :class:`~zoo.data.types.ImageSource` goes through the image pipeline of
:mod:`zoo.data.sources` (resizing, augmentation, normalisation, in memory or through a DataLoader), a
:class:`~zoo.data.types.SampleSplits` straight into DataLoaders.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from zoo.data.folds import kfold_source
from zoo.data.loaders import LoaderOptions, collate_samples, image_loaders, resolve_workers
from zoo.data.sources import IMAGE_KEYS, build_source_datamodule
from zoo.data.types import DATASETS, DataModule, ImageSource, SampleSplits
from zoo.errors import ConfigError


def build_datamodule(
    cfg: dict[str, Any],
    augmentation: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> DataModule:
    """Build ``cfg["name"]`` from :data:`DATASETS`: loader keys are taken out, the image-pipeline keys
    the builder does not take itself (:data:`~zoo.data.sources.IMAGE_KEYS`) go to the pipeline, the
    cross-validation keys (``folds``, ``fold``: :mod:`zoo.data.folds`) re-split what the builder
    returns, ``crf`` (a segmentation set's CRF defaults) is task.crf's, the rest go to the builder."""
    from zoo.data.augment import enabled_ops, parse_augmentation

    cfg = dict(cfg)
    name = cfg.pop("name")
    folds, fold = cfg.pop("folds", None), cfg.pop("fold", 0)
    cfg.pop("crf", None)  # a segmentation set's CRF defaults: task.crf reads them
    opts = LoaderOptions.pop_from(cfg)
    entry = DATASETS.get(name)
    if "root" in cfg and cfg["root"] is None:
        raise ConfigError(f"data.root is null; set data.root=<the folder holding the {name} files>, or drop the "
                          "override for the default (under paths.data_dir)")
    params = inspect.signature(entry.obj).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    pipeline = {key: cfg.pop(key) for key in IMAGE_KEYS if key in cfg and key not in params and not takes_all}
    ops = parse_augmentation(augmentation)  # a bad augmentation fails before any data is read
    built = DATASETS.build_from({**cfg, "name": name}, group="dataset", key="data")
    if isinstance(built, ImageSource):
        if folds is not None:  # the fold enters the key of the training split's cached statistics
            built = kfold_source(built, folds, fold, int(cfg.get("split_seed", 0)))
            cfg = {**cfg, "folds": folds, "fold": fold}
        return build_source_datamodule(built, pipeline, ops, opts, device, seed, cfg)
    if folds is not None:
        raise ConfigError(f"data.folds: cross-validation splits classification datasets; data={name} is not one")
    if isinstance(built, SampleSplits):
        if ops:
            raise ConfigError(f"augmentation {', '.join(enabled_ops(augmentation))} does not apply to data={name}: its "
                              "samples carry their own targets (boxes, masks or captions) that flips and crops would "
                              f"have to move; drop the augmentation override (data={name} selects augmentation=none; "
                              "the dataset's own options vary its samples)")
        unused = sorted(key for key, value in pipeline.items() if value is not None)
        if unused:
            raise ConfigError(f"data={name} does not take data.{', data.'.join(unused)}; drop the override(s)")
        return sample_datamodule(built, opts, device, seed)
    raise TypeError(f"dataset {name!r} returned a {type(built).__name__}, not an ImageSource or SampleSplits")


def sample_datamodule(splits: SampleSplits, opts: LoaderOptions, device: torch.device | str, seed: int) -> DataModule:
    """A :class:`DataModule` of DataLoaders over the splits of a :class:`SampleSplits` dataset.

    Samples are collated by :func:`~zoo.data.loaders.collate_samples`: images stacked when they share a
    size (else a list), targets a list of dicts. Augmentation configs do not apply (flips and crops would
    have to move boxes, masks and caption words too): :func:`build_datamodule` refuses them, and such
    datasets vary their samples themselves.
    """
    datasets = {split: getattr(splits, split) for split in ("train", "val", "test")}
    loaders = image_loaders(datasets, opts, resolve_workers(opts.num_workers), device, seed, collate_samples)
    return DataModule(**loaders, num_classes=len(splits.class_names), in_chans=splits.in_chans,
                      image_size=splits.image_size, class_names=list(splits.class_names), mean=list(splits.mean),
                      std=list(splits.std), info=dict(splits.info))
