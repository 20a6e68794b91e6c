"""Autoencoders: the variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes",
ICLR 2014) and the standard / denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol,
"Extracting and composing robust features with denoising autoencoders", ICML 2008).

All decode to per-pixel Bernoulli logits, so images live in [0, 1] (``data.normalize=none``).

* :class:`VAE`: the encoder gives the mean and log-variance of a diagonal Gaussian ``q(z|x)``; a
  sample ``z = mu + sigma * eps`` (the reparameterisation trick, Sec. 2.4 of the paper) is decoded.
  The paper's MNIST model is an MLP with one hidden layer (500 tanh units); ``vae_mlp`` uses ReLU
  units, ``vae_conv`` strided 4x4 convolutions and their transposes.
* :class:`Autoencoder`: a deterministic code; with ``noise_level > 0`` the input is corrupted in
  training mode (masking noise, Vincent et al. Sec. 2.3: a random fraction of pixels set to 0, or
  additive Gaussian noise) and the clean input is the reconstruction target.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import GenerativeModel

_VAE_PAPER = "Kingma & Welling 2014, Auto-Encoding Variational Bayes"
_DAE_PAPER = "Vincent et al. 2008, Extracting and composing robust features with denoising autoencoders"


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def mlp_encoder(in_chans: int, image_size: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), *mlp([in_chans * image_size * image_size, *hidden, out_features]))


def mlp_decoder(latent_dim: int, hidden: Sequence[int], out_chans: int, image_size: int) -> nn.Sequential:
    return nn.Sequential(*mlp([latent_dim, *hidden, out_chans * image_size * image_size]), nn.Unflatten(1, (out_chans, image_size, image_size)))


def _check_conv_size(image_size: int, stages: int) -> int:
    if stages < 1 or image_size % 2**stages:
        raise ValueError(f"a {stages}-stage convolutional autoencoder needs image_size divisible by {2**stages}, got {image_size}")
    return image_size // 2**stages


def conv_encoder(in_chans: int, image_size: int, widths: Sequence[int], out_features: int) -> nn.Sequential:
    """Strided 4x4 convolutions halving the side per stage, then a linear layer to ``out_features``."""
    side = _check_conv_size(image_size, len(widths))
    layers: list[nn.Module] = []
    for a, b in zip([in_chans, *widths[:-1]], widths):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * side * side, out_features))


def conv_decoder(latent_dim: int, widths: Sequence[int], out_chans: int, image_size: int) -> nn.Sequential:
    """The mirror of :func:`conv_encoder`: a linear layer to the smallest feature map, then 4x4
    transposed convolutions doubling the side per stage; the last one gives the pixel logits."""
    side = _check_conv_size(image_size, len(widths))
    widths = list(reversed(widths))
    layers: list[nn.Module] = [nn.Linear(latent_dim, widths[0] * side * side), nn.Unflatten(1, (widths[0], side, side))]
    for a, b in zip(widths, [*widths[1:], out_chans]):
        layers += [nn.ReLU(inplace=True), nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
    return nn.Sequential(*layers)


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # Bernoulli logits of p(x|z), shape of the input
    mu: torch.Tensor  # mean of q(z|x), (N, latent_dim)
    logvar: torch.Tensor  # log-variance of q(z|x), (N, latent_dim)
    z: torch.Tensor  # the reparameterised sample that was decoded


class Autoencoder(GenerativeModel):
    """``decoder(encoder(x))``; ``noise_level > 0`` makes it a denoising autoencoder (Vincent et al. 2008)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        in_chans: int,
        image_size: int,
        noise: Literal["masking", "gaussian"] = "masking",
        noise_level: float = 0.0,
    ) -> None:
        super().__init__(latent_dim, in_chans, image_size)
        if noise not in ("masking", "gaussian") or noise_level < 0 or (noise == "masking" and noise_level >= 1):
            raise ValueError(f"noise must be masking (level in [0, 1)) or gaussian (level >= 0); got {noise!r} at {noise_level}")
        self.encoder, self.decoder = encoder, decoder
        self.noise, self.noise_level = noise, noise_level

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The corruption q(x~|x): masking noise zeroes a ``noise_level`` fraction of the pixels,
        Gaussian noise adds N(0, noise_level^2)."""
        if self.noise_level == 0:
            return x
        if self.noise == "masking":
            return x * (torch.rand_like(x) >= self.noise_level)
        return x + self.noise_level * torch.randn_like(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits of the reconstruction."""
        return self.decoder(z)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits; the input is corrupted in training mode only."""
        return self.decode(self.encode(self.corrupt(x) if self.training else x))


class VAE(Autoencoder):
    """Variational autoencoder: the encoder returns ``2 * latent_dim`` values, the mean and the
    log-variance of q(z|x); the decoder gives the Bernoulli logits of p(x|z); the prior is N(0, I)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, in_chans: int, image_size: int) -> None:
        super().__init__(encoder, decoder, latent_dim, in_chans, image_size)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean (a deterministic code, e.g. for plots)."""
        return self.posterior(x)[0]

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (drawn unless given): a sample of
        q(z|x) that is differentiable in ``mu`` and ``logvar`` (Kingma & Welling 2014, Sec. 2.4)."""
        return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)

    def forward(self, x: torch.Tensor) -> VAEOutput:  # type: ignore[override]
        mu, logvar = self.posterior(x)
        z = self.reparameterize(mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z)


def _vae(kind: str, in_chans: int, image_size: int, latent_dim: int, sizes: Sequence[int], code: int) -> tuple[nn.Module, nn.Module]:
    """Encoder (to ``code`` outputs) and decoder of an MLP (``sizes``: hidden units) or convolutional
    (``sizes``: channels per stage) autoencoder."""
    if kind == "mlp":
        return mlp_encoder(in_chans, image_size, sizes, code), mlp_decoder(latent_dim, list(reversed(sizes)), in_chans, image_size)
    return conv_encoder(in_chans, image_size, sizes, code), conv_decoder(latent_dim, sizes, in_chans, image_size)


@register_model(family="vae", task="vae", input_size=32, paper=_VAE_PAPER)
def vae_mlp(in_chans: int = 1, image_size: int = 32, latent_dim: int = 16, hidden: Sequence[int] = (512, 256)) -> VAE:
    """VAE with MLP encoder and decoder (the paper's MNIST architecture, deeper and with ReLU)."""
    return VAE(*_vae("mlp", in_chans, image_size, latent_dim, hidden, 2 * latent_dim), latent_dim, in_chans, image_size)


@register_model(family="vae", task="vae", input_size=32, paper=_VAE_PAPER)
def vae_conv(in_chans: int = 1, image_size: int = 32, latent_dim: int = 16, widths: Sequence[int] = (32, 64)) -> VAE:
    """VAE with a strided-convolution encoder and a transposed-convolution decoder."""
    return VAE(*_vae("conv", in_chans, image_size, latent_dim, widths, 2 * latent_dim), latent_dim, in_chans, image_size)


@register_model(family="autoencoder", task="autoencoder", input_size=32, paper=_DAE_PAPER)
def ae_mlp(in_chans: int = 1, image_size: int = 32, latent_dim: int = 32, hidden: Sequence[int] = (512, 256)) -> Autoencoder:
    """Standard undercomplete MLP autoencoder (no corruption)."""
    return Autoencoder(*_vae("mlp", in_chans, image_size, latent_dim, hidden, latent_dim), latent_dim, in_chans, image_size)


@register_model(family="autoencoder", task="autoencoder", input_size=32, paper=_DAE_PAPER)
def dae_mlp(
    in_chans: int = 1,
    image_size: int = 32,
    latent_dim: int = 32,
    hidden: Sequence[int] = (512, 256),
    noise: Literal["masking", "gaussian"] = "masking",
    noise_level: float = 0.25,
) -> Autoencoder:
    """Denoising MLP autoencoder; masking noise on 25% of the pixels by default (Vincent et al. 2008)."""
    encoder, decoder = _vae("mlp", in_chans, image_size, latent_dim, hidden, latent_dim)
    return Autoencoder(encoder, decoder, latent_dim, in_chans, image_size, noise, noise_level)


@register_model(family="autoencoder", task="autoencoder", input_size=32, paper=_DAE_PAPER)
def dae_conv(
    in_chans: int = 1,
    image_size: int = 32,
    latent_dim: int = 32,
    widths: Sequence[int] = (32, 64),
    noise: Literal["masking", "gaussian"] = "masking",
    noise_level: float = 0.25,
) -> Autoencoder:
    """Denoising convolutional autoencoder."""
    encoder, decoder = _vae("conv", in_chans, image_size, latent_dim, widths, latent_dim)
    return Autoencoder(encoder, decoder, latent_dim, in_chans, image_size, noise, noise_level)
