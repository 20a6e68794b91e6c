"""Export (issue 25): ``python -m zoo export`` to ONNX, torch.export programs and TorchScript, each checked against
PyTorch; the hub entry points of ``hubconf.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO
from zoo.__main__ import main
from zoo.errors import ConfigError
from zoo.export import export_model, export_target, load_exported
from zoo.models import family_representatives, list_models
from zoo.models.layers import initialize

TOL = 1e-4
FORMATS = {"onnx": ".onnx", "export": ".pt2", "torchscript": ".pt"}


def _check(name: str, fmt: str, tmp_path: Path) -> Any:
    """Export the registered ``name`` with random weights (He-normal everywhere: no zero-initialised final layer that
    would make every output its bias); its file agrees with PyTorch on a fresh batch of 5."""
    model, shape, _ = export_target(name)
    initialize(model, "kaiming_normal")
    done = export_model(model, shape, fmt, tmp_path / f"{name}{FORMATS[fmt]}")
    assert done.path.is_file() and done.max_abs_diff < TOL, done
    x = torch.randn(5, *shape)  # a batch size neither the export nor its check used: the batch is dynamic
    with torch.no_grad():
        reference = model(x)
        assert (load_exported(done.path, fmt)(x) - reference).abs().max() < TOL and reference.std() > 1e-3
    return done


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_lenet5_exports_to_every_format(fmt: str, tmp_path: Path) -> None:
    _check("lenet5", fmt, tmp_path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_resnet_exports(fmt: str, tmp_path: Path) -> None:
    assert _check("resnet20", fmt, tmp_path).method in ("dynamo", "script")  # torch.jit.script(resnet) works


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", family_representatives())
def test_every_classifier_family_exports(name: str, fmt: str, tmp_path: Path) -> None:
    _check(name, fmt, tmp_path)


def test_the_command_exports_a_checkpoint_and_prints_the_difference(lenet5_digits: dict[str, Any], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lenet5.pt"
    assert main(["export", str(lenet5_digits["ckpt"]), "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "max abs diff from PyTorch on a random input" in printed.out and "input (batch, 1, 32, 32)" in printed.out
    assert "(torchscript by script," in printed.out
    model = torch.jit.load(str(out))
    from zoo import load_model

    reference = load_model(lenet5_digits["ckpt"])
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() < TOL


def test_torchscript_says_why_it_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GoogLeNet's Inception modules are annotated (strings to TorchScript): scripting fails, the command traces and
    says so (never a silent fallback); ``--method script`` is that reason as one error line."""
    assert main(["export", "googlenet_small", "--format", "torchscript", "--out", str(tmp_path / "r.pt")]) == 0
    printed = capsys.readouterr()
    assert "(torchscript by trace," in printed.out
    assert printed.err.startswith("note: scripting failed (") and printed.err.rstrip().endswith("; traced instead")
    _one_error(capsys, ["export", "googlenet_small", "--format", "torchscript", "--method", "script", "--out",
                        str(tmp_path / "s.pt")], "TorchScript cannot script GoogLeNet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pt"]


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err, err


def test_the_command_refuses_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = ["--out", str(tmp_path / "m.onnx")]
    _one_error(capsys, ["export", "lenet5", "--format", "onx", *onnx], "unknown export format 'onx'")
    _one_error(capsys, ["export", "lenet5", "--format", "export", "--out", str(tmp_path / "m.pt")], "writes a .pt2 file")
    _one_error(capsys, ["export", "lenet5", "--format", "onnx", "--method", "trace", *onnx], "is for --format torchscript")
    _one_error(capsys, ["export", "lenet", "--format", "onnx", *onnx], "neither a checkpoint file nor a registered model")
    _one_error(capsys, ["export", str(tmp_path / "nope.pt"), "--format", "onnx", *onnx], "checkpoint not found")
    torch.save({"model": {}}, tmp_path / "other.pt")
    _one_error(capsys, ["export", str(tmp_path / "other.pt"), "--format", "onnx", *onnx], "is not a zoo training checkpoint")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra were not installed
    _one_error(capsys, ["export", "lenet5", "--format", "onnx", *onnx], "pip install -e '.[export]'")
    assert list(tmp_path.iterdir()) == [tmp_path / "other.pt"]  # nothing written


def test_an_export_that_disagrees_with_pytorch_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.export

    real = zoo.export.load_exported
    monkeypatch.setattr(zoo.export, "load_exported", lambda path, fmt: lambda x: real(path, fmt)(x) + 1e-3)
    _one_error(capsys, ["export", "lenet5", "--format", "export", "--out", str(tmp_path / "m.pt2")],
               "differs from PyTorch by 0.001 (more than --atol 0.0001)")
    _one_error(capsys, ["export", "lenet5", "--format", "export", "--out", str(tmp_path / "m.pt2"), "--atol", "-1"],
               "--atol must be >= 0")
    assert list(tmp_path.iterdir()) == []
    assert main(["export", "lenet5", "--format", "export", "--out", str(tmp_path / "m.pt2"), "--atol", "0.01"]) == 0
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt2"]


def _hubconf() -> Any:
    spec = importlib.util.spec_from_file_location("zoo_hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_torch_hub_loads_every_registered_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    model = torch.hub.load(str(REPO), "resnet18", source="local", num_classes=10)
    assert model.fc.out_features == 10 and type(model).__name__ == "ResNet"
    small = torch.hub.load(str(REPO), "lenet5", source="local", num_classes=3, in_chans=1)
    assert small(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    hub = _hubconf()
    # what torch.hub.list lists: the module's public callables
    entries = sorted(n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_"))
    assert entries == list_models(task="classification") and hub.dependencies == ["torch", "torchvision"]
    assert "resnet family" in hub.resnet20.__doc__  # torch.hub.help shows it
    with pytest.raises(ConfigError, match="has no torchvision weights"):
        hub.resnet20(pretrained=True)
