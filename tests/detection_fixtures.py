"""Tiny Pascal VOC and COCO detection datasets in their real on-disk formats.

Each image is black with a white rectangle per object, so a test can check that boxes and pixels stay
paired (also through flips)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

#: per image: (width, height, [(class name, xmin, ymin, xmax, ymax, difficult)]), VOC's 1-based inclusive pixels
VOC_IMAGES = {
    "000001": (48, 40, [("dog", 5, 6, 20, 30, 0), ("person", 30, 4, 44, 36, 0)]),
    "000002": (40, 48, [("cat", 10, 10, 30, 40, 0), ("dog", 2, 2, 6, 6, 1)]),
    "000003": (48, 48, [("person", 8, 8, 40, 24, 0)]),
}


def _image(width: int, height: int, boxes: list[tuple[float, float, float, float]]) -> Image.Image:
    """Black ``width x height`` RGB image with white ``x1, y1, x2, y2`` (0-based, exclusive) rectangles."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        pixels[int(y1) : int(y2), int(x1) : int(x2)] = 255
    return Image.fromarray(pixels)


def make_voc(root: Path, year: str = "2007", sets: dict[str, list[str]] | None = None) -> Path:
    """``root/VOCdevkit/VOC<year>`` with the :data:`VOC_IMAGES`; ``sets`` maps image-set names to ids."""
    base = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (width, height, objects) in VOC_IMAGES.items():
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
        size = ET.SubElement(ann, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for name, x1, y1, x2, y2, difficult in objects:
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = name
            ET.SubElement(obj, "difficult").text = str(difficult)
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(box, tag).text = str(value)
        ET.ElementTree(ann).write(base / "Annotations" / f"{image_id}.xml")
        # PNG data under .jpg: lossless, and PIL reads by content
        _image(width, height, [(x1 - 1, y1 - 1, x2, y2) for _, x1, y1, x2, y2, _ in objects]).save(
            base / "JPEGImages" / f"{image_id}.jpg", format="PNG")
    sets = sets or {"train": ["000001", "000002", "000003"], "val": ["000002"], "test": ["000001", "000003"]}
    for name, ids in sets.items():
        (base / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return base


#: COCO categories (ids deliberately not contiguous) and per image (width, height, [(category id, x, y, w, h, iscrowd)])
COCO_CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "kite"}]
COCO_IMAGES = {
    1: (50, 40, [(3, 4.0, 5.0, 20.0, 10.0, 0), (7, 30.0, 20.0, 12.0, 15.0, 0)]),
    2: (40, 40, [(7, 10.0, 10.0, 16.0, 16.0, 0), (3, 0.0, 0.0, 8.0, 8.0, 1)]),
    3: (40, 50, []),
}


def make_coco(root: Path, splits: tuple[str, ...] = ("train2017", "val2017")) -> Path:
    """``root/coco/annotations/instances_<split>.json`` and ``root/coco/<split>/`` with :data:`COCO_IMAGES`."""
    base = root / "coco"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    for split in splits:
        (base / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id, (width, height, objects) in COCO_IMAGES.items():
            file_name = f"{image_id:012d}.png"
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for cat, x, y, w, h, crowd in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                                    "area": w * h, "iscrowd": crowd, "segmentation": []})
            _image(width, height, [(x, y, x + w, y + h) for _, x, y, w, h, _ in objects]).save(base / split / file_name)
        data = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
        (base / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return base
