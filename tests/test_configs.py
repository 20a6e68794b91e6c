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


MODEL_DIR = CONFIG_DIR / "model"
MODEL_CONFIGS = sorted(p.stem for p in MODEL_DIR.glob("*.yaml") if not p.stem.startswith("_"))
#: model yamls that set input_size themselves, deliberately other than the registry's (none today)
EXPLICIT_INPUT_SIZE: dict[str, int] = {}

GROUPS = ("model", "data", "task", "optimizer", "scheduler", "regularizer", "augmentation", "transfer")
COMPONENTS = [(group, p.stem) for group in GROUPS
              for p in sorted((CONFIG_DIR / group).glob("*.yaml")) if not p.stem.startswith("_")]  # _*.yaml: shared keys


@pytest.mark.parametrize(("group", "choice"), COMPONENTS, ids=[f"{g}={c}" for g, c in COMPONENTS])
def test_every_component_config_passes_the_train_checks(tmp_path: Path, group: str, choice: str) -> None:
    from zoo.pipeline import _check_train

    cfg = OmegaConf.to_container(make_cfg(tmp_path, f"{group}={choice}"), resolve=True)
    assert isinstance(cfg, dict) and cfg[group].get("name", choice) == choice  # a named option names its own file
    _check_train(cfg)  # value types against the yaml files and (a model) the builder's annotations
    if group == "model":  # the registry's, through configs/model/_base.yaml, unless the yaml sets its own
        from zoo.models import model_info

        assert cfg["model"]["input_size"] == EXPLICIT_INPUT_SIZE.get(choice, model_info(choice)["input_size"])


def test_callback_options_compose_as_a_list(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "callbacks=[default,profiler]")
    assert list(cfg.callbacks) == ["checkpoint", "early_stopping", "lr_monitor", "nonfinite", "signals", "progress", "profiler"]
    assert dict(make_cfg(tmp_path, "callbacks=none").callbacks) == {}


def test_readme_callback_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.engine.checkpoint import load_checkpoint
    from zoo.pipeline import train

    code = re.search(r"```python\n(from zoo.engine.callbacks import Callback\n.*?)```", (REPO / "docs" / "training.md").read_text(), re.S)
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


# --- model configs: the shared keys of configs/model/_base.yaml (and _classes.yaml), input_size from the registry


def _own_keys(stem: str) -> tuple[list[str], dict[str, object]]:
    """A model yaml's same-group defaults and its own keys, unresolved (entries for other groups, as
    knn's ``override /task@_global_.task: knn``, are not model keys)."""
    node = OmegaConf.to_container(OmegaConf.load(MODEL_DIR / f"{stem}.yaml"), resolve=False)
    assert isinstance(node, dict)
    defaults = [d for d in node.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    return defaults, node


def _shared(stem: str) -> dict[str, object]:
    """The keys (unresolved) a model yaml gets from the shared ``_*.yaml`` files, through its defaults
    (directly or through another model's yaml, as captioner_resnet20_gru through captioner_resnet20_lstm)."""
    keys: dict[str, object] = {}
    for parent in _own_keys(stem)[0]:
        keys.update(_shared(parent))
        if parent.startswith("_"):
            keys.update(_own_keys(parent)[1])
    return keys


@pytest.mark.parametrize("stem", MODEL_CONFIGS)
def test_model_yaml_lists_only_its_own_options(stem: str) -> None:
    _, own = _own_keys(stem)
    shared = _shared(stem)
    assert {"name", "input_size", "in_chans"} <= set(shared), f"{stem}.yaml must include _base (or _classes) in its defaults"
    assert own.get("name") == stem
    repeated = sorted(k for k, v in own.items() if k in shared and v == shared[k])
    assert not repeated, f"{stem}.yaml repeats {repeated} of configs/model/_*.yaml: drop them"
    assert ("input_size" in own) == (stem in EXPLICIT_INPUT_SIZE), "input_size comes from the registry unless listed"


def test_model_input_size_is_overridable(tmp_path: Path) -> None:
    """(That every model's is the registry's: test_every_component_config_passes_the_train_checks.)"""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for stem, data in (("resnet20", "digits"), ("resnet18", "cifar10"), ("vae_mlp", "digits")):
            cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", f"model={stem}", f"data={data}", "model.input_size=48"])
            assert (cfg.model.input_size, cfg.data.image_size) == (48, 48)
        assert compose("train", overrides=[f"paths.output_dir={tmp_path}", "model=dcgan"]).model.image_size == 64
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "experiment=vae_digits"])  # sets input_size: 8
        assert (cfg.model.input_size, cfg.model.image_size, cfg.data.image_size) == (8, 8, 8)
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "model=resnet18", "data=cifar10"])
        assert (cfg.model.input_size, cfg.data.image_size, cfg.model.num_classes, cfg.model.in_chans) == (224, 224, 10, 3)
        assert "num_classes" not in compose("train", overrides=[f"paths.output_dir={tmp_path}", "model=vae_mlp"]).model
