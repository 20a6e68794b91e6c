"""``model.act``: every family that takes it builds, runs forward and backward with every activation;
maxout widens the layers before it; the default is unchanged; bad names are one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models import MODELS, create_model
from zoo.models.base import count_parameters
from zoo.models.layers import ACTS, MAXOUT_FAMILIES, Maxout, make_act
from zoo.models.resnet import PreActBottleneck, PreActResNet

#: a small model of each family (and block type) that takes ``act``, and its input channels
SMALL_MODELS = {
    "lenet5": 1,
    "lenet5_classic": 1,
    "alexnet_small": 3,
    "zfnet_small": 3,
    "vgg16_small": 3,
    "vgg16_bn_small": 3,
    "nin_small": 3,
    "squeezenet1_1_small": 3,
    "resnet20": 3,
    "wrn16_4": 3,
    "resnext29_small": 3,
}
RESIDUAL = {"resnet20", "wrn16_4", "resnext29_small"}


def _forward_backward(model: nn.Module, in_chans: int) -> None:
    torch.manual_seed(0)
    model.train()
    y = model(torch.randn(2, in_chans, 32, 32))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.square().mean().backward()  # in-place activations leave autograd intact
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_every_family_runs_with_every_activation(name: str, act: str) -> None:
    if act == "maxout" and name in RESIDUAL:
        with pytest.raises(ConfigError, match="maxout"):
            create_model(name, num_classes=10, act=act)
        return
    _forward_backward(create_model(name, num_classes=10, in_chans=SMALL_MODELS[name], act=act), SMALL_MODELS[name])


@pytest.mark.parametrize("act", [a for a in ACTS if a != "maxout"])
def test_preact_bottleneck_blocks_take_act(act: str) -> None:
    model = PreActResNet(PreActBottleneck, (1, 1, 1), num_classes=10, act=act)  # the blocks of preact_resnet164
    _forward_backward(model, 3)


@pytest.mark.parametrize("name", ["lenet5", "vgg16_small", "squeezenet1_1_small", "resnet20"])
def test_relu_is_the_default_and_parameter_free_activations_keep_the_state_dict(name: str) -> None:
    torch.manual_seed(0)
    default = create_model(name).eval()
    torch.manual_seed(0)
    relu = create_model(name, act="relu").eval()
    x = torch.randn(2, 1 if name == "lenet5" else 3, 32, 32)
    assert torch.equal(default(x), relu(x))
    for act in ("leaky_relu", "elu", "gelu", "tanh", "sigmoid"):
        assert create_model(name, act=act).state_dict().keys() == default.state_dict().keys()


def test_prelu_is_per_channel_where_the_width_is_one() -> None:
    lenet = create_model("lenet5", act="prelu")
    assert [getattr(lenet, n).weight.numel() for n in ("act1", "act3", "act5", "act6")] == [6, 16, 120, 84]
    assert create_model("vgg16_small", act="prelu").features[1].weight.numel() == 8
    resnet = create_model("resnet20", act="prelu")
    assert resnet.relu.weight.numel() == 16  # the stem
    assert resnet.layer1[0].relu.weight.numel() == 1  # a block's one activation module serves every position
    assert torch.allclose(resnet.relu.weight, torch.full((16,), 0.25))  # He et al. 2015's initial slope


def test_maxout_takes_the_maximum_over_consecutive_pieces() -> None:
    x = torch.tensor([[1.0, 3.0, -2.0, -5.0]]).view(1, 4, 1, 1)
    assert Maxout(2)(x).flatten().tolist() == [3.0, -2.0]
    assert isinstance(make_act("maxout"), Maxout)


def test_maxout_doubles_the_layers_before_it() -> None:
    # C1 1->12, C3 6->32, C5 16->240 (5x5 kernels), F6 120->168, output 84->10: each pair of pieces gives one unit
    expected = (1 * 12 * 25 + 12) + (6 * 32 * 25 + 32) + (16 * 240 * 25 + 240) + (120 * 168 + 168) + (84 * 10 + 10)
    model = create_model("lenet5", act="maxout")
    assert count_parameters(model) == expected
    assert model.forward_features(torch.randn(1, 1, 32, 32)).shape == (1, 120, 1, 1)
    classic = create_model("lenet5_classic", act="maxout")  # the sparse table, repeated for both pieces
    assert classic.c3.out_channels == 32 and count_parameters(classic.c3) == 2 * 1_516
    vgg = create_model("vgg16_bn_small", act="maxout")
    assert vgg.features[0].out_channels == 16 and vgg.features[1].num_features == 16
    assert vgg.classifier[0].out_features == 512 and vgg.classifier[3].in_features == 256


def test_unknown_activation_is_one_line_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as e:
        create_model("vgg16_small", act="swish")
    message = str(e.value)
    assert "\n" not in message and "model.act='swish'" in message
    assert all(act in message for act in ACTS)


def test_residual_networks_refuse_maxout_naming_the_families_that_take_it() -> None:
    with pytest.raises(ConfigError) as e:
        create_model("wrn16_4", act="maxout")
    assert all(family in str(e.value) for family in MAXOUT_FAMILIES)


def test_a_model_without_act_refuses_it_as_an_unknown_option() -> None:
    for name in ("densenet_bc40_k12", "googlenet_small"):
        with pytest.raises(ConfigError, match=f"model {name!r}: .*unexpected keyword argument 'act'"):
            MODELS.build_from({"name": name, "act": "gelu"}, group="model", call=create_model)


def test_the_old_lenet_option_name_says_where_it_went() -> None:
    with pytest.raises(ConfigError, match="model.activation is now model.act"):
        create_model("lenet5", activation="tanh")
