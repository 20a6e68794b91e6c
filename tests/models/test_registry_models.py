"""Contract tests run over every registered classifier, so a new entry is tested automatically."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.models import create_model, list_models, model_info
from zoo.models.base import Classifier

#: every classifier with trainable weights; knn (task "knn") is not one of them: it has no parameters and no
#: gradient to overfit with (tests/models/test_knn.py checks it against scikit-learn instead)
CLASSIFIERS = list_models(task="classification")
#: small-input models are cheap enough to overfit a batch in the default suite
#: (entries flagged ``slow`` in their metadata, e.g. WRN-28-10, go with the large ones)
SMALL = [n for n in CLASSIFIERS if model_info(n)["input_size"] <= 64 and not model_info(n).get("slow")]
LARGE = [n for n in CLASSIFIERS if n not in SMALL]
#: the default suite builds every small model and the shortest-named large one of each family (resnet18,
#: vgg11, ...); the other large variants of a family share its code and run with ``-m slow``
_FIRST_LARGE = {min((n for n in LARGE if model_info(n)["family"] == f), key=lambda n: (len(n), n))
                for f in {model_info(n)["family"] for n in LARGE}}
EVERY = [n if n in SMALL or n in _FIRST_LARGE else pytest.param(n, marks=pytest.mark.slow) for n in CLASSIFIERS]


def _input(name: str, batch: int = 2, in_chans: int = 3) -> torch.Tensor:
    size = model_info(name)["input_size"]
    return torch.randn(batch, in_chans, size, size)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_metadata(name: str) -> None:
    info = model_info(name)
    assert info["family"] and info["paper"], f"{name} must name its family and paper"
    assert isinstance(info["input_size"], int) and info["input_size"] > 0


@pytest.mark.parametrize("name", EVERY)
def test_contract_shapes(name: str) -> None:
    model = create_model(name, num_classes=7, in_chans=3).eval()
    assert isinstance(model, Classifier)
    x = _input(name)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features), logits, atol=1e-5)
        pre = model.forward_head(features, pre_logits=True)
    assert logits.shape == (2, 7)
    assert pre.shape == (2, model.num_features)
    assert model.num_classes == 7

    model.reset_classifier(4)
    with torch.no_grad():
        assert model(x).shape == (2, 4)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", EVERY)
def test_in_chans(name: str) -> None:
    model = create_model(name, num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        assert model(_input(name, in_chans=1)).shape == (2, 3)


def _overfit(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=1)
    model.train()
    # dropout only adds noise to a 30-step check: switch it off, keep BN/drop-path training behaviour
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
    x, y = _input(name, batch=8, in_chans=1), torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn() -> torch.Tensor:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        return nn.functional.cross_entropy(logits, y)

    first = loss_fn()
    for _ in range(60):  # stops as soon as the loss has halved; models without BN (NiN) need ~40 steps
        opt.zero_grad()
        loss = loss_fn()
        if loss.item() < 0.5 * first.item():
            break
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item(), f"{name}: loss {first.item():.3f} -> {loss.item():.3f}"


@pytest.mark.parametrize("name", SMALL)
def test_overfit_one_batch(name: str) -> None:
    _overfit(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_overfit_one_batch_large(name: str) -> None:
    _overfit(name)
