"""Neural style transfer (Gatys, Ecker & Bethge, "Image style transfer using convolutional neural networks",
CVPR 2016): ``python -m zoo visualize VGG --what style --image CONTENT --style STYLE --out DIR``.

The image ``x`` minimises ``alpha L_content + beta L_style`` with ``L_content`` the mean squared difference of
the feature maps of the content layers (``relu4_2``) between ``x`` and the content image, and ``L_style`` the
mean over the style layers (``relu1_1`` ... ``relu5_1``, equal weights) of the mean squared difference of the Gram
matrices ``G = F F^T / (C H W)`` of ``x``'s and the style image's feature maps ``F`` (``C x HW``): the paper's
layers and loss, each term normalised by its size. L-BFGS optimises ``x = sigmoid(z)``, so the pixels stay in
0..1 without clamping; it starts from the content image (the paper started from white noise, which needs more
iterations to reach the same loss).

The features are a VGG's (layers ``relu<stage>_<conv>`` in the paper's naming, counted through the network's
``features``):

- a zoo classification checkpoint of any ``vgg`` variant, with its own preprocessing (channels, size and
  normalisation of its training data), or
- ``torchvision:<weights>`` of a VGG built by zoo (``torchvision:vgg19`` = ``VGG19_Weights.IMAGENET1K_V1``, the
  weights Gatys et al. used), read from the torch hub cache (:func:`zoo.transfer.read_pretrained`); images are
  resized so that their shorter side is ``size``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from zoo.errors import ConfigError, DataNotFoundError, UnknownNameError

CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
TORCHVISION = "torchvision:"


@dataclass
class VGGFeatures:
    """The convolutional part of a VGG, the index in it of each ``relu<stage>_<conv>`` output, and the
    normalisation and image side its inputs need (``size`` ``None``: any side)."""

    net: nn.Sequential
    layers: dict[str, int]
    mean: torch.Tensor  #: ``(1, C, 1, 1)``
    std: torch.Tensor
    size: int | None
    source: str

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def __call__(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The feature maps ``names`` of the images ``x`` (pixels in 0..1); the network runs only as deep as
        the deepest of them."""
        wanted = {self.layers[n]: n for n in names}
        out: dict[str, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for i, module in enumerate(self.net[: max(wanted) + 1]):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
        return out


def vgg_layer_names(features: nn.Sequential) -> dict[str, int]:
    """``relu<stage>_<conv>`` -> the index of the activation after that convolution (and its batch norm);
    a stage ends at each pooling layer."""
    names: dict[str, int] = {}
    stage, conv = 1, 0
    for i, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            stage, conv = stage + 1, 0
        elif conv and not isinstance(module, nn.BatchNorm2d):
            names[f"relu{stage}_{conv}"] = i
    return names


def _frozen(model: nn.Module) -> nn.Sequential:
    from zoo.models.vgg import VGG

    if not isinstance(model, VGG):
        raise ConfigError(f"--what style needs VGG features; {type(model).__name__} is not a VGG: pass a checkpoint "
                          f"of a vgg model or torchvision:vgg19")
    net = model.features.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_features(source: str | Path) -> VGGFeatures:
    """The VGG features of a zoo checkpoint or of ``torchvision:<weights>`` (see the module docstring)."""
    text = str(source)
    if text.startswith(TORCHVISION):
        from zoo.models import create_model
        from zoo.models.pretrained import torchvision_weights, weights_cfg
        from zoo.transfer import load_pretrained

        member = torchvision_weights(text[len(TORCHVISION):])
        name = type(member).__name__.removesuffix("_Weights").lower()
        if not name.startswith("vgg"):
            raise ConfigError(f"--what style needs VGG features; {text} names {name} weights: use torchvision:vgg19")
        try:
            model = create_model(name, num_classes=len(member.meta["categories"]))
        except UnknownNameError:
            raise ConfigError(f"zoo builds vgg16, vgg19 and their _bn variants, not {name}: use torchvision:vgg19") from None
        load_pretrained(model, text, strict=True)
        cfg = weights_cfg(text)
        assert cfg is not None  # VGG weights are classification weights
        mean, std, size = cfg.mean, cfg.std, None
    else:
        from zoo.trained import load_classifier

        model, state = load_classifier(source, "visualize CKPT",
                                       hint="pass <run>/checkpoints/best.pt of a vgg classification run or torchvision:vgg19")
        info, cfg_ = state["data_info"], state["config"]
        mean, std = info["mean"], info["std"]
        size = int(cfg_["data"].get("image_size") or cfg_["model"]["input_size"])
    net = _frozen(model)
    return VGGFeatures(net, vgg_layer_names(net), torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                       torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), size, text)


def load_pixels(path: str | Path, channels: int, size: int | tuple[int, int]) -> torch.Tensor:
    """``(1, C, H, W)`` pixels in 0..1 of an image file: ``size`` an int resizes the shorter side to it, a pair
    to exactly that ``(H, W)``."""
    from PIL import Image
    from torchvision.transforms import v2

    if not Path(path).is_file():
        raise DataNotFoundError(f"image file not found: {path}")
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
    return v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True)])(img)[None]


def gram(f: torch.Tensor) -> torch.Tensor:
    """``(N, C, C)`` Gram matrices of ``(N, C, H, W)`` feature maps, divided by ``C H W``."""
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


@dataclass
class StyleResult:
    image: torch.Tensor  #: ``(1, C, H, W)`` in 0..1
    losses: list[tuple[float, float, float]]  #: (total, content, style) at every evaluation, the first at the start


def _check_layers(features: VGGFeatures, names: Sequence[str], option: str) -> None:
    if not names:
        raise ConfigError(f"{option} is empty; name at least one layer such as relu4_2")
    unknown = [n for n in names if n not in features.layers]
    if unknown:
        raise ConfigError(f"{option}: {', '.join(unknown)} not in this VGG; it has {', '.join(features.layers)}")


def transfer(features: VGGFeatures, content: torch.Tensor, style: torch.Tensor, steps: int = 200, lr: float = 1.0,
             content_weight: float = 1.0, style_weight: float = 1e6,
             content_layers: Sequence[str] = CONTENT_LAYERS, style_layers: Sequence[str] = STYLE_LAYERS) -> StyleResult:
    """Gatys et al.'s image: ``steps`` L-BFGS iterations (step size ``lr``, strong-Wolfe line search) on
    ``alpha L_content + beta L_style`` from the content image (pixels in 0..1)."""
    _check_layers(features, content_layers, "content layers")
    _check_layers(features, style_layers, "style layers")
    with torch.no_grad():
        targets = features(content, content_layers)
        grams = {n: gram(f) for n, f in features(style, style_layers).items()}
    z = torch.logit(content.clamp(1e-3, 1 - 1e-3)).contiguous().requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=lr, max_iter=steps, tolerance_grad=0.0, tolerance_change=0.0,
                            history_size=50, line_search_fn="strong_wolfe")
    losses: list[tuple[float, float, float]] = []
    both = list(dict.fromkeys([*content_layers, *style_layers]))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        maps = features(torch.sigmoid(z), both)
        c = torch.stack([(maps[n] - targets[n]).pow(2).mean() for n in content_layers]).mean()
        s = torch.stack([(gram(maps[n]) - grams[n]).pow(2).mean() for n in style_layers]).mean()
        loss = content_weight * c + style_weight * s
        loss.backward()
        losses.append((loss.item(), c.item(), s.item()))
        return loss

    opt.step(closure)
    return StyleResult(torch.sigmoid(z).detach(), losses)


def write_style(source: str | Path, content_path: str | Path, style_path: str | Path, out: Path, steps: int = 200,
                lr: float = 1.0, size: int = 256, content_weight: float = 1.0, style_weight: float = 1e6,
                device: str = "cpu") -> list[Path]:
    """``style.png`` (content, style and result side by side), ``style_result.png`` (the result at full
    resolution) and ``style_loss.csv`` (every L-BFGS evaluation's losses) under ``out``."""
    from matplotlib.figure import Figure
    from PIL import Image

    features = load_features(source)
    side: int | tuple[int, int] = (features.size, features.size) if features.size else size
    content = load_pixels(content_path, features.channels, side)
    style = load_pixels(style_path, features.channels, tuple(content.shape[-2:]))
    features.net.to(device)
    features.mean, features.std = features.mean.to(device), features.std.to(device)
    result = transfer(features, content.to(device), style.to(device), steps, lr, content_weight, style_weight)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "style_loss.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["evaluation", "loss", "content", "style"])
        writer.writerows([i, f"{t:.6g}", f"{c:.6g}", f"{s:.6g}"] for i, (t, c, s) in enumerate(result.losses))
    image = result.image[0].cpu()
    pixels = (image.permute(1, 2, 0).squeeze(-1) * 255).round().to(torch.uint8).numpy()
    full = out / "style_result.png"
    Image.fromarray(pixels).save(full)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    first, last = result.losses[0][0], result.losses[-1][0]
    for ax, (title, img) in zip(fig.subplots(1, 3), (("content", content[0]), ("style", style[0]),
                                                      (f"result: loss {first:.3g} -> {last:.3g}", image))):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"style transfer with {features.source}: {len(result.losses)} evaluations", fontsize=10)
    figure = out / "style.png"
    fig.savefig(figure, dpi=100)
    return [figure, full, table]
