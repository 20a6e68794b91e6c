"""Datasets, augmentation (batched and torchvision v2), loaders and test-time augmentation.

Every module here but the helpers in ``_HELPERS`` registers datasets and is imported, so a new dataset
is one new file with ``@DATASETS.register``. The helpers are imported where they are used (augmentation
and sources only when a run builds its data), which keeps ``import zoo.data`` light.
"""

from zoo.data.base import DATASETS, DataModule, build_datamodule
from zoo.registry import import_modules

_HELPERS = {"augment", "base", "loaders", "sources", "stats", "tta"}

import_modules(__name__, __path__, _HELPERS)

__all__ = ["DATASETS", "DataModule", "build_datamodule"]
