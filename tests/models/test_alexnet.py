"""AlexNet and ZFNet: parameter counts, torchvision compatibility, the original grouped/LRN layout,
ZFNet's spatial sizes; plus the model and digits-experiment configs of issue #3's classic CNNs
(AlexNet, ZFNet, VGG, GoogLeNet, NiN, SqueezeNet)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from tests.helpers import make_cfg
from zoo.models import create_model, list_models, model_info
from zoo.models.base import count_parameters

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CLASSIC = [n for f in ("alexnet", "vgg", "googlenet", "nin", "squeezenet") for n in list_models(family=f)]
SMALL = [n for n in CLASSIC if n.endswith("_small")]

PARAM_COUNTS = {
    "alexnet": 61_100_840,  # torchvision
    "alexnet_original": 60_965_224,  # the paper's two-group layout
    "zfnet": 62_357_608,
    "zfnet_wide": 107_627_624,
}


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name: str) -> None:
    assert count_parameters(_meta(name)) == PARAM_COUNTS[name]


def test_alexnet_loads_torchvision_weights() -> None:
    reference = torchvision.models.alexnet(weights=None).eval()
    model = create_model("alexnet").eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 4096)


def test_alexnet_original_is_grouped_with_lrn() -> None:
    model = _meta("alexnet_original")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.features) == 2


@pytest.mark.parametrize(("name", "widths"), [("zfnet", [384, 384, 256]), ("zfnet_wide", [512, 1024, 512])])
def test_zfnet_spatial_sizes(name: str, widths: list[int]) -> None:
    model = _meta(name)
    x = torch.empty(1, 3, 224, 224, device="meta")
    sizes, channels = [], []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            sizes.append(x.shape[-1])
        if isinstance(layer, nn.Conv2d):
            channels.append(x.shape[1])
    # conv1 110, pool1 55, conv2 26, pool2 13, conv3-5 13, pool5 6 (Fig. 3 of the paper)
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]
    assert channels == [96, 256, *widths]
    first = model.features[0]
    assert (first.kernel_size, first.stride) == ((7, 7), (2, 2))


@pytest.mark.parametrize("name", ["alexnet_small", "zfnet_small"])
def test_small_variants(name: str) -> None:
    model = create_model(name, num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == (4, 4)
        assert model(x).shape == (2, 10)
    assert model.num_features == 256
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
    assert all(m.p == 0.5 for m in create_model(name, drop_rate=0.5).modules() if isinstance(m, nn.Dropout))
    assert count_parameters(model) < 1_000_000


# --- configs of all issue #3 models -------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIC)
def test_model_config(name: str, tmp_path: Path) -> None:
    cfg = OmegaConf.to_container(make_cfg(tmp_path, f"model={name}").model, resolve=True)  # with configs/model/_base.yaml
    assert isinstance(cfg, dict)
    assert (cfg.pop("name"), cfg.pop("input_size")) == (name, model_info(name)["input_size"])
    assert (cfg.pop("num_classes"), cfg.pop("in_chans")) == (10, 1)  # the digits'
    model = _meta(name, num_classes=10, in_chans=1, **cfg)
    assert model.num_classes == 10


@pytest.mark.parametrize("name", [*SMALL, "nin"])
def test_digits_experiment_config(name: str, tmp_path: Path) -> None:
    from zoo.pipeline import build_model

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", f"experiment={name}_digits"])
    assert cfg.model.name == name and cfg.data.name == "digits" and cfg.data.image_size == 32
    with torch.device("meta"):
        model, info = build_model(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
    assert model.num_classes == 10 and info["input_size"] == 32
