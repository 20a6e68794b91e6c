"""One run builder for train and evaluate; the task owns what only it knows (issue 20)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import REPO
from zoo.errors import ConfigError
from zoo.tasks import TASKS
from zoo.tasks.classification import ClassificationTask


def test_pipeline_names_no_task() -> None:
    source = (REPO / "zoo" / "pipeline.py").read_text()
    for name in [*TASKS, "confusion", "TTAModel"]:
        assert not re.search(rf"\b{name}\b", source), name


def test_a_task_that_cannot_average_views_refuses_tta() -> None:
    from zoo.models import create_model

    task = TASKS.build("vae", model=create_model("vae_mlp"))
    assert task.evaluation_views({"name": "none"}, 32) == (None, None)
    with pytest.raises(ConfigError, match="tta=flip averages class scores over views; a VAETask cannot use it"):
        task.evaluation_views({"name": "flip"}, 32)


def test_classification_views_and_report(tmp_path: Path) -> None:
    task = ClassificationTask(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), 3)
    single, averaged = task.evaluation_views({"name": "flip"}, 8)
    x = torch.randn(2, 3, 8, 8)
    with task.evaluating_with(averaged):
        assert task.model is averaged and averaged(x).shape == (2, 3)
    assert not isinstance(task.model, type(averaged))  # restored
    task.set_class_names(["a", "b", "c"])
    task.reset_metrics()
    task.validation_step((x, torch.tensor([0, 2])))
    report = task.report(None, "test", 0)
    assert torch.tensor(report["confusion_matrix"]).sum() == 2


def test_distribute_wraps_the_model_and_restores_it() -> None:
    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    task = ClassificationTask(nn.Linear(4, 2), 2)
    inner = task.model
    task.distribute(Wrapper)
    task.distribute(Wrapper)  # rebuilt on the unwrapped model (gradual unfreezing), not nested
    assert isinstance(task.model, Wrapper) and task.model.module is inner
    assert sorted(task.state_dict()) == ["model.module.bias", "model.module.weight"]  # no second copy of the weights
    task.undistribute()
    assert task.model is inner
