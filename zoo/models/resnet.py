"""Residual networks and their descendants, sharing one set of blocks.

- ResNet (He, Zhang, Ren & Sun, "Deep residual learning for image recognition", CVPR 2016 /
  arXiv 2015): torchvision layout (``resnet18`` ... ``resnet152``; stride on the 3x3 convolution of
  the bottleneck, "ResNet v1.5") and the CIFAR networks of sec. 4.2 (``resnet20`` ... ``resnet110``:
  a 3x3 stem, 16-32-64 channels, 6n+2 layers, option-A parameter-free shortcuts that subsample
  with stride 2 and zero-pad the new channels).
- Pre-activation ResNet (He et al., "Identity mappings in deep residual networks", ECCV 2016):
  BN-ReLU-conv blocks, a final BN-ReLU, projection shortcuts that are a bare 1x1 convolution fed
  with the block's pre-activated input, as in the authors' code (``preact_resnet110/164``, and
  ``preact_resnet18`` for 32x32 inputs).
- Wide ResNet (Zagoruyko & Komodakis, "Wide residual networks", BMVC 2016): pre-activation basic
  blocks widened k times with optional dropout between the two convolutions (``wrn28_10``,
  ``wrn16_4``) and torchvision's ``wide_resnet50_2/101_2`` (bottleneck width doubled).
- Stochastic depth (Huang, Sun, Liu, Sedra & Weinberger, "Deep networks with stochastic depth",
  ECCV 2016): an option of every network here, ``stochastic_depth=p_L`` (``resnet110_sd``), the paper's
  form (a block dropped for the whole mini-batch); ``drop_path_rate=r`` is the per-sample form of timm and
  torchvision (``torchvision.ops.StochasticDepth(mode="row")``: each sample's branch dropped on its own,
  survivors scaled by ``1 / (1 - p)``), block ``l`` of ``L`` with ``p = l / L * r``.
- ResNeXt (Xie, Girshick, Dollar, Tu & He, "Aggregated residual transformations for deep neural
  networks", CVPR 2017): grouped 3x3 convolutions in the bottleneck (``resnext50_32x4d``,
  ``resnext101_32x8d/64x4d``, CIFAR ``resnext29_8x64d/16x64d`` and the CPU-sized ``resnext29_small``).

Where torchvision has an architecture, parameter names and shapes equal its own, so its
state_dicts load with ``strict=True``.

``act`` (default ``relu``) replaces every ReLU (:func:`zoo.models.layers.make_act`). A block keeps
torchvision's one ``relu`` module for all its activations, so ``prelu`` learns one slope per block
there (per channel in the stem and the final BN-act); ``maxout`` is refused: the additions fix
the widths its pieces would double.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models import register_model
from zoo.models.base import FeatureInfo
from zoo.models.layers import (
    Act,
    PooledClassifier,
    Stem,
    check_act,
    conv1x1,
    conv3x3,
    init_conv_bn,
    linear_or_identity,
    linear_rates,
    make_act,
    make_drop_path,
    stem_conv,
)

_RESNET = "He et al. 2015, Deep residual learning for image recognition"
_PREACT = "He et al. 2016, Identity mappings in deep residual networks"
_WRN = "Zagoruyko & Komodakis 2016, Wide residual networks"
_SD = "Huang et al. 2016, Deep networks with stochastic depth"
_RESNEXT = "Xie et al. 2017, Aggregated residual transformations for deep neural networks"

Shortcut = Literal["A", "B"]
DepthMode = Literal["paper", "inverted"]
ShortcutFactory = Callable[[int, int, int], nn.Module]


class StochasticDepth(nn.Module):
    """Drops a residual branch for a whole mini-batch with probability ``1 - survival_prob``
    (Huang et al. 2016); the block then reduces to its shortcut and the branch is not computed.

    ``mode="paper"``: surviving branches are used as they are in training and scaled by
    ``survival_prob`` at inference (eq. 5 of the paper). ``mode="inverted"``: surviving branches are
    scaled by ``1 / survival_prob`` in training and used as they are at inference. Both give the
    branch the same expected contribution. Skipped branches leave their parameters unused in that
    step, so DistributedDataParallel needs ``find_unused_parameters=True``.
    """

    def __init__(self, survival_prob: float = 1.0, mode: DepthMode = "paper") -> None:
        super().__init__()
        if not 0.0 < survival_prob <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival_prob}")
        if mode not in ("paper", "inverted"):
            raise ValueError(f"stochastic_depth_mode must be 'paper' or 'inverted', got {mode!r}")
        self.survival_prob = survival_prob
        self.mode = mode

    def drops_batch(self) -> bool:
        """Sample whether the branch is dropped for this mini-batch (only ever in training)."""
        if not self.training or self.survival_prob == 1.0:
            return False
        return bool(torch.rand(()) >= self.survival_prob)

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if self.survival_prob == 1.0:
            return branch
        if self.mode == "paper":
            return branch if self.training else branch * self.survival_prob
        return branch / self.survival_prob if self.training else branch

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}, mode={self.mode}"


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut of He et al. 2015: subsample by ``stride`` and append zero channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"a zero-padding shortcut cannot reduce channels ({in_planes} -> {out_planes})")
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


class ResidualBlock(nn.Module):
    """A residual block: ``branch`` plus a shortcut that is the identity, or ``downsample`` where
    the block changes shape; the branch is under :class:`StochasticDepth` and per-sample drop path (both off by
    default). Its
    one activation module ``relu`` (torchvision's name, whatever ``act`` is) serves every position."""

    expansion = 1

    def __init__(
        self,
        stride: int,
        downsample: nn.Module | None,
        survival_prob: float,
        stochastic_depth_mode: DepthMode,
        act: Act = "relu",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.relu = make_act(act, inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.stochastic_depth = StochasticDepth(survival_prob, stochastic_depth_mode)
        self.drop_path = make_drop_path(drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The branch under both forms of stochastic depth (each the identity when off)."""
        return self.drop_path(self.stochastic_depth(self.branch(x)))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PostActBlock(ResidualBlock):
    """``act(branch(x) + shortcut(x))``, the original residual unit (He et al. 2015)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.stochastic_depth.drops_batch():
            return self.relu(identity.clone())  # a copy: identity may be x, which autograd still needs
        out = self.residual(x)
        out += identity  # in place, as torchvision: no fresh activation-sized buffer per block
        return self.relu(out)


class PreActBlock(ResidualBlock):
    """``branch(a) + shortcut`` with ``a = act(bn1(x))`` (He et al. 2016); a projection shortcut
    also takes ``a``, the identity takes ``x`` itself, so nothing follows the addition."""

    bn1: nn.BatchNorm2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))  # in place on bn1's output: x itself, the identity, is untouched
        identity = x if self.downsample is None else self.downsample(out)
        if self.stochastic_depth.drops_batch():
            return identity
        out = self.residual(out)
        out += identity
        return out


class BasicBlock(PostActBlock):
    """Two 3x3 convolutions with batch norm (ResNet-18/34, CIFAR ResNets)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        survival_prob: float = 1.0,
        stochastic_depth_mode: DepthMode = "paper",
        act: Act = "relu",
        drop_path: float = 0.0,
    ) -> None:
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64; use Bottleneck")
        super().__init__(stride, downsample, survival_prob, stochastic_depth_mode, act, drop_path)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(PostActBlock):
    """1x1 reduce, 3x3 (strided; grouped for ResNeXt), 1x1 expand by 4, each with batch norm."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        survival_prob: float = 1.0,
        stochastic_depth_mode: DepthMode = "paper",
        act: Act = "relu",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(stride, downsample, survival_prob, stochastic_depth_mode, act, drop_path)
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class PreActBasicBlock(PreActBlock):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3 (pre-activation ResNets, wide ResNets)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        drop_rate: float = 0.0,
        survival_prob: float = 1.0,
        stochastic_depth_mode: DepthMode = "paper",
        act: Act = "relu",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(stride, downsample, survival_prob, stochastic_depth_mode, act, drop_path)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(drop_rate)
        self.conv2 = conv3x3(planes, planes)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv1(x)))
        return self.conv2(self.dropout(out))


class PreActBottleneck(PreActBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-(dropout)-conv1x1 expanding by 4."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        drop_rate: float = 0.0,
        survival_prob: float = 1.0,
        stochastic_depth_mode: DepthMode = "paper",
        act: Act = "relu",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(stride, downsample, survival_prob, stochastic_depth_mode, act, drop_path)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(drop_rate)
        self.conv3 = conv1x1(planes, planes * self.expansion)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn2(self.conv1(x)))
        out = self.relu(self.bn3(self.conv2(out)))
        return self.conv3(self.dropout(out))


def survival_probs(num_blocks: int, final: float | None) -> list[float]:
    """Linear decay rule of Huang et al. 2016 (eq. 4): ``p_l = 1 - l / L * (1 - p_L)``, l = 1..L;
    ``final=None`` (or 1) keeps every block."""
    if final is None:
        return [1.0] * num_blocks
    return [1.0 - (i + 1) / num_blocks * (1.0 - final) for i in range(num_blocks)]


def _shortcut_factory(kind: Shortcut, with_norm: bool) -> ShortcutFactory:
    """Builder of the shortcut used where a block changes shape: ``"A"`` zero-padding, ``"B"`` a
    strided 1x1 projection (followed by batch norm in post-activation networks)."""
    if kind == "A":
        return ZeroPadShortcut
    if kind != "B":
        raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {kind!r}")
    if with_norm:
        return lambda inp, out, stride: nn.Sequential(conv1x1(inp, out, stride), nn.BatchNorm2d(out))
    return conv1x1


def _make_stage(
    block: type[ResidualBlock],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int,
    shortcut: ShortcutFactory,
    depth: Iterator[tuple[float, float]],
    block_kwargs: dict[str, Any],
) -> nn.Sequential:
    """``blocks`` blocks, each with the next (survival probability, drop-path rate) of ``depth``; the first
    one changes stride and width through ``shortcut`` if needed."""
    out = planes * block.expansion
    downsample = shortcut(inplanes, out, stride) if stride != 1 or inplanes != out else None
    layers = []
    for i in range(blocks):
        survival_prob, drop_path = next(depth)
        args = (inplanes, planes, stride, downsample) if i == 0 else (out, planes)
        layers.append(block(*args, survival_prob=survival_prob, drop_path=drop_path, **block_kwargs))
    return nn.Sequential(*layers)


class _ResidualNetwork(PooledClassifier):
    """Stages ``layer1 .. layerN`` (torchvision names) with global pooling and the ``fc`` head."""

    classifier_attr = "fc"

    def _build_stages(
        self,
        block: type[ResidualBlock],
        inplanes: int,
        widths: Sequence[int],
        layers: Sequence[int],
        shortcut: ShortcutFactory,
        stochastic_depth: float | None,
        block_kwargs: dict[str, Any],
        drop_path_rate: float = 0.0,
    ) -> int:
        """Add the stages (stride 1, then 2 each) and return their output channels."""
        if len(widths) != len(layers):
            raise ValueError(f"widths {tuple(widths)} and layers {tuple(layers)} must have the same length")
        survival = iter(zip(survival_probs(sum(layers), stochastic_depth), linear_rates(sum(layers), drop_path_rate)))
        self.num_stages = len(layers)
        self.stage_channels: list[int] = []
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stage = _make_stage(block, inplanes, planes, blocks, 1 if i == 0 else 2, shortcut, survival, block_kwargs)
            setattr(self, f"layer{i + 1}", stage)
            inplanes = planes * block.expansion
            self.stage_channels.append(inplanes)
        return inplanes

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def _stage_feature_info(self, stem_module: str, stem_width: int, stem: Stem, last_module: str) -> list[FeatureInfo]:
        """The stem's map (stride 2 for the ImageNet stem, which then max-pools), one map per stage
        (stride doubling from the second), the last one taken at ``last_module``."""
        reduction = 2 if stem == "imagenet" else 1
        info = [FeatureInfo(stem_module, stem_width, reduction)]
        reduction *= 2 if stem == "imagenet" else 1
        for i, channels in enumerate(self.stage_channels):
            info.append(FeatureInfo(f"layer{i + 1}", channels, reduction * 2**i))
        info[-1] = info[-1]._replace(module=last_module)
        return info


class ResNet(_ResidualNetwork):
    """Post-activation ResNet / ResNeXt: stem, stages of residual blocks, global pool, ``fc``."""

    def __init__(
        self,
        block: type[PostActBlock],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: Stem = "imagenet",
        stem_width: int = 64,
        shortcut: Shortcut = "B",
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
        stochastic_depth: float | None = None,
        stochastic_depth_mode: DepthMode = "paper",
        drop_path_rate: float = 0.0,
        act: Act = "relu",
    ) -> None:
        super().__init__()
        check_act(act, maxout=False)
        self.conv1, self.maxpool = stem_conv(stem, in_chans, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = make_act(act, stem_width, inplace=True)
        block_kwargs = {
            "groups": groups,
            "base_width": width_per_group,
            "stochastic_depth_mode": stochastic_depth_mode,
            "act": act,
        }
        self.num_features = self._build_stages(
            block, stem_width, widths, layers, _shortcut_factory(shortcut, True), stochastic_depth, block_kwargs,
            drop_path_rate,
        )
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)
        self.feature_info = self._stage_feature_info("relu", stem_width, stem, f"layer{self.num_stages}")
        init_conv_bn(self, mode="fan_out")
        if zero_init_residual:  # each block starts as the identity (Goyal et al. 2017)
            for m in self.modules():
                last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x


class PreActResNet(_ResidualNetwork):
    """Pre-activation ResNet / wide ResNet: stem convolution, stages, final BN-ReLU, pool, ``fc``."""

    def __init__(
        self,
        block: type[PreActBlock],
        layers: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        *,
        widths: Sequence[int] = (16, 32, 64),
        stem: Stem = "cifar",
        stem_width: int = 16,
        shortcut: Shortcut = "B",
        drop_rate: float = 0.0,
        stochastic_depth: float | None = None,
        stochastic_depth_mode: DepthMode = "paper",
        drop_path_rate: float = 0.0,
        act: Act = "relu",
    ) -> None:
        super().__init__()
        check_act(act, maxout=False)
        self.conv1, self.maxpool = stem_conv(stem, in_chans, stem_width)
        block_kwargs = {"drop_rate": drop_rate, "stochastic_depth_mode": stochastic_depth_mode, "act": act}
        self.num_features = self._build_stages(
            block, stem_width, widths, layers, _shortcut_factory(shortcut, False), stochastic_depth, block_kwargs,
            drop_path_rate,
        )
        self.bn_final = nn.BatchNorm2d(self.num_features)
        self.relu = make_act(act, self.num_features, inplace=True)
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)
        # the last stage's map is taken after the final BN-ReLU, as forward_features returns it
        self.feature_info = self._stage_feature_info("conv1", stem_width, stem, "relu")
        init_conv_bn(self, mode="fan_out")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        for stage in self.stages():
            x = stage(x)
        return self.relu(self.bn_final(x))


# --------------------------------------------------------------------------------------------
# private builders, one per family


def _resnet(block: type[PostActBlock], layers: Sequence[int], num_classes: int, in_chans: int, **kwargs: Any) -> ResNet:
    """ImageNet-layout ResNet / ResNeXt / wide bottleneck ResNet (torchvision names)."""
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _cifar_resnet(depth: int, num_classes: int, in_chans: int, **kwargs: Any) -> ResNet:
    """CIFAR ResNet of He et al. 2015 sec. 4.2: 6n+2 layers, 16-32-64 channels, option-A shortcuts."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    kwargs = {"widths": (16, 32, 64), "stem": "cifar", "stem_width": 16, "shortcut": "A", **kwargs}
    return ResNet(BasicBlock, (n, n, n), num_classes=num_classes, in_chans=in_chans, **kwargs)


def _preact_resnet(depth: int, bottleneck: bool, num_classes: int, in_chans: int, **kwargs: Any) -> PreActResNet:
    """CIFAR pre-activation ResNet: 6n+2 layers (basic) or 9n+2 (bottleneck), 16-32-64 planes."""
    per_block = 3 if bottleneck else 2
    if (depth - 2) % (3 * per_block):
        raise ValueError(f"pre-activation ResNet depth must be {3 * per_block}n+2, got {depth}")
    n = (depth - 2) // (3 * per_block)
    block: type[PreActBlock] = PreActBottleneck if bottleneck else PreActBasicBlock
    return PreActResNet(block, (n, n, n), num_classes=num_classes, in_chans=in_chans, **kwargs)


def _wide_resnet(depth: int, widen: int, num_classes: int, in_chans: int, **kwargs: Any) -> PreActResNet:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): 6n+4 layers, 16k-32k-64k channels, pre-activation."""
    if (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = (16 * widen, 32 * widen, 64 * widen)
    return PreActResNet(PreActBasicBlock, (n, n, n), num_classes=num_classes, in_chans=in_chans, widths=widths, **kwargs)


def _resnext29(cardinality: int, width: int, num_classes: int, in_chans: int, planes: int = 64, **kwargs: Any) -> ResNet:
    """CIFAR ResNeXt-29 (Xie et al. 2017 sec. 5.3): a 3x3 stem, three stages of three bottlenecks
    with ``4 * planes * (1, 2, 4)`` outputs (256-512-1024 in the paper) and ``cardinality`` groups of
    ``width`` channels in the first stage's 3x3 convolution (doubling with each stage)."""
    kwargs = {"widths": (planes, 2 * planes, 4 * planes), "stem": "cifar", "stem_width": planes, **kwargs}
    return ResNet(
        Bottleneck,
        (3, 3, 3),
        num_classes=num_classes,
        in_chans=in_chans,
        groups=cardinality,
        width_per_group=width * 64 // planes,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# ImageNet ResNets (torchvision layout)


@register_model(family="resnet", input_size=224, paper=_RESNET, torchvision=True)
def resnet18(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNET, torchvision=True)
def resnet34(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3)."""
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNET, torchvision=True)
def resnet50(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNET, torchvision=True)
def resnet101(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-101 (bottlenecks 3-4-23-3)."""
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNET, torchvision=True)
def resnet152(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-152 (bottlenecks 3-8-36-3)."""
    return _resnet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=224, paper=_WRN, torchvision=True)
def wide_resnet50_2(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottleneck 3x3 widths doubled (torchvision layout)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, width_per_group=128, **kwargs)


@register_model(family="resnet", input_size=224, paper=_WRN, torchvision=True)
def wide_resnet101_2(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Wide ResNet-101-2: ResNet-101 with bottleneck 3x3 widths doubled (torchvision layout)."""
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, width_per_group=128, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNEXT, torchvision=True)
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-50 32x4d: 32 groups of 4 channels in the first stage's bottleneck."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, groups=32, width_per_group=4, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNEXT, torchvision=True)
def resnext101_32x8d(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-101 32x8d."""
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, groups=32, width_per_group=8, **kwargs)


@register_model(family="resnet", input_size=224, paper=_RESNEXT, torchvision=True)
def resnext101_64x4d(num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-101 64x4d."""
    return _resnet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, groups=64, width_per_group=4, **kwargs)


# --------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2015 sec. 4.2) and stochastic depth


@register_model(family="resnet", input_size=32, paper=_RESNET)
def resnet20(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-20 (n=3)."""
    return _cifar_resnet(20, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_RESNET)
def resnet32(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-32 (n=5)."""
    return _cifar_resnet(32, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_RESNET)
def resnet44(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-44 (n=7)."""
    return _cifar_resnet(44, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_RESNET)
def resnet56(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-56 (n=9)."""
    return _cifar_resnet(56, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_RESNET)
def resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-110 (n=18)."""
    return _cifar_resnet(110, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_SD)
def resnet110_sd(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-110 with stochastic depth, survival decaying linearly to p_L = 0.5."""
    return _cifar_resnet(110, num_classes, in_chans, **{"stochastic_depth": 0.5, **kwargs})


# --------------------------------------------------------------------------------------------
# pre-activation ResNets (He et al. 2016)


@register_model(family="resnet", input_size=32, paper=_PREACT)
def preact_resnet18(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-18 for 32x32 inputs: 3x3 stem, basic blocks 2-2-2-2, 64-512 channels."""
    kwargs = {"widths": (64, 128, 256, 512), "stem_width": 64, **kwargs}
    return PreActResNet(PreActBasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_PREACT)
def preact_resnet110(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> PreActResNet:
    """Pre-activation CIFAR ResNet-110 (basic blocks, n=18)."""
    return _preact_resnet(110, False, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_PREACT)
def preact_resnet164(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> PreActResNet:
    """Pre-activation CIFAR ResNet-164 (bottlenecks, n=18)."""
    return _preact_resnet(164, True, num_classes, in_chans, **kwargs)


# --------------------------------------------------------------------------------------------
# wide ResNets (Zagoruyko & Komodakis 2016)


@register_model(family="resnet", input_size=32, paper=_WRN, slow=True)
def wrn28_10(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> PreActResNet:
    """WRN-28-10 (n=4, k=10); the paper trains it with ``drop_rate=0.3`` between the convolutions."""
    return _wide_resnet(28, 10, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_WRN)
def wrn16_4(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> PreActResNet:
    """WRN-16-4 (n=2, k=4)."""
    return _wide_resnet(16, 4, num_classes, in_chans, **kwargs)


# --------------------------------------------------------------------------------------------
# CIFAR ResNeXt-29 (Xie et al. 2017 sec. 5.3)


@register_model(family="resnet", input_size=32, paper=_RESNEXT, slow=True)
def resnext29_8x64d(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-29 8x64d: 8 groups of 64 channels in the first stage (34.4M parameters)."""
    return _resnext29(8, 64, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_RESNEXT, slow=True)
def resnext29_16x64d(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-29 16x64d: 16 groups of 64 channels in the first stage (68.1M parameters)."""
    return _resnext29(16, 64, num_classes, in_chans, **kwargs)


@register_model(family="resnet", input_size=32, paper=_RESNEXT)
def resnext29_small(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-29 4x8d at a quarter of the width for CPU training: 16-channel stem, 64-128-256
    outputs, 4 groups of 8 channels in the first stage."""
    return _resnext29(4, 8, num_classes, in_chans, planes=16, **kwargs)
