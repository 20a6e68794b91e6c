"""What a trained classifier has learnt: ``python -m zoo visualize CKPT --what W --out DIR``.

On the model rebuilt from its checkpoint (:func:`zoo.trained.load_classifier`):

- ``filters``: the first convolution's filters as an image grid (``filters.png``);
- ``activations``: the feature maps of ``feature_info`` stages (``--layer``: one or several, default all) for image
  files prepared as the training data was (:func:`zoo.trained.load_image`), one grid per stage
  (``activations_<stage>.png``: a row per image, a column per channel, each map scaled on its own; 1x1 maps on one
  scale per image);
- ``tsne``: t-SNE (scikit-learn) of the penultimate features (``forward_head(..., pre_logits=True)``) of a split of
  the checkpoint's own dataset: ``tsne.csv`` (index, label, x, y per image), ``tsne.png`` (a scatter coloured by
  class) and ``tsne_mosaic.png`` (the images as thumbnails at their embedded positions: the "CNN codes" figure);
- ``class_model``: class-model visualisation (Simonyan, Vedaldi & Zisserman 2014): the image ``I`` maximising
  ``S_c(I) - λ ||I||²`` for the class score ``S_c`` (not the softmax), by gradient ascent from the data mean;
  ``class_model_<class>.png`` per class;
- ``dream``: DeepDream (Mordvintsev, Olah & Tyka 2015): gradient ascent on an image (``--image``, else low noise)
  amplifying whatever a stage (``--layer``, default the deepest with more than one position) responds to, maximising
  the mean square of its activations, with normalised steps, random jitter and octaves (a pyramid of scales whose
  added detail carries from one to the next); ``dream_<image>.png`` (the image and its dream);
- ``style``: neural style transfer (Gatys, Ecker & Bethge 2016), :mod:`zoo.style`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from zoo.errors import ConfigError, UnknownNameError

WHATS = ("filters", "activations", "tsne", "class_model", "dream", "style")


def check_what(what: str, option: str = "--what") -> str:
    from zoo.registry import close_names

    if what not in WHATS:
        close = close_names(what, WHATS)
        hint = f"did you mean: {', '.join(close)}?" if close else f"use one of {', '.join(WHATS)}"
        raise UnknownNameError(f"unknown {option} {what!r}; {hint}")
    return what


def first_conv(model: nn.Module) -> nn.Module:
    """The first ``nn.Conv2d`` of ``model`` (module order)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ConfigError(f"{type(model).__name__} has no nn.Conv2d: --what filters needs a convolutional model")


def _unit(t: torch.Tensor) -> torch.Tensor:
    """``t`` scaled to 0..1 (a constant tensor: 0.5)."""
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi > lo else torch.full_like(t, 0.5)


def _grid_figure(tiles: Sequence[torch.Tensor], cols: int, title: str, path: Path, labels: Sequence[str] | None = None,
                 cmap: str = "gray") -> None:
    """``tiles`` (each ``(H, W)`` or ``(H, W, 3)`` in 0..1) in a grid of ``cols`` columns, written to ``path``."""
    from matplotlib.figure import Figure

    rows = max(1, math.ceil(len(tiles) / cols))
    fig = Figure(figsize=(min(1.2 * cols, 16) + 0.2, min(1.2 * rows, 40) + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(tiles):
            tile = tiles[k].numpy()
            ax.imshow(tile, cmap=cmap if tile.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if labels is not None:
                ax.set_title(labels[k], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)


def _panels(images: Sequence[tuple[str, torch.Tensor]], path: Path, title: str | None = None, side: float = 3.0) -> None:
    """Images (``(C, H, W)`` in 0..1, grey or RGB) side by side under their names, written to ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(side * len(images) + 0.4, side + (0.8 if title else 0.6)), layout="constrained")
    for ax, (name, img) in zip(fig.subplots(1, len(images), squeeze=False)[0], images):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)


def filter_tiles(model: nn.Module) -> list[torch.Tensor]:
    """The first convolution's filters as tiles: RGB when it reads 3 channels, else one per input channel (the
    first's only, for more than 3), each scaled to 0..1 on its own."""
    w = first_conv(model).weight.detach().float().cpu()
    if w.shape[1] == 3:
        return [_unit(f).permute(1, 2, 0) for f in w]
    return [_unit(f[0]) for f in w]


def write_filters(model: nn.Module, out: Path) -> list[Path]:
    conv = first_conv(model)
    tiles = filter_tiles(model)
    path = out / "filters.png"
    _grid_figure(tiles, min(len(tiles), 8), f"{type(model).__name__}: first convolution, {tuple(conv.weight.shape)}", path)
    return [path]


@torch.no_grad()
def stage_activations(model: nn.Module, x: torch.Tensor, stages: Sequence[str]) -> dict[str, torch.Tensor]:
    """The output of each module in ``stages`` for the batch ``x``."""
    from zoo.explain import module_named

    outputs: dict[str, torch.Tensor] = {}
    handles = [module_named(model, s).register_forward_hook(lambda m, i, out, s=s: outputs.__setitem__(s, out.detach()))
               for s in stages]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def write_activations(model: nn.Module, images: Sequence[str | Path], xs: torch.Tensor, stages: Sequence[str],
                      out: Path, max_channels: int = 32) -> list[Path]:
    acts = stage_activations(model, xs, stages)
    written = []
    for stage in stages:
        a = acts[stage].float().cpu()
        if a.dim() == 2:
            a = a[:, :, None, None]  # a vector: one 1x1 map per unit
        channels, shape = min(a.shape[1], max_channels), tuple(a.shape[1:])
        if a.shape[-2:].numel() == 1:  # 1x1 maps: each alone is a constant, so one scale over the image's channels
            a = torch.stack([_unit(a[i, :channels]) for i in range(a.shape[0])])
            tiles = [a[i, c] for i in range(a.shape[0]) for c in range(channels)]
        else:
            tiles = [_unit(a[i, c]) for i in range(a.shape[0]) for c in range(channels)]
        labels = [f"{Path(images[i]).stem} c{c}" for i in range(a.shape[0]) for c in range(channels)]
        path = out / f"activations_{stage.replace('.', '_')}.png"
        _grid_figure(tiles, channels, f"{stage}: {shape}, first {channels} channels", path, labels, "viridis")
        written.append(path)
    return written


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` features before the classifier: ``forward_head(pre_logits=True)``, else pooled ``forward_features``."""
    if hasattr(model, "forward_head") and hasattr(model, "forward_features"):
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    else:
        feats = model(x)
    if feats.dim() > 2:
        feats = feats.flatten(2).mean(dim=2) if feats.dim() == 4 else feats.flatten(1)
    return feats.float()


def split_batches(state: dict[str, Any], split: str, max_points: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Up to ``max_points`` images (normalised) and labels of ``split`` of the checkpoint's dataset, built from its
    stored config as ``evaluate`` builds it (no augmentation), and the class names."""
    from zoo.data import build_datamodule
    from zoo.data.pretrained import resolve_data_config

    cfg = state["config"]
    data_cfg, _ = resolve_data_config(cfg["data"], cfg["model"])
    data = build_datamodule(data_cfg, None, device="cpu", seed=int(cfg.get("seed", 0)))
    xs, ys, n = [], [], 0
    for x, y in data.loader(split):
        xs.append(x.cpu())
        ys.append(y.cpu())
        n += len(y)
        if n >= max_points:
            break
    if not xs:
        raise ConfigError(f"the {split} split of {cfg['data']['name']} is empty")
    return torch.cat(xs)[:max_points], torch.cat(ys)[:max_points], [str(c) for c in data.class_names]


def tsne_embed(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``(N, 2)`` t-SNE of ``features`` (scikit-learn; the perplexity capped below ``N``)."""
    from sklearn.manifold import TSNE

    n = len(features)
    perplexity = min(30.0, max(1.0, (n - 1) / 3))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features.numpy())
    return torch.as_tensor(emb, dtype=torch.float32)


def _mosaic(images: torch.Tensor, coords: torch.Tensor, size: int = 1200, thumb: int = 40) -> torch.Tensor:
    """``(size, size, 3)``: the images (``(N, C, H, W)`` in 0..1) at ``coords`` scaled into the canvas, later over earlier."""
    import torch.nn.functional as F

    canvas = torch.ones(size, size, 3)
    c = coords - coords.min(0).values
    c = c / c.max(0).values.clamp_min(1e-8) * (size - thumb)
    small = F.interpolate(images, size=(thumb, thumb), mode="bilinear", align_corners=False).clamp(0, 1)
    if small.shape[1] == 1:
        small = small.expand(-1, 3, -1, -1)
    for img, (x, y) in zip(small, c.long().tolist()):
        canvas[y:y + thumb, x:x + thumb] = img.permute(1, 2, 0)
    return canvas


def write_tsne(model: nn.Module, state: dict[str, Any], split: str, max_points: int, out: Path, seed: int = 0,
               device: str = "cpu") -> list[Path]:
    from matplotlib.figure import Figure

    xs, ys, names = split_batches(state, split, max_points)
    if len(xs) < 3:
        raise ConfigError(f"t-SNE needs at least 3 images; the {split} split gives {len(xs)}")
    feats = torch.cat([penultimate(model, xs[i:i + 256].to(device)).cpu() for i in range(0, len(xs), 256)])
    coords = tsne_embed(feats, seed)
    csv = out / "tsne.csv"
    with open(csv, "w") as f:
        f.write("index,label,class,x,y\n")
        for i, ((x, y), label) in enumerate(zip(coords.tolist(), ys.tolist())):
            f.write(f"{i},{label},{names[label] if label < len(names) else label},{x:.6g},{y:.6g}\n")
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    for label in sorted(set(ys.tolist())):
        keep = ys == label
        ax.scatter(coords[keep, 0], coords[keep, 1], s=8, label=names[label] if label < len(names) else str(label))
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(f"t-SNE of penultimate features: {len(xs)} {split} images", fontsize=10)
    scatter = out / "tsne.png"
    fig.savefig(scatter, dpi=100)
    info = state["data_info"]
    mean = torch.tensor(info["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32).view(1, -1, 1, 1)
    canvas = _mosaic((xs * std + mean).clamp(0, 1), coords)
    fig = Figure(figsize=(10, 10), layout="constrained")
    ax = fig.subplots()
    ax.imshow(canvas.numpy())
    ax.set_axis_off()
    mosaic = out / "tsne_mosaic.png"
    fig.savefig(mosaic, dpi=120)
    return [csv, scatter, mosaic]


def class_model(model: nn.Module, target: int, shape: Sequence[int], steps: int = 200, lr: float = 1.0,
                l2: float = 1e-3, start: torch.Tensor | None = None, device: str = "cpu") -> torch.Tensor:
    """``argmax_I S_c(I) - l2 ||I||²`` by ``steps`` of gradient ascent (Adam at ``lr``) on the input (normalised
    space) from ``start`` (default zeros: the data mean); the class score ``S_c`` is the logit, not the softmax."""
    image = (start.clone() if start is not None else torch.zeros(1, *shape)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([image], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        score = model(image)[0, target]
        (-(score - l2 * image.pow(2).sum())).backward()
        opt.step()
    return image.detach()


def write_class_models(model: nn.Module, state: dict[str, Any], targets: Sequence[int], names: Sequence[str],
                       steps: int, lr: float, l2: float, out: Path, device: str = "cpu") -> list[Path]:
    info, cfg = state["data_info"], state["config"]
    size = int(cfg["data"].get("image_size") or cfg["model"]["input_size"])
    shape = (len(info["mean"]), size, size)
    written = []
    for c in targets:
        image = class_model(model, c, shape, steps, lr, l2, device=device)
        with torch.no_grad():
            score = float(model(image)[0, c])
        path = out / f"class_model_{c}.png"
        _panels([(f"class {names[c]}: score {score:.2f}", _unit(image[0].cpu()))], path)
        written.append(path)
    return written


class _Reached(Exception):
    """Raised by a forward hook to stop the network at the module it watches."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output


def stage_output(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module``'s output for ``x``; the forward stops there, so later layers (a classifier made for one input
    size) never see ``x``."""
    def stop(m: nn.Module, i: Any, out: torch.Tensor) -> None:
        raise _Reached(out)

    handle = module.register_forward_hook(stop)
    try:
        model(x)
    except _Reached as reached:
        return reached.output
    finally:
        handle.remove()
    raise ConfigError(f"the forward of {type(model).__name__} does not pass through the stage; pass another --layer")


@dataclass(frozen=True)
class DreamOptions:
    """DeepDream's ascent: ``steps`` per octave of step ``lr`` (on the gradient divided by its mean absolute
    value), ``octaves`` scales each ``octave_scale`` smaller than the next, a random shift of up to ``jitter``
    pixels per step."""

    steps: int = 20
    lr: float = 0.05
    octaves: int = 3
    octave_scale: float = 1.4
    jitter: int = 1
    seed: int = 0


def _fits(model: nn.Module, module: nn.Module, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            return stage_output(model, module, x).numel() > 0
    except (RuntimeError, ValueError):  # too small for a kernel on the way, or a model made for one size
        return False


def dream(model: nn.Module, module: nn.Module, x: torch.Tensor, opts: DreamOptions = DreamOptions(),
          low: torch.Tensor | None = None, high: torch.Tensor | None = None) -> tuple[torch.Tensor, float, float]:
    """DeepDream of the batch ``x`` (normalised) on ``module``: ``(dream, objective before, objective after)``, the
    objective being the mean square of the stage's activations. Pixels stay within ``low``..``high`` (per channel,
    the normalised 0..1); octaves too small to reach the stage are left out."""
    import torch.nn.functional as F

    def objective(t: torch.Tensor) -> torch.Tensor:
        return stage_output(model, module, t).pow(2).mean()

    gen = torch.Generator().manual_seed(opts.seed)
    h, w = x.shape[-2:]
    sizes = [(max(1, round(h / opts.octave_scale ** k)), max(1, round(w / opts.octave_scale ** k)))
             for k in reversed(range(opts.octaves))]
    sizes = [size for size in sizes if size == (h, w) or _fits(model, module, x.new_zeros(1, x.shape[1], *size))]
    with torch.no_grad():
        before = float(objective(x))
    detail = None
    image = x
    for size in sizes:
        base = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        detail = torch.zeros_like(base) if detail is None else F.interpolate(detail, size=size, mode="bilinear",
                                                                            align_corners=False)
        image = (base + detail).detach()
        for _ in range(opts.steps):
            dy, dx = torch.randint(-opts.jitter, opts.jitter + 1, (2,), generator=gen).tolist()
            shifted = image.roll((dy, dx), dims=(-2, -1)).requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(shifted), shifted)
            image = (shifted + opts.lr * grad / grad.abs().mean().clamp_min(1e-12)).detach().roll((-dy, -dx), dims=(-2, -1))
            if low is not None and high is not None:
                image = image.clamp(low, high)
        detail = image - base
    with torch.no_grad():
        after = float(objective(image))
    return image, before, after


def write_dreams(model: nn.Module, state: dict[str, Any], names: Sequence[str], xs: torch.Tensor, stage: str,
                 opts: DreamOptions, out: Path) -> list[Path]:
    from zoo.explain import module_named

    info = state["data_info"]
    mean = torch.tensor(info["mean"], dtype=torch.float32, device=xs.device).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32, device=xs.device).view(1, -1, 1, 1)
    module = module_named(model, stage)
    written = []
    for name, x in zip(names, xs):
        dreamt, before, after = dream(model, module, x[None], opts, (0 - mean) / std, (1 - mean) / std)
        path = out / f"dream_{Path(name).stem}.png"
        _panels([(Path(name).name, (x[None] * std + mean).clamp(0, 1)[0].cpu()),
                 ("dream", (dreamt * std + mean).clamp(0, 1)[0].cpu())], path,
                f"DeepDream on {stage}: mean square activation {before:.3g} -> {after:.3g}")
        written.append(path)
    return written


#: ``--steps`` and ``--lr`` when not given
STEP_DEFAULTS = {"class_model": (200, 1.0), "dream": (DreamOptions.steps, DreamOptions.lr), "style": (100, 1.0)}


@dataclass(frozen=True)
class Options:
    """What ``visualize`` needs besides the checkpoint, ``--what`` and ``--out``; ``steps``/``lr`` ``None``: the
    ``--what``'s default (:data:`STEP_DEFAULTS`)."""

    images: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    split: str = "val"
    max_points: int = 500
    targets: tuple[str, ...] = ()
    steps: int | None = None
    lr: float | None = None
    l2: float = 1e-3
    octaves: int = DreamOptions.octaves
    octave_scale: float = DreamOptions.octave_scale
    style: str | None = None
    size: int = 256
    style_weight: float = 1e6
    seed: int = 0

    def step_size(self, what: str) -> tuple[int, float]:
        steps, lr = STEP_DEFAULTS.get(what, (200, 1.0))
        return (steps if self.steps is None else self.steps), (lr if self.lr is None else self.lr)


#: the ``--what`` values each option applies to; given to any other, it is refused rather than ignored
OPTION_USES: dict[str, tuple[str, ...]] = {
    "images": ("activations", "dream", "style"), "layers": ("activations", "dream"), "split": ("tsne",),
    "max_points": ("tsne",), "targets": ("class_model",), "steps": ("class_model", "dream", "style"),
    "lr": ("class_model", "dream", "style"), "l2": ("class_model",), "octaves": ("dream",), "octave_scale": ("dream",),
    "style": ("style",), "size": ("style",), "style_weight": ("style",), "seed": ("tsne", "dream"),
}
_FLAGS = {"images": "--image", "layers": "--layer", "targets": "--target"}


def _check(what: str, opts: Options) -> None:
    for option in fields(Options):
        uses = OPTION_USES[option.name]
        if what not in uses and getattr(opts, option.name) != option.default:
            flag = _FLAGS.get(option.name, "--" + option.name.replace("_", "-"))
            raise ConfigError(f"{flag} does not apply to --what {what}; it is for --what {' or '.join(uses)}")
    steps, lr = opts.step_size(what)
    if opts.split not in ("train", "val", "test"):
        raise ConfigError(f"unknown --split {opts.split!r}; use train, val or test")
    if opts.max_points < 3:
        raise ConfigError(f"--max-points must be at least 3, got {opts.max_points}")
    if steps < 1 or lr <= 0 or opts.l2 < 0:
        raise ConfigError(f"--steps must be >= 1, --lr > 0 and --l2 >= 0, got {steps}, {lr} and {opts.l2}")
    if opts.octaves < 1 or opts.octave_scale <= 1:
        raise ConfigError(f"--octaves must be >= 1 and --octave-scale > 1, got {opts.octaves} and {opts.octave_scale}")
    if what == "style" and (len(opts.images) != 1 or not opts.style):
        raise ConfigError("--what style needs --image CONTENT (one file) and --style STYLE_IMAGE")
    if what == "activations" and not opts.images:
        raise ConfigError("--what activations needs --image PATH [PATH ...]")
    if opts.size < 8 or opts.style_weight < 0:
        raise ConfigError(f"--size must be >= 8 and --style-weight >= 0, got {opts.size} and {opts.style_weight}")


def visualize(ckpt: str | Path, what: str, out: str | Path, opts: Options = Options(), device: str = "cpu") -> list[Path]:
    """Write ``what``'s files under ``out`` and return their paths. Every input is checked before anything is
    written."""
    from zoo.explain import default_cam_layer, feature_stages, module_named, resolve_target
    from zoo.trained import load_image
    from zoo.trained import load_classifier

    check_what(what)
    _check(what, opts)
    steps, lr = opts.step_size(what)
    out = Path(out)
    if what == "style":
        from zoo.style import TORCHVISION, write_style

        if not str(ckpt).startswith(TORCHVISION) and opts.size != Options.size:
            raise ConfigError("--size applies to torchvision:<weights>; a zoo checkpoint's images take the size it "
                              "was trained at")

        return write_style(ckpt, opts.images[0], str(opts.style), out, steps, lr, opts.size, 1.0, opts.style_weight, device)
    model, state = load_classifier(ckpt, "visualize CKPT", hint="pass <run>/checkpoints/best.pt of a classification run")
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    info = state.get("data_info") or {}
    num_classes = int(getattr(model, "num_classes", 0) or info.get("num_classes") or 0)
    names = [str(c) for c in (info.get("class_names") or range(num_classes))]
    wanted: list[int] = []
    xs = None
    stages: list[str] = []
    if what == "filters":
        first_conv(model)
    elif what in ("activations", "dream"):
        stages = list(opts.layers) or feature_stages(model)
        if not stages:
            raise ConfigError(f"{type(model).__name__} declares no feature_info stages; pass --layer <module name>")
        for s in stages:
            module_named(model, s)
        if opts.images:
            xs = torch.cat([load_image(p, state) for p in opts.images]).to(device)
        else:  # a dream from low noise around the data mean
            size = int(state["config"]["data"].get("image_size") or state["config"]["model"]["input_size"])
            xs = 0.1 * torch.randn(1, len(info["mean"]), size, size, generator=torch.Generator().manual_seed(opts.seed))
            xs = xs.to(device)
        if what == "dream":
            if len(stages) > 1 and not opts.layers:
                stages = [default_cam_layer(model, xs[:1])]
            elif len(stages) > 1:
                raise ConfigError(f"--what dream dreams on one stage; --layer names {len(stages)}")
    elif what == "class_model":
        wanted = list(range(num_classes)) if not opts.targets else [
            int(resolve_target(t, names, num_classes)) for t in opts.targets]
    elif what == "tsne":
        import sklearn.manifold  # noqa: F401  (a missing scikit-learn, before anything is written)
    out.mkdir(parents=True, exist_ok=True)
    if what == "filters":
        return write_filters(model, out)
    if what == "activations":
        assert xs is not None
        return write_activations(model, opts.images, xs, stages, out)
    if what == "dream":
        assert xs is not None
        dream_opts = DreamOptions(steps, lr, opts.octaves, opts.octave_scale, seed=opts.seed)
        return write_dreams(model, state, [str(p) for p in opts.images] or ["noise"], xs, stages[0], dream_opts, out)
    if what == "tsne":
        return write_tsne(model, state, opts.split, opts.max_points, out, opts.seed, device)
    return write_class_models(model, state, wanted, names, steps, lr, opts.l2, out, device)
