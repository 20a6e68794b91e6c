"""Types of config values, checked once, up front, before a run claims its directory.

Two sources say what a value must be:

* **annotations** of the classes a config group builds (``TrainerConfig``, every callback and
  logger): ``max_epochs: int`` refuses ``1.5``, ``deterministic: bool`` refuses ``maybe``;
* **the group's own yaml file** for everything else (``configs/optimizer/adam.yaml`` says ``lr``
  is a number, ``configs/data/digits.yaml`` that ``batch_size`` is an integer; the primary config
  says ``seed`` is an integer and ``test`` a boolean). ``null`` is always accepted there (many
  options are "off" when null) and values checked further by the code that uses them.

Booleans are ``true``/``false`` only: Hydra reads ``test=no`` as the string ``"no"``, which is refused.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from zoo.errors import ConfigError

#: config groups whose node names the option file it came from (``optimizer.name: adam`` -> ``adam.yaml``)
NAMED_GROUPS = ("model", "data", "optimizer", "scheduler", "regularizer", "task", "transfer", "tta")


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(annotation)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
            list: "a list", dict: "a mapping"}.get(typing.get_origin(annotation) or annotation, str(annotation))


def matches(value: Any, annotation: Any) -> bool:
    """Whether a config value fits a type annotation (unknown annotations accept anything)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(annotation))
    if annotation in (None, type(None)):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:  # Hydra reads trainer.precision=32 as an integer
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if annotation in (list, tuple) or origin in (list, tuple, typing.Sequence):
        return isinstance(value, (list, tuple))
    if annotation is dict or origin in (dict, typing.Mapping):
        return isinstance(value, Mapping)
    return True


def check_value(key: str, value: Any, annotation: Any) -> None:
    if not matches(value, annotation):
        raise ConfigError(f"{key} must be {_describe(annotation)}, got {value!r}")


def annotations_of(obj: Any) -> dict[str, Any]:
    """Resolved type hints of a function, a class's constructor or a dataclass's fields; empty if unresolvable."""
    target = obj.__init__ if isinstance(obj, type) and not hasattr(obj, "__dataclass_fields__") else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a user's class with unresolvable hints is not checked
        return {}


def check_options(key: str, options: Mapping[str, Any], obj: Any) -> None:
    """Each of ``options`` against the annotation of the parameter of ``obj`` it sets."""
    hints = annotations_of(obj)
    for name, value in options.items():
        if name in hints:
            check_value(f"{key}.{name}", value, hints[name])


def options_of(builder: Any, fixed: Mapping[str, Any] = {}) -> list[str]:
    """The keyword parameters of ``builder`` a config may set (those in ``fixed`` are the builder's)."""
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in fixed]


def check_call(key: str, options: Mapping[str, Any], builder: Any, fixed: Mapping[str, Any] = {}) -> None:
    """``options`` (config ``key``) as arguments of ``builder``: known parameters (unless it takes
    ``**kwargs``), of the annotated types, none of them one of ``fixed`` (the arguments zoo passes itself)."""
    for name in fixed:
        if name in options:
            raise ConfigError(f"{key}.{name} is set by zoo; remove it")
    known = options_of(builder, fixed)
    unknown = sorted(set(options) - set(known))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()):
        raise ConfigError(f"unknown option {key}.{unknown[0]}; known: {', '.join(known) or '(none)'}")
    check_options(key, options, builder)


def _kind(reference: Any) -> Any:
    """The annotation a yaml default implies; None where it says nothing (null, an interpolation)."""
    if reference is None or isinstance(reference, str) and "${" in reference:
        return None
    if isinstance(reference, bool):
        return bool
    if isinstance(reference, int):
        return int
    if isinstance(reference, float):
        return float
    if isinstance(reference, str):
        return str
    if isinstance(reference, (list, tuple)):
        return list
    return None


def check_against(key: str, value: Any, reference: Any) -> None:
    """``value`` (a composed config node) against the yaml it was composed from."""
    if isinstance(reference, Mapping):
        if isinstance(value, Mapping):
            for k, v in value.items():
                if k in reference:
                    check_against(f"{key}.{k}" if key else str(k), v, reference[k])
        elif value is not None:
            raise ConfigError(f"{key} must be a mapping of options, got {value!r}")
        return
    kind = _kind(reference)
    if kind is not None and value is not None:
        check_value(key, value, kind)


def _load(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf  # only the config check reads yaml; the registries import this module

    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in node.items() if k != "defaults"} if isinstance(node, dict) else {}


def check_config(cfg: Mapping[str, Any], config_dir: Path, primary: str) -> None:
    """The values of a composed (resolved) run config against the yaml files of ``config_dir``."""
    if not config_dir.is_dir():
        return  # an installed package without the configs: nothing to compare with
    reference = _load(config_dir / f"{primary}.yaml")
    check_against("", {k: v for k, v in cfg.items() if k in reference and not isinstance(reference[k], Mapping)}, reference)
    for group in NAMED_GROUPS:
        node = cfg.get(group)
        if isinstance(node, Mapping) and isinstance(node.get("name"), str) and (config_dir / group / f"{node['name']}.yaml").is_file():
            check_against(group, node, _load(config_dir / group / f"{node['name']}.yaml"))
