"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 1998).

Layout C1-S2-C3-S4-C5-F6-output on a 32x32 input: C1 6@5x5 (28x28), S2 2x2 subsampling (14x14),
C3 16@5x5 (10x10), S4 (5x5), C5 120@5x5 (1x1), F6 84 units, then the class scores.

The default is the modern variant: every C3 map sees all six S2 maps, ReLU, max pooling and a
linear output layer (61,706 parameters at 10 classes). ``c3_connections="lecun"`` restores the
paper's sparse C3 connection table (Table I: 60 of the 96 map pairs, 1,516 parameters in C3) and
``act="tanh"``, ``pool="avg"`` the paper's squashing function and averaging subsampling
(``lenet5_classic``: 60,806 parameters; the paper's 60,840 also counts the trainable subsampling
coefficients and uses RBF output units).

``act`` is any of :data:`zoo.models.layers.ACTS`, one module per layer (``act1 act3 act5 act6``;
PReLU per channel). ``act="maxout"`` doubles the outputs of C1, C3, C5 and F6 (the sparse C3
table repeats each map's inputs for both pieces) and takes the maximum over each pair.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models import register_model
from zoo.errors import ConfigError
from zoo.models.base import Classifier, FeatureInfo
from zoo.models.layers import Act, act_width, make_act

# Table I of the paper: column j lists the S2 maps that feed C3 map j.
LECUN_C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class SparseConv2d(nn.Module):
    """A convolution whose output map ``j`` only sees the input maps listed in ``table[j]``.

    Only the kernels of connected map pairs are parameters (the paper's C3 has 1,516); they are
    scattered into a dense zero kernel for the convolution.
    """

    def __init__(self, in_channels: int, table: tuple[tuple[int, ...], ...], kernel_size: int) -> None:
        super().__init__()
        pairs = [(out_map, in_map) for out_map, in_maps in enumerate(table) for in_map in in_maps]
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        self.register_buffer("pairs", torch.tensor(pairs, dtype=torch.long), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(table)))
        fan_in = torch.tensor([len(in_maps) * kernel_size**2 for in_maps in table], dtype=torch.float32)
        with torch.no_grad():  # per-map uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nn.Conv2d does
            bound = fan_in.rsqrt()
            self.weight.uniform_(-1, 1).mul_(bound[self.pairs[:, 0]].view(-1, 1, 1))
            self.bias.uniform_(-1, 1).mul_(bound)

    def dense_weight(self) -> torch.Tensor:
        k = self.kernel_size
        w = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        return w.index_put((self.pairs[:, 0], self.pairs[:, 1]), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)


_POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5(Classifier):
    """LeNet-5 with named layers ``c1 s2 c3 s4 c5 f6 fc`` as in the paper."""

    classifier_attr = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        act: Act = "relu",
        pool: Literal["max", "avg"] = "max",
        c3_connections: Literal["full", "lecun"] = "full",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {pool!r}")
        if c3_connections not in ("full", "lecun"):
            raise ValueError(f"c3_connections must be 'full' or 'lecun', got {c3_connections!r}")
        pool_layer = _POOLS[pool]
        pieces = act_width(1, act)
        table = tuple(maps for maps in LECUN_C3_TABLE for _ in range(pieces))  # each map's inputs, once per piece
        self.num_classes = num_classes
        self.num_features = 84
        self.c1 = nn.Conv2d(in_chans, 6 * pieces, kernel_size=5)
        self.act1 = make_act(act, 6)
        self.s2 = pool_layer(2)
        self.c3 = nn.Conv2d(6, 16 * pieces, kernel_size=5) if c3_connections == "full" else SparseConv2d(6, table, 5)
        self.act3 = make_act(act, 16)
        self.s4 = pool_layer(2)
        self.c5 = nn.Conv2d(16, 120 * pieces, kernel_size=5)
        self.act5 = make_act(act, 120)  # its output is the deepest feature map
        self.f6 = nn.Linear(120, 84 * pieces)
        self.act6 = make_act(act, 84)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(84, num_classes) if num_classes > 0 else nn.Identity()
        # C5's 5x5 kernels cover S4's whole 5x5 maps: one position for the 32x32 input
        self.feature_info = [FeatureInfo("s2", 6, 2), FeatureInfo("s4", 16, 4), FeatureInfo("act5", 120, 32)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != 32 or x.shape[-1] != 32:  # (two ints, not a tuple: TorchScript scripts it)
            raise ValueError(f"LeNet-5 expects 32x32 inputs, got {x.shape[-2]}x{x.shape[-1]}; set data.image_size=32")
        x = self.s2(self.act1(self.c1(x)))
        x = self.s4(self.act3(self.c3(x)))
        return self.act5(self.c5(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.act6(self.f6(torch.flatten(x, 1))))
        return x if pre_logits else self.fc(x)


def _create(num_classes: int, in_chans: int, **kwargs: Any) -> LeNet5:
    if "activation" in kwargs:
        raise ConfigError("model.activation is now model.act (relu, tanh, ...); rename the key")
    return LeNet5(num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(family="lenet", input_size=32, paper="LeCun et al. 1998, Gradient-based learning applied to document recognition")
def lenet5(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> LeNet5:
    """LeNet-5, modern full-connection variant (ReLU, max pooling) unless overridden."""
    return _create(num_classes, in_chans, **kwargs)


@register_model(family="lenet", input_size=32, paper="LeCun et al. 1998, Gradient-based learning applied to document recognition")
def lenet5_classic(num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> LeNet5:
    """LeNet-5 as in the paper: sparse C3 table, tanh, average subsampling (linear output layer)."""
    return _create(num_classes, in_chans, **{"act": "tanh", "pool": "avg", "c3_connections": "lecun", **kwargs})
