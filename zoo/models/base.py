"""The classifier contract every zoo classifier follows (timm-style).

``forward(x) == forward_head(forward_features(x))``; ``forward_head(x, pre_logits=True)`` stops
before the final linear layer; ``reset_classifier(n)`` swaps the final layer for ``n`` classes
(``n == 0`` gives an identity head, i.e. a feature extractor).

Every classifier also declares its stages in ``feature_info`` (timm-style): the modules whose
outputs are its feature maps, shallow to deep, with their channels and strides. The deepest entry
is the output of ``forward_features``. Feature extraction (``create_model(..., features_only=True)``)
and the stage-wise freeze policies of :mod:`zoo.transfer` use it, so neither knows any family.
"""


from typing import NamedTuple, Sequence

import torch
from torch import nn


class FeatureInfo(NamedTuple):
    """One feature map: the module whose output it is, its channels, and its stride relative to the
    input (the product of the strides before it; unpadded layers make the map a little smaller)."""

    module: str
    num_chs: int
    reduction: int


class Classifier(nn.Module):
    """Base class: subclasses build ``self.<classifier attr>`` and implement the two halves."""

    num_classes: int
    num_features: int
    #: attribute name of the final layer that ``reset_classifier`` replaces
    classifier_attr: str = "fc"
    #: the stages' feature maps, shallow to deep (set by each family's ``__init__``)
    feature_info: Sequence[FeatureInfo] = ()
    #: what TorchScript leaves out of a scripted model (metadata no forward reads, of types it cannot hold)
    __jit_ignored_attributes__ = ["feature_info"]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return _get_submodule(self, self.classifier_attr)

    def classifier_names(self) -> list[str]:
        """Paths of every layer ``reset_classifier`` replaces (the final layer, auxiliary heads'
        final layers): what a pretrained model cannot keep when the classes change."""
        return [self.classifier_attr]

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


def _stride(module: nn.Module) -> int:
    """Stride of a layer in a plain feature stack: convolutions and pools report theirs, a
    ``Sequential`` multiplies its children's, any other block (fire, inception) keeps the size."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride
        return int(stride[0] if isinstance(stride, tuple) else stride)
    if isinstance(module, nn.Sequential):
        product = 1
        for child in module:
            product *= _stride(child)
        return product
    return 1


def _out_channels(module: nn.Module) -> int | None:
    """Output channels of a layer (its ``out_channels``, else its last convolution's), or None for
    layers that keep the channels (activations, pools, dropout)."""
    channels = getattr(module, "out_channels", None)
    if isinstance(channels, int):
        return channels
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else None


def sequential_feature_info(features: nn.Sequential, prefix: str = "features") -> list[FeatureInfo]:
    """Stages of a plain feature stack (AlexNet, VGG, NiN, SqueezeNet): the last layer before each
    downsampling layer that more convolutions follow, and the stack's last layer."""
    layers = list(features.named_children())
    produces = [_out_channels(layer) is not None for _, layer in layers]
    info: list[FeatureInfo] = []
    channels, reduction, fresh = 0, 1, False  # fresh: maps computed since the last recorded stage
    for i, (_, layer) in enumerate(layers):
        stride = _stride(layer)
        if stride > 1 and fresh and any(produces[i + 1 :]):
            info.append(FeatureInfo(f"{prefix}.{layers[i - 1][0]}", channels, reduction))
            fresh = False
        reduction *= stride
        out = _out_channels(layer)
        if out is not None:
            channels, fresh = out, True
    info.append(FeatureInfo(f"{prefix}.{layers[-1][0]}", channels, reduction))
    return info


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class GenerativeModel(nn.Module):
    """The contract of the zoo's generative models (VAE, autoencoders, GANs).

    A latent prior N(0, I) of ``latent_dim`` dimensions, ``generate(z)`` mapping latents to images in
    ``output_range`` (``in_chans`` x ``image_size`` x ``image_size``), ``sample(n)`` drawing from the prior,
    and a ``fixed_noise`` buffer: latents drawn once from ``seed`` and saved with the weights, so the
    sample grids of every epoch (and of a resumed run) show the same points of the latent space.
    """

    #: pixel range of ``generate`` and of the data the model is trained on
    output_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, latent_dim: int, in_chans: int, image_size: int, num_fixed: int = 64, seed: int = 0) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim, self.in_chans, self.image_size = latent_dim, in_chans, image_size
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
