from __future__ import annotations

import pytest
import torch

from zoo.models import create_model
from zoo.models.base import count_parameters
from zoo.models.lenet import LECUN_C3_TABLE


def test_lenet5_parameter_count() -> None:
    # C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850
    assert count_parameters(create_model("lenet5")) == 61_706


def test_lenet5_classic_c3_table_matches_paper() -> None:
    model = create_model("lenet5_classic")
    # the paper: C3 has 1,516 trainable parameters, 60 of 96 map connections
    assert model.c3.num_connections() == 1_516
    assert sum(len(t) for t in LECUN_C3_TABLE) == 60


def test_lenet5_classic_masked_weights_get_no_gradient() -> None:
    model = create_model("lenet5_classic")
    model(torch.randn(4, 1, 32, 32)).sum().backward()
    grad = model.c3.weight.grad
    assert grad is not None
    assert torch.all(grad[model.c3.mask.expand_as(grad) == 0] == 0)


def test_lenet5_spatial_sizes() -> None:
    model = create_model("lenet5")
    x = torch.randn(1, 1, 32, 32)
    c1 = model.c1(x)
    assert c1.shape[-1] == 28
    s2 = model.s2(c1)
    assert s2.shape[-1] == 14
    c3 = model.c3(s2)
    assert c3.shape[-1] == 10
    assert model.c5(model.s4(c3)).shape[1:] == (120, 1, 1)


def test_lenet5_rejects_wrong_input_size() -> None:
    with pytest.raises(ValueError, match="32x32"):
        create_model("lenet5")(torch.randn(1, 1, 28, 28))
