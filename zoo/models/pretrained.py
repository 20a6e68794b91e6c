"""What a model's pretrained weights expect of the data (timm's ``pretrained_cfg``), from torchvision's own metadata.

Where torchvision has an architecture, the zoo model of the same name keeps torchvision's parameter
names (it is registered with ``torchvision=True``), so ``torchvision:<model>.<weights>`` loads into it
(:mod:`zoo.transfer`). torchvision is imported only when its weights are asked about. Each weights enum
member says how its images were preprocessed: ``weights.transforms()`` is an ``ImageClassification``
(crop size, resize size, mean, std, interpolation). :func:`pretrained_cfg` reads it, and
:func:`zoo.data.pretrained.resolve_data_config` makes the data pipeline follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zoo.errors import ConfigError
from zoo.registry import close_names

TORCHVISION = "torchvision:"

#: torchvision's builder of these weights re-normalises ImageNet-normalised inputs inside the network
#: (``transform_input=True``: ``x * std / 0.5 + (mean - 0.5) / 0.5``, i.e. the pixels mapped to [-1, 1]);
#: zoo's models leave normalisation to the data, so the data takes that mapping's mean and std
TRANSFORM_INPUT = {"GoogLeNet_Weights": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


@dataclass(frozen=True)
class PretrainedCfg:
    """The preprocessing of one set of torchvision classification weights, as the zoo model needs it."""

    source: str  #: ``torchvision:resnet50.IMAGENET1K_V2``
    input_size: int  #: the central crop's side
    resize_size: int  #: the short side before the crop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str  #: ``bilinear``, ``bicubic``, ...
    num_classes: int
    weights: tuple[str, ...]  #: every torchvision weights name of the same builder (``IMAGENET1K_V1``, ...)

    @property
    def crop_pct(self) -> float:
        return self.input_size / self.resize_size


def torchvision_weights(spec: str) -> Any:
    """The torchvision weights enum member named by ``resnet18.IMAGENET1K_V1``, ``resnet18`` (its
    ``DEFAULT``) or ``ResNet18_Weights.IMAGENET1K_V1``."""
    from torchvision.models import get_model_weights, get_weight, list_models

    if "_Weights." in spec:
        try:
            return get_weight(spec)
        except (ValueError, KeyError, AttributeError):
            raise ConfigError(f"unknown torchvision weights {spec!r}; e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1") from None
    model, _, tag = spec.partition(".")
    try:
        enum = get_model_weights(model)
    except (ValueError, KeyError):
        close = close_names(model, list_models())
        hint = f"did you mean: {', '.join(close)}?" if close else "see torchvision.models.list_models()"
        raise ConfigError(f"torchvision has no model {model!r}; {hint}") from None
    try:
        return enum[tag or "DEFAULT"]
    except KeyError:
        options = ", ".join(w.name for w in enum) + ", DEFAULT"
        raise ConfigError(f"torchvision model {model!r} has no weights {tag!r}; available: {options}") from None


def torchvision_builder(name: str) -> str | None:
    """torchvision's builder of the zoo model ``name`` (the same name: zoo keeps torchvision's
    parameter names where torchvision has the architecture, registered with ``torchvision=True``), or
    ``None``. Read from the registration, so a model without torchvision weights needs no torchvision."""
    from zoo.models import model_info

    return name if model_info(name).get("torchvision") else None


def torchvision_weight_names(name: str) -> list[str]:
    """The torchvision weights the zoo model ``name`` can load (``IMAGENET1K_V1``, ...); empty for none."""
    builder = torchvision_builder(name)
    if builder is None:
        return []
    from torchvision.models import get_model_weights

    return [w.name for w in get_model_weights(builder)]


def weights_cfg(source: str) -> PretrainedCfg | None:
    """The preprocessing of ``torchvision:<spec>`` weights; ``None`` for weights other than
    classification ones (a detector's transforms normalise inside the model)."""
    from torchvision.transforms._presets import ImageClassification

    spec = source[len(TORCHVISION) :] if source.startswith(TORCHVISION) else source
    member = torchvision_weights(spec)
    transforms = member.transforms()
    if not isinstance(transforms, ImageClassification):
        return None
    enum = type(member)
    mean, std = TRANSFORM_INPUT.get(enum.__name__, (transforms.mean, transforms.std))
    builder = spec.split(".")[0] if "_Weights." not in spec else enum.__name__
    return PretrainedCfg(
        source=f"{TORCHVISION}{builder}.{member.name}",
        input_size=int(transforms.crop_size[0]),
        resize_size=int(transforms.resize_size[0]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        interpolation=transforms.interpolation.value,
        num_classes=len(member.meta["categories"]),
        weights=tuple(w.name for w in enum),
    )
