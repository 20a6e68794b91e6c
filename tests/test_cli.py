"""The command line as a user meets it: one-line errors, non-zero exits, nothing lost, multirun."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import torch

from tests.helpers import CONFIG_DIR, FAST, make_cfg, run_cli, tree_snapshot
from zoo.errors import ZooError
from zoo.pipeline import train


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run whose files the bad commands below must leave untouched."""
    run_dir = tmp_path_factory.mktemp("prev")
    train(make_cfg(run_dir, *FAST))
    return run_dir


def _one_line_error(proc, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(
    "override, needles",
    [
        ("model=lenet", ["unknown model 'lenet'", "lenet5"]),
        ("model=_base", ["unknown model '_base'", "not a choice"]),  # configs/model/_base.yaml: shared keys
        ("data=digitz", ["unknown data 'digitz'", "digits"]),
        ("optimizer=adamm", ["unknown optimizer 'adamm'", "adam"]),
        ("scheduler=cosin", ["unknown scheduler 'cosin'", "cosine"]),
        ("-m optimizer=sgd,adamm", ["unknown optimizer 'adamm'"]),
    ],
)
def test_unknown_group_choice(override: str, needles: list[str], tmp_path: Path) -> None:
    proc = run_cli("train.py", *override.split(), f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    _one_line_error(proc, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["model.name=lenet6"], ["unknown model 'lenet6'", "lenet5"]),
        (["model.input_size=abc"], ["model.input_size must be an integer"]),
        (["optimizer.lr=-0.1"], ["optimizer.lr must be > 0"]),
        (["data.batch_size=0"], ["data.batch_size must be >= 1"]),
        (["trainer.max_epochs=0"], ["trainer.max_epochs must be >= 1"]),
        (["trainer.device=tpu"], ["trainer.device"]),
        (["trainer.device=cuda"], ["no CUDA GPU"]),
        (["model.num_classes=5"], ["model.num_classes=5", "num_classes=10"]),
        (["model.in_chans=3"], ["model.in_chans=3", "in_chans=1"]),
        (["task=vae"], ["task=vae cannot train a classification model"]),
        (["ckpt_path=/no/such/last.pt"], ["checkpoint not found: /no/such/last.pt"]),
    ],
)
def test_bad_values(args: list[str], needles: list[str], tmp_path: Path, previous_run: Path) -> None:
    if "cuda" in args[0] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    before = tree_snapshot(previous_run)
    with pytest.raises(ZooError) as info:
        train(make_cfg(tmp_path / "run", *FAST, *args))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert tree_snapshot(previous_run) == before


def test_bad_value_on_the_command_line(tmp_path: Path) -> None:
    proc = run_cli("train.py", *FAST, "optimizer.lr=-0.1", f"hydra.run.dir={tmp_path}/run")
    _one_line_error(proc, "optimizer.lr must be > 0")


def test_checkpoint_of_another_model(tmp_path: Path, previous_run: Path) -> None:
    before = tree_snapshot(previous_run)
    ckpt = previous_run / "checkpoints" / "last.pt"
    proc = run_cli("train.py", "model=lenet5_classic", f"ckpt_path={ckpt}", *FAST, f"hydra.run.dir={tmp_path}/run")
    _one_line_error(proc, "model=lenet5", "model=lenet5_classic")
    assert tree_snapshot(previous_run) == before


def test_truncated_checkpoint(tmp_path: Path, previous_run: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes((previous_run / "checkpoints" / "last.pt").read_bytes()[:1000])
    proc = run_cli("evaluate.py", f"ckpt_path={broken}", f"hydra.run.dir={tmp_path}/run")
    _one_line_error(proc, "corrupt or truncated")


def test_evaluate_without_checkpoint(tmp_path: Path) -> None:
    proc = run_cli("evaluate.py", f"hydra.run.dir={tmp_path}/run")
    _one_line_error(proc, "ckpt_path=")


@pytest.mark.parametrize("args, needle", [(["device=tpu"], "unknown device 'tpu'"), (["precision=64"], "unknown precision '64'"),
                                           (["device=cpu", "precision=16"], "precision=16 needs a CUDA GPU; use precision=bf16")])
def test_evaluate_errors_name_its_own_keys(args: list[str], needle: str, tmp_path: Path, previous_run: Path) -> None:
    from zoo.pipeline import evaluate

    with pytest.raises(ZooError) as info:
        evaluate(make_cfg(tmp_path, f"ckpt_path={previous_run}/checkpoints/best.pt", *args, config_name="evaluate"))
    assert needle in str(info.value) and "trainer." not in str(info.value)


def test_reusing_a_run_directory_is_refused(previous_run: Path) -> None:
    before = tree_snapshot(previous_run)
    proc = run_cli("train.py", *FAST, f"hydra.run.dir={previous_run}")
    _one_line_error(proc, "already holds a run")
    assert tree_snapshot(previous_run) == before  # Hydra no longer writes .hydra/ or the log before zoo claims


def test_train_evaluate_and_resume_from_the_command_line(tmp_path: Path) -> None:
    proc = run_cli("train.py", *FAST, f"hydra.run.dir={tmp_path}/a")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test (best weights)" in proc.stderr + proc.stdout
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    proc = run_cli("train.py", *FAST[1:], "trainer.max_epochs=3", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [2]
    proc = run_cli("evaluate.py", f"ckpt_path={tmp_path}/b/checkpoints/best.pt", f"hydra.run.dir={tmp_path}/e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "confusion matrix" in out and "acc5" in out


def test_multirun_gives_each_job_its_own_directory(tmp_path: Path) -> None:
    proc = run_cli("train.py", "-m", "optimizer=sgd,adam", *FAST, "test=false", f"hydra.sweep.dir={tmp_path}/sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    metrics = [json.loads((tmp_path / "sweep" / j / "metrics.json").read_text()) for j in jobs]
    assert {m["optimizer"] for m in metrics} == {"sgd", "adam"}
    with open(tmp_path / "sweep" / "summary.csv", newline="") as f:  # every sweep ends with a summary
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: r["job"])  # the summary lists the best job first
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [("0", "optimizer=sgd", "ok"),
                                                                         ("1", "optimizer=adam", "ok")]
    assert [float(r["best"]) for r in rows] == pytest.approx([m["best/val/acc"] for m in metrics], rel=1e-5)
    assert proc.stderr.strip().splitlines()[-1] == f"sweep: 2 of 2 jobs ok; summary in {tmp_path}/sweep/summary.md"


def test_zoo_list(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    import torchvision

    from zoo.__main__ import main

    proc = subprocess.run([sys.executable, "-m", "zoo", "list", "lenet*"], capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["model", "task", "family", "input", "params", "weights"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["lenet5"][1] == "classification" and rows["lenet5"][-2:] == ["61,706", "-"]
    assert main(["list", "res*"]) == 0  # the same command in this process (the first one shows the entry point)
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]}
    assert rows["resnet50"][-1] == ",".join(w.name for w in torchvision.models.ResNet50_Weights)  # IMAGENET1K_V1,V2
    assert rows["resnext101_64x4d"][-1] == "IMAGENET1K_V1" and rows["resnet20"][-1] == "-"


@pytest.mark.slow  # builds every model on the meta device again, as test_zoo_list does
def test_zoo_list_names_an_unknown_task_and_stops_quietly_on_a_closed_pipe() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "zoo", "list", "--task", "clasification"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == "error: no model has task 'clasification'; did you mean: classification?\n"
    listing = subprocess.Popen([sys.executable, "-m", "zoo", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # `| head` has read its lines and gone before the listing is written
    err = listing.stderr.read()
    assert listing.wait() == 1 and err == ""  # no BrokenPipeError traceback


GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "paths"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_rejects_unknown_choices(group: str) -> None:
    from zoo.cli import check_overrides

    known = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))  # _*: shared keys
    message = check_overrides([f"{group}={known[0]}_x"], CONFIG_DIR)
    assert message is not None and f"unknown {group} '{known[0]}_x'" in message and known[0] in message
    assert check_overrides([f"{group}={known[0]}"], CONFIG_DIR) is None
