"""Building the pluggable parts of a run (callbacks, loggers) from a config mapping.

A config group such as ``configs/callbacks/`` composes into one mapping, ``{key: options}``:

* ``key`` names a registered builder (``checkpoint: {monitor: val/loss}``); its options must be
  parameters of that builder, and an unknown one is a :class:`ConfigError` naming the known ones;
* ``options`` with a ``_target_`` build the user's own class through Hydra's ``instantiate``
  (``+callbacks.mine._target_=pkg.module.MyCallback``), which must be a subclass of ``base``;
* ``options: null`` switches that entry off (``callbacks.early_stopping=null``).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, TypeVar

from zoo.errors import ConfigError
from zoo.registry import Registry

T = TypeVar("T")


def options_of(builder: Any, fixed: Mapping[str, Any] = {}) -> list[str]:
    """The keyword parameters of ``builder`` a config may set (those in ``fixed`` are the builder's)."""
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in fixed]


def build_one(registry: Registry[T], group: str, key: str, options: Mapping[str, Any], base: type,
              fixed: Mapping[str, Any] = {}) -> T:
    """The object ``key: options`` of config group ``group`` describes (see the module docstring)."""
    options = dict(options)
    if "_target_" in options:
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        try:
            obj = instantiate(options, **{k: v for k, v in fixed.items() if k in options_of(_locate(options["_target_"]))})
        except InstantiationException as e:
            raise ConfigError(f"{group}.{key}: cannot build {options['_target_']}: {str(e).splitlines()[-1]}") from None
    else:
        if key not in registry:
            known = ", ".join(sorted(registry))
            raise ConfigError(f"unknown {group} entry {key!r}; known: {known} (or {group}.{key}._target_=your.Class)")
        builder = registry.get(key).obj
        known = options_of(builder, fixed)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown option {group}.{key}.{unknown[0]}; known: {', '.join(known) or '(none)'}")
        try:
            obj = builder(**options, **fixed)
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{group}.{key}: {e}") from None
    if not isinstance(obj, base):
        raise ConfigError(f"{group}.{key} built a {type(obj).__name__}, not a {base.__name__} subclass")
    return obj


def _locate(target: str) -> Any:
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception as e:  # noqa: BLE001 - Hydra raises ImportError or ValueError variants
        raise ConfigError(f"cannot import {target!r}: {str(e).splitlines()[0]}") from None


def build_all(registry: Registry[T], group: str, cfg: Mapping[str, Any] | None, base: type,
              fixed: Mapping[str, Any] = {}) -> dict[str, T]:
    """Every switched-on entry of ``cfg``, by key, in config order."""
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{group} must be a mapping of entries, got {cfg!r}")
    built = {}
    for key, options in cfg.items():
        if options is None:
            continue
        if not isinstance(options, Mapping):
            raise ConfigError(f"{group}.{key} must be a mapping of options or null, got {options!r}")
        built[key] = build_one(registry, group, key, options, base, fixed)
    return built
