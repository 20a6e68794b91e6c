"""Device, precision and seeding helpers; atomic files."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
import torch

from zoo.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; explicit names are checked against the machine."""
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown trainer.device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but no CUDA GPU is available here; use trainer.device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.device=mps but MPS is not available here; use trainer.device=auto or cpu")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported trainer.device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


PRECISIONS = ("auto", "32", "bf16", "16")


def resolve_precision(precision: str | int, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA GPUs that support it, fp16 (with a grad scaler) on older ones, fp32 elsewhere."""
    p = str(precision)
    if p not in PRECISIONS:
        raise ConfigError(f"unknown trainer.precision {p!r}; use one of {', '.join(PRECISIONS)}")
    if p == "auto":
        if device.type != "cuda":
            return "32"
        return "bf16" if torch.cuda.is_bf16_supported() else "16"
    if p == "16" and device.type != "cuda":
        raise ConfigError("trainer.precision=16 needs a CUDA GPU; use precision=bf16 or 32 on CPU")
    return p


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """``batch`` (tensors in nested lists, tuples and dicts) on ``device``; 4-d tensors channels-last if asked."""
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Call ``write`` on a temp file next to ``path``, then rename it over ``path``: a reader never
    sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""

    def dump(f: TextIO) -> None:
        json.dump(data, f, indent=2, sort_keys=False, default=float)
        f.write("\n")

    write_atomic(path, dump)
