"""A linear classifier on pixels (the notes' section 2.2): ``f(x) = W x + b``, one score per class.

The image is flattened to ``D = C * H * W`` values and one ``nn.Linear(D, num_classes)`` gives the scores:
``num_classes * (D + 1)`` parameters (650 for 10 classes of 8x8 grey digits). Trained with softmax
cross-entropy it is multinomial logistic regression, with ``task.loss=hinge`` a multiclass SVM (Weston &
Watkins 1999). Each row of ``W``, reshaped to ``C x H x W``, is the template of its class: the model draws
them through the ``visualizations()`` protocol (``val/templates`` in TensorBoard, each min-max scaled).

``input_size`` 8: the digits' own resolution, so every weight is one real pixel (resizing to 32 only
interpolates the same 64 values into 16x more weights); other data sets take ``model.input_size``
(``28`` for MNIST).
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models import register_model
from zoo.models.base import Classifier
from zoo.models.layers import linear_or_identity


def flatten_image(x: torch.Tensor, shape: tuple[int, int, int], model: str) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` as ``(B, C * H * W)``; a one-line error for images of another shape than ``shape``."""
    if x.dim() != 4 or [x.shape[1], x.shape[2], x.shape[3]] != [shape[0], shape[1], shape[2]]:  # TorchScript scripts this
        have, want = "x".join([str(s) for s in x.shape[1:]]), f"{shape[0]}x{shape[1]}x{shape[2]}"
        raise ConfigError(f"{model} was built for {want} images (model.image_size={shape[-1]}), got {have}; "
                          f"set data.image_size={shape[-1]} or model.input_size={x.shape[-1]}")
    return torch.flatten(x, 1)


class LinearClassifier(Classifier):
    """``fc(flatten(x))``: ``forward_features`` is the flattened image, ``forward_head`` the linear layer."""

    classifier_attr = "fc"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 8) -> None:
        super().__init__()
        self.image_shape = (in_chans, image_size, image_size)
        self.num_classes = num_classes
        self.num_features = in_chans * image_size * image_size
        self.fc = linear_or_identity(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return flatten_image(x, self.image_shape, "the linear classifier")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)

    def templates(self) -> torch.Tensor:
        """The rows of ``W`` as images, ``(num_classes, C, H, W)``: what each class's score matches."""
        return self.fc.weight.detach().view(-1, *self.image_shape)

    def visualizations(self) -> dict[str, torch.Tensor]:
        return {"templates": self.templates()} if isinstance(self.fc, nn.Linear) else {}


@register_model(family="linear", input_size=8, feature_maps=False,
                paper="Rosenblatt 1958, The perceptron; the notes' linear classifier f(x) = Wx + b")
def linear(num_classes: int = 10, in_chans: int = 1, image_size: int = 8) -> LinearClassifier:
    """A linear classifier on the flattened pixels of ``image_size`` x ``image_size`` images."""
    return LinearClassifier(num_classes=num_classes, in_chans=in_chans, image_size=image_size)
