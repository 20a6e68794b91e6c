from __future__ import annotations

import errno
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from zoo.engine.checkpoint import load_checkpoint, save_checkpoint
from zoo.engine.utils import write_json
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


def test_corrupt_is_told_from_unsafe(tmp_path: Path) -> None:
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "random.pt")
    assert "pickled code" not in str(err.value) and "corrupt or truncated" in str(err.value)
    (tmp_path / "text.pt").write_text("hello world\n")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):  # was a bare KeyError
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"contains pickled code or objects, not only tensors \(posix.system\); only"):
        load_checkpoint(tmp_path / "evil.pt")


def test_torch_reason_is_its_first_sentence_whole(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    save_checkpoint({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert f"cannot read checkpoint {path}: PytorchStreamReader failed reading zip archive: failed finding central " \
           "directory; the file is corrupt" in str(err.value)

    from zoo.errors import brief

    long = "the quick brown fox jumps over the lazy dog, " * 10
    assert brief(long, 60) == "the quick brown fox jumps over the lazy dog ..."
    assert brief("Weights only load failed. In PyTorch 2.6, we changed") == "Weights only load failed"


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


# ---- a write that fails: disk full, read-only --------------------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _failing_save(kind: str) -> Callable[..., None]:
    """A ``torch.save`` that writes a little, then fails as torch does on a full disk."""

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        if kind == "oserror":
            raise _enospc()
        if kind == "erofs":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        if kind == "torch":  # torch's writer: the OSError, then its RuntimeError while handling it
            try:
                raise _enospc()
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    return save


@pytest.mark.parametrize("kind,reason", [("oserror", "no space left on device"), ("torch", "no space left on device"),
                                         ("torch-alone", "the write was cut short (unexpected pos 704 vs 598)"),
                                         ("erofs", "read-only file system")])
def test_failed_write_is_one_line_and_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               kind: str, reason: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save(kind))
    with pytest.raises(CheckpointError) as err:
        save_checkpoint({"epoch": 2}, path)
    message = str(err.value)
    assert message.startswith(f"cannot write {path}: {reason}; the previous last.pt is intact; ") and "\n" not in message
    assert ("writable" in message) == (kind == "erofs")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(CheckpointError, match="no partial file was left"):
        save_checkpoint({"epoch": 2}, tmp_path / "epoch_2.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_failed_json_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.json"
    write_json({"a": 1}, path)

    def full(src: Any, dst: Any) -> None:
        raise _enospc()

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CheckpointError, match="metrics.json: no space left on device; the previous metrics.json is intact"):
        write_json({"a": 2}, path)
    assert path.read_text() == '{\n  "a": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_for_real(tiny_disk: Path) -> None:
    path = tiny_disk / "last.pt"
    save_checkpoint({"w": torch.randn(1000)}, path)
    write_json({"epoch": 1}, tiny_disk / "metrics.json")
    before = path.read_bytes(), (tiny_disk / "metrics.json").read_bytes()
    with pytest.raises(CheckpointError) as err:
        save_checkpoint({"w": torch.randn(200_000)}, path)  # 800 KB into 256 KiB
    assert str(err.value).startswith(f"cannot write {path}: no space left on device; the previous last.pt is intact")
    with pytest.raises(CheckpointError, match="no space left on device; the previous metrics.json is intact"):
        write_json({"history": list(range(100_000))}, tiny_disk / "metrics.json")
    assert (path.read_bytes(), (tiny_disk / "metrics.json").read_bytes()) == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["last.pt", "metrics.json"]  # no temporary file left


def test_train_run_whose_checkpoint_write_fails_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.cli import guarded
    from zoo.pipeline import train

    monkeypatch.setattr(torch, "save", _failing_save("torch"))
    with pytest.raises(SystemExit) as info:
        guarded(train)(make_cfg(tmp_path, *FAST, "trainer.max_epochs=1"))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "no space left on device" in lines[0]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"])
def test_written_files_get_the_umask_mode(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
        write_json({"a": 1}, tmp_path / "metrics.json")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"last.pt": mode, "metrics.json": mode}
