"""Numerical gradient check: backpropagation's gradients against centred differences.

The course notes (section 3.3) introduce the gradient check with the one-sided difference
``(f(x + h) - f(x)) / h``; this follows CS231n's advice on gradient checks instead:

* the centred difference ``(f(x + h) - f(x - h)) / 2h`` (error O(h^2), the one-sided one's is O(h)), in
  double precision: a float64 copy of the module (the caller's stays as it is);
* the relative error ``|a - n| / max(|a|, |n|)`` of the analytic gradient ``a`` and the numerical ``n``:
  about 1e-7 or less is right, 1e-4 and more suspicious, 1e-2 wrong. The denominator is at least the
  rounding noise of the difference, ``eps_float64 max(1, |f|) / h``, so that a parameter without effect
  (both gradients ~1e-16, as a bias before batch norm) is no false alarm;
* ``f`` is the output projected on a fixed random direction, ``sum(output * v)``, so every output
  element carries gradient (or a ``loss`` of the output);
* randomness held fixed: the random generator is reseeded before every evaluation of ``f``, so dropout
  and stochastic depth draw the same masks each time and their backward is checked too (``train=False``:
  eval mode instead);
* batch norm runs as at inference, with the check input's statistics (one pass sets them), so each BN
  layer is a fixed affine map; normalising a batch of two at a 1x1 map makes ``f`` too ill-conditioned
  for finite differences. ``batch_stats=True`` checks the training-mode backward, batch statistics and all;
* kinks (ReLU, max pooling): a step that crosses one changes the branch taken and spoils the numerical
  gradient, more so in a deep network of high gain at initialisation. A coordinate over ``tol`` is
  differenced again with steps ``10h`` (less rounding), then ``h/10``, ``h/100``, ``h/1000`` (fewer kinks
  crossed), and the best agreement kept: a kink spoils some step sizes, a wrong backward all of them;
* a few coordinates per tensor (``coords``, at random): two evaluations of ``f`` each.

``python -m zoo gradcheck MODEL`` runs it from the command line (:mod:`zoo.tools.cli`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from zoo.errors import ConfigError
from zoo.tools import GRADCHECK_TOL


@dataclass
class TensorCheck:
    """The check of one parameter tensor (or input): its worst coordinate."""

    name: str
    shape: tuple[int, ...]
    checked: int
    error: float = 0.0
    analytic: float = 0.0
    numeric: float = 0.0
    index: tuple[int, ...] = ()


@dataclass
class GradcheckReport:
    """Per tensor, the largest relative error of the coordinates checked."""

    checks: list[TensorCheck]
    eps: float
    train: bool
    batch_stats: bool = False
    retried: int = 0  #: coordinates differenced again at other step sizes (see the module docstring)
    output: float = 0.0  #: f at the input

    @property
    def max_error(self) -> float:
        return max((c.error for c in self.checks), default=0.0)

    @property
    def worst(self) -> TensorCheck | None:
        return max(self.checks, key=lambda c: c.error, default=None)

    def failures(self, tol: float) -> list[TensorCheck]:
        return [c for c in self.checks if not c.error <= tol]  # NaN fails

    def format(self, tol: float) -> str:
        """A table, one row per tensor, then a verdict line."""
        header = ("tensor", "shape", "checked", "analytic", "numeric", "rel error", "")
        rows = [(c.name, "x".join(map(str, c.shape)) or "scalar", str(c.checked), f"{c.analytic:+.6e}",
                 f"{c.numeric:+.6e}", f"{c.error:.2e}", "" if c.error <= tol else "FAIL") for c in self.checks]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                 for row in [header, *rows]]
        worst = self.worst
        bad = self.failures(tol)
        verdict = (f"{len(bad)} of {len(self.checks)} tensors over tol {tol:g}" if bad
                   else f"all {len(self.checks)} tensors within tol {tol:g}")
        lines.append(f"max relative error {self.max_error:.2e} ({worst.name if worst else '-'}); {verdict} "
                     f"[float64, h={self.eps:g}, {'train' if self.train else 'eval'} mode"
                     f"{', batch norm on batch statistics' if self.batch_stats and self.train else ''}"
                     f"{f', {self.retried} coordinates retried at other steps' if self.retried else ''}]")
        return "\n".join(lines)


def _tensors(output: Any) -> Iterator[Tensor]:
    """The floating-point tensors of a module's output (a tensor, a tuple/NamedTuple, a list, a dict)."""
    if isinstance(output, Tensor):
        if output.is_floating_point():
            yield output
    elif isinstance(output, dict):
        for value in output.values():
            yield from _tensors(value)
    elif isinstance(output, (tuple, list)):
        for value in output:
            yield from _tensors(value)


def relative_error(a: float, n: float, floor: float = 0.0) -> float:
    """``|a - n| / max(|a|, |n|, floor)``; 0 when all three are 0."""
    scale = max(abs(a), abs(n), floor)
    return abs(a - n) / scale if scale > 0 else 0.0


def check_gradients(
    module: nn.Module,
    inputs: Tensor | Sequence[Tensor],
    *,
    eps: float = 1e-6,
    coords: int | None = 5,
    tol: float = GRADCHECK_TOL,
    train: bool = True,
    seed: int = 0,
    loss: Callable[[Any], Tensor] | None = None,
    check_inputs: bool = True,
    batch_stats: bool = False,
) -> GradcheckReport:
    """Compare the gradients backpropagation gives for every trainable parameter of ``module`` (and every
    floating-point input, when ``check_inputs``) with centred differences of step ``eps``, in float64.

    ``coords``: coordinates compared per tensor, chosen at random from ``seed`` (``None``: all of them).
    ``loss(output) -> scalar``: the function differentiated; by default ``sum(output * v)`` over the output
    tensors with fixed random ``v``. ``train``: the mode the module runs in (dropout and stochastic depth
    see the same random draws in every evaluation). ``batch_stats``: batch norm as the mode has it (train:
    the batch's statistics; eval: the module's running statistics); by default it runs in inference mode
    with the statistics of ``inputs``. ``tol``: an error above it is retried at other
    steps (kinks). ``module`` and ``inputs`` are left untouched, and so is the global random state.
    """
    if eps <= 0 or not math.isfinite(eps):
        raise ConfigError(f"eps must be a small positive step, e.g. 1e-6; got {eps}")
    if coords is not None and coords < 1:
        raise ConfigError(f"coords must be >= 1 (or None for every coordinate), got {coords}")
    model = copy.deepcopy(module).to("cpu", torch.float64).train(train)
    args = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    args = [a.detach().to("cpu", torch.float64 if a.is_floating_point() else a.dtype).contiguous().requires_grad_(
        check_inputs and a.is_floating_point()) for a in args]
    directions: list[Tensor] = []

    def run() -> Any:
        torch.random.default_generator.manual_seed(seed)  # the same dropout masks every time
        return model(*args)

    def f() -> Tensor:
        output = run()
        if loss is not None:
            return loss(output)
        outs = list(_tensors(output))
        if not outs:
            raise ConfigError(f"{type(module).__name__} returned no floating-point tensor to differentiate; pass loss=")
        if not directions:
            g = torch.Generator().manual_seed(seed + 1)
            directions.extend(torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs)
        return sum((o * v).sum() for o, v in zip(outs, directions))  # type: ignore[return-value]

    with torch.random.fork_rng(devices=[]):
        if not batch_stats:
            _freeze_batchnorm(model, run)
        value = f()
        value.backward()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if check_inputs:
            floating = [a for a in args if a.is_floating_point()]
            named = [("input" if len(floating) == 1 else f"input[{i}]", a) for i, a in enumerate(floating)] + named
        g = torch.Generator().manual_seed(seed)
        scale = max(1.0, abs(value.item()))
        with torch.no_grad():
            checks = [_check_tensor(f, name, tensor, g, coords, eps, tol, scale) for name, tensor in named]
    return GradcheckReport([c for c, _ in checks], eps, train, batch_stats, sum(r for _, r in checks), value.item())


def _check_tensor(f: Callable[[], Tensor], name: str, tensor: Tensor, g: torch.Generator, coords: int | None,
                  eps: float, tol: float, scale: float) -> tuple[TensorCheck, int]:
    """The worst of ``coords`` random coordinates of ``tensor`` (all for ``None``), and how many of them
    were retried at other steps."""
    grad = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
    picked = torch.randperm(tensor.numel(), generator=g)[:coords] if coords else torch.arange(tensor.numel())
    check, retried = TensorCheck(name, tuple(tensor.shape), len(picked), error=-1.0), 0
    for flat_index in picked.tolist():
        i = tuple(int(k) for k in torch.unravel_index(torch.tensor(flat_index), tensor.shape))
        a = float(grad[i])
        n, error = _numeric(f, tensor.data, i, eps, a, scale)
        if error > tol:
            retried += 1
            for h in (eps * 10, eps / 10, eps / 100, eps / 1000):
                n, error = min((n, error), _numeric(f, tensor.data, i, h, a, scale), key=lambda t: t[1])
                if error <= tol:
                    break
        if error > check.error or math.isnan(error):
            check.error, check.analytic, check.numeric, check.index = error, a, n, i
    return check, retried


def _freeze_batchnorm(model: nn.Module, run: Callable[[], Any]) -> None:
    """Batch norm as at inference: running statistics set to those of the check's input (one pass), then
    eval mode, so that each layer is a fixed affine map of its input."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one pass, that pass's statistics
        m.train()
    with torch.no_grad():
        run()
    for m in norms:
        m.eval()


def _numeric(f: Callable[[], Tensor], data: Tensor, i: tuple[int, ...], h: float, analytic: float,
             scale: float) -> tuple[float, float]:
    """The centred difference of ``f`` in element ``i`` of ``data`` (restored afterwards), and its relative
    error against ``analytic``."""
    original = float(data[i])
    data[i] = original + h
    plus = float(f())
    data[i] = original - h
    minus = float(f())
    data[i] = original
    n = (plus - minus) / (2 * h)
    return n, relative_error(analytic, n, floor=torch.finfo(torch.float64).eps * scale / h)

