"""Datasets, augmentation (batched and torchvision v2), loaders and test-time augmentation.

Every module here but the helpers in ``_HELPERS`` registers datasets and is imported, so a new dataset
is one new file with ``@DATASETS.register`` returning one of the two kinds of :mod:`zoo.data.types`.
Modules import downwards only (``types`` at the bottom; ``build`` at the top), and torchvision is
imported where it is used, so ``import zoo.data`` and a run on the embedded digits stay light.
"""

from zoo.data.build import build_datamodule
from zoo.data.types import DATASETS, DataModule
from zoo.registry import import_modules

_HELPERS = {"augment", "build", "loaders", "sources", "stats", "tta", "types"}

import_modules(__name__, __path__, _HELPERS)

__all__ = ["DATASETS", "DataModule", "build_datamodule"]
