"""Every config composes, and its trainer, callbacks and logger settings are ones the engine knows
(lightning-hydra-template's "every config composes" test, plus the strict engine keys)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONFIG_DIR, FAST, REPO, make_cfg
from zoo.engine.loggers import build_loggers

CHOICES = [(group, p.stem) for group in ("experiment", "debug", "callbacks", "logger", "trainer")
           for p in sorted((CONFIG_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "choice"), CHOICES, ids=[f"{g}={c}" for g, c in CHOICES])
def test_every_config_builds_its_engine_settings(tmp_path: Path, group: str, choice: str) -> None:
    from zoo.pipeline import _check_train

    cfg = OmegaConf.to_container(make_cfg(tmp_path, f"{group}={choice}"), resolve=True)
    assert isinstance(cfg, dict)
    _check_train(cfg)  # value types against the yaml files, the engine's settings
    build_loggers(cfg.get("logger"), tmp_path).close()


COMPONENTS = [(group, p.stem) for group in ("model", "data", "task", "optimizer", "scheduler", "regularizer", "augmentation", "transfer")
              for p in sorted((CONFIG_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "choice"), COMPONENTS, ids=[f"{g}={c}" for g, c in COMPONENTS])
def test_every_component_config_passes_the_train_checks(tmp_path: Path, group: str, choice: str) -> None:
    from zoo.pipeline import _check_train

    cfg = OmegaConf.to_container(make_cfg(tmp_path, f"{group}={choice}"), resolve=True)
    assert isinstance(cfg, dict) and cfg[group].get("name", choice) == choice  # a named option names its own file
    _check_train(cfg)  # value types against the yaml files and (a model) the builder's annotations


def test_callback_options_compose_as_a_list(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "callbacks=[default,profiler]")
    assert list(cfg.callbacks) == ["checkpoint", "early_stopping", "lr_monitor", "nonfinite", "signals", "progress", "profiler"]
    assert dict(make_cfg(tmp_path, "callbacks=none").callbacks) == {}


def test_readme_callback_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.engine.checkpoint import load_checkpoint
    from zoo.pipeline import train

    code = re.search(r"```python\n(from zoo.engine.callbacks import Callback\n.*?)```", (REPO / "README.md").read_text(), re.S)
    assert code is not None
    (tmp_path / "mymodule.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mymodule", None)
    train(make_cfg(tmp_path / "run", *FAST, "test=false", "trainer.max_epochs=2", "+callbacks.best._target_=mymodule.PrintBestLoss",
                   "+callbacks.best.every=2"))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(printed) == 1 and printed[0].startswith("epoch 2: best train loss ")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["callbacks"]["best"]["best"]
    assert f"{best:.4f}" in printed[0]
