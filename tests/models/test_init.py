"""``model.init``: each scheme gives the standard deviation (or orthogonality) its formula says, on
every convolution and linear layer; ``default`` keeps the model's own; pretrained weights win."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models import create_model
from zoo.models.layers import INITS, LEAKY_SLOPE, WEIGHT_LAYERS, initialize

MIN_ELEMENTS = 4096  # enough weights for the empirical std to be within ~1% (one sigma) of the formula
TOL = 0.05


def _fans(m: nn.Module) -> tuple[int, int]:
    """torch's convention: fan_in = weight.size(1) * receptive field, fan_out = weight.size(0) * receptive field."""
    receptive = math.prod(m.weight.shape[2:])
    return m.weight.shape[1] * receptive, m.weight.shape[0] * receptive


def _large_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS) and m.weight.numel() >= MIN_ELEMENTS]
    assert len(layers) >= 3
    return layers


def _torch_default_layers() -> nn.Module:
    """Layers left at torch's own init (std 1/sqrt(3 fan_in)), which no scheme here gives."""
    return nn.Sequential(
        nn.Conv2d(64, 128, 3), nn.BatchNorm2d(128), nn.Linear(1024, 512), nn.ConvTranspose2d(96, 32, 4)
    )


def _build(model: str, init: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    if model == "torch_default_layers":
        return initialize(_torch_default_layers(), init, **kwargs)  # type: ignore[arg-type]
    return create_model(model, init=init, **{("init_std" if k == "std" else k): v for k, v in kwargs.items()})


def _expected_std(init: str, m: nn.Module, gain_slope: float = 0.0) -> float:
    fan_in, fan_out = _fans(m)
    if init.startswith("xavier"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init.startswith("kaiming"):
        return math.sqrt(2.0 / ((1 + gain_slope**2) * fan_in))
    assert init == "normal"
    return 0.01


@pytest.mark.parametrize("model_name", ["vgg16_bn_small", "torch_default_layers"])
@pytest.mark.parametrize("init", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"])
def test_weight_std_matches_the_formula(init: str, model_name: str) -> None:
    model = _build(model_name, init, std=0.01)
    for m in _large_layers(model):
        want = _expected_std(init, m)
        assert m.weight.std().item() == pytest.approx(want, rel=TOL), (init, m)
        assert m.weight.mean().abs().item() < 0.1 * want
        if init.endswith("uniform"):  # bound = sqrt(3) * std
            assert m.weight.abs().max().item() <= math.sqrt(3) * want * (1 + 1e-6)
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS) and m.bias is not None:
            assert not m.bias.any()
        if isinstance(m, nn.BatchNorm2d):  # normalisation layers are left alone
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()


@pytest.mark.parametrize(("act", "slope"), [("leaky_relu", LEAKY_SLOPE), ("prelu", 0.25)])
def test_kaiming_follows_the_activation(act: str, slope: float) -> None:
    model = _build("torch_default_layers", "kaiming_normal", act=act)
    for m in _large_layers(model):
        assert m.weight.std().item() == pytest.approx(_expected_std("kaiming", m, slope), rel=TOL)
    assert create_model("vgg16_small", init="kaiming_normal", act=act).features[0].weight.abs().sum() > 0


def test_normal_uses_init_std() -> None:
    torch.manual_seed(0)
    model = create_model("vgg16_small", init="normal", init_std=0.05)
    for m in _large_layers(model):
        assert m.weight.std().item() == pytest.approx(0.05, rel=TOL)


def test_orthogonal_weights_are_orthonormal() -> None:
    model = create_model("vgg16_small", init="orthogonal")
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            w = m.weight.flatten(1)
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-4), m


def test_init_reaches_every_model_kind() -> None:
    seq = create_model("dcgan_small", init="normal", init_std=0.02)  # transposed convolutions of a generator
    transposed = [m for m in seq.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert transposed and all(m.weight.std().item() == pytest.approx(0.02, rel=0.2) for m in transposed)


def test_default_keeps_the_models_own_initialisation() -> None:
    torch.manual_seed(0)
    plain = create_model("nin_small")
    torch.manual_seed(0)
    default = create_model("nin_small", init="default")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), default.state_dict().values()))
    assert default.classifier[1].weight.std().item() == pytest.approx(0.01, rel=0.2)  # NiN's N(0, 0.01) class maps


def test_pretrained_weights_are_loaded_after_init(tmp_path: Path) -> None:
    source = create_model("lenet5")
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    model = create_model("lenet5", init="normal", pretrained=str(tmp_path / "weights.pt"))
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_values_are_one_line_errors() -> None:
    with pytest.raises(ConfigError) as e:
        create_model("lenet5", init="he")
    assert "\n" not in str(e.value) and all(init in str(e.value) for init in INITS)
    with pytest.raises(ConfigError, match="model.init_std must be a positive number"):
        create_model("lenet5", init="normal", init_std=0)
    with pytest.raises(ConfigError, match="would overwrite the weights of model.backbone_pretrained"):
        create_model("fcn32s_small", init="xavier_normal", backbone_pretrained="backbone.pt")
