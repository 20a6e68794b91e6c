"""Checkpoint I/O: atomic writes, safe (``weights_only=True``) reads, clear errors.

A zoo checkpoint is a plain dict of tensors and builtin containers::

    {"format": "zoo-checkpoint", "version": 1, "model_name": str, "config": dict, "task": str,
     "data_info": {...}, "model": state_dict, "optimizers": {name: ...}, "schedulers": {name: ...},
     "scaler": ..., "epoch": int (the last completed, 0-based), "global_step": int, "skipped_steps": int,
     "rng": {...}, "metrics": {...}, "callbacks": {state_key: callback state},
     "partial_epoch": {"epoch", "batches", "n", "sums", "loader"}  (only when saved inside an epoch),
     "training_model": state_dict  (only when ``model`` holds averaged weights)}

``model`` is always the weights to evaluate: what validation scored, what ``evaluate.py``, ``best.pt``
and any weight loader (``model.pretrained=``) read. A weight-averaging callback (``ema``, ``swa``) puts
its averaged weights there (:func:`set_evaluation_weights`) and moves the raw weights, the ones training
continues from, to ``training_model``, which :func:`restore_training` loads when present.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import struct
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.engine.utils import write_atomic
from zoo.errors import CheckpointError, brief

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer

FORMAT = "zoo-checkpoint"
VERSION = 1
#: the key of the weights training continues from, when ``model`` holds averaged ones
TRAINING_MODEL = "training_model"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any point leaves either the previous file or the new one, never a torn file; a full
    disk (or a read-only one) is a one-line :class:`~zoo.errors.WriteError` (a ``CheckpointError``).
    """
    return write_atomic(path, lambda f: torch.save(state, f), binary=True, fsync=True)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; every failure becomes a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory; point at a .pt file inside it)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}; pass an existing file, e.g. <run>/checkpoints/last.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = _UNSAFE.search(str(e))
        if unsafe:
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled code or objects, not only tensors ({unsafe.group(1)}); "
                "only load checkpoints you trust, and re-save them as plain state_dicts"
            ) from None
        raise _corrupt(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, struct.error) as e:
        raise _corrupt(path, e) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict or state_dict")
    return state


#: what torch's weights_only unpickler says of a global (a class, a function: code) it refuses to import
_UNSAFE = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([A-Za-z_][\w.]*)")


def _corrupt(path: Path, error: Exception) -> CheckpointError:
    """Random bytes, a truncated zip, a pickle torch cannot read: the first sentence of why."""
    if isinstance(error, pickle.UnpicklingError):  # after torch's paragraph about weights_only comes the reason
        detail = str(error).partition("WeightsUnpickler error:")[2] or str(error)
    elif isinstance(error, (RuntimeError, OSError)):
        detail = str(error)
    else:  # KeyError '101', EOFError
        detail = f"{type(error).__name__} {error}"
    detail = "0 bytes" if path.stat().st_size == 0 else brief(detail)
    return CheckpointError(f"cannot read checkpoint {path}: {detail}; the file is corrupt or truncated "
                           "(copy it again or use another checkpoint)")


def is_zoo_checkpoint(state: dict[str, Any]) -> bool:
    return state.get("format") == FORMAT


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and CUDA) in weights_only-loadable form."""
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples; a round trip through some serialisers yields lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def training_checkpoint(trainer: Trainer) -> dict[str, Any]:
    """The checkpoint of ``trainer``'s fit as it stands: at an epoch end, or inside an epoch."""
    s = trainer.state
    model = trainer._model
    assert model is not None
    state = {
        "format": FORMAT, "version": VERSION, **trainer.run_info,
        "model": model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in s.optimizers.items()},
        "schedulers": {name: sched.state_dict() for name, sched in s.schedules.items()},
        "scaler": s.scaler.state_dict(),
        "epoch": s.epoch if s.epoch_done else s.epoch - 1,
        "global_step": s.global_step, "skipped_steps": s.skipped_steps, "rng": capture_rng_state(),
        "metrics": {k: float(v) for k, v in s.metrics.items()} if s.epoch_done else {},
        "callbacks": {c.state_key or type(c).__qualname__: c.state_dict() for c in trainer.callbacks},
    }
    if not s.epoch_done:
        partial: dict[str, Any] = {"epoch": s.epoch, "batches": s.batch_idx, "n": s.n,
                                   "sums": {k: float(v) for k, v in s.sums.items()}}
        if hasattr(trainer._train_loader, "state_dict"):
            partial["loader"] = trainer._train_loader.state_dict()
        state["partial_epoch"] = partial
    return state


def set_evaluation_weights(checkpoint: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    """Make ``weights`` (averaged ones) the checkpoint's ``model``; the raw weights move to ``training_model``.
    Tensors shared with another entry (a callback's state) are written once."""
    checkpoint.setdefault(TRAINING_MODEL, checkpoint["model"])
    checkpoint["model"] = weights


def _kind(info: dict[str, Any], group: str) -> str | None:
    """The ``name`` of config group ``group`` in a checkpoint's (or a run's) stored config."""
    return ((info.get("config") or {}).get(group) or {}).get("name")


def restore_training(trainer: Trainer, path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Load ``path`` into ``trainer`` (model, optimizers, schedules, scaler, callbacks, position, RNG);
    returns the mid-epoch position it was saved at, if any."""
    s, state = trainer.state, load_checkpoint(path, map_location=trainer.device)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a zoo training checkpoint; to start from its weights use model.pretrained={path}")
    want, have = trainer.run_info.get("model_name"), state.get("model_name")
    if want and have and want != have:
        raise CheckpointError(f"{path} was trained with model={have}, but this run uses model={want}; pass model={have} or drop ckpt_path")
    model = trainer._model
    assert model is not None
    try:
        model.load_state_dict(state.get(TRAINING_MODEL, state["model"]))  # the raw weights, not an average
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit model {want}: {str(e).splitlines()[0]}; check num_classes/in_chans "
                              "against the checkpoint's config") from None
    if set(state.get("optimizers", {})) != set(s.optimizers):
        raise CheckpointError(f"{path} holds optimizers {sorted(state.get('optimizers', {}))}, this run has {sorted(s.optimizers)}")
    fresh = [g for g in ("optimizer", "scheduler") if _kind(state, g) != _kind(trainer.run_info, g) and _kind(state, g)]
    for group in fresh:
        log.warning("resume: %s changed from %s to %s; it starts with a fresh state", group, _kind(state, group),
                    _kind(trainer.run_info, group))
    try:
        for name, opt in s.optimizers.items():
            if "optimizer" not in fresh:
                opt.load_state_dict(state["optimizers"][name])
            if "scheduler" not in fresh:
                s.schedules[name].load_state_dict(state["schedulers"][name])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its optimizer/schedule state does not fit this run ({type(e).__name__}: {e}); "
                              "resume with the run's own config (drop the optimizer/scheduler overrides)") from None
    s.scaler.load_state_dict(state["scaler"])
    stored = state.get("callbacks", {})
    for callback in trainer.callbacks:
        key = callback.state_key or type(callback).__qualname__
        if stored.get(key):
            callback.load_state_dict(stored[key])
    partial = state.get("partial_epoch")
    s.epoch = int(partial["epoch"]) if partial else int(state["epoch"]) + 1
    s.global_step, s.skipped_steps = int(state["global_step"]), int(state.get("skipped_steps", 0))
    restore_rng_state(state["rng"])
    within = f", batch {partial['batches'] + 1}" if partial else ""
    log.info("resumed from %s: continuing at epoch %d%s (step %d)", path, s.epoch + 1, within, s.global_step)
    if s.epoch >= s.max_epochs:
        log.warning("checkpoint already reached trainer.max_epochs=%d; nothing left to train", s.max_epochs)
    return partial
