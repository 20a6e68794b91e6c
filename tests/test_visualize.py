"""``python -m zoo visualize`` (:mod:`zoo.visualize`) on a LeNet-5 trained on digits here."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zoo.__main__ import main

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits(lenet5_digits: dict[str, Any]) -> dict[str, Any]:
    """The shared LeNet-5 checkpoint (conftest) and two of its test digits as 8x8 PNG files."""
    return {"ckpt": lenet5_digits["ckpt"], "files": lenet5_digits["files"][-2:], "dir": lenet5_digits["dir"]}


def _run(digits: dict[str, Any], out: Path, *args: str) -> int:
    return main(["visualize", str(digits["ckpt"]), "--out", str(out), *args])


def test_filters_writes_a_grid(digits: dict[str, Any], tmp_path: Path) -> None:
    assert _run(digits, tmp_path, "--what", "filters") == 0
    assert (tmp_path / "filters.png").stat().st_size > 0


def test_activations_writes_a_grid_per_stage(digits: dict[str, Any], tmp_path: Path) -> None:
    from zoo.trained import load_classifier

    model, _ = load_classifier(digits["ckpt"], "ckpt")
    stages = [info.module for info in model.feature_info]
    assert _run(digits, tmp_path, "--what", "activations", "--image", *map(str, digits["files"])) == 0
    assert sorted(p.name for p in tmp_path.glob("activations_*.png")) == sorted(
        f"activations_{s.replace('.', '_')}.png" for s in stages)
    one = tmp_path / "one"
    assert _run(digits, one, "--what", "activations", "--image", str(digits["files"][0]), "--layer", stages[0]) == 0
    assert [p.name for p in one.glob("*.png")] == [f"activations_{stages[0].replace('.', '_')}.png"]


def test_tsne_has_one_point_per_image(digits: dict[str, Any], tmp_path: Path) -> None:
    assert _run(digits, tmp_path, "--what", "tsne", "--split", "val", "--max-points", "60") == 0
    with open(tmp_path / "tsne.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60
    assert [int(r["index"]) for r in rows] == list(range(60))
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)
    assert len({r["label"] for r in rows}) > 1
    assert (tmp_path / "tsne.png").stat().st_size > 0 and (tmp_path / "tsne_mosaic.png").stat().st_size > 0


def test_class_model_ascent_raises_the_target_score(digits: dict[str, Any], tmp_path: Path) -> None:
    from zoo.trained import load_classifier
    from zoo.visualize import class_model

    model, state = load_classifier(digits["ckpt"], "ckpt")
    for p in model.parameters():
        p.requires_grad_(False)
    size = int(state["config"]["data"].get("image_size") or state["config"]["model"]["input_size"])
    start = torch.zeros(1, 1, size, size)  # the data mean
    for target in (3, 7):
        before = float(model(start)[0, target])
        image = class_model(model, target, (1, size, size), steps=50, lr=0.1, l2=1e-3, start=start)
        assert float(model(image)[0, target]) > before + 1.0
    assert _run(digits, tmp_path, "--what", "class_model", "--target", "3", "7", "--steps", "10") == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["class_model_3.png", "class_model_7.png"]
    every = tmp_path / "every"
    assert _run(digits, every, "--what", "class_model", "--steps", "2") == 0
    assert len(list(every.glob("class_model_*.png"))) == 10


@pytest.mark.parametrize("args, message", [
    (["--what", "tsnee"], "unknown --what 'tsnee'"),
    (["--what", "class_model", "--target", "10"], "--target 10 is out of range"),
    (["--what", "activations"], "needs --image"),
    (["--what", "activations", "--image", "missing.png"], "image file not found"),
    (["--what", "activations", "--image", "IMAGE", "--layer", "nope"], "--layer 'nope'"),
])
def test_bad_input_is_one_error_line(digits: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    args = [str(digits["files"][0]) if a == "IMAGE" else a for a in args]
    out = tmp_path / "out"
    assert _run(digits, out, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_missing_checkpoint_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["visualize", str(tmp_path / "none.pt"), "--what", "filters", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
