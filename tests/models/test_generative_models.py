"""Contract tests over every registered generative model (tasks vae, autoencoder, gan), plus the
DCGAN specifics of Radford et al. 2016."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.models import create_model, list_models, model_info
from zoo.models.base import GenerativeModel
from zoo.models.gan import GAN
from zoo.models.vae import VAE

GENERATIVE = [n for task in ("vae", "autoencoder", "gan") for n in list_models(task=task)]


def test_generative_models_are_registered() -> None:
    assert {"vae_mlp", "vae_conv", "ae_mlp", "dae_mlp", "dae_conv", "dcgan", "dcgan_small", "gan_mlp"} <= set(GENERATIVE)
    assert not set(GENERATIVE) & set(list_models(task="classification"))


def _small(name: str) -> GenerativeModel:
    size = min(model_info(name)["input_size"], 16)
    return create_model(name, in_chans=1, image_size=size).eval()  # type: ignore[return-value]


@pytest.mark.parametrize("name", GENERATIVE)
def test_contract(name: str) -> None:
    info = model_info(name)
    assert info["family"] and info["paper"]
    model = _small(name)
    assert isinstance(model, GenerativeModel)
    size = model.image_size
    with torch.no_grad():
        images = model.sample(3, torch.Generator().manual_seed(0))
        again = model.sample(3, torch.Generator().manual_seed(0))
        fixed = model.generate(model.fixed_noise[:3])
    assert images.shape == fixed.shape == (3, 1, size, size)
    torch.testing.assert_close(images, again)
    low, high = model.output_range
    assert images.min() >= low and images.max() <= high
    unit = model.to_unit_range(images)
    assert unit.min() >= 0 and unit.max() <= 1
    # the fixed noise is seeded, not drawn from the global RNG, and travels with the weights
    torch.manual_seed(123)
    assert torch.equal(_small(name).fixed_noise, model.fixed_noise)
    assert "fixed_noise" in model.state_dict()


@pytest.mark.parametrize("name", [n for n in GENERATIVE if model_info(n)["task"] != "gan"])
def test_autoencoders_reconstruct_to_input_shape(name: str) -> None:
    model = _small(name)
    x = torch.rand(2, 1, model.image_size, model.image_size)
    with torch.no_grad():
        out = model(x)
    logits = out.logits if isinstance(model, VAE) else out
    assert logits.shape == x.shape
    if isinstance(model, VAE):
        assert out.mu.shape == out.logvar.shape == (2, model.latent_dim)


@pytest.mark.parametrize("name", list_models(task="gan"))
def test_discriminator_gives_one_logit_per_image(name: str) -> None:
    model = _small(name)
    assert isinstance(model, GAN)
    with torch.no_grad():
        assert model.discriminate(model.sample(4)).shape == (4,)


def test_dcgan_follows_the_paper() -> None:
    with torch.device("meta"):
        model = create_model("dcgan")
    convs = [m for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [1024, 512, 256, 128, 3]
    assert convs[0].in_channels == 100 and isinstance(model.generator[-1], nn.Tanh)
    d_convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in d_convs] == [128, 256, 512, 1024, 1]
    assert not isinstance(model.discriminator[1], nn.BatchNorm2d)  # no batch norm on the input layer
    assert all(m.negative_slope == 0.2 for m in model.discriminator.modules() if isinstance(m, nn.LeakyReLU))

    small = create_model("dcgan_small").requires_grad_(False)
    weights = torch.cat([m.weight.flatten() for m in small.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(float(weights.std()) - 0.02) < 0.002 and abs(float(weights.mean())) < 0.002
    bn = torch.cat([m.weight for m in small.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(float(bn.mean()) - 1.0) < 0.01


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        create_model("dcgan_small", image_size=24)
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model("vae_conv", image_size=10)
    with pytest.raises(ValueError, match="noise"):
        create_model("dae_mlp", noise_level=1.5)
