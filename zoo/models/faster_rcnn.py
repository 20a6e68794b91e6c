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

The classes built on torchvision's (:class:`~zoo.models.detection.ZooFasterRCNN`, the backbone adapter,
RoI pooling) live in :mod:`zoo.models.detection`, imported when a detector is built: registering the
family does not import torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from torch import nn

from zoo.errors import ConfigError
from zoo.models import register_model

if TYPE_CHECKING:
    from zoo.models.detection import ZooFasterRCNN

#: what moved to zoo.models.detection, still importable from here (older pickles name it here)
_MOVED = ("ZooBackbone", "ZooFasterRCNN", "RoIPool", "freeze_stages", "freeze_batch_norms")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from zoo.models import detection

        return getattr(detection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_PAPER = "Ren et al. 2015, Faster R-CNN: towards real-time object detection with region proposal networks"
_FPN_PAPER = "Lin et al. 2017, Feature pyramid networks for object detection"


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
) -> ZooFasterRCNN:
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
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    from zoo.models.detection import RoIPool, ZooBackbone, ZooFasterRCNN

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
def fasterrcnn_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """The paper's VGG16 detector: conv5_3 (stride 16), RoI pooling 7x7, conv3_1 and up fine-tuned."""
    defaults = dict(_PAPER_SINGLE_SCALE, backbone="vgg16", roi_output_size=7, trainable_backbone_layers=3)
    return _preset(defaults, num_classes, in_chans, kwargs)


@register_model(family="faster_rcnn", task="detection", input_size=600, paper=_PAPER)
def fasterrcnn_zf(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """The paper's ZF detector: conv5 (stride 16), RoI pooling 6x6, all layers fine-tuned."""
    defaults = dict(_PAPER_SINGLE_SCALE, backbone="zfnet", roi_output_size=6)
    return _preset(defaults, num_classes, in_chans, kwargs)


@register_model(family="faster_rcnn", task="detection", input_size=800, paper=f"{_PAPER}; {_FPN_PAPER}", torchvision=True)
def fasterrcnn_resnet50_fpn(num_classes: int = 91, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """ResNet-50 stages 2-5 with an FPN and multi-scale RoIAlign (torchvision's configuration)."""
    defaults = dict(backbone="resnet50", backbone_indices=(1, 2, 3, 4), fpn=True, anchor_sizes=(32, 64, 128, 256, 512),
                    trainable_backbone_layers=3, min_size=800, max_size=1333)
    return _preset(defaults, num_classes, in_chans, kwargs)


_DIGITS = dict(backbone="resnet20", backbone_indices=(-1,), anchor_sizes=(12, 18, 26), aspect_ratios=(1.0, 1.5, 2.0),
               roi_op="pool", representation_size=256, min_size=64, max_size=64, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=200,
               rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128,
               box_batch_size_per_image=64)


@register_model(family="faster_rcnn", task="detection", input_size=64, paper=_PAPER)
def fasterrcnn_resnet20(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """CPU-sized: CIFAR ResNet-20's last stage (64 channels, stride 4) for 64 px digit scenes."""
    return _preset(_DIGITS, num_classes, in_chans, kwargs)


@register_model(family="faster_rcnn", task="detection", input_size=64, paper=f"{_PAPER}; {_FPN_PAPER}")
def fasterrcnn_resnet20_fpn(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """CPU-sized with an FPN over ResNet-20's stages 2-3 (strides 2, 4) and a pooled level (8)."""
    defaults = dict(_DIGITS, backbone_indices=(2, 3), fpn=True, fpn_channels=64, anchor_sizes=(12, 20, 32), roi_op="align",
                    roi_sampling_ratio=1)
    return _preset(defaults, num_classes, in_chans, kwargs)
