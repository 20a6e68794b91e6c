"""Image classification: a loss of :mod:`zoo.losses` (cross-entropy with label smoothing, the multiclass
SVM losses, one-vs-all BCE; auxiliary heads), top-k accuracy, confusion matrix, per-sample predictions
(``evaluate.py``'s ``predictions_<split>.csv``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.losses import LOSSES, build_loss, soft_target_losses
from zoo.metrics.classification import ConfusionMatrix, ranked_columns, topk_correct
from zoo.tasks.base import PROB_FLOOR, TASKS, Task

log = logging.getLogger("zoo")


@TASKS.register("classification")
class ClassificationTask(Task):
    """``model(x)`` returns class scores, or in training ``(scores, *aux_scores)`` for models with auxiliary
    classifiers (GoogLeNet), whose losses are added with weight ``aux_weight`` (0.3 in Szegedy et al. 2015).

    ``loss`` names a :data:`zoo.losses.LOSSES` entry; ``label_smoothing`` (cross-entropy) and ``margin``
    (hinge, squared hinge) are its options, ``None`` for the loss's default (0.1 and 1). ``val/loss`` is
    the same loss without label smoothing.

    Training targets may be class probabilities (MixUp, CutMix) for the losses that take them;
    ``train/acc`` then counts the argmax of the mixed target, the dominant label, as torchvision's
    classification references do (timm reports no training accuracy)."""

    monitor = "acc"
    monitor_mode = "max"
    ensembles = True

    def __init__(self, model: nn.Module, num_classes: int, loss: str = "cross_entropy",
                 label_smoothing: float | None = None, margin: float | None = None, aux_weight: float = 0.3) -> None:
        super().__init__(model)
        if label_smoothing is not None and not 0 <= label_smoothing <= 1:
            raise ConfigError(f"task.label_smoothing must be in [0, 1], got {label_smoothing}")
        if margin is not None and margin < 0:
            raise ConfigError(f"task.margin must be >= 0 (the notes' c), got {margin}")
        self.num_classes = num_classes
        self.loss_name = loss
        self._loss = build_loss(loss, label_smoothing=label_smoothing, margin=margin)
        self._eval_loss = build_loss(loss, label_smoothing=0.0, margin=margin)
        self.aux_weight = aux_weight
        self.topk = 5 if num_classes > 5 else None
        self.confusion = ConfusionMatrix(num_classes)
        self._loss_sum = torch.zeros(())
        self._top5 = torch.zeros((), dtype=torch.long)
        #: per batch of the pass: the top-k classes, their probabilities and the targets (kept on the device)
        self._ranked: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def soft_targets_refused(self) -> str | None:
        if LOSSES.metadata(self.loss_name).get("soft_targets"):
            return None
        return f"task.loss={self.loss_name} takes class indices only; use task.loss={'|'.join(soft_target_losses())}"

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self.model(x)
        logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        loss = self._loss(logits.float(), y).mean()
        loss = loss + self.aux_weight * sum(self._loss(a.float(), y).mean() for a in aux)
        label = y.argmax(1) if y.ndim == 2 else y  # the dominant class of a mixed target
        return {"loss": loss, "acc": (logits.detach().argmax(1) == label).float().mean()}

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """The model's class scores of ``x`` (the main head's, for a model with auxiliary heads), in float32."""
        out = self.model(x)
        return (out[0] if isinstance(out, tuple) else out).float()

    def validation_step(self, batch: Any) -> None:
        x, y = batch
        logits = self._scores(x)
        self._loss_sum = self._loss_sum.to(logits.device) + self._eval_loss(logits, y).sum().detach()
        self._count(logits, y)
        top = logits.softmax(1).topk(self.topk or self.num_classes, dim=1)
        self._ranked.append((top.indices, top.values, y))

    def ensemble_probabilities(self, batch: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x, y = batch
        return [(self._scores(x).softmax(1), y)]

    def score_probabilities(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """``loss`` is the negative log-likelihood of the probabilities (cross-entropy's ``val/loss`` for one model)."""
        self._loss_sum = self._loss_sum.to(probs.device) + F.nll_loss(probs.clamp_min(PROB_FLOOR).log(), target, reduction="sum")
        self._count(probs, target)

    def _count(self, scores: torch.Tensor, y: torch.Tensor) -> None:
        """The confusion matrix and top-k counts of one batch's class scores."""
        self.confusion.update(scores.argmax(1), y)
        if self.topk:
            self._top5 = self._top5.to(scores.device) + topk_correct(scores, y, self.topk)

    def reset_metrics(self) -> None:
        self.confusion.reset()
        self._loss_sum = torch.zeros((), device=self.confusion.matrix.device)
        self._top5 = torch.zeros((), dtype=torch.long, device=self.confusion.matrix.device)
        self._ranked = []

    def set_class_names(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)

    def predictions(self) -> list[dict[str, Any]]:
        """Rows of the samples of the last pass, in loader order: ``index``, ``target``, ``predicted``, ``probability``
        (of the prediction), then ``class_1, probability_1, ...`` of the top-k (k = 5, or every class when fewer)."""
        if not self._ranked:
            return []
        indices, probs, targets = (torch.cat(parts).cpu() for parts in zip(*self._ranked))
        names = getattr(self, "class_names", [str(i) for i in range(self.num_classes)])
        return [{"index": n, "target": names[t], "predicted": ranked["class_1"], "probability": ranked["probability_1"],
                 **ranked} for n, (t, ranked) in enumerate(zip(targets.tolist(), ranked_columns(indices, probs, names)))]

    def write_predictions(self, run_dir: Path, split: str) -> list[Path]:
        from zoo.engine.utils import write_rows

        rows = self.predictions()  # none where a subclass counts without them (k-nearest neighbours)
        return [write_rows(rows, Path(run_dir) / f"predictions_{split}.csv")] if rows else []

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
        n = int(self.confusion.matrix.sum())
        return {"loss": float(self._loss_sum) / n, **self._accuracies()} if n else {}

    def _accuracies(self) -> dict[str, float]:
        """Top-1 (and top-k) accuracy of the pass so far."""
        m = self.confusion.matrix
        n = int(m.sum())
        metrics = {"acc": float(m.diagonal().sum()) / max(n, 1)}
        if self.topk:
            metrics[f"acc{self.topk}"] = float(self._top5) / max(n, 1)
        return metrics
