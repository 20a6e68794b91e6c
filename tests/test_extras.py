"""Optional extras (issue 25): the base install covers classification; a feature without its extra is one
line naming it (zoo/extras.py, pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO, make_cfg
from zoo.errors import ConfigError
from zoo.extras import EXTRAS, available, require


def _extras() -> dict[str, list[str]]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def test_all_and_dev_hold_every_extra() -> None:
    extras = _extras()
    features = {k: v for k, v in extras.items() if k not in ("all", "dev", "docs")}
    every = {req for reqs in features.values() for req in reqs}
    assert set(extras["all"]) == every
    assert set(extras["dev"]) == every | set(extras["docs"]) | {"pytest>=8", "pydensecrf2>=1.1"}  # + the CRF reference
    assert set(EXTRAS) <= set(features)  # every extra a feature asks for is one pip knows
    base = " ".join(tomllib.load(open(REPO / "pyproject.toml", "rb"))["project"]["dependencies"])
    assert "pycocotools" not in base and "nltk" not in base and "captum" not in base


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert available("torch") and not available("no_such_module_zoo")
    require("detection", "task=detection")  # installed here
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if it were not installed
    with pytest.raises(ConfigError) as e:
        require("detection", "task=detection")
    assert str(e.value) == ("task=detection needs pycocotools, which is not installed: pip install -e '.[detection]' "
                            "(or pip install pycocotools)")


@pytest.mark.parametrize(("experiment", "module", "extra"), [("fasterrcnn_digit_scenes", "pycocotools", "detection"),
                                                             ("captioner_digit_scenes", "nltk", "captioning")])
def test_a_task_without_its_extra_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            experiment: str, module: str, extra: str) -> None:
    from zoo.pipeline import train

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=rf"needs {module}, which is not installed: pip install -e '\.\[{extra}\]'"):
        train(make_cfg(tmp_path / "run", f"experiment={experiment}", "logger=none"))
    assert not (tmp_path / "run").exists()


def test_classification_runs_without_the_optional_libraries(tmp_path: Path) -> None:
    """A LeNet-5 digits run (one batch of each stage) with every optional library blocked, as on a base install."""
    blocked = sorted({m for mods in EXTRAS.values() for m in mods})
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "from tests.helpers import make_cfg\nfrom zoo.pipeline import train\n"
            f"r = train(make_cfg({str(tmp_path / 'run')!r}, 'trainer.fast_dev_run=true', 'callbacks.progress.mode=none'))\n"
            "print('ok', len(r['history']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok 1")


def test_explain_without_captum_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.__main__ import main

    monkeypatch.setitem(sys.modules, "captum", None)
    png = tmp_path / "a.png"
    png.write_bytes(b"")
    assert main(["explain", str(tmp_path / "none.pt"), str(png), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: explain needs captum, which is not installed: pip install -e '.[viz]' (or pip install captum)"]


def test_a_logger_without_its_extra_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.pipeline import train

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r"logger=mlflow needs mlflow, which is not installed: pip install -e '\.\[mlflow\]'"):
        train(make_cfg(tmp_path / "run", "logger=mlflow"))
    assert not (tmp_path / "run").exists()
