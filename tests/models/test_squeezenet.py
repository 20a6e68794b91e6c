"""SqueezeNet 1.0 / 1.1: parameter counts, torchvision compatibility, fire modules, class-map head."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.models import create_model
from zoo.models.base import count_parameters
from zoo.models.squeezenet import Fire

PARAM_COUNTS = {"squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496}  # torchvision's, at 1000 classes


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_torchvision_weights_and_parameter_count(name: str) -> None:
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = create_model(name).eval()
    assert count_parameters(model) == PARAM_COUNTS[name]
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


def test_fire_module() -> None:
    fire = Fire(96, 16, 64, 64)
    assert fire(torch.randn(1, 96, 13, 13)).shape == (1, 128, 13, 13)
    assert count_parameters(fire) == 96 * 16 + 16 + 16 * 64 + 64 + 16 * 64 * 9 + 64


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_class_map_head(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    assert model.num_features == 512
    assert isinstance(model.get_classifier(), nn.Conv2d)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, 512, 13, 13)
        assert torch.allclose(model.forward_head(features, pre_logits=True), features.mean((2, 3)), atol=1e-6)
        assert (model(x) >= 0).all()  # torchvision's ReLU on the class maps
    model.reset_classifier(3)
    head = model.get_classifier()
    assert isinstance(head, nn.Conv2d) and (head.in_channels, head.out_channels) == (512, 3)


@pytest.mark.parametrize("name", ["squeezenet1_0_small", "squeezenet1_1_small"])
def test_small_variants(name: str) -> None:
    model = create_model(name, num_classes=10, in_chans=1).eval()
    stem = model.features[0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((3, 3), (2, 2), (1, 1))
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (4, 512, 2, 2)  # 16 -> 8 -> 4 -> 2
        assert (model(x) < 0).any()  # linear class maps: no ReLU on the scores
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
