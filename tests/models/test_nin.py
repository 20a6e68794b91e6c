"""Network in Network: the CIFAR-10 configuration, mlpconv blocks and the class-map head."""

from __future__ import annotations

import torch
from torch import nn

from zoo.models import create_model
from zoo.models.base import count_parameters


def test_parameter_count() -> None:
    model = create_model("nin")
    assert model.num_classes == 10  # the paper's CIFAR-10 configuration is the default
    assert count_parameters(model) == 966_986


def test_mlpconv_widths() -> None:
    model = create_model("nin")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [192, 160, 96, 192, 192, 192, 192, 192, 10]
    assert [c.kernel_size[0] for c in convs] == [5, 1, 1, 5, 1, 1, 3, 1, 1]
    assert model.get_classifier() is convs[-1]
    pools = [type(m) for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert pools == [nn.MaxPool2d, nn.AvgPool2d]
    assert sum(m.p == 0.5 for m in model.modules() if isinstance(m, nn.Dropout)) == 2


def test_class_map_head() -> None:
    model = create_model("nin").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 192, 8, 8)  # 32 -> 16 -> 8
        class_maps = model.get_classifier()(features)
        assert class_maps.shape == (2, 10, 8, 8)
        logits = model(x)
        assert torch.allclose(logits, class_maps.mean((2, 3)), atol=1e-5)
        pooled = model.forward_head(features, pre_logits=True)
        assert torch.allclose(pooled, features.mean((2, 3)), atol=1e-6)
        # linear class maps: pooling commutes with the 1x1 convolution
        assert torch.allclose(model.get_classifier()(pooled[..., None, None]).flatten(1), logits, atol=1e-5)


def test_reset_classifier_keeps_a_class_map_convolution() -> None:
    model = create_model("nin")
    model.reset_classifier(4)
    head = model.get_classifier()
    assert isinstance(head, nn.Conv2d) and (head.in_channels, head.out_channels) == (192, 4)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 192)


def test_final_relu_option() -> None:
    model = create_model("nin", final_relu=True).eval()
    with torch.no_grad():
        assert (model(torch.randn(4, 3, 32, 32)) >= 0).all()


def test_small_variant() -> None:
    model = create_model("nin_small", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 32, 32))
    assert features.shape == (2, 96, 4, 4)  # half widths; 32 -> 16 -> 8 -> 4
    assert model.num_features == 96
    assert count_parameters(model) == 241_386  # 1 input channel, 10 classes
