"""Classifiers of zoo training checkpoints, rebuilt from the config stored in them (a GAN's scorer, the
features of a k-nearest-neighbour model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from zoo.errors import CheckpointError


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
