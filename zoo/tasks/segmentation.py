"""Semantic segmentation: per-pixel cross-entropy that skips ``ignore_index`` pixels (Long et al. 2015),
confusion-matrix metrics (mIoU, pixel accuracy, per-class IoU, boundary-region accuracy), and an
optional dense CRF (Krähenbühl & Koltun 2011) applied to the model's scores at evaluation.

Batches are ``(images, targets)``: images a ``(B, C, H, W)`` tensor, or a list of ``(C, H, W)`` images of
different sizes (evaluated one by one); targets a list of dicts whose ``mask`` is ``(H, W)`` class indices.
With ``crf`` configured the final evaluation (test pass, ``evaluate.py``), and every validation when
``crf_every_epoch``, also reports the refined predictions' metrics with a ``_crf`` suffix (``miou_crf``,
``boundary_acc_crf``, ...) and the CRF's milliseconds per image; per-class IoUs (``iou/<class index>``)
are reported then too. After each validation, TensorBoard gets
rows of input, prediction, prediction after the CRF (when run) and ground truth.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.types import IGNORE_INDEX
from zoo.errors import ConfigError
from zoo.metrics.segmentation import SegmentationMetrics
from zoo.models.crf import DenseCRF
from zoo.tasks.base import PROB_FLOOR, TASKS, Task, for_display


def label_colours(num_classes: int) -> torch.Tensor:
    """``(256, 3)`` colours in [0, 1]: the Pascal VOC colour map (bits of the label spread over RGB) for
    labels below ``num_classes``, white for the rest (ignored pixels)."""
    colours = torch.ones(256, 3)
    for label in range(min(num_classes, 256)):
        rgb, value = [0, 0, 0], label
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        colours[label] = torch.tensor(rgb) / 255.0
    return colours


def _chunks(batch: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, masks)`` pairs of equal-size images: the whole batch, or one image at a time."""
    images, targets = batch
    masks = [t["mask"] for t in targets]
    if isinstance(images, torch.Tensor):
        yield images, torch.stack(masks)
    else:
        for image, mask in zip(images, masks):
            yield image.unsqueeze(0), mask.unsqueeze(0)


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """``model(x)`` returns ``(B, num_classes, h, w)`` scores (logits or log-probabilities), resized
    bilinearly to the mask when ``(h, w)`` differs."""

    monitor = "miou"
    monitor_mode = "max"
    ensembles = True

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        boundary_width: int = 3,
        crf: dict[str, Any] | None = None,
        crf_every_epoch: bool = False,
        log_images: int = 8,
    ) -> None:
        super().__init__(model)
        if boundary_width < 1:
            raise ConfigError(f"task.boundary_width must be >= 1 pixel, got {boundary_width}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.metrics = SegmentationMetrics(num_classes, ignore_index, boundary_width)
        self.metrics_crf = SegmentationMetrics(num_classes, ignore_index, boundary_width)
        crf = dict(crf or {})
        enabled = crf.pop("enabled", bool(crf))
        self.crf = DenseCRF(num_classes, **crf) if enabled else None
        self.crf_every_epoch, self.log_images = crf_every_epoch, log_images
        self._loss_sum, self._pixels, self._crf_seconds, self._crf_images = torch.zeros(()), torch.zeros(()), 0.0, 0
        self._shown: list[torch.Tensor] | None = None

    def _scores(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        out = self.model(x)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        loss_sum, pixels, correct = 0.0, 0, 0
        for x, y in _chunks(batch):
            out = self._scores(x, y.shape[-2:])
            valid = y != self.ignore_index
            loss_sum = loss_sum + F.cross_entropy(out, y, ignore_index=self.ignore_index, reduction="sum")
            pixels = pixels + valid.sum()
            correct = correct + ((out.detach().argmax(1) == y) & valid).sum()
        pixels = torch.as_tensor(pixels).clamp_min(1)
        return {"loss": loss_sum / pixels, "pixel_acc": correct / pixels}

    @property
    def _run_crf(self) -> bool:
        return self.crf is not None and (self.final_evaluation or self.crf_every_epoch)

    def _score(self, loss_sum: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> None:
        """Add one chunk's summed loss and predicted labels to the pass's metrics."""
        self._loss_sum = self._loss_sum.to(pred.device) + loss_sum.detach()
        self._pixels = self._pixels.to(pred.device) + (y != self.ignore_index).sum()
        self.metrics.update(pred, y)

    def validation_step(self, batch: Any) -> None:
        for x, y in _chunks(batch):
            out = self._scores(x, y.shape[-2:]).float()
            pred = out.argmax(1)
            self._score(F.cross_entropy(out, y, ignore_index=self.ignore_index, reduction="sum"), pred, y)
            pred_crf = None
            if self._run_crf:
                start = time.perf_counter()
                pred_crf = self.crf(out, x).argmax(1)  # type: ignore[misc]
                if pred_crf.is_cuda:
                    torch.cuda.synchronize(pred_crf.device)
                self._crf_seconds += time.perf_counter() - start
                self._crf_images += len(x)
                self.metrics_crf.update(pred_crf, y)
            self._remember(x, y, pred, pred_crf)

    def ensemble_probabilities(self, batch: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-pixel class probabilities at the masks' size, one chunk per equal-size group of images. The
        CRF is not applied: an ensemble scores the averaged probabilities of the models themselves."""
        return [(self._scores(x, y.shape[-2:]).float().softmax(1), y) for x, y in _chunks(batch)]

    def score_probabilities(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """``loss`` is the per-pixel negative log-likelihood (the cross-entropy of one model's scores)."""
        log_probs = probs.clamp_min(PROB_FLOOR).log()
        self._score(F.nll_loss(log_probs, target, ignore_index=self.ignore_index, reduction="sum"), probs.argmax(1), target)

    def _remember(self, x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, pred_crf: torch.Tensor | None) -> None:
        """Keep the first ``log_images`` validation images (same size) for the image summary."""
        if self.log_images <= 0:
            return
        if self._shown is None:
            self._shown = []
        have = len(self._shown[0]) if self._shown else 0
        if have >= self.log_images or (self._shown and x.shape[-2:] != self._shown[0].shape[-2:]):
            return
        take = self.log_images - have
        rows = [x[:take].detach().float(), pred[:take], *([] if pred_crf is None else [pred_crf[:take]]), y[:take]]
        self._shown = rows if not self._shown else [torch.cat([a, b]) for a, b in zip(self._shown, rows)]

    def reset_metrics(self) -> None:
        self.metrics.reset()
        self.metrics_crf.reset()
        self._loss_sum, self._pixels, self._crf_seconds, self._crf_images = torch.zeros(()), torch.zeros(()), 0.0, 0
        self._shown = None

    def compute_metrics(self) -> dict[str, float]:
        per_class = self.final_evaluation  # per-class IoUs in the test pass and evaluate.py, not every epoch
        metrics = self.metrics.compute(per_class)
        if not metrics:
            return {}
        metrics = {"loss": float(self._loss_sum) / max(float(self._pixels), 1.0), **metrics}
        if self._crf_images:
            metrics.update({_crf_key(k): v for k, v in self.metrics_crf.compute(per_class).items()})
            metrics["crf_ms_per_image"] = 1000 * self._crf_seconds / self._crf_images
        return metrics

    def on_validation_end(self, logger: Any, step: int) -> None:
        """Rows of inputs, predictions (+ CRF) and ground truth, in the VOC colours (ignored: white)."""
        if not self._shown:
            return
        images, *labels = self._shown
        images = for_display(images).cpu()
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
        colours = label_colours(self.num_classes)
        rows = [images] + [colours[lab.cpu().clamp(0, 255)].permute(0, 3, 1, 2) for lab in labels]
        logger.log_image_grid("val/segmentation", torch.cat(rows), step, nrow=len(images))


def _crf_key(key: str) -> str:
    """``miou`` -> ``miou_crf``, ``iou/3`` -> ``iou_crf/3``."""
    head, sep, tail = key.partition("/")
    return f"{head}_crf{sep}{tail}"
