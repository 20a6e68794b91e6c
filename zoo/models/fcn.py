"""FCN (Long, Shelhamer & Darrell, "Fully convolutional networks for semantic segmentation", CVPR 2015).

A classifier's convolutional stages (any zoo classifier, through ``create_model(features_only=True)``)
followed by its fully connected layers as convolutions (``fc6``: ``head_kernel`` x ``head_kernel``,
``fc7``: 1x1, each ``head_width`` wide), a 1x1 class score layer, and learned upsampling
(transposed convolutions initialised to bilinear interpolation) back to the input size.

- FCN-32s (``skips=0``): the scores of the deepest map (stride 32 on VGG16) upsampled 32x at once.
- FCN-16s (``skips=1``): upsampled 2x and summed with 1x1 scores of the map at half that stride
  (VGG16's pool4), then upsampled 16x.
- FCN-8s (``skips=2``): the same once more with the map at a quarter of it (pool3), then upsampled 8x.

The skip maps come from the ``skips`` backbone stages before the deepest (``skip_stages``: indices into
its ``feature_info``), max-pooled down to the skip's stride where theirs is smaller: on VGG16 that is
exactly pool3 and pool4 (conv3_3 and conv4_3, pooled 2x2); on ResNet layer2 and layer3. As in
the paper the score layers start at zero, so the skips begin as no-ops. Instead of padding the input
by 100 pixels and cropping (the paper's Caffe alignment), convolutions are zero-padded "same" and each
upsampled map is cropped or edge-padded to its partner's size.

``backbone_pretrained`` (a zoo classifier checkpoint, a state_dict file or ``torchvision:vgg16``) loads
the backbone; when the backbone's classifier has the VGG shape (pool to ``head_kernel`` x
``head_kernel``, two hidden layers of ``head_width``), its fully connected layers are reshaped into
``fc6``/``fc7`` ("convolutionalisation", Section 3.1). ``crf`` (the keyword arguments of
:class:`~zoo.models.crf.DenseCRF`) appends a dense CRF as the last, trainable layer (CRF-as-RNN,
Zheng et al. 2015); the model then returns log-marginals instead of logits.

``*_small`` variants run on 64-pixel digit scenes on a CPU: ``vgg16_bn_small`` (stride 16 at the
deepest stage, so "8s" upsamples 4x there), a 3x3 ``fc6`` of 128 channels and no dropout.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.models import create_model, register_model
from zoo.models.crf import DenseCRF
from zoo.models.features import FeatureExtractor, declared_stages

log = logging.getLogger("zoo")

_PAPER = "Long et al. 2015, Fully convolutional networks for semantic segmentation"


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """``(channels, channels, 2 factor, 2 factor)`` weights of a transposed convolution (stride
    ``factor``, padding ``factor // 2``) that upsamples each channel bilinearly and mixes none."""
    size = 2 * factor
    centre = factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


class Upsample(nn.ConvTranspose2d):
    """Learnable ``factor``-times upsampling of class scores, initialised to bilinear interpolation."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, factor))


def fit_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``x`` at the bottom/right to ``size``, or extend its last rows/columns to reach it."""
    x = x[..., : size[0], : size[1]]
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class FCN(nn.Module):
    """Fully convolutional network: backbone stages, ``fc6``/``fc7`` as convolutions, class scores at the
    deepest stride, ``skips`` shallower score maps fused coarse to fine, learned upsampling."""

    def __init__(
        self,
        backbone: str = "vgg16",
        num_classes: int = 21,
        in_chans: int = 3,
        skips: int = 2,
        head_width: int = 4096,
        head_kernel: int = 7,
        drop_rate: float = 0.5,
        backbone_pretrained: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        skip_stages: list[int] | None = None,
        crf: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if skips not in (0, 1, 2):
            raise ConfigError(f"model.skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s), got {skips}")
        if head_kernel < 1 or head_kernel % 2 == 0:
            raise ConfigError(f"model.head_kernel must be odd and >= 1, got {head_kernel}")
        self.num_classes = num_classes
        classifier = create_model(backbone, in_chans=in_chans, pretrained=backbone_pretrained, **(backbone_kwargs or {}))
        stages = declared_stages(classifier)
        deepest = stages[-1].reduction
        self.strides = [deepest >> k for k in range(skips, -1, -1)]  # shallow to deep, e.g. 8, 16, 32
        n = len(stages)
        taps = [int(i) % n for i in skip_stages] + [n - 1] if skip_stages is not None else list(range(n - 1 - skips, n))
        if len(taps) != skips + 1 or min(taps) < 0 or taps != sorted(set(taps)):
            raise ConfigError(f"model.skip_stages={skip_stages} must name {skips} distinct stages of {backbone} below its "
                              f"deepest, shallow to deep, out of {[f.module for f in stages]}")
        self.pool_factors = [stride // stages[i].reduction for i, stride in zip(taps, self.strides)]
        if any(stride % stages[i].reduction for i, stride in zip(taps, self.strides)):
            raise ConfigError(f"fcn skips need {backbone} stages at strides dividing {self.strides}, got "
                              f"{[stages[i].reduction for i in taps]}; set model.skip_stages or use fewer skips")
        head = self._head(stages[-1].num_chs, head_width, head_kernel, drop_rate)
        if backbone_pretrained and head_width:
            self._convolutionalise(classifier, head)
        self.backbone = FeatureExtractor(classifier, taps)  # type: ignore[arg-type]
        self.head = head
        self.score = nn.Conv2d(head_width or stages[-1].num_chs, num_classes, 1)
        self.score_skips = nn.ModuleList(nn.Conv2d(stages[i].num_chs, num_classes, 1) for i in taps[:-1])
        for conv in [self.score, *self.score_skips]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.upsample_skips = nn.ModuleList(Upsample(num_classes, 2) for _ in range(skips))
        self.upsample = Upsample(num_classes, self.strides[0])
        self.crf = DenseCRF(num_classes, **crf) if crf else None

    @staticmethod
    def _head(channels: int, width: int, kernel: int, drop_rate: float) -> nn.Sequential:
        if width == 0:
            return nn.Sequential()
        layers: list[nn.Module] = []
        for k in (kernel, 1):
            layers += [nn.Conv2d(channels, width, k, padding=k // 2), nn.ReLU(inplace=True), nn.Dropout(drop_rate)]
            channels = width
        return nn.Sequential(*layers)

    @staticmethod
    def _convolutionalise(classifier: nn.Module, head: nn.Sequential) -> None:
        """Copy a VGG-style classifier's two hidden Linear layers into ``fc6``/``fc7`` when they fit."""
        linears = [m for m in getattr(classifier, "classifier", nn.Sequential()) if isinstance(m, nn.Linear)]
        fc6, fc7 = head[0], head[3]
        if len(linears) < 2 or linears[0].weight.numel() != fc6.weight.numel() or linears[1].weight.numel() != fc7.weight.numel():
            log.info("fcn: the backbone's classifier does not fit fc6/fc7; they start from random weights")
            return
        with torch.no_grad():
            for linear, conv in ((linears[0], fc6), (linears[1], fc7)):
                conv.weight.copy_(linear.weight.view_as(conv.weight))
                conv.bias.copy_(linear.bias)
        log.info("fcn: fc6/fc7 initialised from the backbone's fully connected layers")

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, num_classes, H, W)`` at the input size, before any CRF."""
        taps = [F.max_pool2d(t, f) if f > 1 else t for t, f in zip(self.backbone(x), self.pool_factors)]
        scores = self.score(self.head(taps[-1]))
        for tap, score_skip, up in zip(reversed(taps[:-1]), reversed(self.score_skips), self.upsample_skips):
            skip = score_skip(tap)
            scores = fit_to(up(scores), skip.shape[-2:]) + skip
        return fit_to(self.upsample(scores), x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, or the CRF's log-marginals when the model has a CRF layer."""
        logits = self.forward_logits(x)
        return logits if self.crf is None else self.crf(logits, x)


def _fcn(skips: int, defaults: dict[str, Any], num_classes: int, in_chans: int, **kwargs: Any) -> FCN:
    return FCN(num_classes=num_classes, in_chans=in_chans, skips=skips, **{**defaults, **kwargs})


_VGG16 = {"backbone": "vgg16", "head_width": 4096, "head_kernel": 7, "drop_rate": 0.5}
_RESNET50 = {"backbone": "resnet50", "head_width": 0}
_SMALL = {"backbone": "vgg16_bn_small", "head_width": 128, "head_kernel": 3, "drop_rate": 0.0}
_META = {"family": "fcn", "task": "segmentation", "paper": _PAPER}


@register_model(input_size=512, **_META)
def fcn32s_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FCN:
    """FCN-32s on VGG16: fc6 7x7x4096, fc7 1x1x4096, scores upsampled 32x."""
    return _fcn(0, _VGG16, num_classes, in_chans, **kwargs)


@register_model(input_size=512, **_META)
def fcn16s_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FCN:
    """FCN-16s on VGG16: plus the pool4 skip."""
    return _fcn(1, _VGG16, num_classes, in_chans, **kwargs)


@register_model(input_size=512, **_META)
def fcn8s_vgg16(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FCN:
    """FCN-8s on VGG16: plus the pool4 and pool3 skips."""
    return _fcn(2, _VGG16, num_classes, in_chans, **kwargs)


@register_model(input_size=512, **_META)
def fcn32s_resnet50(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FCN:
    """FCN-32s on ResNet-50: class scores straight from layer4 (no fc6/fc7)."""
    return _fcn(0, _RESNET50, num_classes, in_chans, **kwargs)


@register_model(input_size=512, **_META)
def fcn8s_resnet50(num_classes: int = 21, in_chans: int = 3, **kwargs: Any) -> FCN:
    """FCN-8s on ResNet-50: layer4 scores fused with layer3 and layer2 scores."""
    return _fcn(2, _RESNET50, num_classes, in_chans, **kwargs)


@register_model(input_size=64, **_META)
def fcn32s_small(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> FCN:
    """FCN-32s analogue on ``vgg16_bn_small``: the stride-16 scores upsampled 16x."""
    return _fcn(0, _SMALL, num_classes, in_chans, **kwargs)


@register_model(input_size=64, **_META)
def fcn16s_small(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> FCN:
    """FCN-16s analogue on ``vgg16_bn_small``: plus the stride-8 skip."""
    return _fcn(1, _SMALL, num_classes, in_chans, **kwargs)


@register_model(input_size=64, **_META)
def fcn8s_small(num_classes: int = 11, in_chans: int = 1, **kwargs: Any) -> FCN:
    """FCN-8s analogue on ``vgg16_bn_small``: plus the stride-8 and stride-4 skips, upsampled 4x."""
    return _fcn(2, _SMALL, num_classes, in_chans, **kwargs)
