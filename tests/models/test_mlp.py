"""The MLP: hidden blocks Linear -> [BatchNorm1d] -> activation -> [Dropout], parameter counts by formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import FAST, make_cfg
from zoo.errors import ConfigError
from zoo.models import create_model
from zoo.models.base import count_parameters


def test_parameter_counts_by_formula() -> None:
    # D = 64 pixels; (64 + 1) 256 + (256 + 1) 128 + (128 + 1) 10 = 16,640 + 32,896 + 1,290
    assert count_parameters(create_model("mlp", num_classes=10, in_chans=1)) == 50_826
    # batch norm: no linear bias, a scale and a shift per unit: (64 + 2) 256 + (256 + 2) 128 + 1,290
    assert count_parameters(create_model("mlp", num_classes=10, in_chans=1, batch_norm=True)) == 51_210
    # 3 x 16 x 16 = 768 inputs, one hidden layer of 100, 5 classes: 769 * 100 + 101 * 5
    assert count_parameters(create_model("mlp", num_classes=5, in_chans=3, image_size=16, hidden=[100])) == 77_405
    # no hidden layer: the linear classifier
    assert count_parameters(create_model("mlp", hidden=[])) == count_parameters(create_model("linear")) == 650


def test_block_layout_and_forward() -> None:
    model = create_model("mlp", num_classes=4, in_chans=1, hidden=[32, 16], act="tanh", drop_rate=0.25, batch_norm=True).eval()
    assert [[type(m).__name__ for m in block] for block in model.features] == [["Linear", "BatchNorm1d", "Tanh", "Dropout"]] * 2
    assert model.features[0][3].p == 0.25 and model.num_features == 16
    x = torch.randn(5, 1, 8, 8)
    h = x.flatten(1)
    for linear, norm, _, _ in model.features:
        h = torch.tanh(norm(linear(h)))
    torch.testing.assert_close(model(x), model.fc(h))
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (5, 16)


@pytest.mark.parametrize(("name", "layer"), [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid),
                                             ("leaky_relu", nn.LeakyReLU), ("gelu", nn.GELU), ("elu", nn.ELU)])
def test_activations(name: str, layer: type[nn.Module]) -> None:
    block = create_model("mlp", hidden=[8], act=name).features[0]
    assert [type(m) for m in block] == [nn.Linear, layer]
    if name == "leaky_relu":
        assert block[1].negative_slope == 0.01  # the notes' max(0.01x, x)


def test_maxout_and_prelu_units() -> None:
    maxout = create_model("mlp", hidden=[8], act="maxout").features[0]
    assert maxout[0].out_features == 16 and maxout(torch.randn(3, 64)).shape == (3, 8)  # two pieces per unit
    assert create_model("mlp", hidden=[8], act="prelu").features[0][1].weight.shape == (8,)  # a slope per unit


@pytest.mark.parametrize(("options", "message"), [({"act": "swish"}, "unknown model.act='swish'; choose one of relu"),
                                                  ({"hidden": [64, 0]}, "model.hidden must list positive widths"),
                                                  ({"drop_rate": 1.0}, r"model.drop_rate must be in \[0, 1\)")])
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("mlp", **options)  # type: ignore[arg-type]


def test_mlp_learns_through_the_configs(tmp_path: Path) -> None:
    from zoo.pipeline import train

    result = train(make_cfg(tmp_path, *FAST, "model=mlp", "model.hidden=[64]", "model.batch_norm=true", "trainer.max_epochs=3"))
    assert result["params"] == (64 + 2) * 64 + (64 + 1) * 10
    assert result["test"]["acc"] > 0.85


@pytest.mark.slow
def test_mlp_digits_reaches_96_percent(tmp_path: Path) -> None:
    from zoo.pipeline import train

    assert train(make_cfg(tmp_path, "experiment=mlp_digits", "logger=none"))["test"]["acc"] >= 0.96
