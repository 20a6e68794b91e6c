"""``python -m zoo list [PATTERN] [--task T] [--family F]``: the registered models with their task,
family, input size, parameter count (counted on the meta device, so nothing is allocated) and the
torchvision weights they load (``model.pretrained=torchvision:<model>.<weights>``; ``-``: none).

``python -m zoo caption CKPT IMAGE [IMAGE ...]``: caption image files with a captioning checkpoint.

``python -m zoo explain CKPT IMAGE [IMAGE ...] --method M --out DIR``: attribution maps of a classifier
(:mod:`zoo.explain`, Captum).

``python -m zoo visualize CKPT --what filters|activations|tsne|class_model|dream|style --out DIR``: first-layer
filters, activation maps, a t-SNE of penultimate features, class-model images, DeepDream, style transfer
(:mod:`zoo.visualize`, :mod:`zoo.style`).

``python -m zoo gradcheck MODEL`` and ``python -m zoo summary MODEL``: :mod:`zoo.tools`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from zoo.errors import UnknownNameError, ZooError
from zoo.models import create_model, list_models, model_info
from zoo.models.base import count_parameters
from zoo.models.pretrained import torchvision_weight_names
from zoo.registry import close_names


class _MetaFills(TorchFunctionMode):
    """``normal_`` of a meta tensor as the no-op it is (a meta tensor holds no values): torch runs it
    through Python reference code, ~0.3 ms a call and ``torch._dynamo`` imported on the first, which
    made the initialisation of the registry's models most of ``zoo list``'s time."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is torch.Tensor.normal_ and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _param_count(name: str) -> int:
    with torch.device("meta"), _MetaFills():
        return count_parameters(create_model(name))


def _check_known(key: str, value: str | None) -> None:
    """An :class:`UnknownNameError` (with close matches) for a ``--task``/``--family`` no model has."""
    known = sorted({model_info(n)[key] for n in list_models()})
    if value is not None and value not in known:
        close = close_names(value, known)
        hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise UnknownNameError(f"no model has {key} {value!r}; {hint}")


def cmd_list(args: argparse.Namespace) -> int:
    _check_known("task", args.task)
    _check_known("family", args.family)
    names = list_models(args.pattern, task=args.task, family=args.family)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        info = model_info(name)
        weights = ",".join(torchvision_weight_names(name)) or "-"
        rows.append((name, info["task"], info["family"], str(info["input_size"]), f"{_param_count(name):,}", weights))
    header = ("model", "task", "family", "input", "params", "weights")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    align = [str.ljust, str.ljust, str.ljust, str.rjust, str.rjust, str.ljust]
    for row in [header, *rows]:
        print("  ".join(align[i](cell, widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from zoo.predict import caption_files

    captions = caption_files(args.ckpt, args.images, args.decode, args.beam_size, args.temperature, args.seed, args.device)
    for path, caption in zip(args.images, captions):
        print(f"{path}\t{caption}" if len(args.images) > 1 else caption)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from zoo.explain import Options, explain_files

    opts = Options(layer=args.layer, window=args.window, stride=args.stride, steps=args.steps)
    written = explain_files(args.ckpt, args.images, args.method.split(","), args.out, args.target, opts, args.top_k, args.device)
    print(f"wrote {len(written)} file{'s' if len(written) != 1 else ''} to {args.out}")
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    from zoo.visualize import Options, visualize

    layers = tuple(s for text in args.layer or () for s in text.split(",") if s)
    opts = Options(images=tuple(args.image or ()), layers=layers, split=args.split, max_points=args.max_points,
                   targets=tuple(args.target or ()), steps=args.steps, lr=args.lr, l2=args.l2, octaves=args.octaves,
                   octave_scale=args.octave_scale, style=args.style, size=args.size, style_weight=args.style_weight,
                   seed=args.seed)
    written = visualize(args.ckpt, args.what, args.out, opts, args.device)
    print(f"wrote {len(written)} file{'s' if len(written) != 1 else ''} to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description="zoo model registry")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'resnet*'")
    p.add_argument("--task", default=None, help="only models of this task (classification, detection, ...)")
    p.add_argument("--family", default=None, help="only models of this family")
    p.set_defaults(fn=cmd_list)
    c = sub.add_parser("caption", help="caption image files with a captioning checkpoint")
    c.add_argument("ckpt", help="a captioning checkpoint, e.g. outputs/<date>/<time>/checkpoints/best.pt")
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--decode", choices=["beam", "greedy", "sample"], default="beam")
    c.add_argument("--beam-size", type=int, default=None, help="default: the checkpoint's task.beam_size")
    c.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of --decode sample")
    c.add_argument("--seed", type=int, default=0, help="seed of --decode sample")
    c.add_argument("--device", default="cpu")
    c.set_defaults(fn=cmd_caption)
    e = sub.add_parser("explain", help="attribution maps of a classifier checkpoint on image files (Captum)",
                       description="Write <out>/<image>_<method>.png per image and method: the image, the attribution "
                                   "map and their overlay, the top-k predicted classes in the title. Needs Captum "
                                   "(pip install -e '.[viz]').")
    e.add_argument("ckpt", help="a classification checkpoint, e.g. outputs/<date>/<time>/checkpoints/best.pt")
    e.add_argument("images", nargs="+", help="image files (PNG, JPEG), prepared as the checkpoint's training data")
    e.add_argument("--method", default="saliency",
                   help="saliency, guided_backprop, deconvnet, occlusion, gradcam, integrated_gradients; several "
                        "comma-separated, or all (default saliency)")
    e.add_argument("--target", default=None, help="the class explained, a name or an index (default: each image's prediction)")
    e.add_argument("--out", default="explain", help="output directory (default ./explain)")
    e.add_argument("--top-k", type=int, default=3, help="predicted classes in the title (default 3)")
    e.add_argument("--layer", default=None, help="gradcam's layer, a module name (default: the deepest feature_info "
                                                 "stage with more than one position)")
    e.add_argument("--window", type=int, default=None, help="occlusion's square side (default: a quarter of the image)")
    e.add_argument("--stride", type=int, default=None, help="occlusion's step (default: half the window)")
    e.add_argument("--steps", type=int, default=50, help="integrated_gradients' points on the path (default 50)")
    e.add_argument("--device", default="cpu")
    e.set_defaults(fn=cmd_explain)
    v = sub.add_parser("visualize", help="filters, activations, t-SNE, class models, DeepDream, style transfer of a classifier",
                       description="Write under --out: filters.png (--what filters); activations_<stage>.png per stage "
                                   "(--what activations, --image); tsne.csv, tsne.png, tsne_mosaic.png (--what tsne); "
                                   "class_model_<class>.png per class (--what class_model); dream_<image>.png per "
                                   "image, or from noise (--what dream); style.png, style_result.png, style_loss.csv "
                                   "(--what style --image CONTENT --style STYLE; CKPT a vgg checkpoint or "
                                   "torchvision:vgg19 in the torch hub cache).")
    v.add_argument("ckpt", help="a classification checkpoint, e.g. outputs/<date>/<time>/checkpoints/best.pt")
    v.add_argument("--what", required=True, help="filters, activations, tsne, class_model, dream or style")
    v.add_argument("--out", default="visualize", help="output directory (default ./visualize)")
    v.add_argument("--image", nargs="+", default=None, help="activations, dream: image files (PNG, JPEG); style: the content image")
    v.add_argument("--layer", action="append", default=None,
                   help="activations: a stage (module name), repeatable or comma-separated (default: every feature_info "
                        "stage); dream: one stage (default: the deepest with more than one position)")
    v.add_argument("--split", default="val", help="tsne: the split of the checkpoint's dataset, val or test (default val)")
    v.add_argument("--max-points", type=int, default=500, help="tsne: at most this many images (default 500)")
    v.add_argument("--target", nargs="+", default=None, help="class_model: class names or indices (default: every class)")
    v.add_argument("--steps", type=int, default=None,
                   help="class_model: gradient-ascent steps (default 200); dream: steps per octave (20); style: L-BFGS iterations (100)")
    v.add_argument("--lr", type=float, default=None,
                   help="class_model: Adam's step size (default 1.0); dream: the normalised step (0.05); style: L-BFGS's (1.0)")
    v.add_argument("--l2", type=float, default=1e-3, help="class_model: the L2 penalty's weight on the image (default 1e-3)")
    v.add_argument("--octaves", type=int, default=3, help="dream: image scales (default 3)")
    v.add_argument("--octave-scale", type=float, default=1.4, help="dream: the ratio between scales (default 1.4)")
    v.add_argument("--style", default=None, help="style: the style image")
    v.add_argument("--size", type=int, default=256, help="style with torchvision weights: the shorter side (default 256)")
    v.add_argument("--style-weight", type=float, default=1e6, help="style: beta, the style loss's weight against content's 1 (default 1e6)")
    v.add_argument("--seed", type=int, default=0, help="tsne: its random state; dream: the jitter and the noise (default 0)")
    v.add_argument("--device", default="cpu")
    v.set_defaults(fn=cmd_visualize)
    from zoo.tools.cli import add_parsers

    add_parsers(sub)  # gradcheck, summary
    args = parser.parse_args(argv)
    try:
        code = int(args.fn(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `python -m zoo list | head`: the reader has gone, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
