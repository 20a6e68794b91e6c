"""What a tool runs on: a registered model or a user's ``nn.Module`` class, and the input it takes.

``MODEL`` on the command line is either

* a registered name (``lenet5``; ``python -m zoo list``), built by :func:`zoo.models.create_model` with
  ``--num-classes``/``--in-chans`` and ``key=value`` builder options; its input is
  ``(batch, in_chans, input_size, input_size)`` with the registry's ``input_size`` (a GAN's is its latent
  vector, ``(batch, latent_dim)``), or
* a dotted path to an ``nn.Module`` class or a function returning one (``mypkg.layers.MyLayer``), called
  with the ``key=value`` options; its input shape is ``--input-shape`` or ``--in-chans`` with ``--input-size``.

Option values use the syntax of ``train.py`` overrides (Hydra's): ``drop_rate=0.5 hidden=[64,32] act=relu``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from zoo.errors import ConfigError, brief
from zoo.schema import check_call


@dataclass
class Target:
    """A module to inspect, its display name and the shape of one input batch."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]

    def example_input(self, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
        """A standard-normal input of :attr:`input_shape`, the same for the same ``seed``."""
        return torch.randn(self.input_shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)

    def probe(self, x: torch.Tensor, train: bool = False) -> None:
        """A :class:`ConfigError` if the module cannot run on ``x`` in training (``train``) or eval mode (a
        wrong shape, an unsupported input); the module is left in that mode."""
        self.module.train(train)
        try:
            with torch.no_grad():
                self.module(x.to(next(self.module.parameters(), x).dtype))
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:
            raise cannot_run(self.name, tuple(x.shape), e) from None


def cannot_run(name: str, shape: tuple[int, ...], error: BaseException) -> ConfigError:
    """The one-line error of a module that failed on an input of ``shape``."""
    message = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return ConfigError(f"{name} cannot run on an input of shape {shape}: {message}; "
                       "give its input with --input-shape (or --in-chans/--input-size)")


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["drop_rate=0.5", "hidden=[64,32]"]`` -> ``{"drop_rate": 0.5, "hidden": [64, 32]}`` (Hydra's
    override grammar, as on the ``train.py`` command line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    bad = next((p for p in pairs if "=" not in p or p.startswith("=")), None)
    if bad is not None:
        raise ConfigError(f"option {bad!r} is not key=value (e.g. drop_rate=0.5)")
    try:
        overrides = OverridesParser.create().parse_overrides(list(pairs))
    except HydraException as e:
        raise ConfigError(f"cannot parse the options: {brief(str(e))}") from None
    return {o.key_or_group: o.value() for o in overrides}


def _default(builder: Any, name: str) -> Any:
    parameter = inspect.signature(builder).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _registered(name: str, options: dict[str, Any], num_classes: int | None, in_chans: int | None,
                input_size: int | None, batch_size: int) -> tuple[nn.Module, tuple[int, ...]]:
    from zoo.models import MODELS, create_model, model_info

    info = model_info(name)  # an UnknownNameError naming close matches
    builder = MODELS.get(name).obj
    kwargs = dict(options)
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if value is not None:
            kwargs[key] = value
    if input_size is not None and _default(builder, "image_size") is not None:
        kwargs.setdefault("image_size", input_size)  # a generative model reads (and makes) images of its image_size
    module = MODELS.build_from({"name": name, **kwargs}, group="model", call=create_model)
    channels = kwargs.get("in_chans", _default(builder, "in_chans") or 3)
    size = input_size or kwargs.get("image_size") or info["input_size"]
    return module, input_shape_of(module, batch_size, int(channels), int(size))


def input_shape_of(model: nn.Module, batch_size: int, in_chans: int, size: int) -> tuple[int, ...]:
    """The shape of a zoo model's ``forward`` input: images ``(batch, in_chans, size, size)``, or a GAN's
    latent vectors ``(batch, latent_dim)`` (its ``forward(z)`` runs the generator)."""
    from zoo.models.gan import GAN

    if isinstance(model, GAN):
        return (batch_size, model.latent_dim)
    return (batch_size, in_chans, size, size)


def _dotted(path: str, options: dict[str, Any]) -> nn.Module:
    module_path, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_path), attr)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_path!r} ({e}); a model is a registered name "
                          "(python -m zoo list) or pkg.module.Class") from None
    except AttributeError:
        raise ConfigError(f"module {module_path!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{path} is a {type(obj).__name__}, not an nn.Module class")
    check_call(path, options, obj)
    try:
        module = obj(**options)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{path} made a {type(module).__name__}, not an nn.Module")
    return module


def build_target(spec: str, options: dict[str, Any] | None = None, *, num_classes: int | None = None,
                 in_chans: int | None = None, input_size: int | None = None,
                 input_shape: Sequence[int] | None = None, batch_size: int = 2) -> Target:
    """The module ``spec`` names (see the module docstring) and its input shape; ``input_shape``, when
    given, is the whole shape, batch included."""
    from zoo.models import MODELS, list_models

    options = dict(options or {})
    for key, value in (("batch_size", batch_size), ("input_size", input_size), ("in_chans", in_chans),
                       ("num_classes", num_classes)):
        if value is not None and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    if input_shape is not None and (not input_shape or min(input_shape) < 1):
        raise ConfigError(f"--input-shape must be sizes >= 1, e.g. 2,3,32,32; got {list(input_shape)}")
    list_models()  # the registry filled
    if "." not in spec or spec in MODELS:
        module, shape = _registered(spec, options, num_classes, in_chans, input_size, batch_size)
    else:
        if num_classes is not None:
            raise ConfigError(f"--num-classes is for registered models; give {spec} its options as key=value")
        module = _dotted(spec, options)
        if input_shape is None and (in_chans is None or input_size is None):
            raise ConfigError(f"{spec} has no registered input: give --input-shape (e.g. 2,16) or --in-chans and --input-size")
        shape = (batch_size, in_chans or 0, input_size or 0, input_size or 0)
    return Target(spec, module, tuple(int(s) for s in input_shape) if input_shape is not None else shape)

