"""Checkpoint I/O: atomic writes, safe (``weights_only=True``) reads, clear errors.

A zoo checkpoint is a plain dict of tensors and builtin containers::

    {"format": "zoo-checkpoint", "version": 1, "model_name": str, "config": dict,
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ..., "epoch": int,
     "global_step": int, "rng": {...}, "callbacks": {...}, "metrics": {...}}
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import CheckpointError

FORMAT = "zoo-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash at any point leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; every failure becomes a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory; point at a .pt file inside it)" if path.is_dir() else ""
        raise CheckpointError(f"checkpoint not found: {path}{hint}; pass an existing file, e.g. <run>/checkpoints/last.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled code or objects, not only tensors ({first[:160]}); "
                "only load checkpoints you trust, and re-save them as plain state_dicts"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {first[:200]}; the file is corrupt or truncated") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first[:200]}; the file is corrupt or truncated") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict or state_dict")
    return state


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
