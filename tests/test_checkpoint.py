from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from zoo.engine.checkpoint import load_checkpoint, save_checkpoint
from zoo.errors import CheckpointError


class Payload:
    """Unpickling this would run code: weights_only loading must refuse it."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def test_round_trip(tmp_path: Path) -> None:
    state = {"model": {"w": torch.randn(3)}, "epoch": 2, "nested": {"lr": [0.1, 0.01]}}
    save_checkpoint(state, tmp_path / "a" / "last.pt")
    loaded = load_checkpoint(tmp_path / "a" / "last.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 2
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["last.pt"]  # no temp file left behind


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 2, "bad": lambda: 0}, path)  # cannot be pickled: fails mid-write
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)


def test_truncated_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    save_checkpoint({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    (tmp_path / "garbage.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pt")


def test_export_to_safetensors(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from tests.helpers import run_cli
    from zoo.engine.checkpoint import FORMAT
    from zoo.models import create_model

    model = create_model("lenet5", num_classes=10, in_chans=1)
    ckpt = save_checkpoint({"format": FORMAT, "model_name": "lenet5", "config": {"model": {"name": "lenet5"}},
                            "model": model.state_dict()}, tmp_path / "best.pt")
    out = tmp_path / "lenet5.safetensors"
    proc = run_cli("scripts/export_safetensors.py", str(ckpt), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    loaded = load_file(str(out))
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["model_name"] == "lenet5"

    before = out.stat().st_mtime_ns
    again = run_cli("scripts/export_safetensors.py", str(ckpt), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr and out.stat().st_mtime_ns == before
