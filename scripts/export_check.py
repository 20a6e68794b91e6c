#!/usr/bin/env python
"""Export the smallest variant of every classifier family (random weights) to ONNX, torch.export and TorchScript,
run each file back (ONNX Runtime, ``torch.export.load``, ``torch.jit.load``) and tabulate its largest absolute
difference from PyTorch on a random batch, and whether TorchScript scripts the model or only traces it.

    python scripts/export_check.py                   # the table on stdout
    python scripts/export_check.py --update-readme   # and between the README's export markers
    python scripts/export_check.py resnet20 lenet5   # these models only

It is what ``tests/test_export.py``'s slow matrix checks (``pytest -m slow tests/test_export.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_results import REPO, update_readme  # noqa: E402

sys.path.insert(0, str(REPO))
START, END = "<!-- export:start -->", "<!-- export:end -->"


def check(name: str, workdir: Path) -> dict[str, str]:
    """The table's row of the registered model ``name``: each format's max abs diff (or why it failed)."""
    from zoo.errors import ZooError
    from zoo.export import FORMATS, export_model, export_target
    from zoo.models.layers import initialize

    model, shape, _ = export_target(name)
    initialize(model, "kaiming_normal")  # no zero-initialised final layer (AlexNet's): outputs that differ per input
    row = {"model": name, "input": "x".join(map(str, shape))}
    for fmt, suffixes in FORMATS.items():
        try:
            done = export_model(model, shape, fmt, workdir / f"{name}{suffixes[0]}")
        except ZooError as e:
            row[fmt] = f"fails: {e}"
            continue
        row[fmt] = f"{done.max_abs_diff:.1e}"
        if fmt == "torchscript":
            row["torchscript"] = f"{done.method} {done.max_abs_diff:.1e}"
            row["why traced"] = done.note.removeprefix("scripting failed (").removesuffix("); traced instead")
    return row


def table(rows: list[dict[str, str]]) -> str:
    lines = ["| model | input | ONNX (ONNX Runtime) | torch.export (.pt2) | TorchScript | why only traced |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['onnx']} | {r['export']} | {r['torchscript']} | "
                     f"{r.get('why traced') or '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="registered models (default: one per classifier family)")
    parser.add_argument("--update-readme", action="store_true", help=f"write the table between {START} and {END}")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # torch's deprecation and tracer warnings, once per model
    from zoo.models import family_representatives

    names = args.models or family_representatives()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in names:
            rows.append(check(name, Path(tmp)))
            print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    text = table(rows) + (f"\n\nMaximum absolute difference from PyTorch on a random batch of 3 (the exports saw a batch "
                          f"of 2: the batch dimension is dynamic); random He-normal weights; `python scripts/export_check.py` "
                          f"({time.perf_counter() - start:.0f} s on this machine's CPU).")
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
