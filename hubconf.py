"""torch.hub entry points: one per registered zoo classifier (``python -m zoo list --task classification``).

    model = torch.hub.load("<repo dir>", "resnet18", source="local", num_classes=10)
    torch.hub.list("<owner>/<repo>")  # on GitHub; torch.hub.list has no source="local"

Each entry is :func:`zoo.models.create_model` of its name: keyword arguments are its options (``num_classes``,
``in_chans``, the builder's own), ``pretrained`` a zoo checkpoint, a state_dict file, ``torchvision:<model>.<weights>``
or ``True`` for torchvision's default weights of the model (only models torchvision has weights for).
"""

from __future__ import annotations

from typing import Any as _Any, Callable as _Callable  # torch.hub lists every public callable

from torch import nn

from zoo.errors import ConfigError as _ConfigError
from zoo.models import create_model as _create_model, list_models as _list_models, model_info as _model_info

dependencies = ["torch", "torchvision"]


def _entry(name: str) -> _Callable[..., nn.Module]:
    """The hub entry point of the registered model ``name``."""
    info = _model_info(name)

    def entry(pretrained: bool | str = False, **kwargs: _Any) -> nn.Module:
        if pretrained is True:
            if not info.get("torchvision"):
                raise _ConfigError(f"{name} has no torchvision weights; pass pretrained=<zoo checkpoint or state_dict file>")
            pretrained = f"torchvision:{name}"
        return _create_model(name, pretrained=pretrained or None, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"zoo's {name} ({info['family']} family{', ' + info['paper'] if info.get('paper') else ''}; "
                     f"{info['input_size']}x{info['input_size']} inputs): zoo.models.create_model({name!r}, ...).")
    return entry


globals().update({name: _entry(name) for name in _list_models(task="classification")})
