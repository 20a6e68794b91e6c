#!/usr/bin/env python
"""Run a matrix of bad inputs through the real command line and check the promises of the README's
Reliability section for each: a non-zero exit, exactly one ``error:`` line, no traceback, and every
existing run byte for byte unchanged (checksums before and after).

    python scripts/bad_inputs.py [--workdir DIR] [--json out.json] [--markdown]

Cases cover config values of every type, unknown names and keys, data, checkpoints, run
directories, a resume that would change its run, a sweep with a failing job, a signal, and a full
disk and a read-only file system where this machine can mount a tmpfs (root).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
FAST = ["trainer.max_epochs=1", "logger=none", "trainer.limit_train_batches=3", "data.eval_batch_size=64",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


@dataclass
class Case:
    name: str
    script: str
    args: list[str]
    expect_exit: tuple[int, ...] = (2,)
    setup: Callable[[Path], None] | None = None
    signal_after: float | None = None  # send SIGTERM after this many seconds
    result: dict[str, object] = field(default_factory=dict)


def checksums(roots: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def run(case: Case, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / case.script), *case.args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if case.signal_after is None:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(case.signal_after)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def cases(work: Path, run: Path, other: Path) -> list[Case]:
    ckpt, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    new = lambda name: f"hydra.run.dir={work / 'new' / name}"  # noqa: E731 - a fresh run directory per case
    values = [
        "optimizer.lr=abc", "optimizer.lr=-1", "optimizer.lr=0", "seed=abc", "seed=1.5", "trainer.max_epochs=1.5",
        "trainer.max_epochs=0", "data.batch_size=abc", "data.batch_size=0", "trainer.gradient_clip_val=abc",
        "trainer.gradient_clip_val=-1", "trainer.accumulate_grad_batches=0", "callbacks.checkpoint.every_n_steps=abc",
        "callbacks.checkpoint.every_n_steps=0", "callbacks.checkpoint.every_n_steps=-3", "callbacks.early_stopping.patience=-1",
        "test=no", "trainer.deterministic=maybe", "callbacks.checkpoint.save_last=no", "scheduler.warmup_epochs=50",
        "trainer.precision=8", "trainer.device=tpu", "trainer.limit_train_batches=-1", "model.num_classes=ten",
        "callbacks.checkpoint.mode=biggest", "callbacks.nonfinite.policy=ignore", "callbacks.progress.mode=fancy",
        "augmentation.ops.affine.degrees=abc",
    ]
    names = ["model=lenet", "data=digitz", "optimizer=adamm", "scheduler=cosin", "logger=tensorbord", "+trainer.foo=1",
             "+trainer.checkpoint.save_top_k=3", "+callbacks.chekpoint.monitor=val/loss", "+logger.tensorboard.flush_sec=1",
             "+callbacks.mine._target_=no.such.Class", "callbacks.checkpoint.monitor=val/does_not_exist"]
    out = [Case(f"value {v}", "train.py", [*FAST, v, new(f"v{i}")]) for i, v in enumerate(values)]
    out += [Case(f"name {v}", "train.py", [*FAST, v, new(f"n{i}")]) for i, v in enumerate(names)]

    def write(name: str, data: bytes) -> Callable[[Path], None]:
        return lambda _: (work / name).write_bytes(data)

    truncated = ckpt.read_bytes()[:2000]
    out += [
        Case("data: mnist not on disk", "train.py", ["data=mnist", f"data.root={work / 'nodata'}", *FAST, new("d0")]),
        Case("data: cifar10 not on disk", "train.py", ["data=cifar10", f"data.root={work / 'nodata'}", *FAST, new("d1")]),
        Case("data: empty image folder", "train.py", ["data=imagefolder", f"data.root={work / 'emptyfolder'}", *FAST, new("d2")],
             setup=lambda _: [(work / "emptyfolder" / s).mkdir(parents=True, exist_ok=True) for s in ("train", "val")]),
        Case("data: corrupt MNIST idx files", "train.py", ["data=mnist", f"data.root={work / 'badmnist'}", *FAST, new("d3")],
             setup=lambda _: _corrupt_mnist(work / "badmnist")),
        Case("data.root=null", "train.py", ["data=mnist", "data.root=null", *FAST, new("d4")]),
        Case("ckpt: missing file", "train.py", ["ckpt_path=/no/such/last.pt", *FAST, new("c0")]),
        Case("ckpt: a directory", "evaluate.py", [f"ckpt_path={run / 'checkpoints'}", new("c1")]),
        Case("ckpt: truncated", "evaluate.py", [f"ckpt_path={work / 'trunc.pt'}", new("c2")], setup=write("trunc.pt", truncated)),
        Case("ckpt: random bytes", "evaluate.py", [f"ckpt_path={work / 'random.pt'}", new("c3")], setup=write("random.pt", os.urandom(4096))),
        Case("ckpt: pickled code", "evaluate.py", [f"ckpt_path={work / 'code.pt'}", new("c4")], setup=lambda _: _pickled_code(work / "code.pt")),
        Case("ckpt: plain state_dict to evaluate", "evaluate.py", [f"ckpt_path={work / 'sd.pt'}", new("c5")], setup=lambda _: _state_dict(work / "sd.pt", ckpt)),
        Case("ckpt: another model's, resumed", "train.py", [f"ckpt_path={ckpt}", "model=lenet5_classic", *FAST, new("c6")]),
        Case("ckpt: another model's as pretrained", "train.py", [f"model.pretrained={other / 'checkpoints' / 'last.pt'}", *FAST, new("c7")]),
        Case("evaluate without ckpt_path", "evaluate.py", [new("c8")]),
        Case("resume that changes the run", "train.py", [f"ckpt_path={ckpt}", "optimizer.lr=0.5", new("c9")]),
        Case("run dir: holds a run (train)", "train.py", [f"hydra.run.dir={run}", "model=resnet20", *FAST]),
        Case("run dir: holds a run (evaluate)", "evaluate.py", [f"hydra.run.dir={run}", f"ckpt_path={best}"]),
        Case("run dir: resume into the source run", "train.py", [f"hydra.run.dir={run}", f"ckpt_path={ckpt}"]),
        Case("run dir: claimed by a live run", "train.py", [f"hydra.run.dir={work / 'claimed'}", *FAST],
             setup=lambda _: ((work / "claimed").mkdir(exist_ok=True), (work / "claimed" / ".zoo-run").write_text(""))),
        Case("run dir: empty", "train.py", ["hydra.run.dir=", *FAST]),
        Case("run dir: under a regular file", "train.py", [f"hydra.run.dir={work / 'afile' / 'run'}", *FAST],
             setup=lambda _: (work / "afile").write_text("x")),
        Case("sweep: one job fails, the other runs", "train.py",
             ["-m", "optimizer.lr=-1,0.01", *FAST, f"hydra.sweep.dir={work / 'sweep'}"]),
        Case("signal: SIGTERM during training", "train.py", ["trainer.max_epochs=500", "logger=none", new("s0")],
             expect_exit=(128 + signal.SIGTERM,), signal_after=8.0),
    ]
    if _mount(work / "ro", "ro,size=1m"):
        out.append(Case("run dir: read-only file system", "train.py", [f"hydra.run.dir={work / 'ro' / 'run'}", *FAST]))
    if _mount(work / "full", "size=300k"):
        out.append(Case("disk full while checkpointing", "train.py", [f"hydra.run.dir={work / 'full' / 'run'}", *FAST]))
    return out


def _corrupt_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")


def _pickled_code(path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this checkpoint ran code",))

    with path.open("wb") as f:
        pickle.dump({"model": Payload()}, f)


def _state_dict(path: Path, ckpt: Path) -> None:
    import torch

    torch.save(torch.load(ckpt, weights_only=True)["model"], path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bad_inputs_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = [work / "runs" / "lenet5", work / "runs" / "resnet20"]
    for run_dir, model in zip(runs, ("lenet5", "resnet20")):  # the existing runs every case must leave alone
        subprocess.run([sys.executable, str(REPO / "train.py"), f"model={model}", f"hydra.run.dir={run_dir}", *FAST], cwd=work,
                       check=True, capture_output=True)
    before = checksums(runs)
    rows, t0 = [], time.perf_counter()
    try:
        for case in cases(work, *runs):
            if case.setup:
                case.setup(work)
            proc = run(case, work)
            text = proc.stdout + proc.stderr
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            unchanged = checksums(runs) == before
            ok = proc.returncode in case.expect_exit and len(errors) == 1 and "Traceback" not in text and unchanged
            if case.name.startswith("sweep"):  # one error line per failed job, then the sweep's own line
                ok = proc.returncode == 2 and len(errors) == 1 and "sweep: 1 of 2 jobs failed" in text and unchanged
            rows.append({"case": case.name, "exit": proc.returncode, "error_lines": len(errors), "traceback": "Traceback" in text,
                         "runs_unchanged": unchanged, "ok": ok, "error": errors[0][7:] if errors else text.strip()[-300:]})
            print(f"{'ok ' if ok else 'BAD'} {case.name}: exit {proc.returncode}, {len(errors)} error line(s)", file=sys.stderr)
    finally:
        for mount in ("ro", "full"):
            subprocess.run(["umount", str(work / mount)], capture_output=True)
    print("| case | exit | `error:` lines | traceback | existing runs unchanged | message |\n|---|---:|---:|---|---|---|")
    for r in rows:
        message = str(r["error"]).replace("|", "\\|")[:140]
        print(f"| {r['case']} | {r['exit']} | {r['error_lines']} | {'yes' if r['traceback'] else 'no'} | "
              f"{'yes' if r['runs_unchanged'] else 'NO'} | {message} |")
    good = sum(bool(r["ok"]) for r in rows)
    print(f"\n{good} of {len(rows)} bad inputs: non-zero exit, one error line, no traceback, existing runs unchanged "
          f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
