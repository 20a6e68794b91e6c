#!/usr/bin/env python
"""Start-up times (issue 20): what a user waits for before anything useful happens. Prints a Markdown table.

    python scripts/startup.py                                # this checkout, median of 3 runs
    python scripts/startup.py --runs 5 --tree /tmp/before .  # side by side: one column per source tree

Each ``--tree`` is a zoo checkout; its commands run with ``PYTHONPATH=<tree>`` from an empty
temporary directory, so an installed zoo does not interfere. Rows (seconds, median of ``--runs``;
the runs of the trees alternate, so a slow spell of the machine hits them alike). Each cell is the
wall time and, in brackets, the CPU time (user + system, all threads): on a busy machine the wall
times swing with the other load, the CPU times much less.

- ``import torch``: the floor every command pays; ``+ torch._dynamo``: the floor of a training run (torch
  imports ``torch._dynamo`` when the first optimizer is built).
- ``import zoo (run modules)``: the modules ``train.py`` imports before it builds anything, and the
  model families (``list_models``).
- ``python -m zoo list``: the whole registry, parameter counts and torchvision weights included.
- ``train.py``: ``python train.py trainer.max_epochs=1`` (LeNet-5 on digits, the defaults),
  outputs in a temporary directory.
- first training step: seconds from the process start to the end of its first optimizer step, as the
  run's own log line says (``first training step ... s after process start``; "n/a" for a tree that
  predates it), and as a probe measures it in the same run (a global optimizer step hook, for trees
  without the line; the probe runs ``train.py`` through ``runpy`` after importing torch itself, which
  the run would import anyway).
- torchvision imported: whether ``torchvision`` was in ``sys.modules`` when the process ended.
- ``evaluate.py``: ``python evaluate.py ckpt_path=<that run>/checkpoints/best.pt``, and whether it
  imported ``torch._dynamo`` (a training run cannot avoid it: torch imports it when the first optimizer
  is built; an evaluation builds none).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: the run's log line (zoo.engine.callbacks.progress)
FIRST_STEP = re.compile(r"first training step ([\d.]+) s after process start")

#: runs a script (argv[1]: train.py, evaluate.py) with the remaining arguments; reports the first optimizer step and the
#: imported modules on stderr
PROBE = r"""
import atexit, runpy, sys, time
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

def _first_step(optimizer, args, kwargs):
    handle.remove()
    print(f"STARTUP-PROBE first-step {time.time():.6f}", file=sys.stderr, flush=True)
    print(f"STARTUP-PROBE first-step-cpu {time.process_time():.6f}", file=sys.stderr, flush=True)

handle = register_optimizer_step_post_hook(_first_step)
atexit.register(lambda: print(f"STARTUP-PROBE torchvision {'torchvision' in sys.modules}\n"
                              f"STARTUP-PROBE dynamo {'torch._dynamo' in sys.modules}", file=sys.stderr, flush=True))
sys.argv = sys.argv[1:]
sys.path[0] = sys.argv[0].rpartition("/")[0]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

IMPORTS = ("import zoo.cli, zoo.sweep, zoo.pipeline, zoo.tasks, zoo.engine.loggers; "
           "from zoo.models import list_models; list_models(); "
           "import sys; print('STARTUP-PROBE torchvision', 'torchvision' in sys.modules)")


class Result:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.flags: dict[str, set[str]] = {}

    def add(self, row: str, value: float | None, cpu: float | None = None) -> None:
        if value is not None:
            self.times.setdefault(row, []).append(value)
        if cpu is not None:
            self.cpu.setdefault(row, []).append(cpu)

    def flag(self, row: str, value: str) -> None:
        self.flags.setdefault(row, set()).add(value)

    def cell(self, row: str) -> str:
        if row in self.flags:
            return "/".join(sorted(self.flags[row]))
        values, cpu = self.times.get(row), self.cpu.get(row)
        if not values:
            return "n/a"
        return f"{statistics.median(values):.2f} s" + (f" ({statistics.median(cpu):.2f})" if cpu else "")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], tree: Path, cwd: Path) -> tuple[float, float, float, str]:
    """Launch time (``time.time()``), wall and CPU seconds, and the combined output of ``cmd``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    env.pop("PROJECT_ROOT", None)
    launched, t0, cpu0 = time.time(), time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {tree} ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return launched, wall, cpu, proc.stdout + proc.stderr


def _probe(output: str, key: str) -> str | None:
    found = re.findall(rf"STARTUP-PROBE {key} (\S+)", output)
    return found[-1] if found else None


def measure_once(tree: Path, result: Result, work: Path, index: int) -> None:
    py = sys.executable
    _, wall, cpu, _ = run([py, "-c", "import torch"], tree, work)
    result.add("`import torch`", wall, cpu)
    _, wall, cpu, _ = run([py, "-c", "import torch, torch._dynamo"], tree, work)
    result.add("`import torch, torch._dynamo`", wall, cpu)

    _, wall, cpu, out = run([py, "-c", IMPORTS], tree, work)
    result.add("`import zoo` (run modules)", wall, cpu)
    result.flag("... torchvision imported", "yes" if _probe(out, "torchvision") == "True" else "no")

    _, wall, cpu, _ = run([py, "-m", "zoo", "list"], tree, work)
    result.add("`python -m zoo list`", wall, cpu)

    out_dir = work / f"outputs-{index}"
    cmd = [py, "-c", PROBE, str(tree / "train.py"), "trainer.max_epochs=1", f"hydra.run.dir={out_dir}"]
    launched, wall, cpu, out = run(cmd, tree, work)
    result.add("`train.py trainer.max_epochs=1`", wall, cpu)
    logged = FIRST_STEP.findall(out)
    result.add("first training step (log line)", float(logged[-1]) if logged else None)
    stepped, stepped_cpu = _probe(out, "first-step"), _probe(out, "first-step-cpu")
    result.add("first training step (probe)", float(stepped) - launched if stepped else None,
               float(stepped_cpu) if stepped_cpu else None)
    result.flag("torchvision imported by the run", "yes" if _probe(out, "torchvision") == "True" else "no")

    ckpt = out_dir / "checkpoints" / "best.pt"
    cmd = [py, "-c", PROBE, str(tree / "evaluate.py"), f"ckpt_path={ckpt}", f"hydra.run.dir={out_dir}-eval"]
    _, wall, cpu, out = run(cmd, tree, work)
    result.add("`evaluate.py` of that run", wall, cpu)
    result.flag("... torch._dynamo imported", "yes" if _probe(out, "dynamo") == "True" else "no")


def table(trees: list[Path], results: list[Result]) -> str:
    order = ["`import torch`", "`import torch, torch._dynamo`", "`import zoo` (run modules)",
             "... torchvision imported", "`python -m zoo list`",
             "`train.py trainer.max_epochs=1`", "first training step (log line)", "first training step (probe)",
             "torchvision imported by the run", "`evaluate.py` of that run", "... torch._dynamo imported"]
    seen = dict.fromkeys(r for res in results for r in [*res.times, *res.flags])
    rows = order + [r for r in seen if r not in order]
    lines = ["| | " + " | ".join(str(t) for t in trees) + " |", "|---|" + "---:|" * len(trees)]
    lines += [f"| {row} | " + " | ".join(res.cell(row) for res in results) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of every command (the table shows medians)")
    parser.add_argument("--tree", action="append", type=Path, default=None,
                        help="a zoo source tree to measure (repeatable; default: this checkout)")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in args.tree or [REPO]]
    for tree in trees:
        if not (tree / "train.py").is_file() or not (tree / "zoo" / "__init__.py").is_file():
            parser.error(f"{tree} is not a zoo checkout")
    results = [Result() for _ in trees]
    with tempfile.TemporaryDirectory(prefix="zoo-startup-") as tmp:
        work = Path(tmp)
        for i in range(args.runs):
            for j, (tree, result) in enumerate(zip(trees, results)):
                print(f"run {i + 1}/{args.runs}: {tree}", file=sys.stderr, flush=True)
                measure_once(tree, result, work, i * len(trees) + j)
    print(f"{os.cpu_count()} CPUs, median of {args.runs} runs; cells: wall seconds (CPU seconds)\n")
    print(table(trees, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
