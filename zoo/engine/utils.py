"""Device, precision and seeding helpers; atomic files."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np
import torch

from zoo.errors import ConfigError, WriteError, brief


def resolve_device(name: str = "auto", key: str = "trainer.device") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; explicit names are checked against the machine.
    Errors name the setting as ``key`` (``device`` in evaluate.yaml)."""
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown {key} {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}=cuda but no CUDA GPU is available here; use {key}=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{key}={name} but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{key}=mps but MPS is not available here; use {key}=auto or cpu")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported {key} {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def seconds_since_start() -> float:
    """Seconds since this process started. On Linux its start time in clock ticks after boot
    (``/proc/self/stat``, field 22) against ``CLOCK_BOOTTIME`` (the clock it is counted on; 10 ms
    resolution); elsewhere since ``zoo`` was first imported (later than the start by the interpreter's
    own start-up and whatever ran before)."""
    import zoo

    since_import = time.time() - zoo.IMPORTED_AT
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
        elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        return since_import
    return elapsed if elapsed >= since_import else since_import


PRECISIONS = ("auto", "32", "bf16", "16")


def resolve_precision(precision: str | int, device: torch.device, key: str = "trainer.precision") -> str:
    """``auto``: bf16 autocast on CUDA GPUs that support it, fp16 (with a grad scaler) on older ones, fp32 elsewhere.
    Errors name the setting as ``key``."""
    p = str(precision)
    if p not in PRECISIONS:
        raise ConfigError(f"unknown {key} {p!r}; use one of {', '.join(PRECISIONS)}")
    if p == "auto":
        if device.type != "cuda":
            return "32"
        return "bf16" if torch.cuda.is_bf16_supported() else "16"
    if p == "16" and device.type != "cuda":
        raise ConfigError(f"{key}=16 needs a CUDA GPU; use {key}=bf16 or 32 on CPU")
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


#: the ``[enforce fail at inline_container.cc:672] .`` prefix of torch's writer errors
_TORCH_ENFORCE = re.compile(r"^\s*\[enforce fail at [^\]]*\][\s.]*")


def _write_failure(error: BaseException) -> OSError | RuntimeError | None:
    """The I/O error behind a failed write: an ``OSError``, also the one under torch's writer's
    ``RuntimeError`` (``enforce fail ... unexpected pos``), or that ``RuntimeError``; None for anything else (a bug)."""
    if isinstance(error, OSError):
        return error
    if not isinstance(error, RuntimeError):
        return None
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OSError):
        return cause
    return error if re.search(r"inline_container|PytorchStreamWriter|unexpected pos", str(error)) else None


def _failure_message(path: Path, error: OSError | RuntimeError, existed: bool) -> str:
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        reason = reason[:1].lower() + reason[1:]
    else:  # torch's writer alone: a short write, nearly always a full disk
        reason = f"the write was cut short ({brief(_TORCH_ENFORCE.sub('', str(error)))})"
    kept = f"the previous {path.name} is intact" if existed else "no partial file was left"
    access = isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    fix = "choose a writable hydra.run.dir" if access else "free disk space or choose another hydra.run.dir"
    return f"cannot write {path}: {reason}; {kept}; {fix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], keep_suffix: bool = False) -> Iterator[Path]:
    """A fresh (not yet existing) path next to ``path`` to fill; renamed over ``path`` at the end of the
    block, so a reader sees the old file or the new one, never half a file. On failure it is removed,
    and an I/O error (disk full, read-only, no permission, torch's writer) becomes a one-line
    :class:`~zoo.errors.WriteError` naming the file and the reason. ``keep_suffix``: the fresh path ends
    with ``path``'s suffix (for writers and readers that go by it, such as ``torch.export``'s ``.pt2``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{path.suffix if keep_suffix else ''}")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        failure = _write_failure(e)
        if failure is None:
            raise
        raise WriteError(_failure_message(path, failure, existed)) from None


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], binary: bool = False,
                 fsync: bool = False) -> Path:
    """Call ``write`` on a new file (the mode any file gets under the umask) inside :func:`atomic_path`;
    ``fsync`` makes it durable before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") if binary else open(tmp, "x", newline="") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def _strict_json(value: Any) -> Any:
    """``value`` as strict JSON takes it: NaN and infinities as None (``null``), numpy/torch scalars as floats."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write strict JSON (non-finite numbers as ``null``) atomically (temp file + rename), so a reader
    never sees half a file."""

    def dump(f: IO[str]) -> None:
        json.dump(_strict_json(data), f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")

    write_atomic(path, dump)


#: the suffixes :func:`write_rows` writes
ROW_FORMATS = (".csv", ".json")


def check_row_format(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """``path`` if :func:`write_rows` can write it (a ``.csv`` or ``.json`` file), else a :class:`ConfigError`."""
    if Path(path).suffix.lower() not in ROW_FORMATS:
        raise ConfigError(f"{option} {path}: use a .csv or .json file")
    return Path(path)


def write_rows(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` (dicts with the same keys) atomically as CSV (a header of the first row's keys) or as a JSON
    list, by ``path``'s suffix (:data:`ROW_FORMATS`)."""
    import csv

    path = check_row_format(path, "cannot write")

    def dump(f: IO[str]) -> None:
        if path.suffix.lower() == ".json":
            json.dump(_strict_json(rows), f, indent=1, allow_nan=False)
            f.write("\n")
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)

    return write_atomic(path, dump)
