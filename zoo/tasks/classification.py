"""Image classification: cross-entropy (optional label smoothing, auxiliary heads), top-k accuracy,
confusion matrix."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.metrics.classification import ConfusionMatrix, topk_correct
from zoo.tasks.base import TASKS, Task

log = logging.getLogger("zoo")


@TASKS.register("classification")
class ClassificationTask(Task):
    """``model(x)`` returns logits, or in training ``(logits, *aux_logits)`` for models with auxiliary
    classifiers (GoogLeNet), whose losses are added with weight ``aux_weight`` (0.3 in Szegedy et al. 2015)."""

    monitor = "acc"
    monitor_mode = "max"

    def __init__(self, model: nn.Module, num_classes: int, label_smoothing: float = 0.0, aux_weight: float = 0.3) -> None:
        super().__init__(model)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.aux_weight = aux_weight
        self.topk = 5 if num_classes > 5 else None
        self.confusion = ConfusionMatrix(num_classes)
        self._loss_sum = torch.zeros(())
        self._top5 = torch.zeros((), dtype=torch.long)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self.model(x)
        if isinstance(out, tuple):
            logits, aux = out[0], out[1:]
            loss = self._loss(logits, y) + self.aux_weight * sum(self._loss(a, y) for a in aux)
        else:
            logits, loss = out, self._loss(out, y)
        return {"loss": loss, "acc": (logits.detach().argmax(1) == y).float().mean()}

    def validation_step(self, batch: Any) -> None:
        x, y = batch
        out = self.model(x)
        logits = (out[0] if isinstance(out, tuple) else out).float()
        self._loss_sum = self._loss_sum.to(logits.device) + F.cross_entropy(logits, y, reduction="sum").detach()
        self.confusion.update(logits.argmax(1), y)
        if self.topk:
            self._top5 = self._top5.to(logits.device) + topk_correct(logits, y, self.topk)

    def reset_metrics(self) -> None:
        self.confusion.reset()
        self._loss_sum = torch.zeros((), device=self.confusion.matrix.device)
        self._top5 = torch.zeros((), dtype=torch.long, device=self.confusion.matrix.device)

    def set_class_names(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)

    def report(self, logger: Any, split: str, step: int) -> dict[str, Any]:
        """The confusion matrix of the last pass: logged as text and a figure, returned for ``metrics.json``."""
        from zoo.metrics.classification import confusion_figure, format_confusion

        matrix = self.confusion.matrix
        names = getattr(self, "class_names", [str(i) for i in range(self.num_classes)])
        log.info("confusion matrix (rows: true class, columns: predicted)\n%s", format_confusion(matrix, names))
        if logger:
            logger.log_figure(f"{split}/confusion_matrix", confusion_figure(matrix, names), step)
        return {"confusion_matrix": matrix.cpu().tolist()}

    def evaluation_views(self, tta_cfg: dict[str, Any] | None, image_size: int,
                         black: Sequence[float] = ()) -> tuple[nn.Module | None, nn.Module | None]:
        """The central crop, and the averaged views of ``tta_cfg`` (:mod:`zoo.data.tta`): class scores average."""
        from zoo.data.tta import TTAModel, build_tta, center_views

        views = build_tta(tta_cfg or {"name": "none"}, image_size, black)
        return TTAModel(self.model, center_views(image_size)), TTAModel(self.model, views) if views is not None else None

    def compute_metrics(self) -> dict[str, float]:
        m = self.confusion.matrix
        n = int(m.sum())
        if n == 0:
            return {}
        metrics = {"loss": float(self._loss_sum) / n, "acc": float(m.diagonal().sum()) / n}
        if self.topk:
            metrics[f"acc{self.topk}"] = float(self._top5) / n
        return metrics
