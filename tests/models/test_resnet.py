"""ResNet family: parameter counts, torchvision compatibility, option-A shortcuts, pre-activation
and wide blocks, stochastic depth, ResNeXt grouping; plus the model configs of issue #4's families."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests.helpers import make_cfg
from zoo.models import create_model, list_models, model_info
from zoo.models.base import count_parameters
from zoo.models.resnet import (
    BasicBlock,
    PreActBasicBlock,
    PreActBottleneck,
    StochasticDepth,
    ZeroPadShortcut,
    survival_probs,
)

#: ImageNet models at 1000 classes, CIFAR models at 10 (torchvision's counts where it has the model)
PARAM_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet110_sd": 1_727_962,
    "preact_resnet164": 1_703_258,
    "preact_resnet110": 1_730_522,
    "preact_resnet18": 11_172_170,
    "wrn28_10": 36_479_194,
    "wrn16_4": 2_748_890,
    "resnext29_8x64d": 34_426_698,
    "resnext29_16x64d": 68_155_210,
    "resnext29_small": 432_474,
}
TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d"]
TORCHVISION_LARGE = ["resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2", "resnext101_32x8d", "resnext101_64x4d"]


def test_every_entry_has_a_count() -> None:
    assert sorted(PARAM_COUNTS) == sorted(list_models(family="resnet"))


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert count_parameters(model) == PARAM_COUNTS[name]


def assert_torchvision_layout(name: str) -> dict[str, torch.Size]:
    """Our state_dict has torchvision's names and shapes (checked on the meta device: free)."""
    with torch.device("meta"):
        ours = {k: v.shape for k, v in create_model(name).state_dict().items()}
        theirs = {k: v.shape for k, v in getattr(torchvision.models, name)(weights=None).state_dict().items()}
    assert ours == theirs
    return ours


def assert_torchvision_outputs(name: str) -> None:
    """torchvision's state_dict loads with strict=True and gives the same eval outputs (batch 1, 64x64)."""
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = create_model(name).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", TORCHVISION + TORCHVISION_LARGE)
def test_torchvision_names_and_shapes(name: str) -> None:
    assert_torchvision_layout(name)


@pytest.mark.parametrize("name", TORCHVISION + [pytest.param(n, marks=pytest.mark.slow) for n in TORCHVISION_LARGE])
def test_torchvision_weights_give_same_outputs(name: str) -> None:
    assert_torchvision_outputs(name)


def test_cifar_resnet_option_a_shortcuts_are_parameter_free() -> None:
    model = create_model("resnet20")
    shortcuts = [m.downsample for m in model.modules() if isinstance(m, BasicBlock) and m.downsample is not None]
    assert len(shortcuts) == 2 and all(isinstance(s, ZeroPadShortcut) for s in shortcuts)
    assert all(count_parameters(s) == 0 for s in shortcuts)
    assert [model.conv1.out_channels, model.layer2[0].conv1.out_channels, model.num_features] == [16, 32, 64]


def test_zero_pad_shortcut_subsamples_and_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert not y[:, 16:].any()


def test_preact_blocks_and_final_activation() -> None:
    model = create_model("preact_resnet164")
    assert all(isinstance(b, PreActBottleneck) for stage in model.stages() for b in stage)
    assert [len(stage) for stage in model.stages()] == [18, 18, 18]
    assert model.bn_final.num_features == model.num_features == 256
    # the projection shortcut is a bare 1x1 convolution fed with the pre-activated input
    assert isinstance(model.layer2[0].downsample, nn.Conv2d)


def test_wide_resnet_dropout_between_convolutions() -> None:
    model = create_model("wrn16_4", drop_rate=0.3)
    blocks = [m for m in model.modules() if isinstance(m, PreActBasicBlock)]
    assert len(blocks) == 6 and all(b.dropout.p == 0.3 for b in blocks)
    assert [stage[0].conv2.out_channels for stage in model.stages()] == [64, 128, 256]
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_resnext_uses_grouped_convolutions() -> None:
    with torch.device("meta"):
        model = create_model("resnext50_32x4d")
        cifar = create_model("resnext29_8x64d")
    assert model.layer1[0].conv2.groups == 32 and model.layer1[0].conv2.in_channels == 128
    assert cifar.layer1[0].conv2.groups == 8 and cifar.layer1[0].conv2.in_channels == 512
    assert cifar.num_features == 1024


def test_invalid_depth_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        from zoo.models.resnet import _cifar_resnet

        _cifar_resnet(21, 10, 3)


# --------------------------------------------------------------------------------------------
# stochastic depth


def _depth_modules(model: nn.Module) -> list[StochasticDepth]:
    return [m for m in model.modules() if isinstance(m, StochasticDepth)]


def test_survival_probabilities_decay_linearly_to_one_half() -> None:
    probs = [m.survival_prob for m in _depth_modules(create_model("resnet110_sd"))]
    assert len(probs) == 54
    assert probs[-1] == pytest.approx(0.5)
    assert probs[0] == pytest.approx(1 - 0.5 / 54)
    steps = torch.tensor(probs).diff()
    torch.testing.assert_close(steps, torch.full_like(steps, -0.5 / 54))
    assert survival_probs(4, None) == [1.0] * 4


def test_stochastic_depth_is_deterministic_in_eval() -> None:
    model = create_model("resnet110_sd").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_blocks_are_dropped_per_batch_with_their_survival_probability() -> None:
    model = create_model("resnet20", stochastic_depth=0.5).train()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    runs = torch.zeros(len(blocks))
    for i, block in enumerate(blocks):
        block.conv1.register_forward_hook(lambda *_, i=i: runs.__setitem__(i, runs[i] + 1))
    trials = 400
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for _ in range(trials):
            model(x)
    expected = torch.tensor([b.stochastic_depth.survival_prob for b in blocks])
    torch.testing.assert_close(runs / trials, expected, atol=0.08, rtol=0)
    assert expected[-1] == 0.5


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "wrn16_4"])
def test_dropped_blocks_backpropagate(name: str) -> None:
    model = create_model(name, stochastic_depth=0.5).train()
    for _ in range(4):
        model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model.conv1.weight.grad is not None


def _scaled_copy(block: BasicBlock, scale: float) -> BasicBlock:
    """``block`` without stochastic depth and with its residual branch multiplied by ``scale``
    (through bn2's affine parameters, which scale the branch output in train and eval mode)."""
    ref = copy.deepcopy(block)
    ref.stochastic_depth = StochasticDepth(1.0)
    with torch.no_grad():
        ref.bn2.weight.mul_(scale)
        ref.bn2.bias.mul_(scale)
    return ref


@pytest.mark.parametrize(("mode", "train_scale", "eval_scale"), [("paper", 1.0, 0.5), ("inverted", 2.0, 1.0)])
def test_stochastic_depth_scaling(mode: str, train_scale: float, eval_scale: float) -> None:
    block = BasicBlock(8, 8, survival_prob=0.5, stochastic_depth_mode=mode)  # type: ignore[arg-type]
    for bn in (block.bn1, block.bn2):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    train_ref, eval_ref = _scaled_copy(block, train_scale), _scaled_copy(block, eval_scale)
    x = torch.randn(4, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), eval_ref.eval()(x))
        block.train(), train_ref.train()
        dropped = 0
        for _ in range(40):
            out = block(x)
            if torch.equal(out, torch.relu(x)):  # the whole batch skipped the branch
                dropped += 1
            else:
                torch.testing.assert_close(out, train_ref(x))
    assert 0 < dropped < 40


def test_invalid_stochastic_depth_arguments() -> None:
    with pytest.raises(ValueError, match="survival"):
        create_model("resnet20", stochastic_depth=0.0)
    with pytest.raises(ValueError, match="stochastic_depth_mode"):
        create_model("resnet20", stochastic_depth=0.5, stochastic_depth_mode="bogus")


def _drop_paths(model: nn.Module) -> list[float]:
    from torchvision.ops import StochasticDepth as RowDrop

    return [m.p for m in model.modules() if isinstance(m, RowDrop)]


@pytest.mark.parametrize(("name", "count"), [("resnet20", 9), ("resnet18", 8), ("preact_resnet110", 54), ("wrn16_4", 6),
                                             ("resnext29_small", 9), ("densenet_bc40_k12", 18)])
def test_drop_path_rates_rise_linearly_with_depth(name: str, count: int) -> None:
    with torch.device("meta"):
        rates = _drop_paths(create_model(name, num_classes=10, drop_path_rate=0.3))
        assert _drop_paths(create_model(name, num_classes=10)) == []  # off by default: no module at all
    torch.testing.assert_close(torch.tensor(rates), torch.arange(1, count + 1) / count * 0.3)


def test_drop_path_drops_samples_not_the_batch() -> None:
    block = BasicBlock(8, 8, drop_path=0.5)
    for bn in (block.bn1, block.bn2):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    reference = copy.deepcopy(block)
    reference.drop_path = nn.Identity()
    x = torch.randn(256, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), reference.eval()(x))  # the identity at inference
        block.train(), reference.train()
        out, shortcut = block(x), torch.relu(x)
        skipped = torch.tensor([torch.equal(o, s) for o, s in zip(out, shortcut)])
        assert 0.35 < skipped.float().mean() < 0.65  # about half the samples, within one batch
        doubled = copy.deepcopy(reference)  # survivors: the branch scaled by 1 / (1 - p) = 2
        doubled.bn2.weight.mul_(2), doubled.bn2.bias.mul_(2)
        torch.testing.assert_close(out[~skipped], doubled(x)[~skipped])


def test_drop_path_trains_and_refuses_bad_rates(tmp_path: Path) -> None:
    from zoo.errors import ConfigError
    from zoo.pipeline import train

    model = create_model("densenet_bc40_k12", num_classes=10, in_chans=1, drop_path_rate=0.2).train()
    model(torch.randn(4, 1, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\)"):
        create_model("resnet20", drop_path_rate=1.0)
    with pytest.raises(ConfigError, match="drop_path_rate"):
        train(make_cfg(tmp_path / "bad", "model=resnet20", "model.drop_path_rate=-0.1", "logger=none"))
    assert not any((tmp_path / "bad").rglob("*"))  # nothing written: no checkpoint, no metrics


# --------------------------------------------------------------------------------------------
# configs/model/<name>.yaml of the residual, dense and fractal families


@pytest.mark.parametrize("name", list_models(family="resnet") + list_models(family="densenet") + list_models(family="fractalnet"))
def test_model_config(name: str, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(make_cfg(tmp_path, f"model={name}").model, resolve=True)  # with configs/model/_base.yaml
    assert isinstance(cfg, dict)
    assert cfg.pop("name") == name
    assert cfg.pop("input_size") == model_info(name)["input_size"]
    assert (cfg.pop("num_classes"), cfg.pop("in_chans")) == (10, 1)  # the digits'
    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_chans=1, **cfg)
    assert model.num_classes == 10


DIGITS_EXPERIMENTS = ["resnet20", "wrn16_4", "resnext29_small", "densenet_bc40_k12", "fractalnet_c3b4"]


@pytest.mark.parametrize("name", DIGITS_EXPERIMENTS)
def test_digits_experiment_config(name: str, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from zoo.pipeline import build_model

    cfg = make_cfg(tmp_path, f"experiment={name}_digits")
    assert cfg.model.name == name and cfg.data.name == "digits"
    with torch.device("meta"):
        model, info = build_model(OmegaConf.to_container(cfg.model, resolve=True))
    assert model.num_classes == 10 and info["input_size"] == 32
