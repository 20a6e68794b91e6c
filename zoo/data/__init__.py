"""Datasets, batched augmentation and loaders."""

from zoo.data import digits as _digits  # noqa: F401  (registers the embedded dataset)
from zoo.data.base import DATASETS, DataModule, build_datamodule

__all__ = ["DATASETS", "DataModule", "build_datamodule"]
