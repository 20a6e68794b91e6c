"""Generative adversarial networks (Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014)
and the deep convolutional GAN (Radford, Metz & Chintala, "Unsupervised Representation Learning with
Deep Convolutional Generative Adversarial Networks", ICLR 2016).

One :class:`GAN` module holds the ``generator`` (latent ``z`` -> image in [-1, 1], tanh output, so
train on ``data.normalize=symmetric``) and the ``discriminator`` (image -> one logit, real vs
generated). The two are trained by two optimizers through :class:`zoo.tasks.generative.GANTask`.

DCGAN (Sec. 3 of the paper): no pooling, fractionally-strided (transposed) convolutions in the
generator and strided convolutions in the discriminator, batch norm in both (except the generator
output and the discriminator input layers), ReLU in the generator with a tanh output, LeakyReLU
(slope 0.2) in the discriminator, weights drawn from N(0, 0.02). ``dcgan`` is the paper's 64x64
model (generator 1024-512-256-128 channels, 100-d latent); ``dcgan_small`` a 32x32 one for digits.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import GenerativeModel

_GAN_PAPER = "Goodfellow et al. 2014, Generative Adversarial Nets"
_DCGAN_PAPER = "Radford et al. 2016, Unsupervised Representation Learning with Deep Convolutional GANs"


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: convolution and linear weights from N(0, 0.02), batch-norm scales from
    N(1, 0.02), biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _stages(image_size: int) -> int:
    """Number of factor-2 resolution steps between a 4x4 map and ``image_size``."""
    stages = int(math.log2(image_size)) - 2
    if image_size < 8 or 2 ** (stages + 2) != image_size:
        raise ValueError(f"DCGAN needs a power-of-two image_size >= 8, got {image_size}")
    return stages


class DCGANGenerator(nn.Sequential):
    """``z`` (N, latent_dim) -> 4x4 map of ``width * 2**(stages-1)`` channels -> halving the
    channels while doubling the side -> ``out_chans`` x ``image_size`` x ``image_size`` in [-1, 1]."""

    def __init__(self, latent_dim: int, out_chans: int, image_size: int, width: int) -> None:
        stages = _stages(image_size)
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True),
        ]  # fmt: skip
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, out_chans, 4, 2, 1, bias=False), nn.Tanh()]
        super().__init__(*layers)


class DCGANDiscriminator(nn.Sequential):
    """Image -> strided 4x4 convolutions doubling the channels while halving the side down to 4x4
    -> a 4x4 convolution to one logit per image."""

    def __init__(self, in_chans: int, image_size: int, width: int) -> None:
        stages = _stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False), nn.Flatten(0)]
        super().__init__(*layers)


class MLPGenerator(nn.Sequential):
    """Fully connected generator: ReLU hidden layers, tanh output reshaped to an image."""

    def __init__(self, latent_dim: int, out_chans: int, image_size: int, hidden: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for a, b in zip([latent_dim, *hidden[:-1]], hidden):
            layers += [nn.Linear(a, b), nn.ReLU(True)]
        layers += [nn.Linear(hidden[-1], out_chans * image_size * image_size), nn.Tanh(), nn.Unflatten(1, (out_chans, image_size, image_size))]
        super().__init__(*layers)


class MLPDiscriminator(nn.Sequential):
    """Fully connected discriminator: LeakyReLU hidden layers with dropout (the paper used maxout
    units with dropout), one logit per image."""

    def __init__(self, in_chans: int, image_size: int, hidden: Sequence[int], drop_rate: float) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip([in_chans * image_size * image_size, *hidden[:-1]], hidden):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, True), nn.Dropout(drop_rate)]
        layers += [nn.Linear(hidden[-1], 1), nn.Flatten(0)]
        super().__init__(*layers)


class GAN(GenerativeModel):
    """A generator and a discriminator; ``forward(z)`` and ``generate(z)`` run the generator,
    ``discriminate(x)`` gives one real-vs-generated logit per image."""

    output_range = (-1.0, 1.0)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, in_chans: int, image_size: int) -> None:
        super().__init__(latent_dim, in_chans, image_size)
        self.generator, self.discriminator = generator, discriminator

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


def _dcgan(in_chans: int, image_size: int, latent_dim: int, width: int) -> GAN:
    model = GAN(DCGANGenerator(latent_dim, in_chans, image_size, width), DCGANDiscriminator(in_chans, image_size, width),
                latent_dim, in_chans, image_size)
    dcgan_init(model)
    return model


@register_model(family="gan", task="gan", input_size=64, paper=_DCGAN_PAPER)
def dcgan(in_chans: int = 3, image_size: int = 64, latent_dim: int = 100, width: int = 128) -> GAN:
    """The paper's DCGAN: 64x64 images, 100-d latent, generator 1024-512-256-128 channels."""
    return _dcgan(in_chans, image_size, latent_dim, width)


@register_model(family="gan", task="gan", input_size=32, paper=_DCGAN_PAPER)
def dcgan_small(in_chans: int = 1, image_size: int = 32, latent_dim: int = 64, width: int = 32) -> GAN:
    """DCGAN for 32x32 images: generator 128-64-32 channels, discriminator 32-64-128."""
    return _dcgan(in_chans, image_size, latent_dim, width)


@register_model(family="gan", task="gan", input_size=32, paper=_GAN_PAPER)
def gan_mlp(
    in_chans: int = 1,
    image_size: int = 32,
    latent_dim: int = 64,
    hidden: Sequence[int] = (256, 512),
    drop_rate: float = 0.3,
) -> GAN:
    """Fully connected GAN; the discriminator mirrors the generator's hidden sizes."""
    return GAN(MLPGenerator(latent_dim, in_chans, image_size, hidden),
               MLPDiscriminator(in_chans, image_size, list(reversed(hidden)), drop_rate), latent_dim, in_chans, image_size)
