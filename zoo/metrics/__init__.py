"""Metrics: top-k accuracy and confusion matrices (classification)."""

from zoo.metrics.classification import ConfusionMatrix, format_confusion, topk_correct

__all__ = ["ConfusionMatrix", "format_confusion", "topk_correct"]

from zoo.metrics.segmentation import SegmentationMetrics, iou_per_class  # noqa: E402  (mIoU, per-class IoU)

__all__ += ["SegmentationMetrics", "iou_per_class"]
