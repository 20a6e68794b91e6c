"""Classifiers of zoo training checkpoints, rebuilt from the config stored in them (a GAN's scorer, the
features of a k-nearest-neighbour model, what ``explain`` and ``visualize`` inspect), and image files prepared as
a checkpoint's training data was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import CheckpointError, DataNotFoundError


def load_classifier(path: str | Path, option: str, hint: str = "pass <run>/checkpoints/best.pt of a classification run"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, checkpoint)``: the classifier that ``train.py`` saved in ``path``, built from the config stored
    in it, with its weights, in eval mode on the CPU. ``option`` (the config key that named the file) starts
    every error; ``hint`` says how to get a classifier checkpoint."""
    from zoo.engine.checkpoint import is_zoo_checkpoint, load_checkpoint
    from zoo.models import create_model

    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{option}: {e}") from None
    if not is_zoo_checkpoint(state) or state.get("task") != "classification" or "config" not in state:
        raise CheckpointError(f"{option}={path} is not a zoo classifier checkpoint; {hint}")
    model_cfg = {k: v for k, v in state["config"]["model"].items() if k not in ("input_size", "pretrained")}
    model = create_model(model_cfg.pop("name"), **model_cfg)
    model.load_state_dict(state["model"])
    return model.eval(), state


def load_image(path: str | Path, state: dict[str, Any]) -> torch.Tensor:
    """``(1, C, H, W)`` image prepared like the training data: channels, size and normalisation."""
    from PIL import Image
    from torchvision.transforms import v2

    if not Path(path).is_file():
        raise DataNotFoundError(f"image file not found: {path}")
    data_info, cfg = state["data_info"], state["config"]
    mean, std = list(data_info["mean"]), list(data_info["std"])
    size = int(cfg["data"].get("image_size") or cfg["model"]["input_size"])
    with Image.open(path) as img:
        img = img.convert("L" if len(mean) == 1 else "RGB")
    transform = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean, std)])
    return transform(img)[None]
