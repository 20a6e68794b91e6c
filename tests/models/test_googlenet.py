"""GoogLeNet: parameter counts, torchvision compatibility, auxiliary classifiers only in training."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.models import create_model
from zoo.models.base import count_parameters
from zoo.models.googlenet import INCEPTIONS, Inception


def test_parameter_counts() -> None:
    with torch.device("meta"):
        assert count_parameters(create_model("googlenet", aux_logits=False)) == 6_624_904
        assert count_parameters(create_model("googlenet")) == 13_004_888  # with both auxiliary heads


@pytest.mark.parametrize("aux_logits", [False, True])
def test_loads_torchvision_weights(aux_logits: bool) -> None:
    # torchvision's transform_input re-normalises ImageNet-normalised inputs; zoo leaves that to the
    # data pipeline, so outputs match with transform_input=False
    reference = torchvision.models.googlenet(
        weights=None, aux_logits=aux_logits, init_weights=True, transform_input=False
    ).eval()
    model = create_model("googlenet", aux_logits=aux_logits).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    if aux_logits:
        return  # same keys; the eval outputs below do not involve the auxiliary heads
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_inception_outputs() -> None:
    # Table 1 of the paper: output channels of every inception module
    expected = {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528, "4e": 832, "5a": 832, "5b": 1024}
    with torch.device("meta"):
        model = create_model("googlenet")
    assert {name: getattr(model, f"inception{name}").out_channels for name in INCEPTIONS} == expected
    assert model.num_features == 1024


@pytest.mark.parametrize("name", ["googlenet", "googlenet_small"])
def test_aux_heads_only_in_training(name: str) -> None:
    size = 96 if name == "googlenet" else 32  # any side >= 96 gives googlenet's aux heads 6x6 maps
    model = create_model(name, num_classes=5, in_chans=1)
    x = torch.randn(2, 1, size, size)
    model.train()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (2, 5) for o in out)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)


def test_without_aux_heads() -> None:
    model = create_model("googlenet_small", num_classes=5, aux_logits=False).train()
    assert model.aux1 is None and model.aux2 is None
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_reset_classifier_resets_aux_heads() -> None:
    model = create_model("googlenet_small", num_classes=10)
    model.reset_classifier(3)
    assert model.fc.out_features == 3
    assert model.aux1.fc2.out_features == 3 and model.aux2.fc2.out_features == 3
    assert all(o.shape == (2, 3) for o in model.train()(torch.randn(2, 3, 32, 32)))


def test_branch3_kernel() -> None:
    block = Inception(192, 64, 96, 128, 16, 32, 32, branch3_kernel=5)
    assert block.branch3[1].conv.kernel_size == (5, 5)
    assert Inception(192, 64, 96, 128, 16, 32, 32).branch3[1].conv.kernel_size == (3, 3)  # torchvision
    assert block(torch.randn(1, 192, 8, 8)).shape == (1, 256, 8, 8)


def test_small_variant() -> None:
    model = create_model("googlenet_small", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 32, 32))
    assert features.shape == (2, 256, 4, 4)  # a quarter of 1024 maps; 32 -> 16 -> 8 -> 4
    assert isinstance(model.maxpool2, nn.Identity)
    assert count_parameters(create_model("googlenet_small", num_classes=10, aux_logits=False)) < 500_000
