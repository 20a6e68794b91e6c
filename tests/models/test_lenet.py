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
    # the paper: C3 has 1,516 trainable parameters (60 of the 96 map pairs); the whole net with a
    # linear output layer: 156 + 1,516 + 48,120 + 10,164 + 850
    assert count_parameters(model.c3) == 1_516
    assert sum(len(t) for t in LECUN_C3_TABLE) == 60
    assert count_parameters(model) == 60_806


def test_lenet5_classic_c3_maps_see_only_their_table() -> None:
    c3 = create_model("lenet5_classic").c3
    x = torch.randn(1, 6, 14, 14, requires_grad=True)
    for out_map, in_maps in enumerate(LECUN_C3_TABLE):
        (grad,) = torch.autograd.grad(c3(x)[0, out_map].sum(), x)
        seen = {i for i in range(6) if grad[0, i].abs().sum() > 0}
        assert seen == set(in_maps), out_map


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
