"""DenseNet: parameter counts, torchvision state_dict compatibility, CIFAR DenseNet-BC layout,
memory-efficient mode."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.models.test_resnet import assert_torchvision_layout, assert_torchvision_outputs
from zoo.models import create_model, list_models
from zoo.models.base import count_parameters
from zoo.models.densenet import DenseLayer, DenseNet, Transition

#: ImageNet models at 1000 classes (torchvision's counts), CIFAR models at 10
PARAM_COUNTS = {
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet161": 28_681_000,
    "densenet_bc100_k12": 769_162,
    "densenet_bc40_k12": 176_122,
}
TORCHVISION = ["densenet121"]
TORCHVISION_LARGE = ["densenet169", "densenet201", "densenet161"]


def test_every_entry_has_a_count() -> None:
    assert sorted(PARAM_COUNTS) == sorted(list_models(family="densenet"))


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert count_parameters(model) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", TORCHVISION + TORCHVISION_LARGE)
def test_torchvision_names_and_shapes(name: str) -> None:
    assert "features.denseblock1.denselayer1.norm1.weight" in assert_torchvision_layout(name)


@pytest.mark.parametrize("name", TORCHVISION + [pytest.param(n, marks=pytest.mark.slow) for n in TORCHVISION_LARGE])
def test_torchvision_weights_give_same_outputs(name: str) -> None:
    assert_torchvision_outputs(name)


def test_cifar_densenet_bc_layout() -> None:
    model = create_model("densenet_bc100_k12")
    layers = [m for m in model.modules() if isinstance(m, DenseLayer)]
    transitions = [m for m in model.modules() if isinstance(m, Transition)]
    assert len(layers) == 48 and len(transitions) == 2  # 3 x 16 bottleneck layers: 96 + stem + 2 + fc = 100
    assert model.features.conv0.kernel_size == (3, 3) and model.features.conv0.out_channels == 24
    assert not hasattr(model.features, "pool0")
    # 24 + 16 * 12 = 216 -> 108; 108 + 192 = 300 -> 150; 150 + 192 = 342
    assert [t.conv.out_channels for t in transitions] == [108, 150]
    assert model.num_features == 342
    assert all(layer.conv1.out_channels == 48 for layer in layers)  # bottleneck width 4k


def test_memory_efficient_matches() -> None:
    kwargs: dict[str, Any] = {"growth_rate": 6, "block_config": (3, 3), "num_init_features": 12, "stem": "cifar"}
    plain = DenseNet(**kwargs, num_classes=5, in_chans=1)
    efficient = DenseNet(**kwargs, num_classes=5, in_chans=1, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 16, 16)
    out_plain, out_efficient = plain(x), efficient(x)
    torch.testing.assert_close(out_efficient, out_plain)
    out_plain.sum().backward()
    out_efficient.sum().backward()
    torch.testing.assert_close(efficient.features.conv0.weight.grad, plain.features.conv0.weight.grad)


def test_dropout_only_in_training() -> None:
    model = create_model("densenet_bc40_k12", drop_rate=0.2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        from zoo.models.densenet import _densenet_bc_cifar

        _densenet_bc_cifar(41, 12, 10, 3)
    with pytest.raises(ValueError, match="compression"):
        create_model("densenet_bc40_k12", compression=0.0)
    with pytest.raises(ValueError, match="stem"):
        create_model("densenet_bc40_k12", stem="tiny")
