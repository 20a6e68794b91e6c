"""The linear classifier: f(x) = Wx + b on the flattened pixels, its parameter count, and its class
templates drawn through the ``visualizations()`` protocol (a fake logger, and read back from TensorBoard)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import FAST, make_cfg
from zoo.errors import ConfigError
from zoo.models import create_model
from zoo.models.base import count_parameters
from zoo.tasks.classification import ClassificationTask


@pytest.mark.parametrize(("classes", "chans", "side"), [(10, 1, 8), (7, 3, 32)])
def test_parameters_and_scores_are_wx_plus_b(classes: int, chans: int, side: int) -> None:
    model = create_model("linear", num_classes=classes, in_chans=chans, image_size=side)
    d = chans * side * side
    assert count_parameters(model) == classes * (d + 1)  # 650 for 10 classes of 8x8 grey digits
    x = torch.randn(4, chans, side, side)
    w, b = model.fc.weight, model.fc.bias
    torch.testing.assert_close(model(x), x.reshape(4, d) @ w.T + b)
    assert model.forward_features(x).shape == (4, d) and model.num_features == d


def test_templates_are_the_rows_of_w() -> None:
    model = create_model("linear", num_classes=3, in_chans=2, image_size=4)
    templates = model.visualizations()["templates"]
    assert templates.shape == (3, 2, 4, 4)
    torch.testing.assert_close(templates[1].flatten(), model.fc.weight[1])
    model.reset_classifier(0)  # a feature extractor has no templates
    assert model.visualizations() == {}


def test_other_image_sizes_are_one_line() -> None:
    model = create_model("linear", in_chans=1)
    with pytest.raises(ConfigError, match=r"built for 1x8x8 images .*, got 1x32x32; set data.image_size=8"):
        model(torch.randn(2, 1, 32, 32))


class Recorder:
    """A logger that keeps what it is given."""

    def __init__(self) -> None:
        self.grids: list[tuple[str, torch.Tensor, int, int]] = []

    def __bool__(self) -> bool:
        return True

    def log_image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        self.grids.append((tag, images, step, nrow))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_the_task_logs_the_templates_min_max_scaled() -> None:
    model = create_model("linear", num_classes=10, in_chans=1)
    task = ClassificationTask(model, 10)
    recorder = Recorder()
    task.on_validation_end(recorder, 7)
    [(tag, images, step, nrow)] = recorder.grids
    assert (tag, step, nrow, images.shape) == ("val/templates", 7, 10, (10, 1, 8, 8))
    w = model.fc.weight.detach()
    expected = (w - w.min(1, keepdim=True).values) / (w.max(1, keepdim=True).values - w.min(1, keepdim=True).values)
    torch.testing.assert_close(images.flatten(1), expected)  # each template on its own [0, 1] scale


def test_templates_in_tensorboard(tmp_path: Path) -> None:
    """One grid of the ten 8x8 templates (enlarged 4x to 32 px, 2-pixel gaps) per validation, equal to the
    final weights of the run, min-max scaled, as the PNG TensorBoard stores."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zoo.engine.checkpoint import load_checkpoint
    from zoo.pipeline import train

    result = train(make_cfg(tmp_path, *FAST, "model=linear", "augmentation=none", "logger=tensorboard", "test=false"))
    assert result["history"][-1]["val/acc"] > 0.5  # two epochs (one-cycle warm-up) of f = Wx + b; chance is 0.1
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    logged = events.Images("val/templates")
    assert len(logged) == 2  # one per epoch
    last = logged[-1]
    assert (last.width, last.height) == (10 * 34 + 2, 34 + 2)
    grid = np.asarray(Image.open(io.BytesIO(last.encoded_image_string)).convert("L"), dtype=np.float64) / 255
    w = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]["fc.weight"].double()
    scaled = ((w - w.min(1, keepdim=True).values) / (w.max(1, keepdim=True).values - w.min(1, keepdim=True).values)).view(10, 8, 8)
    for c in range(10):
        block = grid[2:34, 2 + 34 * c:34 + 34 * c][::4, ::4]  # the template of class c, one pixel per 4x4 block
        assert np.abs(block - scaled[c].numpy()).max() <= 1 / 255 + 1e-6  # uint8 quantisation


@pytest.mark.slow
def test_linear_digits_reaches_93_percent(tmp_path: Path) -> None:
    from zoo.pipeline import train

    assert train(make_cfg(tmp_path, "experiment=linear_digits", "logger=none"))["test"]["acc"] >= 0.93
