"""``python -m zoo gradcheck`` and ``python -m zoo summary``: their arguments and what they run.

Only argparse at import time, so ``python -m zoo list`` pays nothing for them; the tools load when run.
"""

from __future__ import annotations

import argparse
from typing import Any

from zoo.tools import GRADCHECK_TOL


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape of integers: {text!r} (e.g. 2,3,32,32)") from None


def _add_target_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """``MODEL [key=value ...]`` and the input's sizes (see :mod:`zoo.tools.target`)."""
    parser.add_argument("model", metavar="MODEL", help="a registered model (python -m zoo list) or pkg.module.Class")
    parser.add_argument("options", nargs="*", metavar="key=value", help="builder options, e.g. drop_rate=0.5")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of a registered model")
    parser.add_argument("--in-chans", type=int, default=None, help="input channels (default: the model's)")
    parser.add_argument("--input-size", type=int, default=None, help="input side (default: the model's input_size)")
    parser.add_argument("--input-shape", type=_shape, default=None, metavar="B,C,H,W",
                        help="the whole input shape, batch first (e.g. 2,16 for a layer taking vectors)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"batch of the input (default {batch_size})")


def add_parsers(sub: Any) -> None:
    """The ``gradcheck`` and ``summary`` subcommands of ``python -m zoo``."""
    g = sub.add_parser("gradcheck", help="compare analytic and numerical gradients (float64, centred differences)",
                       description="Compare backpropagation's gradients of MODEL with centred differences in float64, "
                                   "on a tiny random input; exit status 1 when an error exceeds --tol.")
    _add_target_arguments(g, batch_size=2)
    g.add_argument("--coords", type=int, default=5, help="coordinates checked per tensor, at random (0: all; default 5)")
    g.add_argument("--eps", type=float, default=1e-6, help="finite-difference step h (default 1e-6)")
    g.add_argument("--tol", type=float, default=GRADCHECK_TOL, help=f"largest relative error accepted (default {GRADCHECK_TOL:g})")
    g.add_argument("--eval", action="store_true", help="check in eval mode (default: train mode, random draws held fixed)")
    g.add_argument("--batch-stats", action="store_true",
                   help="batch norm in training mode, on the batch's statistics (default: inference mode on the "
                        "input's statistics, better conditioned)")
    g.add_argument("--seed", type=int, default=0, help="seed of the model, the input, the coordinates and the random draws")
    g.add_argument("--no-input", action="store_true", help="check the parameters only, not the input's gradient")
    g.set_defaults(fn=gradcheck)
    s = sub.add_parser("summary", help="per-layer output shapes, parameters and MACs (torchinfo)",
                       description="torchinfo's summary of MODEL on one input of its size: per layer the output "
                                   "shape, the parameters and the multiply-accumulates (MACs).")
    _add_target_arguments(s, batch_size=1)
    s.add_argument("--depth", type=int, default=3, help="nesting depth of the layers shown (default 3)")
    s.set_defaults(fn=summary)


def _target(args: argparse.Namespace) -> Any:
    from zoo.tools.target import build_target, parse_options

    return build_target(args.model, parse_options(args.options), num_classes=args.num_classes, in_chans=args.in_chans,
                        input_size=args.input_size, input_shape=args.input_shape, batch_size=args.batch_size)


def gradcheck(args: argparse.Namespace) -> int:
    """The report of :func:`zoo.tools.gradcheck.check_gradients`; 1 when a tensor is over ``--tol``."""
    import torch

    from zoo.errors import ConfigError
    from zoo.tools.gradcheck import check_gradients

    if not args.tol > 0:
        raise ConfigError(f"--tol must be > 0, got {args.tol}")
    torch.manual_seed(args.seed)  # the model's initialisation
    target = _target(args)
    inputs = target.example_input(torch.float64, args.seed)
    target.probe(inputs, train=not args.eval)
    report = check_gradients(target.module, inputs, eps=args.eps, coords=args.coords or None, tol=args.tol,
                             train=not args.eval, seed=args.seed, check_inputs=not args.no_input,
                             batch_stats=args.batch_stats)
    print(f"{target.name}: input {'x'.join(map(str, inputs.shape))}, {report.output:+.6e} = f(output)")
    print(report.format(args.tol))
    return 1 if report.failures(args.tol) else 0


def summary(args: argparse.Namespace) -> int:
    """torchinfo's table after one line of totals."""
    from zoo.tools.summary import format_summary, summarize

    target = _target(args)
    stats = summarize(target.module, target.input_shape, args.depth)
    print(f"{target.name}: input {'x'.join(map(str, target.input_shape))}, {stats.total_params:,} parameters, "
          f"{stats.total_mult_adds:,} MACs")
    print(format_summary(stats))
    return 0
