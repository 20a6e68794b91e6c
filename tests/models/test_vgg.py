"""VGG-16/19 with and without batch norm: parameter counts, torchvision compatibility, small variants."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.models import create_model
from zoo.models.base import count_parameters

#: at 1000 classes; torchvision's counts
PARAM_COUNTS = {
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count_and_torchvision_layout(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
        reference = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(model) == PARAM_COUNTS[name]
    model.load_state_dict(reference.state_dict(), strict=True)  # names and shapes only, on meta


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("vgg16", 64),  # the adaptive 7x7 pool takes any side; 64 keeps this cheap
        ("vgg16_bn", 64),
        pytest.param("vgg19", 224, marks=pytest.mark.slow),
        pytest.param("vgg19_bn", 224, marks=pytest.mark.slow),
    ],
)
def test_identical_outputs_with_torchvision_weights(name: str, size: int) -> None:
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = create_model(name).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


@pytest.mark.parametrize(("name", "convs"), [("vgg16", 13), ("vgg19", 16)])
def test_depth(name: str, convs: int) -> None:
    for variant in (name, f"{name}_bn", f"{name}_small", f"{name}_bn_small"):
        with torch.device("meta"):
            model = create_model(variant)
        layers = list(model.modules())
        assert sum(isinstance(m, nn.Conv2d) for m in layers) == convs
        assert sum(isinstance(m, nn.Linear) for m in layers) == 3
        assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == (convs if "_bn" in variant else 0)


@pytest.mark.parametrize("name", ["vgg16_small", "vgg16_bn_small", "vgg19_small", "vgg19_bn_small"])
def test_small_variants(name: str) -> None:
    model = create_model(name, num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape[1:] == (64, 2, 2)  # four pools: 32 -> 2
        assert model(x).shape == (2, 10)
    assert model.num_features == 256
    assert count_parameters(model) < 500_000
