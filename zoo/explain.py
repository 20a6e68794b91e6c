"""Attribution maps of a trained classifier: ``python -m zoo explain CKPT IMAGE... --method M --out DIR``.

Which input pixels a class score depends on, by the methods of `Captum <https://captum.ai>`_ (``pip install -e
'.[viz]'``), each on the model rebuilt from its checkpoint (:func:`zoo.trained.load_classifier`) and an image
prepared as its training data was (:func:`zoo.trained.load_image`):

- ``saliency``: the gradient's magnitude (Simonyan, Vedaldi & Zisserman 2014);
- ``guided_backprop``: the gradient with only positive signals passed back through each ReLU (Springenberg et al.
  2015, "Striving for simplicity");
- ``deconvnet``: the gradient through ReLUs rectified on the signal alone (Zeiler & Fergus 2014);
- ``occlusion``: the drop of the class probability when a grey (the data mean) square hides each region (Zeiler &
  Fergus 2014);
- ``gradcam``: the class gradient's channel means weighting a layer's feature maps, rectified, then upsampled
  (Selvaraju et al. 2017); the layer defaults to the deepest stage of ``feature_info`` whose map has more than one
  position;
- ``integrated_gradients``: the gradients along the line from a black image to the input, times the difference
  (Sundararajan, Taly & Yan 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from zoo.errors import ConfigError, UnknownNameError

METHODS = ("saliency", "guided_backprop", "deconvnet", "occlusion", "gradcam", "integrated_gradients")


def captum_attr() -> Any:
    """``captum.attr``; a missing Captum is a one-line :class:`ConfigError` naming the extra that installs it."""
    from zoo.extras import require

    require("viz", "explain")
    import captum.attr

    return captum.attr


def parse_methods(text: str) -> list[str]:
    """``saliency,gradcam`` or ``all`` as a list of :data:`METHODS`."""
    from zoo.registry import close_names

    names = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        if name not in METHODS:
            close = close_names(name, METHODS)
            hint = f"did you mean: {', '.join(close)}?" if close else f"use one of {', '.join(METHODS)} or all"
            raise UnknownNameError(f"unknown attribution method {name!r}; {hint}")
    if not names:
        raise ConfigError(f"--method names no method; use one of {', '.join(METHODS)} or all")
    return names


@dataclass
class Options:
    """The settings of the methods that have any."""

    layer: str | None = None  # gradcam: a module name (default: see default_cam_layer)
    window: int | None = None  # occlusion: side of the square (default: a quarter of the image side)
    stride: int | None = None  # occlusion: its step (default: half the window)
    steps: int = 50  # integrated_gradients: points on the path
    black: torch.Tensor | None = None  # integrated_gradients: the baseline, black in the model's normalisation

    #: the method each option is for: given without it, it is refused rather than ignored
    USES = {"layer": "gradcam", "window": "occlusion", "stride": "occlusion", "steps": "integrated_gradients"}

    def check(self, methods: Sequence[str]) -> None:
        for option, method in self.USES.items():
            if method not in methods and getattr(self, option) != getattr(Options, option):
                raise ConfigError(f"--{option} is for --method {method}, which is not asked for")


@dataclass
class Attribution:
    """``map``: ``(1, C, H, W)`` or ``(1, 1, H, W)`` at the input's size; ``feature_map``: Grad-CAM's map at its layer's size."""

    map: torch.Tensor
    feature_map: torch.Tensor | None = None


def module_named(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name``; an unknown one is an :class:`UnknownNameError` with close names."""
    from zoo.registry import close_names

    modules = dict(model.named_modules())
    if name not in modules or not name:
        close = close_names(name, [n for n in modules if n])
        hint = f"did you mean: {', '.join(close)}?" if close else f"stages: {', '.join(feature_stages(model))}"
        raise UnknownNameError(f"--layer {name!r} is not a module of {type(model).__name__}; {hint}")
    return modules[name]


def feature_stages(model: nn.Module) -> list[str]:
    """The module names of ``model``'s ``feature_info`` stages (none without it)."""
    return [info.module for info in getattr(model, "feature_info", ())]


@torch.no_grad()
def default_cam_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The deepest ``feature_info`` stage whose output has more than one position (a 1x1 map, as LeNet-5's C5,
    cannot say where); the deepest stage when none has."""
    stages = feature_stages(model)
    if not stages:
        raise ConfigError(f"{type(model).__name__} declares no feature_info stages; pass --layer <module name>")
    sizes: dict[str, int] = {}
    handles = [module_named(model, s).register_forward_hook(
        lambda m, i, out, s=s: sizes.__setitem__(s, out.shape[-2:].numel() if out.dim() == 4 else 1)) for s in stages]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return next((s for s in reversed(stages) if sizes.get(s, 1) > 1), stages[-1])


def _probabilities(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: model(x).softmax(dim=1)


def saliency(model: nn.Module, x: torch.Tensor, target: int, opts: Options) -> Attribution:
    """|∂ score / ∂ x| (Simonyan et al. 2014)."""
    return Attribution(captum_attr().Saliency(model).attribute(x, target=target, abs=True))


def guided_backprop(model: nn.Module, x: torch.Tensor, target: int, opts: Options) -> Attribution:
    """The gradient, each ``nn.ReLU`` passing back only positive gradients of positive inputs (Springenberg et al. 2015)."""
    return Attribution(captum_attr().GuidedBackprop(model).attribute(x, target=target))


def deconvnet(model: nn.Module, x: torch.Tensor, target: int, opts: Options) -> Attribution:
    """The gradient, each ``nn.ReLU`` rectifying the gradient whatever its input (Zeiler & Fergus 2014)."""
    return Attribution(captum_attr().Deconvolution(model).attribute(x, target=target))


def _occlusion_window(x: torch.Tensor, opts: Options) -> tuple[int, int]:
    """Occlusion's square side and step for an image like ``x``; out of range is a :class:`ConfigError`."""
    side = min(x.shape[-2:])
    window = opts.window or max(1, side // 4)
    stride = opts.stride or max(1, window // 2)
    if not 1 <= window <= side or stride < 1:
        raise ConfigError(f"--window must be in 1..{side} and --stride >= 1, got {window} and {stride}")
    return window, stride


def occlusion(model: nn.Module, x: torch.Tensor, target: int, opts: Options) -> Attribution:
    """Per pixel, the mean drop of the target's probability over the grey squares covering it (Zeiler & Fergus 2014)."""
    channels, (window, stride) = x.shape[1], _occlusion_window(x, opts)
    occ = captum_attr().Occlusion(_probabilities(model))
    return Attribution(occ.attribute(x, target=target, sliding_window_shapes=(channels, window, window),
                                     strides=(channels, stride, stride), baselines=0.0))  # 0: the mean after normalisation


def gradcam(model: nn.Module, x: torch.Tensor, target: int, opts: Options) -> Attribution:
    """ReLU(Σ_k α_k A^k), α_k the spatial mean of ∂ score / ∂ A^k, at ``opts.layer``, upsampled bilinearly (Selvaraju et al. 2017)."""
    attr = captum_attr()
    layer = module_named(model, opts.layer or default_cam_layer(model, x))
    cam = attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return Attribution(attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear"), cam)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, opts: Options) -> Attribution:
    """(x - x') ∫ ∂ score(x' + α (x - x')) / ∂ x dα from a black image x' (Sundararajan et al. 2017)."""
    baseline = opts.black if opts.black is not None else torch.zeros_like(x)
    ig = captum_attr().IntegratedGradients(model)
    return Attribution(ig.attribute(x, baselines=baseline.expand_as(x), target=target, n_steps=opts.steps))


ATTRIBUTIONS: dict[str, Callable[[nn.Module, torch.Tensor, int, Options], Attribution]] = {
    "saliency": saliency, "guided_backprop": guided_backprop, "deconvnet": deconvnet, "occlusion": occlusion,
    "gradcam": gradcam, "integrated_gradients": integrated_gradients,
}


def attribute(model: nn.Module, x: torch.Tensor, method: str, target: int, opts: Options | None = None) -> Attribution:
    """The ``method`` attribution of class ``target`` for the one image ``x`` (``(1, C, H, W)``)."""
    (name,) = parse_methods(method)  # an unknown name: UnknownNameError
    return ATTRIBUTIONS[name](model, x, target, opts or Options())


def resolve_target(target: str | None, class_names: Sequence[str], num_classes: int) -> int | None:
    """``--target``: a class name or an index in ``0..num_classes-1``; None: each image's predicted class."""
    if target is None:
        return None
    names = [str(c) for c in class_names]
    if target in names:
        return names.index(target)
    try:
        index = int(target)
    except ValueError:
        raise ConfigError(f"--target {target!r} is neither a class name nor an index; classes: {', '.join(names)}") from None
    if not 0 <= index < num_classes:
        raise ConfigError(f"--target {index} is out of range: the checkpoint has {num_classes} classes (0..{num_classes - 1})")
    return index


def _heat(attribution: torch.Tensor) -> torch.Tensor:
    """One ``(H, W)`` map: the channels summed."""
    return attribution.detach()[0].sum(dim=0).cpu()


def _figure(image: torch.Tensor, heat: torch.Tensor, title: str, path: Path) -> None:
    """Image | attribution | overlay, side by side, written to ``path``."""
    from matplotlib.figure import Figure

    signed = bool((heat < 0).any())
    vmax = float(heat.abs().max()) or 1.0
    style = {"cmap": "bwr", "vmin": -vmax, "vmax": vmax} if signed else {"cmap": "inferno", "vmin": 0.0, "vmax": vmax}
    shown = image.permute(1, 2, 0).numpy()
    grey = shown.mean(axis=2)
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(shown[..., 0] if shown.shape[2] == 1 else shown, cmap="gray", vmin=0, vmax=1)
    im = axes[1].imshow(heat.numpy(), **style)
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    axes[2].imshow(grey, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(heat.numpy(), alpha=0.5, **style)
    for ax, name in zip(axes, ("image", "attribution", "overlay")):
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def explain_files(ckpt: str | Path, images: Sequence[str | Path], methods: Sequence[str], out: str | Path,
                  target: str | None = None, opts: Options | None = None, top_k: int = 3, device: str = "cpu") -> list[Path]:
    """Write ``<out>/<image stem>_<method>.png`` for each image and method (image, attribution, overlay; the top-k
    predicted classes in the title) and return their paths. The attributed class is ``target`` (a name or an
    index), else each image's prediction. Every input is checked before anything is computed."""
    from zoo.trained import load_image
    from zoo.trained import load_classifier

    methods = parse_methods(",".join(methods))
    captum_attr()
    model, state = load_classifier(ckpt, "explain CKPT", hint="pass <run>/checkpoints/best.pt of a classification run")
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)  # the attributions need the input's gradient only
    info = state.get("data_info") or {}
    num_classes = int(getattr(model, "num_classes", 0) or info.get("num_classes") or 0)
    names = [str(c) for c in (info.get("class_names") or range(num_classes))]
    wanted = resolve_target(target, names, num_classes)
    batch = [load_image(p, state).to(device) for p in images]  # missing or unreadable files fail here, before any work
    mean = torch.tensor(info["mean"], dtype=torch.float32).view(1, -1, 1, 1).to(device)
    std = torch.tensor(info["std"], dtype=torch.float32).view(1, -1, 1, 1).to(device)
    opts = opts or Options()
    opts.check(methods)
    if opts.layer is not None:
        module_named(model, opts.layer)  # an unknown --layer, before anything is written
    if "occlusion" in methods:
        _occlusion_window(batch[0], opts)
    if opts.black is None:
        opts.black = -mean / std
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stems = [Path(p).stem for p in images]
    written = []
    for k, (path, x) in enumerate(zip(images, batch)):
        with torch.no_grad():
            probs = model(x).softmax(dim=1)[0]
        top = probs.topk(min(top_k, len(probs)))
        cls = int(top.indices[0]) if wanted is None else wanted
        predicted = ", ".join(f"{names[int(i)]} ({float(p):.2f})" for p, i in zip(top.values, top.indices))
        stem = stems[k] if stems.count(stems[k]) == 1 else f"{stems[k]}-{k}"
        shown = (x * std + mean).clamp(0, 1)[0].cpu()
        for method in methods:
            result = attribute(model, x, method, cls, opts)
            file = out / f"{stem}_{method}.png"
            _figure(shown, _heat(result.map), f"{Path(path).name}: {method} of class {names[cls]} | top-{len(top.values)}: "
                    f"{predicted}", file)
            written.append(file)
        print(f"{path}\t{predicted}")
    return written
