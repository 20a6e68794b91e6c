"""Building the pluggable parts of a run (callbacks, loggers) from a config mapping.

A config group such as ``configs/callbacks/`` composes into one mapping, ``{key: options}``:

* ``key`` names a registered builder (``checkpoint: {monitor: val/loss}``); its options must be
  parameters of that builder, and an unknown one is a :class:`ConfigError` naming the known ones;
* ``options`` with a ``_target_`` build the user's own class through Hydra's ``instantiate``
  (``+callbacks.mine._target_=pkg.module.MyCallback``), which must be a subclass of ``base``;
* ``options: null`` switches that entry off (``callbacks.early_stopping=null``).
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from zoo.errors import ConfigError
from zoo.registry import Registry
from zoo.schema import check_call, check_options, options_of

T = TypeVar("T")


def build_one(registry: Registry[T], group: str, key: str, options: Mapping[str, Any], base: type,
              fixed: Mapping[str, Any] = {}) -> T:
    """The object ``key: options`` of config group ``group`` describes (see the module docstring);
    ``fixed`` are the arguments zoo passes itself (e.g. the run directory)."""
    options = dict(options)
    for name in fixed:
        if name in options:
            raise ConfigError(f"{group}.{key}.{name} is set by zoo; remove it")
    if "_target_" in options:
        obj = _instantiate(group, key, options, fixed)
    else:
        builder = check_entry(registry, group, key, options, fixed)
        try:
            obj = builder(**options, **fixed)
        except TypeError as e:
            raise ConfigError(f"{group}.{key}: {e}") from None
    if not isinstance(obj, base):
        raise ConfigError(f"{group}.{key}: {options.get('_target_', key)} made a {type(obj).__name__}, "
                          f"not a {base.__module__.rsplit('.', 1)[0] if base.__module__.endswith('.base') else base.__module__}"
                          f".{base.__name__} subclass")
    return obj


def check_entry(registry: Registry[T], group: str, key: str, options: Mapping[str, Any], fixed: Mapping[str, Any] = {}) -> Any:
    """The builder of registered entry ``key``, once its options are known parameters of the right types."""
    if key not in registry:
        raise ConfigError(f"unknown {registry.kind} {key!r}; known: {', '.join(registry.list())} "
                          f"(or _target_: for your own class, {group}.{key}._target_=pkg.module.Class)")
    builder = registry.get(key).obj
    check_call(f"{group}.{key}", options, builder, fixed)
    return builder


def _instantiate(group: str, key: str, options: dict[str, Any], fixed: Mapping[str, Any]) -> Any:
    """A user's class: ``options`` with a ``_target_``, called with the other options (and those of
    ``fixed`` its signature takes)."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate

    if not isinstance(options["_target_"], str) or not options["_target_"]:
        raise ConfigError(f"{group}.{key}._target_ must name a class (pkg.module.Class), got {options['_target_']!r}")
    try:
        target = get_class(options["_target_"])
        check_options(f"{group}.{key}", {k: v for k, v in options.items() if k != "_target_"}, target)
        extra = {k: v for k, v in fixed.items() if k in options_of(target)}
        return instantiate(options, **extra)
    except (InstantiationException, ImportError, ValueError) as e:
        cause = e.__cause__
        if isinstance(e, InstantiationException) and cause is not None and not isinstance(cause, (ImportError, AttributeError, TypeError)):
            raise  # a bug inside the user's class keeps its traceback
        raise ConfigError(f"{group}.{key}: {' '.join(str(e).split())}") from None


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
