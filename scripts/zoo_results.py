#!/usr/bin/env python
"""Train every digits experiment and write the README's results table.

Each experiment runs as a user runs it, ``python train.py experiment=<name>`` in its own process,
into a fresh run directory; the table takes test accuracy (best-validation weights), epochs,
parameters and times from that run's ``metrics.json``.

    python scripts/zoo_results.py                         # all configs/experiment/*_digits.yaml
    python scripts/zoo_results.py resnet20_digits nin_small_digits
    python scripts/zoo_results.py --update-readme         # rewrite the table between the markers
    python scripts/zoo_results.py --from-runs outputs/results   # table from finished runs only

Options after ``--`` go to every run as Hydra overrides (e.g. ``-- trainer.device=cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def experiments(names: list[str]) -> list[str]:
    if names:
        return names
    candidates = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*_digits.yaml"))
    return [name for name in candidates if experiment_task(name) in ("classification", "knn")]  # knn: a classifier too


def experiment_task(name: str) -> str:
    """The task an experiment trains (generative ones are tabulated by scripts/generative_digits.py)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return str(compose("train", overrides=[f"experiment={name}"]).task.name)


def train_run(run_dir: Path, args: list[str], threads: int) -> dict | None:
    """``python train.py ARGS`` into ``run_dir``; its metrics.json, or None (and the error) on failure.
    A run directory that already holds metrics.json is reused, never overwritten."""
    if (run_dir / "metrics.json").exists():
        return json.loads((run_dir / "metrics.json").read_text())
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        print(f"  {run_dir.name}: FAILED ({tail[0]})", file=sys.stderr)
        return None
    return json.loads((run_dir / "metrics.json").read_text())


def run_one(name: str, out_root: Path, overrides: list[str], threads: int) -> dict | None:
    t0 = time.perf_counter()
    metrics = train_run(out_root / name, [f"experiment={name}", *overrides], threads)
    if metrics is not None:
        print(f"  {name}: test acc {100 * metrics['test']['acc']:.2f}% in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return metrics


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| experiment | model | params | epochs | test top-1 | train time (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        lines.append(
            f"| `{name}` | `{m['model']}` | {m['params']:,} | {m['epochs_run']} | "
            f"{100 * m['test']['acc']:.2f}% | {m['fit_time_s']:.0f} |"
        )
    return "\n".join(lines)


def update_readme(text: str, start: str = START, end: str = END) -> None:
    """Replace what lies between the ``start`` and ``end`` markers with ``text`` in every page that holds them:
    README.md and the documentation site's pages under docs/ (a table may be on both)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    found = 0
    for page in pages:
        content = page.read_text()
        if start not in content or end not in content:
            continue
        head, rest = content.split(start, 1)
        _, tail = rest.split(end, 1)
        page.write_text(f"{head}{start}\n{text}\n{end}{tail}")
        found += 1
    if not found:
        raise SystemExit(f"error: no page (README.md, docs/*.md) has the {start} ... {end} markers; add them where "
                         f"the table belongs")


def generated_page(out: Path, make: Callable[[], str], doc: str) -> None:
    """The command line of a script that generates a documentation page: write ``make()`` to ``out``, or with
    ``--check`` exit 1 when the file is not what it would write (CI keeps generated pages current)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = parser.parse_args()
    text, name = make(), out.relative_to(REPO)
    if args.check:
        if not out.exists() or out.read_text() != text:
            raise SystemExit(f"error: {name} is not current; run python {Path(sys.argv[0]).relative_to(REPO)}")
        print(f"{name} is current")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {name}")


def finished(run_dir: Path) -> dict | None:
    """The metrics of a finished run directory, or None."""
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def publish(rows: list, make_table: Callable[[list], str], update: bool, start: str = START, end: str = END) -> None:
    """Print the table of ``rows`` (runs that reached their test), and with ``update`` put it in the README."""
    if not rows:
        raise SystemExit("error: no finished runs to tabulate")
    text = make_table(rows)
    print(text)
    if update:
        update_readme(text, start, end)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """The script's own arguments, and the Hydra overrides after ``--`` for every run."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def main() -> None:
    argv, overrides = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiment names (default: every *_digits experiment)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "results",
                        help="run directories go to OUT/<experiment>; finished ones are reused")
    parser.add_argument("--from-runs", action="store_true", help="only tabulate runs already under --out")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS per run")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)

    rows = []
    for name in experiments(args.names):
        metrics = finished(args.out / name) if args.from_runs else run_one(name, args.out, overrides, args.threads)
        if metrics is not None and "test" in metrics:
            rows.append((name, metrics))
    publish(rows, table, args.update_readme)


if __name__ == "__main__":
    main()
