"""A small generic registry: ``register`` as a decorator, ``build`` by name, ``list`` by wildcard.

Every pluggable piece of zoo (models, datasets, tasks, optimizers, schedulers) lives in a
:class:`Registry`, so a config names a thing and the registry builds it. Unknown names raise
:class:`~zoo.errors.UnknownNameError` with the closest registered names.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Generic, Iterable, Iterator, Mapping, TypeVar

from zoo.errors import ConfigError, UnknownNameError
from zoo.schema import check_call, check_options

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with the metadata given at registration."""

    name: str
    obj: Callable[..., T]
    metadata: dict[str, Any] = field(default_factory=dict)


def close_names(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Registered names that look like ``name``: fuzzy matches first, then shared prefixes."""
    lowered = {c.lower(): c for c in candidates}
    found = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    key = name.lower().rstrip("0123456789_-")
    if key:
        found += [c for c in candidates if c.lower().startswith(key) and c not in found]
    return found[:n]


def import_modules(package: str, path: Iterable[str], skip: Collection[str] = ()) -> None:
    """Import every module of ``package`` (found on its ``__path__``) but the private ones and ``skip``
    (helpers that register nothing), so that adding a model family, task or dataset is adding a file."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Maps names to builders.

    >>> OPS = Registry("op")
    >>> @OPS.register("double", arity=1)
    ... def double(x): return 2 * x
    >>> OPS.build("double", x=3)
    6
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str | None = None, **metadata: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or function under ``name`` (default: its ``__name__``)."""

        def decorator(obj: Callable[..., T]) -> Callable[..., T]:
            key = name or obj.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered (by {self._entries[key].obj!r})")
            self._entries[key] = Entry(key, obj, dict(metadata))
            return obj

        return decorator

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name``; an :class:`UnknownNameError` naming close matches if absent."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = sorted(self._entries)
        close = close_names(str(name), names)
        hint = f"did you mean: {', '.join(close)}?" if close else f"available: {', '.join(names) or '(none)'}"
        return f"unknown {self.kind} {name!r}; {hint}"

    def build(self, name: str, /, **kwargs: Any) -> T:
        """Call the builder registered as ``name`` with ``kwargs``."""
        return self.get(name).obj(**kwargs)

    def build_from(self, cfg: Mapping[str, Any], /, *, group: str | None = None, key: str | None = None,
                   call: Callable[..., T] | None = None, **extra: Any) -> T:
        """Build the entry ``cfg["name"]`` with the other keys of ``cfg`` plus ``extra`` (the arguments
        zoo passes itself).

        The options are checked first against the builder's signature and annotations (a
        :class:`ConfigError` naming config key ``key``, default ``group``); a ``TypeError`` or ``ValueError`` of the call
        becomes ``ConfigError("<group> '<name>': ...")``. ``group`` defaults to the registry's kind.
        ``call(name, **options, **extra)`` builds instead of the builder where a wrapper adds options of
        its own (``create_model``'s ``pretrained``): then only the annotated types are checked first.
        """
        options = dict(cfg)
        name = options.pop("name")
        group = group or self.kind
        builder = self.get(name).obj
        if call is None:
            check_call(key or group, options, builder, extra)
        else:
            check_options(key or group, options, builder)
        try:
            return builder(**options, **extra) if call is None else call(name, **options, **extra)
        except (TypeError, ValueError) as e:  # a builder refusing an argument's type or value
            raise ConfigError(f"{group} {name!r}: {e}") from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style wildcard (``"resnet*"``), case-insensitive."""
        pattern = pattern.lower()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n.lower(), pattern))

    def metadata(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).metadata)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
