"""Building blocks shared by the families: the activation resolver (``model.act``), convolutions,
stems and initialisation of the residual, dense and fractal families (resnet, densenet, fractalnet)."""

from __future__ import annotations

from functools import partial
from typing import Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.models.base import Classifier

Act = Literal["relu", "leaky_relu", "prelu", "elu", "gelu", "tanh", "sigmoid", "maxout"]
ACTS: tuple[str, ...] = get_args(Act)
#: linear pieces of a maxout unit (Goodfellow et al. 2013): the layer before it has this many times the channels
MAXOUT_PIECES = 2
#: families whose layers widen for maxout (the residual networks cannot: their additions fix the widths)
MAXOUT_FAMILIES = ("lenet", "alexnet", "vgg", "nin", "squeezenet")
LEAKY_SLOPE = 0.01  # Maas et al. 2013
PRELU_INIT = 0.25  # He et al. 2015, "Delving deep into rectifiers"


class Maxout(nn.Module):
    """Maxout (Goodfellow et al. 2013, "Maxout networks"): the maximum over ``pieces`` consecutive
    channels (dimension 1), so a layer with ``pieces * C`` outputs followed by it gives ``C`` units."""

    def __init__(self, pieces: int = MAXOUT_PIECES) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (-1, self.pieces)).amax(2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def check_act(act: str, maxout: bool = True) -> str:
    """``act`` if it names an activation (and, for a model that cannot widen its layers, is not
    ``maxout``); otherwise a :class:`ConfigError` naming the choices."""
    if act not in ACTS:
        raise ConfigError(f"unknown model.act={act!r}; choose one of {', '.join(ACTS)}")
    if act == "maxout" and not maxout:
        raise ConfigError(
            f"model.act=maxout needs a model whose layers widen for it ({', '.join(MAXOUT_FAMILIES)}); "
            "choose another model.act"
        )
    return act


def act_width(channels: int, act: str) -> int:
    """Outputs the layer before ``act`` needs for ``channels`` units: ``MAXOUT_PIECES`` times as many for maxout."""
    return channels * MAXOUT_PIECES if check_act(act) == "maxout" else channels


def make_act(act: str, channels: int | None = None, inplace: bool = False) -> nn.Module:
    """The activation module ``act`` (one of :data:`ACTS`); ``relu`` is ``nn.ReLU(inplace)`` as before.

    ``prelu`` learns one slope per channel when ``channels`` is given (He et al. 2015), one shared
    slope otherwise; ``maxout`` is :class:`Maxout` (the preceding layer has :func:`act_width` outputs).
    ``inplace`` applies to relu, leaky_relu and elu."""
    check_act(act)
    if act == "relu":
        return nn.ReLU(inplace=inplace)
    if act == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=inplace)
    if act == "prelu":
        return nn.PReLU(channels or 1, init=PRELU_INIT)
    if act == "elu":
        return nn.ELU(inplace=inplace)
    if act == "maxout":
        return Maxout()
    return {"gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[act]()


def make_drop_path(p: float) -> nn.Module:
    """Per-sample stochastic depth of a residual branch or a dense layer's new maps with probability ``p``
    (``torchvision.ops.StochasticDepth(p, "row")``: survivors scaled by ``1 / (1 - p)``, the identity at
    inference); ``nn.Identity`` for ``p = 0``, so a model without it never imports torchvision."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"a drop-path rate must be in [0, 1), got {p}")
    if p == 0.0:
        return nn.Identity()
    from torchvision.ops import StochasticDepth

    return StochasticDepth(p, "row")


def linear_rates(count: int, rate: float) -> list[float]:
    """``l / count * rate`` for l = 1..count: drop-path rates rising linearly with depth (the rule of Huang et
    al. 2016, eq. 4, for survival; timm's ``drop_path_rate``)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    return [(i + 1) / count * rate for i in range(count)]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a normalisation layer follows or precedes it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


Stem = Literal["imagenet", "cifar"]


def stem_conv(stem: Stem, in_chans: int, width: int) -> tuple[nn.Conv2d, nn.Module]:
    """The first convolution and the pooling that ends the stem: 7x7/2 and a 3x3/2 max pool for
    224x224 inputs (``"imagenet"``), or a 3x3/1 convolution without pooling for 32x32 (``"cifar"``)."""
    if stem == "imagenet":
        return nn.Conv2d(in_chans, width, 7, 2, 3, bias=False), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    if stem == "cifar":
        return conv3x3(in_chans, width), nn.Identity()
    raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")


def init_conv_bn(module: nn.Module, mode: Literal["fan_in", "fan_out"] = "fan_out") -> None:
    """He-normal convolutions (He et al. 2015, "Delving deep into rectifiers"), unit-scale zero-shift
    batch norms and zero linear biases, applied to every submodule of ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class PooledClassifier(Classifier):
    """A classifier whose head is global average pooling followed by the linear layer named by
    ``classifier_attr``; subclasses only build the layers and write ``forward_features``."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.get_classifier()(x)


def linear_or_identity(in_features: int, num_classes: int) -> nn.Module:
    """The final layer: ``nn.Linear`` or, for ``num_classes == 0``, an identity (feature extractor)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()



Init = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal", "orthogonal"
]
INITS: tuple[str, ...] = get_args(Init)
#: the layers ``model.init`` fills: convolutions (transposed too) and linear layers
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def _weight_fill(init: str, std: float, act: str) -> Callable[[torch.Tensor], object]:
    """The ``nn.init`` function of ``init``; Kaiming's gain follows ``act`` (leaky_relu: its slope,
    prelu: the initial slope 0.25, as He et al. 2015 eq. 15; every other activation: relu's)."""
    slope = {"leaky_relu": LEAKY_SLOPE, "prelu": PRELU_INIT}.get(act)
    nonlinearity = "relu" if slope is None else "leaky_relu"
    kaiming = {"a": slope or 0.0, "mode": "fan_in", "nonlinearity": nonlinearity}
    return {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming_uniform": partial(nn.init.kaiming_uniform_, **kaiming),
        "kaiming_normal": partial(nn.init.kaiming_normal_, **kaiming),
        "normal": partial(nn.init.normal_, mean=0.0, std=std),
        "orthogonal": nn.init.orthogonal_,
    }[init]


def check_init(init: str, std: float) -> None:
    """A :class:`ConfigError` naming the fix for an unknown ``init`` or a ``std`` that is not positive."""
    if init not in INITS:
        raise ConfigError(f"unknown model.init={init!r}; choose one of {', '.join(INITS)}")
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
        raise ConfigError(f"model.init_std must be a positive number (e.g. 0.01), got {std!r}")


def initialize(model: nn.Module, init: str = "default", std: float = 0.01, act: str = "relu") -> nn.Module:
    """Refill the weights of every :data:`WEIGHT_LAYERS` module of ``model`` by ``init`` and zero
    their biases; normalisation layers, PReLU slopes, embeddings and recurrent layers keep theirs,
    and so do layers of zoo's own (lenet5_classic's sparse C3). ``default`` changes nothing (each
    model keeps its paper's initialisation); ``normal`` draws N(0, ``std``); Kaiming is fan-in with
    ``act``'s gain."""
    check_init(init, std)
    if init == "default":
        return model
    fill = _weight_fill(init, float(std), act)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, WEIGHT_LAYERS):
                fill(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model
