"""Multi-scale features and stage-wise parameter groups of any classifier, from its ``feature_info``.

- :class:`FeatureExtractor` (``create_model(name, features_only=True, out_indices=...)``) returns the
  feature maps of the selected stages as a list, collected with forward hooks while
  ``forward_features`` runs (FX tracing fails on drop-path and stochastic-depth control flow), and
  stops the forward pass after the deepest selected stage. Detection, segmentation and captioning
  models build on it.
- :func:`parameter_stages` splits a classifier's parameters into its stages in forward order (stem
  and stages, the layers between the last stage and the classifier, the classifier), the units that
  the freeze policies of :mod:`zoo.transfer` freeze, unfreeze and give learning rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models.base import Classifier, FeatureInfo, _set_submodule

NECK = "neck"
CLASSIFIER = "classifier"


@dataclass
class ParamStage:
    """Parameters (by name) of one unit: a declared stage, the ``neck`` or the ``classifier``."""

    name: str
    params: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)


def is_within(name: str, prefix: str) -> bool:
    """Whether module or parameter ``name`` is ``prefix`` or inside it (``""`` contains everything)."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def declared_stages(model: nn.Module) -> Sequence[FeatureInfo]:
    """The model's ``feature_info``; a one-line error for models that declare none."""
    info = getattr(model, "feature_info", ())
    if not info:
        raise ConfigError(f"{type(model).__name__} declares no stages (feature_info); it cannot be used with "
                          "features_only or stage-wise transfer policies")
    return info


def parameter_stages(model: Classifier) -> list[ParamStage]:
    """Parameters split by stage, in forward order: one unit per ``feature_info`` entry (each owns
    what is defined after the previous stage's module up to the end of its own, so downsampling
    between stages goes with the next stage), then ``neck`` (defined after the last stage: final
    hidden layers, auxiliary heads), then ``classifier`` (the layers ``reset_classifier`` replaces).
    Relies on modules being defined in forward order, which every zoo family does."""
    info = declared_stages(model)
    heads = model.classifier_names()
    units = [ParamStage(f.module) for f in info] + [ParamStage(NECK), ParamStage(CLASSIFIER)]
    current, inside, entered = 0, None, 0
    for name, module in model.named_modules():
        if inside is not None and not is_within(name, inside):
            current, inside = current + 1, None
        if current < len(info) and name == info[current].module:
            inside, entered = name, entered + 1
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        unit = units[-1] if any(is_within(name, h) for h in heads) else units[current]
        unit.params += own
        unit.modules.append(name)
    if entered < len(info):
        raise ConfigError(f"{type(model).__name__}: stage module {info[entered].module!r} of feature_info is not "
                          "in the model, or not defined after the previous stage")
    return units


class _Collected(Exception):
    """Raised by the deepest hook: the rest of the network is not needed."""


class FeatureExtractor(nn.Module):
    """The feature maps of a classifier's stages ``out_indices`` (indices into its ``feature_info``,
    negative ones count from the deepest; default: all). The layers after the last stage (hidden
    layers, auxiliary heads, classifier) are removed.

    ``feature_info`` lists the selected stages; ``channels`` and ``reductions`` their widths and
    strides. ``forward(x)`` returns one tensor per selected stage, shallow to deep.
    """

    def __init__(self, model: Classifier, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = declared_stages(model)
        n = len(info)
        indices = list(range(n)) if out_indices is None else [int(i) for i in out_indices]
        bad = [i for i in indices if not -n <= i < n]
        if bad or not indices:
            raise ConfigError(f"out_indices {list(indices)} do not fit {type(model).__name__}, which has {n} stages "
                              f"(indices 0..{n - 1} or -{n}..-1): {[f.module for f in info]}")
        self.out_indices = tuple(sorted({i % n for i in indices}))
        self.feature_info = [info[i] for i in self.out_indices]
        self.channels = [f.num_chs for f in self.feature_info]
        self.reductions = [f.reduction for f in self.feature_info]
        self.model = model
        head = {p for unit in parameter_stages(model)[-2:] for p in unit.params}
        for name, child in list(model.named_children()):
            params = [f"{name}.{p}" for p, _ in child.named_parameters()]
            if params and all(p in head for p in params):
                _set_submodule(model, name, nn.Identity())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps: dict[int, torch.Tensor] = {}
        deepest = self.out_indices[-1]

        def hook(index: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
            def collect(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
                maps[index] = output
                if index == deepest:
                    raise _Collected

            return collect

        handles = [self.model.get_submodule(self.feature_info[k].module).register_forward_hook(hook(i))
                   for k, i in enumerate(self.out_indices)]
        try:
            self.model.forward_features(x)
        except _Collected:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return [maps[i] for i in self.out_indices]
