"""Metrics: top-k accuracy and confusion matrices (classification)."""

from zoo.metrics.classification import ConfusionMatrix, format_confusion, topk_correct

__all__ = ["ConfusionMatrix", "format_confusion", "topk_correct"]
