"""torchvision's detection parts as the zoo's Faster R-CNN uses them: the backbone adapter
(:class:`ZooBackbone`), RoI max pooling, the :class:`FasterRCNN` subclass and batch-norm freezing.

Kept apart from :mod:`zoo.models.faster_rcnn` (the options and the registered detectors) because
these classes subclass torchvision's: importing them imports torchvision (~1.5 s, its ops pull in
``torch._dynamo``), which only building a detector needs, not registering the family.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign, roi_pool
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from zoo.errors import ConfigError
from zoo.models import create_model
from zoo.models.base import _set_submodule
from zoo.models.features import FeatureExtractor, parameter_stages


def freeze_stages(model: nn.Module, trainable: int | None, used: int) -> None:
    """Train only the deepest ``trainable`` of the first ``used`` stages of ``model``'s ``feature_info``;
    the parameters of the others stop requiring gradients and their batch norms become frozen ones."""
    if trainable is None:
        return
    if not 0 <= trainable <= used:
        raise ConfigError(f"trainable_backbone_layers must be in 0..{used} (the backbone stages used), got {trainable}")
    stages = parameter_stages(model)[:used]  # type: ignore[arg-type]
    frozen = stages[: used - trainable]
    params = dict(model.named_parameters())
    for stage in frozen:
        for name in stage.params:
            params[name].requires_grad_(False)
        freeze_batch_norms(model, stage.modules)


def freeze_batch_norms(model: nn.Module, names: Sequence[str] | None = None) -> None:
    """Turn the batch norms among ``model``'s submodules ``names`` (default: all) into frozen ones."""
    for name in [n for n, _ in model.named_modules()] if names is None else names:
        module = model.get_submodule(name) if name else model
        if isinstance(module, nn.BatchNorm2d):
            _set_submodule(model, name, _frozen_bn(module))


def _frozen_bn(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.running_mean is not None and bn.running_var is not None:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


class ZooBackbone(nn.Module):
    """Feature maps of a zoo classifier for torchvision's detection heads: an ``OrderedDict`` of maps
    (``"0"``, ``"1"``, ... shallow to deep, plus ``"pool"`` with an FPN), all ``out_channels`` wide.

    ``out_indices`` select stages of the classifier's ``feature_info``; ``drop_final_pool`` removes a
    max pool that ends the deepest selected stage (VGG's pool5, ZF's pool after conv5: the paper's
    detectors read the last convolution at stride 16); ``fpn_channels`` adds a feature pyramid.
    """

    def __init__(
        self,
        name: str,
        in_chans: int,
        out_indices: Sequence[int],
        pretrained: str | None = None,
        trainable_layers: int | None = None,
        fpn_channels: int | None = None,
        drop_final_pool: bool = False,
        frozen_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        body = create_model(name, in_chans=in_chans, pretrained=pretrained, features_only=True, out_indices=out_indices)
        assert isinstance(body, FeatureExtractor)
        if drop_final_pool:
            last = body.feature_info[-1]
            pool = body.model.get_submodule(last.module)
            if isinstance(pool, nn.MaxPool2d):
                stride = pool.stride if isinstance(pool.stride, int) else pool.stride[0]
                _set_submodule(body.model, last.module, nn.Identity())
                body.feature_info[-1] = last._replace(reduction=last.reduction // int(stride))
                body.reductions[-1] = body.feature_info[-1].reduction
        freeze_stages(body.model, trainable_layers, body.out_indices[-1] + 1)
        if frozen_batch_norm:
            freeze_batch_norms(body.model)
        self.body = body
        self.names = [str(i) for i in range(len(body.channels))]
        self.fpn = None
        if fpn_channels:
            self.fpn = FeaturePyramidNetwork(body.channels, fpn_channels, extra_blocks=LastLevelMaxPool())
            self.out_channels = fpn_channels
            self.names.append("pool")
        elif len(set(body.channels)) == 1:
            self.out_channels = body.channels[0]
        else:
            raise ConfigError(f"backbone {name} stages {list(out_indices)} have different widths {body.channels}; "
                              "set fpn=true or select one stage (backbone_indices=[-1])")

    @property
    def reductions(self) -> list[int]:
        """Stride of each output map (the FPN's extra level doubles the deepest)."""
        strides = list(self.body.reductions)
        return strides + [strides[-1] * 2] if self.fpn is not None else strides

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = OrderedDict(zip(self.names, self.body(x)))
        return self.fpn(maps) if self.fpn is not None else maps


class RoIPool(MultiScaleRoIAlign):
    """RoI max pooling of one feature map (Girshick 2015, "Fast R-CNN"); a :class:`MultiScaleRoIAlign`
    subclass (same call signature) because :class:`FasterRCNN` accepts only that type as ``box_roi_pool``."""

    def __init__(self, featmap_name: str, output_size: int) -> None:
        super().__init__([featmap_name], output_size, sampling_ratio=0)
        self.featmap_name, self.pool_size = featmap_name, output_size

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        x = features[self.featmap_name]
        height = max(h for h, _ in image_shapes)
        scale = 2.0 ** round(math.log2(x.shape[-2] / height))  # as MultiScaleRoIAlign infers it
        return roi_pool(x, proposals, self.pool_size, scale)


class ZooFasterRCNN(FasterRCNN):
    """torchvision's :class:`FasterRCNN` on a :class:`ZooBackbone`, with what transfer learning needs:
    the layers a new class set replaces, and torchvision's names for the backbone's modules (its detector
    checkpoints name ResNet-50's layers ``backbone.body.layer1...``; the zoo classifier sits one level deeper)."""

    pretrained_aliases = {"backbone.body.": "backbone.body.model."}

    def classifier_names(self) -> list[str]:
        return ["roi_heads.box_predictor"]
