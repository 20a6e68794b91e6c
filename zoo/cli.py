"""Command-line plumbing shared by ``train.py`` and ``evaluate.py``.

* :func:`preflight` checks config-group choices on the command line (``model=lenet``) before Hydra
  runs, so a typo gives one line naming the close matches instead of Hydra's multi-line report.
* :func:`guarded` turns a :class:`~zoo.errors.ZooError` raised by a run into ``error: <message>`` on
  stderr and exit status 2. Other exceptions are bugs and keep their traceback. In a multirun a
  failing job is recorded instead and the sweep goes on (:mod:`zoo.sweep`).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from zoo import sweep
from zoo.errors import ZooError
from zoo.registry import close_names

EXIT_USAGE = 2


def _run_name(default: str) -> str:
    from zoo.engine.distributed import run_name

    return run_name(default)


def _input_size(name: str) -> int | None:
    from zoo.errors import UnknownNameError
    from zoo.models import model_info

    try:
        return int(model_info(name)["input_size"])
    except UnknownNameError:
        return None  # the run's checks name the unknown model with its close matches


def register_resolvers() -> None:
    """``${zoo_run_name:<default>}``: the run-directory leaf, shared by all ranks of a torchrun job.
    ``${zoo_input_size:<model>}``: the input side the model registry holds for a model
    (``configs/model/_base.yaml``); ``None`` for a name it does not know."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("zoo_run_name"):
        OmegaConf.register_new_resolver("zoo_run_name", _run_name)
    if not OmegaConf.has_resolver("zoo_input_size"):
        OmegaConf.register_new_resolver("zoo_input_size", _input_size)


register_resolvers()


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USAGE)


def _group_options(config_dir: Path, group: str) -> list[str]:
    """The choices of a group: its yaml files but ``_*.yaml``, the shared keys its options include."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml") if not p.stem.startswith("_"))


def check_overrides(args: Sequence[str], config_dir: Path) -> str | None:
    """The first unknown config-group choice in ``args`` as an error message, or ``None``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - malformed overrides are Hydra's to report
        return None
    groups = {p.name for p in config_dir.iterdir() if p.is_dir()}
    for o in overrides:
        group = o.key_or_group.lstrip("/")
        if o.is_delete() or group not in groups or group == "hydra" or o.package is not None:
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        # a list selects several configs of the group at once: augmentation=[flip_crop,color_jitter]
        values = [v for value in values for v in (value if isinstance(value, list) else [value])]
        for value in values:
            if value is None or str(value) == "null":
                continue
            if str(value).startswith("_") or not (config_dir / group / f"{value}.yaml").is_file():
                options = _group_options(config_dir, group)
                close = close_names(str(value), options)
                hint = f"did you mean: {', '.join(close)}?" if close else f"available: {', '.join(options)}"
                if str(value).startswith("_"):
                    hint = f"_*.yaml hold keys the {group} configs share, they are not a choice"
                return f"unknown {group} {value!r}; {hint} (configs/{group}/)"
    return None


def preflight(config_dir: Path, argv: Sequence[str] | None = None) -> None:
    """Checks that need no config, before Hydra starts (and writes anything): group choices, and
    where the run would be written."""
    from zoo.rundir import check_output_location

    args = sys.argv[1:] if argv is None else argv
    message = check_overrides(args, config_dir) or check_output_location(args)
    if message:
        fail(message)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; a :class:`ZooError` becomes a one-line ``error:`` and its exit status (2, or 128+N
    for a training run stopped by signal N after saving ``last.pt``). In a multirun (``-m``) see
    :func:`zoo.sweep.run_job`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if sweep.in_sweep():
            return sweep.run_job(fn, *args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except ZooError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)

    return wrapper
