"""``python -m zoo export CKPT --format onnx|export|torchscript --out FILE``: a classifier as a file that runs
without zoo, checked against PyTorch.

- ``onnx``: :func:`torch.onnx.export` (the ``torch.export``-based exporter, ``dynamo=True``; it needs ``onnxscript``),
  run back with ONNX Runtime;
- ``export``: :func:`torch.export.export`, saved with :func:`torch.export.save` (a ``.pt2``), loaded with
  :func:`torch.export.load`;
- ``torchscript``: :func:`torch.jit.script`, or :func:`torch.jit.trace` (``method="trace"``; ``"auto"`` traces
  where scripting fails and says why), saved with :func:`torch.jit.save`.

The batch dimension is dynamic in all three. After writing, the file is loaded again and run on a random input of
another batch size than the example's; :attr:`Exported.max_abs_diff` is its largest difference from the model.
``onnx``, ``onnxscript`` and ``onnxruntime`` are the ``export`` extra (``pip install -e '.[export]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from zoo.errors import ConfigError, ExportError, brief

#: the formats and the file suffixes they write (the first is the default)
FORMATS: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "export": (".pt2",), "torchscript": (".pt", ".pth", ".ts")}
#: how TorchScript is made: ``auto`` scripts, and traces where scripting fails
TORCHSCRIPT_METHODS = ("auto", "script", "trace")
EXTRA = "pip install -e '.[export]'"
#: the batch of the example input the exporters see (2: torch.export specialises sizes 0 and 1) and of the check
EXAMPLE_BATCH, CHECK_BATCH = 2, 3


@dataclass(frozen=True)
class Exported:
    """One exported file: its format, how it was made (``dynamo``, ``export``, ``script``, ``trace``), the largest
    absolute difference of its outputs from the model's on a random input, and a note (why it was traced)."""

    path: Path
    format: str
    method: str
    max_abs_diff: float
    note: str = ""


def require(module: str) -> Any:
    """The module ``module`` of the ``export`` extra, or an :class:`ExportError` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"exporting needs {module}, which is not installed: {EXTRA}") from None


def check_format(fmt: str, method: str = "auto", out: str | Path | None = None) -> None:
    """A :class:`ConfigError` for an unknown format or TorchScript method, or an ``out`` file of another suffix than
    the format's (``torch.export.load`` reads only ``.pt2``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {', '.join(FORMATS)}")
    if out is not None and Path(out).suffix.lower() not in FORMATS[fmt]:
        raise ConfigError(f"--format {fmt} writes a {' or '.join(FORMATS[fmt])} file, not {out}")
    if method not in TORCHSCRIPT_METHODS:
        raise ConfigError(f"unknown TorchScript method {method!r}; use {', '.join(TORCHSCRIPT_METHODS)}")
    if method != "auto" and fmt != "torchscript":
        raise ConfigError(f"--method {method} is for --format torchscript, not {fmt}")


def _batch_dim() -> tuple[dict[int, Any]]:
    """``dynamic_shapes`` of a one-input forward: the batch dimension free."""
    return ({0: torch.export.Dim("batch", min=1)},)


def _onnx(model: nn.Module, x: torch.Tensor, out: Path) -> str:
    require("onnxscript")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps with print()
        torch.onnx.export(model, (x,), str(out), dynamo=True, dynamic_shapes=_batch_dim(), input_names=["input"],
                          output_names=["logits"], verbose=False)
    return "dynamo"


def _program(model: nn.Module, x: torch.Tensor, out: Path) -> str:
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=_batch_dim()), str(out))
    return "export"


def _torchscript(model: nn.Module, x: torch.Tensor, out: Path, method: str) -> tuple[str, str]:
    """Script (or trace) ``model`` into ``out``: ``(method used, why it was traced)``."""
    note = ""
    if method != "trace":
        try:
            torch.jit.save(torch.jit.script(model), str(out))
            return "script", note
        except Exception as e:  # the scripter raises many types (RuntimeError, NotSupportedError, OSError, ...)
            reason = _script_failure(e)
            if method == "script":
                raise ExportError(f"TorchScript cannot script {type(model).__name__}: {reason}; use --method trace") from None
            note = f"scripting failed ({reason}); traced instead"
    torch.jit.save(torch.jit.trace(model, (x,), check_trace=False), str(out))
    return "trace", note


def _script_failure(error: BaseException) -> str:
    """The scripter's message in one line: its first line and where in the model's code it stopped."""
    text = str(error).strip()
    where = re.findall(r'File "([^"]+)", line (\d+)', text)  # where it stopped, then its callers
    own = [w for w in where if f"{os.sep}torch{os.sep}" not in w[0]]  # the model's code rather than torch's
    place = f" at {Path(own[0][0]).name}:{own[0][1]}" if own else f" in torch's {Path(where[0][0]).name}" if where else ""
    first = re.sub(r"(:| at)+$", "", brief(text or type(error).__name__))  # "...: 'Inception' at " names no place
    return first + place


def load_exported(path: str | Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the exported file ``path`` of format ``fmt`` on a CPU batch (ONNX Runtime for ``onnx``)."""
    if fmt == "onnx":
        ort = require("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    module = torch.export.load(str(path)).module() if fmt == "export" else torch.jit.load(str(path), map_location="cpu")
    return lambda x: module(x)


@torch.no_grad()
def export_model(model: nn.Module, input_shape: tuple[int, ...], fmt: str, out: str | Path, method: str = "auto",
                 atol: float | None = None, seed: int = 0) -> Exported:
    """Export ``model`` (on the CPU, in eval mode) for inputs of ``input_shape`` ``(C, H, W)`` with a dynamic batch in
    format ``fmt`` (:data:`FORMATS`) to ``out``, load it back, and compare it with the model on a random input. With
    ``atol``, a larger difference is an :class:`ExportError`; then, as on any failure, ``out`` is not written."""
    from zoo.engine.utils import atomic_path

    check_format(fmt, method, out)
    if atol is not None and not atol >= 0:
        raise ConfigError(f"--atol must be >= 0, got {atol}")
    if fmt == "onnx":  # the missing extra before any work
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module)
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(EXAMPLE_BATCH, *input_shape, generator=generator)
    out_type = type(model(x))
    if not issubclass(out_type, torch.Tensor):
        raise ExportError(f"{type(model).__name__} returns a {out_type.__name__}, not one tensor; "
                          "export takes models whose forward gives one tensor (classifiers)")
    with atomic_path(out, keep_suffix=True) as tmp:  # written, loaded and compared before it is ``out``
        note = ""
        try:
            if fmt == "onnx":
                used = _onnx(model, x, tmp)
            elif fmt == "export":
                used = _program(model, x, tmp)
            else:
                used, note = _torchscript(model, x, tmp, method)
        except ExportError:
            raise
        except Exception as e:  # what the exporters raise is theirs: one line with the reason
            raise ExportError(f"{fmt} export of {type(model).__name__} failed: {brief(str(e).strip() or type(e).__name__)}") from None
        check = torch.randn(CHECK_BATCH, *input_shape, generator=generator)
        diff = float((load_exported(tmp, fmt)(check).float() - model(check).float()).abs().max())
        if atol is not None and not diff <= atol:
            raise ExportError(f"the {fmt} file differs from PyTorch by {diff:.3g} (more than --atol {atol:g}) on a random "
                              f"input; nothing written{' (it was traced: ' + note + ')' if note else ''}")
    return Exported(Path(out), fmt, used, diff, note)


def export_target(source: str) -> tuple[nn.Module, tuple[int, ...], str]:
    """``(model, input shape (C, H, W), description)`` of ``source``: a zoo checkpoint (:func:`zoo.trained.load_model`)
    or a registered model name (random weights, the registry's input)."""
    from zoo.errors import UnknownNameError
    from zoo.models import model_info
    from zoo.tools.target import build_target
    from zoo.trained import load_model

    if Path(source).exists() or Path(source).suffix or "/" in source:  # a path: its own errors (not found, not zoo's)
        model = load_model(source, option="export CKPT")
        return model, tuple(model.pretrained_cfg["input_size"]), source
    try:
        model_info(source)
    except UnknownNameError as e:
        raise UnknownNameError(f"{source} is neither a checkpoint file nor a registered model: {e}") from None

    target = build_target(source, batch_size=1)
    return target.module, tuple(target.input_shape[1:]), f"{source} (random weights)"
