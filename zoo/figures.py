"""What a classifier learnt, from ``evaluate.py``: ``figures.visualize=[filters,tsne,class_model]``,
``figures.explain=[saliency,gradcam]`` with ``figures.images=[a.png,b.png]``.

The figures of ``python -m zoo visualize`` (:mod:`zoo.visualize`) and ``python -m zoo explain`` (:mod:`zoo.explain`)
with their defaults, written under ``<run>/figures/`` once the metrics are, and every PNG also to the evaluation's
loggers as an image (TensorBoard's IMAGES tab: ``figures/<file name>``). t-SNE embeds the evaluated split. Every
name and file is checked before the evaluation starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ConfigError, DataNotFoundError

#: ``--what`` values that need image files, and the one that is the command line's alone
NEEDS_IMAGES = ("activations",)
COMMAND_LINE_ONLY = ("style",)


def requested(cfg: dict[str, Any] | None) -> bool:
    cfg = cfg or {}
    return bool(cfg.get("visualize") or cfg.get("explain"))


def check_figures(cfg: dict[str, Any] | None, ckpt_count: int) -> None:
    """One ``error:`` line for a name ``visualize`` / ``explain`` does not know, a missing image file, a figure
    that needs images without any, or figures asked of an ensemble."""
    from zoo.explain import captum_attr, parse_methods
    from zoo.visualize import OPTION_USES, check_what

    cfg = cfg or {}
    if not requested(cfg):
        return
    if ckpt_count > 1:
        raise ConfigError("figures.visualize / figures.explain are drawn for one checkpoint, not an ensemble; "
                          "evaluate the members one at a time")
    images = list(cfg.get("images") or [])
    for what in cfg.get("visualize") or []:
        check_what(str(what), "figures.visualize")
        if what in COMMAND_LINE_ONLY:
            raise ConfigError(f"figures.visualize: {what} needs a content and a style image; run "
                              f"python -m zoo visualize CKPT --what style --image CONTENT --style STYLE")
        if what in NEEDS_IMAGES and not images:
            raise ConfigError(f"figures.visualize: {what} needs image files: figures.images=[a.png,b.png]")
    if cfg.get("explain"):
        parse_methods(",".join(map(str, cfg["explain"])))
        captum_attr()
        if not images:
            raise ConfigError("figures.explain needs image files: figures.images=[a.png,b.png]")
    if images and not cfg.get("explain") and not any(str(w) in OPTION_USES["images"] for w in cfg.get("visualize") or []):
        raise ConfigError("figures.images are for figures.visualize=[activations|dream] and figures.explain, and "
                          "neither asks for them; drop figures.images or add one of those")
    for path in images:
        if not Path(path).is_file():
            raise DataNotFoundError(f"figures.images: image file not found: {path}")


def check_classifier(state: dict[str, Any], cfg: dict[str, Any] | None) -> None:
    if requested(cfg) and state.get("task") != "classification":
        raise ConfigError(f"figures.visualize / figures.explain are for classifiers; this checkpoint is a "
                          f"{state.get('task')} model")


def log_png(logger: Any, path: Path, step: int = 0) -> None:
    """The PNG file at ``path`` as one image ``figures/<stem>`` of ``logger``."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    logger.log_images(f"figures/{path.stem}", torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255, step)


def write_figures(ckpt: str | Path, cfg: dict[str, Any], split: str, out: Path, logger: Any, device: str = "cpu") -> list[Path]:
    """Every figure ``cfg`` asks for under ``out``, each PNG logged by ``logger``; their paths."""
    from zoo.explain import explain_files
    from zoo.visualize import OPTION_USES, Options, visualize

    images = tuple(str(p) for p in cfg.get("images") or [])
    written: list[Path] = []
    for what in map(str, cfg.get("visualize") or []):  # each with the settings that apply to it
        opts = Options(images=images if what in OPTION_USES["images"] else (), split=split if what == "tsne" else "val")
        written += visualize(ckpt, what, out, opts, device)
    if cfg.get("explain"):
        written += explain_files(ckpt, images, [str(m) for m in cfg["explain"]], out, device=device)
    for path in written:
        if path.suffix == ".png":
            log_png(logger, path)
    return written
