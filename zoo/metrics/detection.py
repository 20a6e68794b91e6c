"""COCO-style detection metrics with pycocotools (Lin et al. 2014, "Microsoft COCO: common objects in
context"): mAP averaged over IoU thresholds .50:.05:.95, mAP at IoU .50 (the Pascal VOC criterion,
Everingham et al. 2010) and .75, and the AP of each class, from ground truth built in memory.

Boxes are ``x1, y1, x2, y2`` in pixels; ground truth marked ``iscrowd`` (VOC's "difficult" objects,
COCO's crowds) is neither required nor counted as a false positive.
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np
import torch


class DetectionMAP:
    """Accumulates predictions and ground truth image by image; :meth:`compute` runs ``COCOeval``.

    ``class_names[i]`` names label ``i`` (index 0, the background, is never a class); per-class APs
    are reported as ``ap/<name>`` for the classes that occur in the ground truth.
    """

    def __init__(self, class_names: Sequence[str] | None = None, num_classes: int | None = None) -> None:
        if class_names is None and num_classes is None:
            raise ValueError("DetectionMAP needs class_names or num_classes")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(int(num_classes or 0))]
        self.reset()

    def reset(self) -> None:
        self.images: list[dict[str, int]] = []
        self.truth: list[dict[str, object]] = []
        self.detections: list[list[float]] = []

    def update(self, predictions: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, torch.Tensor]],
               image_sizes: Sequence[tuple[int, int]] | None = None) -> None:
        """One batch: ``predictions`` with ``boxes``/``scores``/``labels``, ``targets`` with ``boxes``/``labels``
        (and optionally ``iscrowd``); ``image_sizes`` ``(h, w)`` are only recorded."""
        for k, (pred, target) in enumerate(zip(predictions, targets)):
            image_id = len(self.images) + 1
            h, w = image_sizes[k] if image_sizes is not None else (0, 0)
            self.images.append({"id": image_id, "height": int(h), "width": int(w)})
            boxes = target["boxes"].detach().float().cpu().reshape(-1, 4)
            labels = target["labels"].detach().cpu().tolist()
            crowd = target.get("iscrowd")
            crowd_list = crowd.detach().cpu().tolist() if isinstance(crowd, torch.Tensor) else [0] * len(labels)
            for box, label, is_crowd in zip(boxes.tolist(), labels, crowd_list):
                bw, bh = box[2] - box[0], box[3] - box[1]
                self.truth.append({"id": len(self.truth) + 1, "image_id": image_id, "category_id": int(label),
                                   "bbox": [box[0], box[1], bw, bh], "area": bw * bh, "iscrowd": int(is_crowd)})
            p_boxes = pred["boxes"].detach().float().cpu().reshape(-1, 4)
            xywh = torch.cat([p_boxes[:, :2], p_boxes[:, 2:] - p_boxes[:, :2]], dim=1)
            for box, score, label in zip(xywh.tolist(), pred["scores"].detach().float().cpu().tolist(),
                                         pred["labels"].detach().cpu().tolist()):
                self.detections.append([image_id, *box, score, int(label)])

    def compute(self) -> dict[str, float]:
        """``map`` (IoU .50:.95), ``map50``, ``map75``, ``mar100`` and ``ap/<class>`` (IoU .50:.95)."""
        from zoo.extras import require

        require("detection", "detection mAP (COCOeval)")
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not self.images:
            return {}
        gt = COCO()
        gt.dataset = {"images": self.images, "annotations": self.truth,
                      "categories": [{"id": i, "name": n} for i, n in enumerate(self.class_names) if i > 0]}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt.createIndex()
            if not self.detections:
                return {"map": 0.0, "map50": 0.0, "map75": 0.0, "mar100": 0.0}
            dt = gt.loadRes(np.array(self.detections, dtype=np.float64))
            evaluator = COCOeval(gt, dt, iouType="bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats
        metrics = {"map": _valid(stats[0]), "map50": _valid(stats[1]), "map75": _valid(stats[2]), "mar100": _valid(stats[8])}
        # precision: [IoU thresholds, recall points, classes, area ranges, max detections]; area "all", 100 dets
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        present = {a["category_id"] for a in self.truth if not a["iscrowd"]}
        for k, cat in enumerate(evaluator.params.catIds):
            if cat in present:
                values = precision[:, :, k]
                values = values[values > -1]
                metrics[f"ap/{self.class_names[cat]}"] = float(values.mean()) if values.size else 0.0
        return metrics


def _valid(value: float) -> float:
    """COCOeval reports -1 where nothing can be measured (no ground truth): 0 here."""
    return float(value) if value >= 0 else 0.0
