"""Faster R-CNN (Ren, He, Girshick & Sun, "Faster R-CNN: towards real-time object detection with region
proposal networks", NIPS 2015) on any zoo backbone.

The detector is torchvision's :class:`~torchvision.models.detection.FasterRCNN` (region proposal network,
box coding, NMS, RoI heads); the zoo supplies the backbone: the feature maps of any registered classifier
through the feature-extraction API (:class:`~zoo.models.features.FeatureExtractor`), one map for the
paper's single-scale detector or several through a feature pyramid network (Lin et al. 2017, "Feature
pyramid networks for object detection"; :class:`torchvision.ops.FeaturePyramidNetwork`).

- ``fasterrcnn_vgg16`` / ``fasterrcnn_zf``: the paper's detectors. The last convolution (stride 16,
  the pool after it dropped), 3 scales x 3 aspect ratios of anchors (128-512 px), RoI max pooling
  to 7x7 (VGG16) / 6x6 (ZF) and two 4096-d hidden layers; images rescaled to a 600 px short side.
  The paper fine-tunes VGG16 from conv3_1 up (``trainable_backbone_layers=3``) and all of ZF.
- ``fasterrcnn_resnet50_fpn``: ResNet-50 stages 2-5 through an FPN (5 levels with the max-pooled
  extra level), one anchor size per level (32-512 px), multi-scale RoIAlign (He et al. 2017), as
  torchvision's ``fasterrcnn_resnet50_fpn``.
- ``fasterrcnn_resnet20`` / ``fasterrcnn_resnet20_fpn``: the CIFAR ResNet-20 as a CPU-sized backbone for
  the 64 px digit scenes (16-28 px digits): stride-4 features and 12-32 px anchors, RoI max pooling
  (torchvision's RoIAlign backward is slow on CPU: ~6x RoI pooling's for the same RoIs), 64 RoIs per
  image in training.

Every builder takes the options of :func:`fasterrcnn` as overrides (e.g. ``backbone=vgg16_small``,
``fpn=true``, ``anchor_sizes``); ``backbone_pretrained`` loads a zoo classifier checkpoint (or any source
of :func:`zoo.transfer.load_pretrained`) into the backbone, ``trainable_backbone_layers=k`` trains only the
deepest ``k`` backbone stages (the others are frozen, their batch norms turned into
:class:`~torchvision.ops.FrozenBatchNorm2d`).

``pretrained="torchvision:fasterrcnn_resnet50_fpn.COCO_V1"`` loads torchvision's COCO detector into
``fasterrcnn_resnet50_fpn`` (a new ``num_classes`` keeps a fresh box predictor: fine-tuning a COCO
detector on one's own classes); the data must then be normalised with ImageNet statistics, as that
detector's own transform does. Inputs are already normalised by the zoo's datasets, so the model's transform only resizes
(``min_size``/``max_size``; set them to the data's image size to keep small images as they are) and
batches; ``image_mean``/``image_std`` are 0/1.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign, roi_pool
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from zoo.errors import ConfigError
from zoo.models import create_model, register_model
from zoo.models.base import _set_submodule
from zoo.models.features import FeatureExtractor, parameter_stages

_PAPER = "Ren et al. 2015, Faster R-CNN: towards real-time object detection with region proposal networks"
_FPN_PAPER = "Lin et al. 2017, Feature pyramid networks for object detection"


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


def fasterrcnn(
    num_classes: int = 91,
    in_chans: int = 3,
    backbone: str = "resnet50",
    backbone_indices: Sequence[int] = (-1,),
    fpn: bool = False,
    fpn_channels: int = 256,
    drop_final_pool: bool = False,
    backbone_pretrained: str | None = None,
    trainable_backbone_layers: int | None = None,
    frozen_batch_norm: bool = False,
    anchor_sizes: Sequence[int] = (128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    roi_op: str = "align",
    roi_output_size: int = 7,
    roi_sampling_ratio: int = 2,
    representation_size: int = 1024,
    min_size: int = 800,
    max_size: int = 1333,
    **kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN for ``num_classes`` classes (index 0 = background) on zoo classifier ``backbone``.

    ``backbone_indices``: the stages of the backbone's ``feature_info`` to read (one without an FPN).
    ``frozen_batch_norm``: every backbone batch norm keeps its (pretrained) statistics and affine, also in
    the stages that train, as torchvision's pretrained detectors do: a few large images per batch give
    noisy batch statistics.
    ``anchor_sizes``: every size at every position of the single map, or one size per pyramid level
    with ``fpn`` (levels = selected stages + the extra pooled one). ``aspect_ratios`` are height/width.
    ``roi_op``: ``align`` (RoIAlign with ``roi_sampling_ratio``^2 samples per bin; multi-scale with an
    FPN) or ``pool`` (the paper's RoI max pooling; single map). Further ``kwargs`` go to torchvision's ``FasterRCNN`` (RPN and
    RoI-head sampling, NMS thresholds, ``box_detections_per_img``, ...).
    """
    body = ZooBackbone(backbone, in_chans, backbone_indices, backbone_pretrained, trainable_backbone_layers,
                       fpn_channels if fpn else None, drop_final_pool, frozen_batch_norm)
    levels = len(body.names)
    if fpn:
        if len(anchor_sizes) != levels:
            raise ConfigError(f"fpn=true needs one anchor size per level ({levels}: strides {body.reductions}), "
                              f"got anchor_sizes={list(anchor_sizes)}")
        sizes = tuple((int(s),) for s in anchor_sizes)
    elif levels == 1:
        sizes = (tuple(int(s) for s in anchor_sizes),)
    else:
        raise ConfigError("several backbone_indices need fpn=true")
    anchors = AnchorGenerator(sizes, (tuple(float(r) for r in aspect_ratios),) * len(sizes))
    if roi_op == "align":
        pooler: nn.Module = MultiScaleRoIAlign([n for n in body.names if n != "pool"], roi_output_size, roi_sampling_ratio)
    elif roi_op == "pool":
        if fpn:
            raise ConfigError("roi_op=pool reads one feature map; use roi_op=align with fpn=true")
        pooler = RoIPool(body.names[0], roi_output_size)
    else:
        raise ConfigError(f"unknown roi_op {roi_op!r}; use align or pool")
    head = TwoMLPHead(body.out_channels * roi_output_size**2, representation_size)
    return ZooFasterRCNN(
        body,
        min_size=min_size,
        max_size=max_size,
        image_mean=[0.0] * in_chans,
        image_std=[1.0] * in_chans,
        rpn_anchor_generator=anchors,
        box_roi_pool=pooler,
        box_head=head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        **kwargs,
    )


def _preset(defaults: dict[str, Any], num_classes: int, in_chans: int, kwargs: dict[str, Any]) -> ZooFasterRCNN:
    return fasterrcnn(num_classes=num_classes, in_chans=in_chans, **{**defaults, **kwargs})


_PAPER_SINGLE_SCALE = dict(drop_final_pool=True, anchor_sizes=(128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0), roi_op="pool",
                           representation_size=4096, min_size=600, max_size=1000)


@register_model(family="faster_rcnn", task="detection", input_size=600, paper=_PAPER)
def fasterrcnn_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FasterRCNN:
    """The paper's VGG16 detector: conv5_3 (stride 16), RoI pooling 7x7, conv3_1 and up fine-tuned."""
    defaults = dict(_PAPER_SINGLE_SCALE, backbone="vgg16", roi_output_size=7, trainable_backbone_layers=3)
    return _preset(defaults, num_classes, in_chans, kwargs)


@register_model(family="faster_rcnn", task="detection", input_size=600, paper=_PAPER)
def fasterrcnn_zf(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FasterRCNN:
    """The paper's ZF detector: conv5 (stride 16), RoI pooling 6x6, all layers fine-tuned."""
    defaults = dict(_PAPER_SINGLE_SCALE, backbone="zfnet", roi_output_size=6)
    return _preset(defaults, num_classes, in_chans, kwargs)


@register_model(family="faster_rcnn", task="detection", input_size=800, paper=f"{_PAPER}; {_FPN_PAPER}")
def fasterrcnn_resnet50_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs: Any) -> FasterRCNN:
    """ResNet-50 stages 2-5 with an FPN and multi-scale RoIAlign (torchvision's configuration)."""
    defaults = dict(backbone="resnet50", backbone_indices=(1, 2, 3, 4), fpn=True, anchor_sizes=(32, 64, 128, 256, 512),
                    trainable_backbone_layers=3, min_size=800, max_size=1333)
    return _preset(defaults, num_classes, in_chans, kwargs)


_DIGITS = dict(backbone="resnet20", backbone_indices=(-1,), anchor_sizes=(12, 18, 26), aspect_ratios=(1.0, 1.5, 2.0),
               roi_op="pool", representation_size=256, min_size=64, max_size=64, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=200,
               rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128,
               box_batch_size_per_image=64)


@register_model(family="faster_rcnn", task="detection", input_size=64, paper=_PAPER)
def fasterrcnn_resnet20(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> FasterRCNN:
    """CPU-sized: CIFAR ResNet-20's last stage (64 channels, stride 4) for 64 px digit scenes."""
    return _preset(_DIGITS, num_classes, in_chans, kwargs)


@register_model(family="faster_rcnn", task="detection", input_size=64, paper=f"{_PAPER}; {_FPN_PAPER}")
def fasterrcnn_resnet20_fpn(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> FasterRCNN:
    """CPU-sized with an FPN over ResNet-20's stages 2-3 (strides 2, 4) and a pooled level (8)."""
    defaults = dict(_DIGITS, backbone_indices=(2, 3), fpn=True, fpn_channels=64, anchor_sizes=(12, 20, 32), roi_op="align",
                    roi_sampling_ratio=1)
    return _preset(defaults, num_classes, in_chans, kwargs)
