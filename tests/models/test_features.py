"""Feature extraction and stage declarations, checked over every registered classifier."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.errors import ConfigError
from zoo.models import create_model, list_models, model_info
from zoo.models.features import CLASSIFIER, NECK, FeatureExtractor, parameter_stages

#: classifiers of feature maps; the ones on flattened pixels (linear, mlp: ``feature_maps=False`` in their
#: registry metadata) have no stages, and features_only / stage-wise transfer refuse them with one line
CLASSIFIERS = [n for n in list_models(task="classification") if model_info(n).get("feature_maps", True)]


def _meta_input(name: str, in_chans: int = 3) -> torch.Tensor:
    size = model_info(name)["input_size"]
    return torch.empty(2, in_chans, size, size, device="meta")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_declared_stages(name: str) -> None:
    """Every classifier's stages: feature maps with the declared channels and strides (shapes only, so
    on the meta device, every model at its canonical size), and a partition of its parameters."""
    with torch.device("meta"):
        model = create_model(name, in_chans=3).eval()
    units = parameter_stages(model)
    names = [p for u in units for p in u.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each parameter exactly once
    assert [u.name for u in units[-2:]] == [NECK, CLASSIFIER]
    assert all(u.params for u in units[:-2]) and units[-1].params
    assert set(units[-1].params) == {f"{m}.{p}" for m in model.classifier_names()
                                     for p, _ in model.get_submodule(m).named_parameters()}

    x = _meta_input(name)
    info = list(model.feature_info)
    deepest = model.forward_features(x)
    extractor = FeatureExtractor(model)
    maps = extractor(x)
    assert isinstance(maps, list) and len(maps) == len(info) >= 3
    size = x.shape[-1]
    for fmap, f in zip(maps, info):
        assert fmap.shape[:2] == (2, f.num_chs), f
        side = fmap.shape[-1]
        # the declared stride, up to the few pixels unpadded layers shave off
        assert size / (2 * f.reduction) < side <= math.ceil(size / f.reduction), (f, side)
    assert [f.reduction for f in info] == sorted(f.reduction for f in info)
    assert maps[-1].shape == deepest.shape  # the deepest stage is forward_features
    assert extractor.channels == [f.num_chs for f in info] and extractor.reductions == [f.reduction for f in info]


@pytest.mark.parametrize("name", ["wrn16_4", "densenet_bc40_k12", "vgg16_bn_small", "googlenet_small", "lenet5"])
def test_feature_maps_are_the_models_own(name: str) -> None:
    model = create_model(name, num_classes=5, in_chans=1).eval()
    head = {p for u in parameter_stages(model)[-2:] for p in u.params}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        reference = model.forward_features(x)
        extractor = FeatureExtractor(model)
        maps = extractor(x)
    torch.testing.assert_close(maps[-1], reference)
    kept = {n.removeprefix("model.") for n, _ in extractor.named_parameters()}
    assert kept and not kept & head  # the layers after the last stage are gone


def test_out_indices_select_and_stop_early() -> None:
    model = create_model("resnet20", in_chans=1).eval()
    calls: list[str] = []
    model.layer3.register_forward_hook(lambda *_: calls.append("layer3"))
    extractor = FeatureExtractor(model, out_indices=(1, -2))
    assert extractor.out_indices == (1, 2) and extractor.channels == [16, 32] and extractor.reductions == [1, 2]
    maps = extractor(torch.randn(1, 1, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(1, 16, 32, 32), (1, 32, 16, 16)]
    assert calls == []  # the forward pass stopped after layer2
    maps[1].sum().backward()  # and the maps are differentiable
    assert model.layer1[0].conv1.weight.grad is not None


def test_bad_out_indices() -> None:
    with pytest.raises(ConfigError, match="out_indices"):
        create_model("resnet20", features_only=True, out_indices=(4,))
    with pytest.raises(ConfigError, match="features_only"):
        create_model("resnet20", out_indices=(1,))


@pytest.mark.parametrize("name", [n for n in list_models(task="classification") if n not in CLASSIFIERS])
def test_models_without_feature_maps_refuse_features_only(name: str) -> None:
    with pytest.raises(ConfigError, match="declares no stages"):
        create_model(name, features_only=True)
