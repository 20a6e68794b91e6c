"""Datasets, augmentation (batched and torchvision v2), loaders and test-time augmentation."""

from zoo.data import digits as _digits  # noqa: F401  (registers the embedded dataset)
from zoo.data import vision as _vision  # noqa: F401  (registers MNIST, CIFAR, SVHN, image folders)
from zoo.data import scenes as _scenes  # noqa: F401  (registers the embedded digit scenes)
from zoo.data import detection as _detection  # noqa: F401  (registers VOC and COCO detection)
from zoo.data import segmentation as _segmentation  # noqa: F401  (registers Pascal VOC segmentation)
from zoo.data import captions as _captions  # noqa: F401  (registers COCO/Karpathy captions, digit scene captions)
from zoo.data.base import DATASETS, DataModule, build_datamodule

__all__ = ["DATASETS", "DataModule", "build_datamodule"]
