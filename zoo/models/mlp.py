"""A multilayer perceptron on pixels (the notes' fully connected networks, ``f = W3 max(0, W2 max(0, W1 x))``;
Rumelhart, Hinton & Williams 1986).

The flattened image (``D = C * H * W`` values) goes through one block per ``hidden`` width ``h``:
``Linear -> [BatchNorm1d] -> activation (any of :func:`zoo.models.layers.make_act`) -> [Dropout(drop_rate)]`` (batch norm before the nonlinearity,
Ioffe & Szegedy 2015; the linear layer then has no bias, the norm's shift replaces it), then the class
scores. Parameters: ``sum_i (h_{i-1} + 1) h_i`` without batch norm, ``sum_i (h_{i-1} + 2) h_i`` with it
(``h_0 = D``), plus ``(h_last + 1) * num_classes``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models import register_model
from zoo.models.base import Classifier
from zoo.models.layers import Act, act_width, linear_or_identity, make_act
from zoo.models.linear import flatten_image

class MLP(Classifier):
    """``features`` (one ``nn.Sequential`` block per hidden layer) on the flattened image, then ``fc``."""

    classifier_attr = "fc"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 8,
                 hidden: Sequence[int] = (256, 128), act: Act = "relu", drop_rate: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if any(int(h) < 1 for h in hidden):
            raise ConfigError(f"model.hidden must list positive widths, got {list(hidden)}")
        if not 0 <= drop_rate < 1:
            raise ConfigError(f"model.drop_rate must be in [0, 1), got {drop_rate}")
        self.image_shape = (in_chans, image_size, image_size)
        widths = [in_chans * image_size * image_size, *map(int, hidden)]
        blocks = []
        for n_in, n_out in zip(widths, widths[1:]):
            width = act_width(n_out, act)  # maxout: the layer gives its pieces
            layers = [nn.Linear(n_in, width, bias=not batch_norm), *([nn.BatchNorm1d(width)] if batch_norm else []),
                      make_act(act, n_out), *([nn.Dropout(drop_rate)] if drop_rate else [])]
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.fc = linear_or_identity(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(flatten_image(x, self.image_shape, "the MLP"))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)


@register_model(family="mlp", input_size=8, feature_maps=False,
                paper="Rumelhart, Hinton & Williams 1986, Learning representations by back-propagating errors")
def mlp(num_classes: int = 10, in_chans: int = 1, image_size: int = 8, hidden: Sequence[int] = (256, 128),
        act: Act = "relu", drop_rate: float = 0.0, batch_norm: bool = False) -> MLP:
    """A fully connected network with ``hidden`` widths on the flattened pixels."""
    return MLP(num_classes=num_classes, in_chans=in_chans, image_size=image_size, hidden=hidden, act=act,
               drop_rate=drop_rate, batch_norm=batch_norm)
