"""``python -m zoo list [PATTERN] [--task T] [--family F]``: the registered models with their task,
family, input size and parameter count (counted on the meta device, so nothing is allocated)."""

from __future__ import annotations

import argparse
import sys

import torch

from zoo.models import create_model, list_models, model_info
from zoo.models.base import count_parameters


def _param_count(name: str) -> int:
    with torch.device("meta"):
        return count_parameters(create_model(name))


def cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, task=args.task, family=args.family)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        info = model_info(name)
        rows.append((name, info["task"], info["family"], str(info["input_size"]), f"{_param_count(name):,}"))
    header = ("model", "task", "family", "input", "params")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    align = [str.ljust, str.ljust, str.ljust, str.rjust, str.rjust]
    for row in [header, *rows]:
        print("  ".join(align[i](cell, widths[i]) for i, cell in enumerate(row)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description="zoo model registry")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'resnet*'")
    p.add_argument("--task", default=None, help="only models of this task (classification, detection, ...)")
    p.add_argument("--family", default=None, help="only models of this family")
    p.set_defaults(fn=cmd_list)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
