"""Model registry and the ``create_model`` / ``list_models`` API.

Each architecture family lives in its own module and registers one builder per variant with
:func:`register_model`, giving metadata used by ``python -m zoo list`` and by the configs::

    @register_model(family="lenet", task="classification", input_size=32, paper="LeCun et al. 1998")
    def lenet5(num_classes: int = 10, in_chans: int = 1, **kwargs) -> LeNet5: ...
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from zoo.errors import ConfigError
from zoo.models.base import count_parameters
from zoo.models.layers import check_init, initialize
from zoo.models.pretrained import PretrainedCfg, torchvision_builder, weights_cfg
from zoo.registry import Registry, import_modules

MODELS: Registry[nn.Module] = Registry("model")

#: helper modules that register nothing (detection: torchvision's detection parts, imported when a detector is built)
_NOT_FAMILIES = {"base", "detection", "features", "layers", "pretrained"}


def register_model(
    name: str | None = None,
    *,
    family: str,
    task: str = "classification",
    input_size: int = 224,
    paper: str = "",
    **metadata: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder with its family, task, expected input side and source paper.

    ``torchvision=True`` (in ``metadata``) says the model is torchvision's architecture of the same name
    with its parameter names, so torchvision's weights for it load (``torchvision:<name>.<weights>``),
    and ``python -m zoo list`` and :func:`pretrained_cfg` ask torchvision about it (only about those:
    importing torchvision costs more than a second)."""
    return MODELS.register(name, family=family, task=task, input_size=input_size, paper=paper, **metadata)


def _import_families() -> None:
    """Import every family module of this package once, so a new family is just a new file."""
    import_modules(__name__, __path__, _NOT_FAMILIES)


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    init: str = "default",
    init_std: float = 0.01,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; ``None`` arguments keep the builder's defaults.

    ``init``: refill every convolution and linear layer after construction (``default``: the
    builder's own initialisation; see :func:`zoo.models.layers.initialize`; ``init_std`` is the
    standard deviation of ``normal``). It comes before ``pretrained``, so loaded weights win; a
    backbone the builder loads itself (``backbone_pretrained``, ``encoder_pretrained``) would be
    overwritten, so that combination is refused.
    ``pretrained``: a zoo checkpoint, a state_dict file or ``torchvision:<model>.<weights>``, adapted
    to ``num_classes`` and ``in_chans`` (see :func:`zoo.transfer.load_pretrained`).
    ``features_only``: return a :class:`~zoo.models.features.FeatureExtractor` giving the feature maps
    of the stages ``out_indices`` (indices into the model's ``feature_info``; default all).
    """
    _import_families()
    entry = MODELS.get(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    check_init(init, init_std)
    loaded = sorted(k for k, v in kwargs.items() if k.endswith("_pretrained") and v)
    if init != "default" and loaded:
        raise ConfigError(
            f"model.init={init} would overwrite the weights of model.{loaded[0]}; use model.init=default with it"
        )
    model = initialize(entry.obj(**kwargs), init, init_std, kwargs.get("act", "relu"))
    if pretrained:
        from zoo.transfer import load_pretrained

        load_pretrained(model, pretrained)
    if features_only:
        from zoo.models.features import FeatureExtractor

        return FeatureExtractor(model, out_indices)  # type: ignore[arg-type]
    if out_indices is not None:
        raise ConfigError(f"out_indices={list(out_indices)} needs features_only=True")
    return model


def list_models(pattern: str = "*", task: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names matching a wildcard, optionally filtered by task or family."""
    _import_families()
    names = MODELS.list(pattern)
    if task is not None:
        names = [n for n in names if MODELS.metadata(n)["task"] == task]
    if family is not None:
        names = [n for n in names if MODELS.metadata(n)["family"] == family]
    return names


def model_info(name: str) -> dict[str, Any]:
    """Registration metadata of ``name`` (family, task, input_size, paper, ...)."""
    _import_families()
    return {"name": name, **MODELS.metadata(name)}


class _MetaFills(TorchFunctionMode):
    """``normal_`` of a meta tensor as the no-op it is (a meta tensor holds no values): torch runs it
    through Python reference code, ~0.3 ms a call and ``torch._dynamo`` imported on the first, which
    made the initialisation of the registry's models most of ``zoo list``'s time."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is torch.Tensor.normal_ and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Models built inside are on the meta device: shapes and parameter counts, no memory, no initialisation cost."""
    with torch.device("meta"), _MetaFills():
        yield


def registered_parameters(name: str) -> int:
    """The parameter count of the registered model ``name`` with its defaults, counted on the meta device (nothing
    is allocated)."""
    with on_meta():
        return count_parameters(create_model(name))


def family_representatives(task: str = "classification") -> list[str]:
    """One model per family of ``task``: the variant with the smallest input, and of those the fewest parameters
    (what the export checks run)."""
    by_family: dict[str, list[str]] = {}
    for name in list_models(task=task):
        by_family.setdefault(model_info(name)["family"], []).append(name)
    return [min(names, key=lambda n: (model_info(n)["input_size"], registered_parameters(n))) for _, names in sorted(by_family.items())]


def pretrained_cfg(name: str, weights: str | None = None) -> PretrainedCfg | None:
    """The pretrained configuration of the zoo classifier ``name`` with torchvision's ``weights`` (a
    name such as ``IMAGENET1K_V2``, or a whole ``torchvision:...`` source; default: torchvision's
    ``DEFAULT``); ``None`` when torchvision has no classification weights for the model."""
    builder = torchvision_builder(name)
    if builder is None or model_info(name)["task"] != "classification":
        return None
    if weights and "." not in weights and ":" not in weights:
        weights = f"{builder}.{weights}"
    return weights_cfg(weights or builder)


__all__ = ["MODELS", "register_model", "create_model", "list_models", "model_info", "PretrainedCfg", "pretrained_cfg",
           "registered_parameters", "family_representatives"]
