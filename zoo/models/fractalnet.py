"""FractalNet (Larsson, Maire & Shakhnarovich, "FractalNet: ultra-deep neural networks without
residuals", ICLR 2017).

The fractal expansion rule builds each block: ``f_1(z) = conv(z)`` and
``f_C(z) = join(conv(z), f_{C-1}(f_{C-1}(z)))``, giving ``C`` columns of depth ``1, 2, .., 2^(C-1)``
(column 0 the shallowest). A join is the element-wise mean of its inputs; joins that meet at the
same point are one join, so the last join of ``f_C`` has ``C`` inputs. ``conv`` is a 3x3
convolution, batch norm, ReLU and the block's dropout; each of the ``B`` blocks ends with 2x2 max
pooling.

Drop-path regularises training: each mini-batch is either *local* (every join drops each input
with probability ``local_drop_prob`` = 0.15, keeping at least one) or *global* (a single column,
chosen at random, is used throughout the network), half of the mini-batches each. Paths that are
dropped are not computed. At inference all columns are used, or with ``inference="deepest"``
the deepest column alone.

``fractalnet_cifar`` is the paper's CIFAR network: C=3, B=5, 64-128-256-512-512 channels, 20
layers on its deepest path; with bias-free convolutions followed by batch norm it has 33,724,618
parameters at 10 classes (the paper's table lists 38.6M). Drop-path is on by default. Dropout, like
every plain regulariser in this zoo (``drop_rate`` of the wide ResNets), is a training choice and
off by default: the paper's per-block rates 0-0.1-0.2-0.3-0.4 (:data:`PAPER_DROPOUT`) are set by
``configs/model/fractalnet_cifar.yaml`` or ``dropout=PAPER_DROPOUT``. Together with drop-path it
slows early training a lot (a 30-step overfit of one batch does not get anywhere), so short runs
are better off with drop-path alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import FeatureInfo
from zoo.models.layers import PooledClassifier, conv3x3, init_conv_bn, linear_or_identity

_PAPER = "Larsson et al. 2016, FractalNet: ultra-deep neural networks without residuals"

#: per-block dropout rates of the paper's CIFAR network
PAPER_DROPOUT = (0.0, 0.1, 0.2, 0.3, 0.4)

Inference = Literal["all", "deepest"]


@dataclass(frozen=True)
class DropPathPlan:
    """Which join inputs survive in one forward pass.

    ``column`` set: global drop-path (or deepest-column inference), only that column is kept.
    Otherwise each join drops each input with probability ``local_prob`` (0: keep all).
    """

    columns: int
    column: int | None = None
    local_prob: float = 0.0

    def join_mask(self, num_inputs: int) -> list[bool]:
        """Keep-mask of a join with ``num_inputs`` inputs; input ``i`` comes from column
        ``columns - num_inputs + i`` (the deepest columns reach every join)."""
        if self.column is not None:
            first = self.columns - num_inputs
            return [first + i == self.column for i in range(num_inputs)]
        if self.local_prob == 0.0:
            return [True] * num_inputs
        keep = torch.rand(num_inputs) >= self.local_prob
        if not keep.any():
            keep[torch.randint(num_inputs, ())] = True
        return keep.tolist()


def join(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The fractal join: element-wise mean of the surviving inputs."""
    return inputs[0] if len(inputs) == 1 else torch.stack(list(inputs)).mean(0)


class ConvUnit(nn.Sequential):
    """3x3 convolution, batch norm, ReLU, dropout: the single layer of the fractal rule."""

    def __init__(self, in_channels: int, out_channels: int, drop_rate: float) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(drop_rate)


class FractalPath(nn.Module):
    """``f_C`` without its final join: returns the outputs of the surviving columns.

    Column 0 is ``conv``; column ``j > 0`` is column ``j - 1`` of ``first`` followed (after the
    join that ends ``first``) by column ``j - 1`` of ``second``.
    """

    def __init__(self, columns: int, in_channels: int, out_channels: int, drop_rate: float) -> None:
        super().__init__()
        self.columns = columns
        self.conv = ConvUnit(in_channels, out_channels, drop_rate)
        if columns > 1:
            self.first = FractalPath(columns - 1, in_channels, out_channels, drop_rate)
            self.second = FractalPath(columns - 1, out_channels, out_channels, drop_rate)

    def forward(self, x: torch.Tensor, keep: Sequence[bool], plan: DropPathPlan) -> list[torch.Tensor]:
        """Outputs of the columns ``i`` with ``keep[i]``, the inputs of the enclosing join."""
        outs = [self.conv(x)] if keep[0] else []
        if self.columns > 1 and any(keep[1:]):
            inner = join(self.first(x, plan.join_mask(self.columns - 1), plan))
            outs += self.second(inner, keep[1:], plan)
        return outs

    def column_units(self, column: int) -> list[ConvUnit]:
        """The convolution units of ``column`` in order (``2 ** column`` of them)."""
        if not 0 <= column < self.columns:
            raise ValueError(f"column must be in [0, {self.columns}), got {column}")
        if column == 0:
            return [self.conv]
        return self.first.column_units(column - 1) + self.second.column_units(column - 1)


class FractalBlock(nn.Module):
    """A fractal ``f_C`` with its final join, then 2x2 max pooling."""

    def __init__(self, columns: int, in_channels: int, out_channels: int, drop_rate: float) -> None:
        super().__init__()
        self.path = FractalPath(columns, in_channels, out_channels, drop_rate)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor, plan: DropPathPlan) -> torch.Tensor:
        return self.pool(join(self.path(x, plan.join_mask(self.path.columns), plan)))


class FractalNet(PooledClassifier):
    """``B = len(channels)`` fractal blocks of ``columns`` columns, global pool, ``fc``."""

    classifier_attr = "fc"

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        *,
        columns: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        dropout: Sequence[float] | None = None,
        local_drop_prob: float = 0.15,
        global_drop_ratio: float = 0.5,
        inference: Inference = "all",
    ) -> None:
        super().__init__()
        if columns < 1:
            raise ValueError(f"columns must be >= 1, got {columns}")
        dropout = [0.0] * len(channels) if dropout is None else dropout
        if len(channels) != len(dropout):
            raise ValueError(f"channels {tuple(channels)} and dropout {tuple(dropout)} need one entry per block")
        if not 0.0 <= local_drop_prob < 1.0 or not 0.0 <= global_drop_ratio <= 1.0:
            raise ValueError("local_drop_prob must be in [0, 1) and global_drop_ratio in [0, 1]")
        if inference not in ("all", "deepest"):
            raise ValueError(f"inference must be 'all' or 'deepest', got {inference!r}")
        self.columns = columns
        self.local_drop_prob = local_drop_prob
        self.global_drop_ratio = global_drop_ratio
        self.inference = inference
        in_channels = [in_chans, *channels[:-1]]
        self.blocks = nn.ModuleList(
            FractalBlock(columns, c_in, c_out, p) for c_in, c_out, p in zip(in_channels, channels, dropout)
        )
        self.num_features = channels[-1]
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)
        self.feature_info = [FeatureInfo(f"blocks.{i}", c, 2 ** (i + 1)) for i, c in enumerate(channels)]
        init_conv_bn(self, mode="fan_in")

    def sample_plan(self) -> DropPathPlan:
        """The drop-path plan of one forward pass (one mini-batch)."""
        if not self.training:
            return DropPathPlan(self.columns, self.columns - 1 if self.inference == "deepest" else None)
        if float(torch.rand(())) < self.global_drop_ratio:
            return DropPathPlan(self.columns, int(torch.randint(self.columns, ())))
        return DropPathPlan(self.columns, None, self.local_drop_prob)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.sample_plan()
        for block in self.blocks:
            x = block(x, plan)
        return x


def _fractalnet(num_classes: int, in_chans: int, variant: dict[str, Any], **kwargs: Any) -> FractalNet:
    """A FractalNet with the ``variant``'s columns and channels, which ``kwargs`` may override."""
    return FractalNet(num_classes=num_classes, in_chans=in_chans, **{**variant, **kwargs})


@register_model(family="fractalnet", input_size=32, paper=_PAPER)
def fractalnet_cifar(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> FractalNet:
    """The paper's CIFAR FractalNet: C=3, B=5, 64-128-256-512-512 channels (``dropout=PAPER_DROPOUT``
    for the paper's per-block dropout)."""
    variant = {"columns": 3, "channels": (64, 128, 256, 512, 512)}
    return _fractalnet(num_classes, in_chans, variant, **kwargs)


@register_model(family="fractalnet", input_size=32, paper=_PAPER)
def fractalnet_c3b4(num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> FractalNet:
    """A small FractalNet for CPU training: C=3, B=4, 32-64-128-256 channels."""
    variant = {"columns": 3, "channels": (32, 64, 128, 256)}
    return _fractalnet(num_classes, in_chans, variant, **kwargs)
