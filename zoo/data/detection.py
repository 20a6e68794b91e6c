"""On-disk detection datasets: Pascal VOC (XML annotations) and COCO (instances JSON).

Both are read through torchvision's dataset classes (:class:`~torchvision.datasets.VOCDetection`,
:class:`~torchvision.datasets.CocoDetection`, which uses pycocotools) and give the samples of
:mod:`zoo.data.scenes`: ``(image, target)`` with the image a normalised float ``(3, H, W)`` tensor at its
own size (the detector resizes) and ``target`` a dict of ``boxes`` (``x1, y1, x2, y2`` pixels), ``labels``
(1..K; 0 is the background), ``iscrowd`` (VOC "difficult" objects and COCO crowds: not required, not
counted as false positives by the mAP) and ``image_id``. Training images are flipped horizontally with
probability ``hflip`` (boxes with them, by ``torchvision.transforms.v2``).

Layouts under ``data.root``:

- VOC: ``VOCdevkit/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<set>.txt}``;
- COCO: ``coco/annotations/instances_<split>.json`` and the images in ``coco/<split>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from zoo.data.stats import photo_stats
from zoo.data.types import DATASETS, SampleSplits
from zoo.errors import ConfigError, DataNotFoundError

#: Pascal VOC's 20 object classes (Everingham et al. 2010); detection and segmentation put background first
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
               "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]

Target = dict[str, Any]


class DetectionSamples(Dataset):
    """``(image, target)`` samples of a torchvision detection dataset: ``to_target(annotation, index)``
    converts its annotation; images become normalised float tensors, flipped with probability ``hflip``."""

    def __init__(self, base: Dataset, to_target: Callable[[Any, int], Target], mean: Sequence[float], std: Sequence[float],
                 hflip: float = 0.0) -> None:
        self.base, self.to_target, self.hflip = base, to_target, float(hflip)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        from torchvision import tv_tensors
        from torchvision.transforms import v2
        from torchvision.transforms.v2 import functional as TF

        image, annotation = self.base[index]
        target = self.to_target(annotation, index)
        x = TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True)
        if self.hflip > 0:
            boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(x.shape[-2:]))
            x, boxes = v2.RandomHorizontalFlip(self.hflip)(tv_tensors.Image(x), boxes)
            target["boxes"] = boxes.as_subclass(torch.Tensor)
        return ((x.as_subclass(torch.Tensor) - self.mean) / self.std), target


def _target(boxes: list[list[float]], labels: list[int], crowd: list[int], index: int) -> Target:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long),
            "iscrowd": torch.tensor(crowd, dtype=torch.long), "image_id": index}


def _check_classes(num_classes: int | None, names: list[str]) -> None:
    if num_classes is not None and int(num_classes) != len(names):
        raise ConfigError(f"data.num_classes={num_classes} but the annotations give {len(names)} classes with the background; "
                          f"set data.num_classes={len(names)} or null")


def voc_target(keep_difficult: bool) -> Callable[[Any, int], Target]:
    """Converts VOCDetection's parsed XML: 1-based inclusive pixel boxes to ``x1, y1, x2, y2``,
    class names to labels 1..20, ``difficult`` to ``iscrowd`` (or dropped unless ``keep_difficult``)."""

    def convert(annotation: dict[str, Any], index: int) -> Target:
        boxes, labels, crowd = [], [], []
        for obj in annotation["annotation"].get("object", []):
            difficult = int(obj.get("difficult", "0"))
            if difficult and not keep_difficult:
                continue
            name = obj["name"].strip()
            if name not in VOC_CLASSES:
                raise ConfigError(f"unknown VOC class {name!r} in {annotation['annotation'].get('filename')}")
            b = obj["bndbox"]
            boxes.append([float(b["xmin"]) - 1, float(b["ymin"]) - 1, float(b["xmax"]), float(b["ymax"])])
            labels.append(VOC_CLASSES.index(name) + 1)
            crowd.append(difficult)
        return _target(boxes, labels, crowd, index)

    return convert


@DATASETS.register("voc", num_classes=len(VOC_CLASSES) + 1, in_chans=3, paper="Everingham et al. 2010")
def voc(
    root: str = "data",
    year: str = "2007",
    train_set: str = "train",
    val_set: str = "val",
    test_set: str = "test",
    image_size: int = 600,
    max_size: int = 1000,
    hflip: float = 0.5,
    normalize: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
) -> SampleSplits:
    """Pascal VOC detection: train/val/test from the ``ImageSets/Main`` lists; "difficult" objects are
    left out of training targets and ignored by the evaluation. ``image_size``/``max_size`` are the
    detector's resize bounds (kept here for the model config)."""
    from torchvision.datasets import VOCDetection

    mean, std = (photo_stats(normalize, 3, mean, std)[k] for k in ("mean", "std"))
    _check_classes(num_classes, ["background", *VOC_CLASSES])
    base = Path(root) / "VOCdevkit" / f"VOC{year}"
    layout = (f"{base}/Annotations/<id>.xml, {base}/JPEGImages/<id>.jpg and {base}/ImageSets/Main/<set>.txt "
              "(the VOCdevkit layout); set data.root to the folder holding VOCdevkit/")
    if not base.is_dir():
        raise DataNotFoundError(f"Pascal VOC {year} not found: expected {layout}")

    def split(image_set: str, train: bool) -> DetectionSamples:
        if not (base / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
            raise DataNotFoundError(f"Pascal VOC {year}: no image set {image_set!r}: expected {base}/ImageSets/Main/{image_set}.txt")
        try:
            dataset = VOCDetection(str(root), year=str(year), image_set=image_set, download=False)
        except (RuntimeError, ValueError) as e:
            raise DataNotFoundError(f"Pascal VOC {year} set {image_set!r} unreadable ({e}); expected {layout}") from None
        return DetectionSamples(dataset, voc_target(keep_difficult=not train), mean, std, hflip if train else 0.0)

    return SampleSplits(train=split(train_set, True), val=split(val_set, False), test=split(test_set, False),
                        class_names=["background", *VOC_CLASSES], in_chans=in_chans, image_size=int(image_size),
                        mean=list(mean), std=list(std), info={"max_size": int(max_size)})


def coco_target(category_ids: list[int]) -> Callable[[Any, int], Target]:
    """Converts CocoDetection's annotation list: ``x, y, w, h`` boxes to ``x1, y1, x2, y2`` (empty ones
    dropped), category ids to contiguous labels 1..K, ``iscrowd`` kept."""
    label_of = {cat: i + 1 for i, cat in enumerate(category_ids)}

    def convert(annotations: list[dict[str, Any]], index: int) -> Target:
        boxes, labels, crowd = [], [], []
        for ann in annotations:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[ann["category_id"]])
            crowd.append(int(ann.get("iscrowd", 0)))
        return _target(boxes, labels, crowd, index)

    return convert


@DATASETS.register("coco", num_classes=81, in_chans=3, paper="Lin et al. 2014")
def coco(
    root: str = "data",
    train_split: str = "train2017",
    val_split: str = "val2017",
    test_split: str = "val2017",
    image_size: int = 800,
    max_size: int = 1333,
    hflip: float = 0.5,
    normalize: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
) -> SampleSplits:
    """COCO-format detection (``instances_<split>.json``); the classes are the categories of the
    training annotations, in id order (their ids are kept in ``info["category_ids"]``)."""
    from zoo.extras import require

    require("detection", "data=coco (COCO annotations)")
    from torchvision.datasets import CocoDetection

    mean, std = (photo_stats(normalize, 3, mean, std)[k] for k in ("mean", "std"))
    base = Path(root) / "coco"
    layout = f"{base}/annotations/instances_<split>.json and the images in {base}/<split>/; set data.root to the folder holding coco/"

    def open_split(name: str) -> Any:
        ann, images = base / "annotations" / f"instances_{name}.json", base / name
        if not ann.is_file() or not images.is_dir():
            missing = ann if not ann.is_file() else images
            raise DataNotFoundError(f"COCO split {name!r} not found ({missing} is missing): expected {layout}")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its loading progress
            try:
                return CocoDetection(str(images), str(ann))
            except (ValueError, KeyError) as e:
                raise DataNotFoundError(f"COCO annotations {ann} unreadable ({e}); expected the instances JSON format") from None

    train = open_split(train_split)
    cats = sorted(train.coco.cats.values(), key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    names = ["background", *[c["name"] for c in cats]]
    _check_classes(num_classes, names)
    convert = coco_target(ids)
    splits = {"train": DetectionSamples(train, convert, mean, std, hflip)}
    for split, name in (("val", val_split), ("test", test_split)):
        dataset = open_split(name)
        unknown = sorted(set(dataset.coco.cats) - set(ids))
        if unknown:
            raise ConfigError(f"COCO split {name!r} has categories {unknown} that {train_split!r} lacks")
        splits[split] = DetectionSamples(dataset, convert, mean, std)
    return SampleSplits(**splits, class_names=names, in_chans=in_chans, image_size=int(image_size), mean=list(mean),
                        std=list(std), info={"category_ids": ids, "max_size": int(max_size)})
