"""The paper recipes, ``experiment=<model>_<dataset>_paper`` (issue 25): each composes, passes the train
checks, carries its paper's numbers, and (slow) runs one batch of every stage on data in the real format."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from tests.data_fixtures import make_cifar, make_image_folder
from tests.helpers import CONFIG_DIR, make_cfg

PAPERS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*_paper.yaml"))

#: (model, data, optimizer, lr, momentum, weight decay, batch, epochs, scheduler and its settings) per recipe
EXPECTED: dict[str, tuple[Any, ...]] = {
    "alexnet_imagenet_paper": ("alexnet_original", "imagefolder", "momentum", 0.01, 0.9, 5e-4, 128, 90,
                               {"name": "plateau", "factor": 0.1}),
    "vgg16_imagenet_paper": ("vgg16", "imagefolder", "momentum", 0.01, 0.9, 5e-4, 256, 74, {"name": "plateau", "factor": 0.1}),
    "googlenet_imagenet_paper": ("googlenet", "imagefolder", "momentum", 0.01, 0.9, 2e-4, 32, 250,
                                 {"name": "step", "step_size": 8, "gamma": 0.96}),
    "resnet50_imagenet_paper": ("resnet50", "imagefolder", "momentum", 0.1, 0.9, 1e-4, 256, 90,
                                {"name": "step", "step_size": 30, "gamma": 0.1}),
    "resnet110_cifar10_paper": ("resnet110", "cifar10", "momentum", 0.1, 0.9, 1e-4, 128, 182,
                                {"name": "multistep", "milestones": [91, 136], "gamma": 0.1}),
    "wrn28_10_cifar10_paper": ("wrn28_10", "cifar10", "nesterov", 0.1, 0.9, 5e-4, 128, 200,
                               {"name": "multistep", "milestones": [60, 120, 160], "gamma": 0.2}),
    "densenet_bc100_k12_cifar10_paper": ("densenet_bc100_k12", "cifar10", "nesterov", 0.1, 0.9, 1e-4, 64, 300,
                                         {"name": "multistep", "milestones": [150, 225], "gamma": 0.1}),
    "fractalnet_cifar10_paper": ("fractalnet_cifar", "cifar10", "momentum", 0.02, 0.9, 0.0, 100, 400,
                                 {"name": "multistep", "milestones": [200, 300, 350, 375], "gamma": 0.1}),
}


def _cfg(tmp_path: Path, name: str, *overrides: str) -> dict[str, Any]:
    cfg = OmegaConf.to_container(make_cfg(tmp_path, f"experiment={name}", *overrides), resolve=True)
    assert isinstance(cfg, dict)
    return cfg


def test_every_paper_recipe_is_expected() -> None:
    assert PAPERS == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_recipe_composes_with_its_papers_numbers(tmp_path: Path, name: str) -> None:
    from zoo.models import create_model
    from zoo.pipeline import _check_train

    cfg = _cfg(tmp_path, name)
    _check_train(cfg)
    model, data, opt, lr, momentum, wd, batch, epochs, sched = EXPECTED[name]
    assert (cfg["model"]["name"], cfg["data"]["name"], cfg["optimizer"]["name"]) == (model, data, opt)
    assert (cfg["optimizer"]["lr"], cfg["optimizer"]["momentum"], cfg["optimizer"]["weight_decay"]) == (lr, momentum, wd)
    assert (cfg["data"]["batch_size"], cfg["trainer"]["max_epochs"]) == (batch, epochs)
    assert {k: cfg["scheduler"][k] for k in sched} == sched
    assert cfg["task"]["label_smoothing"] == 0.0  # none of these papers smoothed labels
    assert "paper" in cfg["tags"]
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    header = " ".join(line for line in text.splitlines()[1:4])
    assert text.startswith("# @package _global_") and re.search(r"[A-Z][a-z]+.* (19|20)\d\d", header)  # cites its source
    kwargs = {k: v for k, v in cfg["model"].items() if k not in ("name", "input_size")}
    kwargs["num_classes"] = kwargs["num_classes"] or 1000  # an image folder's: its class folders
    with torch.device("meta"):
        create_model(model, **kwargs)


def test_resnet110_milestones_are_the_papers_iterations(tmp_path: Path) -> None:
    """32k and 48k of 64k iterations at 45,000 / 128 = 352 steps per epoch."""
    from torch import nn

    from zoo.engine.optim import Schedule, build_optimizer, param_groups

    cfg = _cfg(tmp_path, "resnet110_cifar10_paper")
    steps = -(-45_000 // cfg["data"]["batch_size"])
    assert steps == 352 and round(64_000 / steps) == cfg["trainer"]["max_epochs"]
    opt = build_optimizer({"name": "sgd", "lr": 0.1}, param_groups(nn.Linear(1, 1), 0.0))
    schedule = Schedule(opt, cfg["scheduler"], steps, cfg["trainer"]["max_epochs"])
    lrs = []
    for _ in range(50_000):
        lrs.append(opt.param_groups[0]["lr"])
        schedule.step_batch()
    assert lrs[1000] == pytest.approx(0.1) and lrs[33_000] == pytest.approx(0.01) and lrs[49_000] == pytest.approx(0.001)
    assert [i for i in range(1, 50_000) if lrs[i] < lrs[i - 1] * 0.5] in ([32_032, 47_872], [32_032, 47_873])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_recipe_runs_one_batch_of_each_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from zoo.pipeline import train

    root = tmp_path / "data"
    if EXPECTED[name][1] == "cifar10":
        make_cifar(root, monkeypatch)
        overrides = [f"data.root={root}"]
    else:
        make_image_folder(root, {"train": 3, "val": 2}, ["a", "b"], size=(72, 64))
        overrides = [f"data.root={root}", "data.val_fraction=0.5", "data.on_device=false",
                     "data.num_workers=0"]
    result = train(make_cfg(tmp_path / "run", f"experiment={name}", *overrides, "data.batch_size=2",
                            "data.eval_batch_size=2", "trainer.fast_dev_run=true", "logger=none",
                            "callbacks.progress.mode=none"))
    assert result["history"] and torch.isfinite(torch.tensor(result["history"][-1]["train/loss"]))
