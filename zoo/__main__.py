"""``python -m zoo list [PATTERN] [--task T] [--family F]``: the registered models with their task,
family, input size, parameter count (counted on the meta device, so nothing is allocated) and the
torchvision weights they load (``model.pretrained=torchvision:<model>.<weights>``; ``-``: none).

``python -m zoo caption CKPT IMAGE [IMAGE ...]``: caption image files with a captioning checkpoint.

``python -m zoo gradcheck MODEL`` and ``python -m zoo summary MODEL``: :mod:`zoo.tools`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from zoo.errors import UnknownNameError, ZooError
from zoo.models import create_model, list_models, model_info
from zoo.models.base import count_parameters
from zoo.models.pretrained import torchvision_weight_names
from zoo.registry import close_names


class _MetaFills(TorchFunctionMode):
    """``normal_`` of a meta tensor as the no-op it is (a meta tensor holds no values): torch runs it
    through Python reference code, ~0.3 ms a call and ``torch._dynamo`` imported on the first, which
    made the initialisation of the registry's models most of ``zoo list``'s time."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is torch.Tensor.normal_ and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _param_count(name: str) -> int:
    with torch.device("meta"), _MetaFills():
        return count_parameters(create_model(name))


def _check_known(key: str, value: str | None) -> None:
    """An :class:`UnknownNameError` (with close matches) for a ``--task``/``--family`` no model has."""
    known = sorted({model_info(n)[key] for n in list_models()})
    if value is not None and value not in known:
        close = close_names(value, known)
        hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise UnknownNameError(f"no model has {key} {value!r}; {hint}")


def cmd_list(args: argparse.Namespace) -> int:
    _check_known("task", args.task)
    _check_known("family", args.family)
    names = list_models(args.pattern, task=args.task, family=args.family)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        info = model_info(name)
        weights = ",".join(torchvision_weight_names(name)) or "-"
        rows.append((name, info["task"], info["family"], str(info["input_size"]), f"{_param_count(name):,}", weights))
    header = ("model", "task", "family", "input", "params", "weights")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    align = [str.ljust, str.ljust, str.ljust, str.rjust, str.rjust, str.ljust]
    for row in [header, *rows]:
        print("  ".join(align[i](cell, widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from zoo.predict import caption_files

    captions = caption_files(args.ckpt, args.images, args.decode, args.beam_size, args.temperature, args.seed, args.device)
    for path, caption in zip(args.images, captions):
        print(f"{path}\t{caption}" if len(args.images) > 1 else caption)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description="zoo model registry")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'resnet*'")
    p.add_argument("--task", default=None, help="only models of this task (classification, detection, ...)")
    p.add_argument("--family", default=None, help="only models of this family")
    p.set_defaults(fn=cmd_list)
    c = sub.add_parser("caption", help="caption image files with a captioning checkpoint")
    c.add_argument("ckpt", help="a captioning checkpoint, e.g. outputs/<date>/<time>/checkpoints/best.pt")
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--decode", choices=["beam", "greedy", "sample"], default="beam")
    c.add_argument("--beam-size", type=int, default=None, help="default: the checkpoint's task.beam_size")
    c.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of --decode sample")
    c.add_argument("--seed", type=int, default=0, help="seed of --decode sample")
    c.add_argument("--device", default="cpu")
    c.set_defaults(fn=cmd_caption)
    from zoo.tools.cli import add_parsers

    add_parsers(sub)  # gradcheck, summary
    args = parser.parse_args(argv)
    try:
        code = int(args.fn(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `python -m zoo list | head`: the reader has gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
