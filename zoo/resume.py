"""Resume restores its run: ``python train.py ckpt_path=<run>/checkpoints/last.pt`` continues with
the config stored in the checkpoint, not with today's defaults.

Only settings that do not change what is trained may differ on resume (repeating the run's own
values is always fine) (:data:`ALLOWED`: how long,
where, how it is logged, batch limits, data location and loading). Any other override is a
:class:`ConfigError` naming it, unless ``resume.allow_changes=true`` asks for the change; then it
is applied and logged (an optimizer or schedule of another kind then starts with a fresh state).
Where the run writes (``paths``, ``hydra``) always comes from the new command.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

from zoo.engine.checkpoint import FORMAT, load_checkpoint
from zoo.engine.state import MOVED
from zoo.errors import CheckpointError, ConfigError

log = logging.getLogger("zoo")

#: overrides a resume accepts as they are (a key, or everything under it)
ALLOWED = (
    "trainer.max_epochs", "trainer.device", "trainer.precision", "trainer.log_every_n_steps", "trainer.compile",
    "trainer.cudnn_benchmark", "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches",
    "trainer.profiler", "logger", "callbacks.progress", "callbacks.signals", "data.root", "data.num_workers",
    "data.pin_memory", "data.persistent_workers", "data.eval_batch_size", "data.on_device", "test", "tags",
)
#: keys of the new command, never of the stored run
CURRENT = ("paths", "hydra", "ckpt_path", "resume")


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys a list of Hydra overrides sets (``optimizer=sgd`` -> ``optimizer``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.key_or_group.lstrip("/") for o in parsed if o.package is None]


def _covered(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _get(node: Any, key: str) -> tuple[bool, Any]:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(node: dict[str, Any], key: str, value: Any, present: bool) -> None:
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if present:
        node[last] = copy.deepcopy(value)
    else:
        node.pop(last, None)


def resume_config(current: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The config a resume runs with: the checkpoint's, with the allowed (or allowed-to-change) overrides."""
    path = current["ckpt_path"]
    if not isinstance(path, str):
        raise ConfigError(f"train.py resumes from one checkpoint, got ckpt_path={path}; several checkpoints are an "
                          "ensemble, which evaluate.py evaluates")
    state = load_checkpoint(path)
    if state.get("format") != FORMAT or not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path} is not a zoo training checkpoint (no stored config); to start from its weights "
                              f"use model.pretrained={path}")
    stored: dict[str, Any] = copy.deepcopy(state["config"])
    allow = bool((current.get("resume") or {}).get("allow_changes", False))
    keys = [k for k in override_keys(overrides) if not _covered(k, CURRENT)]
    # an override that repeats the run's own value changes nothing (the command that started the run, again)
    refused = [k for k in keys if not _covered(k, ALLOWED) and _get(current, k) != _get(stored, k)]
    if refused and not allow:
        shown = next(o for o in overrides if o.lstrip("+~").split("=", 1)[0] == refused[0])
        raise ConfigError(f"resuming {path} keeps that run's config, and {shown} would change it; allowed on resume: "
                          f"{', '.join(ALLOWED)}; add resume.allow_changes=true to apply it anyway")
    for key in CURRENT:
        stored[key] = copy.deepcopy(current.get(key))
    for key, value in current.items():  # settings newer than the checkpoint (e.g. a config group added since)
        stored.setdefault(key, copy.deepcopy(value))
    for key in MOVED:
        if key in stored.get("trainer", {}):
            stored["trainer"].pop(key)
            log.warning("resume: the checkpoint's trainer.%s is now %s; using this run's setting", key, MOVED[key])
    changes = []
    for key in keys:
        present, value = _get(current, key)
        had, before = _get(stored, key)
        if (present, value) != (had, before):
            changes.append(f"{key}: {before if had else '(unset)'} -> {value if present else '(removed)'}")
            _set(stored, key, value, present)
    log.info("resume: the run's config from %s%s", path, f"; changed {'; '.join(changes)}" if changes else "")
    return stored
