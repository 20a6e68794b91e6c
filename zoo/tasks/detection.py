"""Object detection with torchvision-style detectors (Faster R-CNN, :mod:`zoo.models.faster_rcnn`).

Batches are ``(images, targets)``: images a stacked tensor or a list of ``(C, H, W)`` tensors of any
sizes, targets a list of dicts with ``boxes`` (``x1, y1, x2, y2`` pixels) and ``labels`` (1..K, 0 is
the background). In training the model returns its loss terms; the task sums them into ``loss`` and
reports each as ``loss/<term>`` (``classifier``, ``box_reg``, ``objectness``, ``rpn_box_reg``). In
evaluation the model returns detections, which :class:`~zoo.metrics.detection.DetectionMAP` scores with
pycocotools; ``map`` (IoU .50:.95) selects the best checkpoint. After each validation the first images
are logged to TensorBoard with ground-truth (green) and predicted (red, score >= ``draw_score``) boxes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from zoo.metrics.detection import DetectionMAP
from zoo.tasks.base import TASKS, Task, for_display

#: target keys the detector reads; the others (masks, captions, ids) stay with the task
_MODEL_KEYS = ("boxes", "labels")


def _image_list(batch_images: Any) -> list[torch.Tensor]:
    return list(batch_images.unbind(0)) if isinstance(batch_images, torch.Tensor) else list(batch_images)


@TASKS.register("detection")
class DetectionTask(Task):
    """Summed detector losses in training; COCO mAP, mAP@0.5 and per-class AP in evaluation."""

    monitor = "map"
    monitor_mode = "max"
    extras = ("detection",)

    def __init__(self, model: torch.nn.Module, num_classes: int, num_images: int = 8, draw_score: float = 0.5) -> None:
        """``num_images``: validation images drawn with their boxes to TensorBoard (0: none)."""
        super().__init__(model)
        self.num_classes, self.num_images, self.draw_score = num_classes, num_images, draw_score
        self.metric = DetectionMAP(num_classes=num_classes)
        self._shown: list[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    def set_class_names(self, class_names: list[str]) -> None:
        """Name the per-class APs (``ap/<name>``) after the dataset's classes."""
        if len(class_names) == self.num_classes:
            self.metric.class_names = list(class_names)

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch[0], batch[1]
        losses = self.model(_image_list(images), [{k: t[k] for k in _MODEL_KEYS} for t in targets])
        out = {"loss": sum(losses.values())}
        out.update({f"loss/{k.removeprefix('loss_')}": v.detach() for k, v in losses.items()})
        return out

    def validation_step(self, batch: Any) -> None:
        images, targets = _image_list(batch[0]), batch[1]
        detections = self.model(images)
        self.metric.update(detections, targets, [tuple(x.shape[-2:]) for x in images])
        for image, target, det in zip(images, targets, detections):
            if len(self._shown) >= self.num_images:
                break
            self._shown.append((image.detach().cpu(), {k: target[k].cpu() for k in _MODEL_KEYS},
                                {k: v.detach().cpu() for k, v in det.items()}))

    def reset_metrics(self) -> None:
        self.metric.reset()
        self._shown = []

    def compute_metrics(self) -> dict[str, float]:
        return self.metric.compute()

    def on_validation_end(self, logger: Any, step: int) -> None:
        if self._shown:
            logger.log_image_grid("val/detections", self.drawn(), step, nrow=4)

    def drawn(self, side: int = 192) -> torch.Tensor:
        """The remembered validation images, min-max scaled and enlarged to ``side`` pixels (longer side),
        with ground-truth boxes in green and predictions in red, as an ``(N, 3, side', side')`` tensor in [0, 1]."""
        from torchvision.utils import draw_bounding_boxes

        names = self.metric.class_names
        drawn = []
        for image, target, det in self._shown:
            scale = side / max(image.shape[-2:])
            x = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
            x = for_display(x)
            x = F.interpolate(x[None].float(), scale_factor=scale, mode="nearest")[0]
            x = (x * 255).to(torch.uint8)
            keep = det["scores"] >= self.draw_score
            if len(target["boxes"]):
                x = draw_bounding_boxes(x, target["boxes"] * scale, colors="lime", width=1)
            if keep.any():
                labels = [f"{names[int(c)]} {float(s):.2f}" for c, s in zip(det["labels"][keep], det["scores"][keep])]
                x = draw_bounding_boxes(x, det["boxes"][keep] * scale, labels=labels, colors="red", width=1)
            drawn.append(x.float() / 255)
        height = max(d.shape[-2] for d in drawn)
        width = max(d.shape[-1] for d in drawn)
        return torch.stack([F.pad(d, (0, width - d.shape[-1], 0, height - d.shape[-2])) for d in drawn])
