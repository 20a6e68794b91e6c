"""Metrics: top-k accuracy and confusion matrices (classification), mIoU (segmentation)."""

from zoo.metrics.classification import ConfusionMatrix, format_confusion, topk_correct
from zoo.metrics.segmentation import SegmentationMetrics, iou_per_class

__all__ = ["ConfusionMatrix", "format_confusion", "topk_correct", "SegmentationMetrics", "iou_per_class"]
