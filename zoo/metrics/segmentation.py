"""Semantic segmentation metrics from a per-pixel confusion matrix (Long et al. 2015, Section 5):
pixel accuracy, mean class accuracy, per-class and mean intersection over union; plus the accuracy in
the band of pixels near a ground-truth class boundary (where a CRF helps most)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.metrics.classification import ConfusionMatrix


def iou_per_class(matrix: torch.Tensor) -> torch.Tensor:
    """IoU of each class, ``TP / (TP + FP + FN)``; NaN for classes neither present nor predicted."""
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def boundary_band(target: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels with a different label (ignored pixels count as one) within
    ``width`` pixels (a ``2 width + 1`` square)."""
    t = target.float().unsqueeze(1)
    k = 2 * width + 1
    high = F.max_pool2d(t, k, stride=1, padding=width)
    low = -F.max_pool2d(-t, k, stride=1, padding=width)
    return (high != low).squeeze(1)


class SegmentationMetrics:
    """Accumulates a confusion matrix over the pixels whose target is not ``ignore_index``, and the
    correct/total counts of those within ``boundary_width`` pixels of a class boundary."""

    def __init__(self, num_classes: int, ignore_index: int = 255, boundary_width: int = 3) -> None:
        self.num_classes, self.ignore_index, self.boundary_width = num_classes, ignore_index, boundary_width
        self.confusion = ConfusionMatrix(num_classes)
        self.boundary = torch.zeros(2, dtype=torch.long)  # correct, total

    def reset(self) -> None:
        self.confusion.reset()
        self.boundary.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred`` and ``target``: ``(B, H, W)`` class indices."""
        valid = target != self.ignore_index
        if bool(((target < 0) | (target >= self.num_classes))[valid].any()):
            raise ValueError(f"segmentation targets must be in 0..{self.num_classes - 1} or {self.ignore_index} (ignored)")
        self.confusion.update(pred[valid], target[valid])
        band = boundary_band(target, self.boundary_width) & valid
        if self.boundary.device != pred.device:
            self.boundary = self.boundary.to(pred.device)
        self.boundary += torch.stack([(pred == target)[band].sum(), band.sum()])

    def compute(self, per_class: bool = True) -> dict[str, float]:
        """``miou``, ``pixel_acc``, ``mean_acc``, ``boundary_acc`` and (``per_class``) ``iou/<class index>``
        of the classes that occur."""
        m = self.confusion.matrix.double()
        total = float(m.sum())
        if total == 0:
            return {}
        iou = iou_per_class(m)
        present = m.sum(1) > 0
        metrics = {
            "miou": float(iou.nanmean()),
            "pixel_acc": float(m.diagonal().sum()) / total,
            "mean_acc": float((m.diagonal() / m.sum(1).clamp_min(1))[present].mean()),
        }
        correct, band = (int(v) for v in self.boundary)
        if band:
            metrics["boundary_acc"] = correct / band
        if per_class:
            metrics.update({f"iou/{c}": float(v) for c, v in enumerate(iou) if not torch.isnan(v)})
        return metrics
