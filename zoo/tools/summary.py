"""Model summary: per layer the output shape, the parameters and the multiply-accumulates, by torchinfo.

``python -m zoo summary MODEL [--input-size N] [--in-chans C] [--num-classes K] [--depth D]`` prints
torchinfo's table for one input of the model's size (batch 1, eval mode); the MACs of a layer are
torchinfo's ``mult_adds`` (convolutions and linear layers: one per weight use; normalisation layers
count their parameters per use).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import nn

from zoo.errors import ConfigError
from zoo.tools.target import cannot_run

if TYPE_CHECKING:
    from torchinfo import ModelStatistics

COLUMNS = ("output_size", "num_params", "mult_adds")


def summarize(module: nn.Module, input_shape: tuple[int, ...], depth: int = 3, verbose: int = 0) -> ModelStatistics:
    """torchinfo's statistics of ``module`` on a random input of ``input_shape`` (CPU, eval mode):
    ``total_params``, ``trainable_params``, ``total_mult_adds``, ``summary_list`` (one entry per layer)
    and its table as ``str()``."""
    import torchinfo

    if depth < 0:
        raise ConfigError(f"--depth must be >= 0, got {depth}")
    try:
        return torchinfo.summary(module, input_size=input_shape, depth=depth, col_names=COLUMNS, device="cpu",
                                 mode="eval", row_settings=("var_names",), verbose=verbose)
    except RuntimeError as e:  # torchinfo's "Failed to run torchinfo", the model's own error as its cause
        raise cannot_run(type(module).__name__, tuple(input_shape), e.__cause__ or e) from None


def format_summary(stats: ModelStatistics) -> str:
    """torchinfo's table, its units spelled as it means them: ``Total mult-adds (M)``, not the
    ``(Units.MEGABYTES)`` its enum prints on Python >= 3.11."""
    from torchinfo.enums import Units

    return re.sub(r"\(Units\.(\w+)\)", lambda m: f"({Units[m[1]].value})", str(stats))

