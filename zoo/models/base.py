"""The classifier contract every zoo classifier follows (timm-style).

``forward(x) == forward_head(forward_features(x))``; ``forward_head(x, pre_logits=True)`` stops
before the final linear layer; ``reset_classifier(n)`` swaps the final layer for ``n`` classes
(``n == 0`` gives an identity head, i.e. a feature extractor).
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Base class: subclasses build ``self.<classifier attr>`` and implement the two halves."""

    num_classes: int
    num_features: int
    #: attribute name of the final layer that ``reset_classifier`` replaces
    classifier_attr: str = "fc"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return _get_submodule(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one for ``num_classes`` outputs."""
        old = self.get_classifier()
        in_features = old.in_features if isinstance(old, nn.Linear) else self.num_features
        new: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        param = next(old.parameters(), None)
        if param is not None:
            new = new.to(device=param.device, dtype=param.dtype)
        _set_submodule(self, self.classifier_attr, new)
        self.num_classes = num_classes


def _get_submodule(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set_submodule(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, name, new)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class GenerativeModel(nn.Module):
    """The contract of the zoo's generative models (VAE, autoencoders, GANs).

    A latent prior N(0, I) of ``latent_dim`` dimensions, ``generate(z)`` mapping latents to images in
    ``output_range`` (``in_chans`` x ``img_size`` x ``img_size``), ``sample(n)`` drawing from the prior,
    and a ``fixed_noise`` buffer: latents drawn once from ``seed`` and saved with the weights, so the
    sample grids of every epoch (and of a resumed run) show the same points of the latent space.
    """

    #: pixel range of ``generate`` and of the data the model is trained on
    output_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, latent_dim: int, in_chans: int, img_size: int, num_fixed: int = 64, seed: int = 0) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim, self.in_chans, self.img_size = latent_dim, in_chans, img_size
        fixed = torch.randn(num_fixed, latent_dim, generator=torch.Generator().manual_seed(seed), device="cpu")
        self.register_buffer("fixed_noise", fixed)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from the prior; ``generator`` (a CPU generator) makes the draw reproducible."""
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.fixed_noise.device)
        return self.generate(z)

    def to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (generated or real data) from ``output_range`` to [0, 1]."""
        low, high = self.output_range
        return ((images - low) / (high - low)).clamp(0, 1)
