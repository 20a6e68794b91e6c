"""Models of zoo training checkpoints, rebuilt from the config stored in them: :func:`load_model` (``zoo.load_model``,
any task, ready for inference with its preprocessing in ``model.pretrained_cfg``), :func:`load_classifier` (a GAN's
scorer, the features of a k-nearest-neighbour model, what ``explain``, ``visualize``, ``predict`` and ``export``
inspect), and image files prepared as a checkpoint's training data was (:func:`load_image`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import CheckpointError, DataNotFoundError

CLASSIFIER_HINT = "pass <run>/checkpoints/best.pt of a classification run"


def fill_from_info(cfg: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with its null keys that the data's ``info`` provides filled in (e.g. a captioner's
    ``vocab_size`` and its task's ``vocab``, known once the training captions are read)."""
    return {k: info[k] if v is None and k in info else v for k, v in cfg.items()}


def read_checkpoint(path: str | Path, option: str, task: str | None = None,
                    hint: str = "pass <run>/checkpoints/best.pt of a train.py run") -> dict[str, Any]:
    """The zoo training checkpoint at ``path`` (with its stored config), of ``task`` if given; ``option`` (the config
    key or command argument that named the file) starts every error, ``hint`` says how to get a fitting one."""
    from zoo.engine.checkpoint import is_zoo_checkpoint, load_checkpoint

    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{option}: {e}") from None
    if not is_zoo_checkpoint(state) or "config" not in state or task not in (None, state.get("task")):
        what = {None: "training", "classification": "classifier"}.get(task, task)
        raise CheckpointError(f"{option}={path} is not a zoo {what} checkpoint; {hint}")
    return state


def rebuild_model(state: dict[str, Any]) -> nn.Module:
    """The model of a zoo checkpoint, built from its stored ``model`` config (no pretrained source: the weights
    are the checkpoint's, loaded here), in eval mode on the CPU."""
    from zoo.models import MODELS, create_model, model_info

    info = (state.get("data_info") or {}).get("info") or {}
    cfg = {k: None if k.endswith("pretrained") else v for k, v in state["config"]["model"].items() if k != "input_size"}
    model_info(cfg["name"])  # the families registered; an unknown name with close matches
    model = MODELS.build_from(fill_from_info(cfg, info), group="model", call=create_model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's weights do not fit model {cfg['name']}: {str(e).splitlines()[0]}") from None
    return model.eval()


def _eval_resize(state: dict[str, Any]) -> dict[str, Any] | None:
    """How evaluation resized the training run's images (``resize_size``, ``interpolation``), stored with the
    data's info; ``None`` in checkpoints that predate it."""
    return ((state.get("data_info") or {}).get("info") or {}).get("eval_resize")


def data_config(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's model expects of its input, timm's ``pretrained_cfg`` keys: ``input_size`` ``(C, H, W)``,
    ``mean``, ``std``, ``num_classes``, ``label_names`` (the class names; ``[]`` without classes), ``interpolation``,
    ``crop_pct`` (the input side over the side the short side is resized to before the central crop; 1.0 for
    checkpoints that predate it: the whole image is resized), ``architecture`` (the registered name)."""
    data_info, cfg = state.get("data_info") or {}, state["config"]
    mean, std = tuple(float(m) for m in data_info["mean"]), tuple(float(s) for s in data_info["std"])
    size = int(cfg["data"].get("image_size") or cfg["model"]["input_size"])
    resize = _eval_resize(state) or {}
    return {"architecture": cfg["model"]["name"], "input_size": (len(mean), size, size), "mean": mean, "std": std,
            "num_classes": int(data_info.get("num_classes") or 0), "label_names": list(data_info.get("class_names") or []),
            "interpolation": resize.get("interpolation", "bilinear"),
            "crop_pct": size / int(resize["resize_size"]) if resize else 1.0}


def load_model(path: str | Path, device: str | torch.device = "cpu", *, option: str = "load_model") -> nn.Module:
    """The model of the zoo checkpoint at ``path`` in eval mode on ``device``, ready for inference; its
    preprocessing is ``model.pretrained_cfg`` (:func:`data_config`: input size, mean, std, class names).
    ``option`` (what named the file) starts every error."""
    state = read_checkpoint(path, option)
    model = rebuild_model(state)
    model.pretrained_cfg = data_config(state)
    return model.to(device)


def load_classifier(path: str | Path, option: str, hint: str = CLASSIFIER_HINT) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, checkpoint)``: the classifier that ``train.py`` saved in ``path``, built from the config stored
    in it, with its weights, in eval mode on the CPU. ``option`` (the config key that named the file) starts
    every error; ``hint`` says how to get a classifier checkpoint."""
    state = read_checkpoint(path, option, "classification", hint)
    return rebuild_model(state), state


def load_image(path: str | Path, state: dict[str, Any]) -> torch.Tensor:
    """``(1, C, H, W)`` image prepared as evaluation prepared the training data: channels, size (short side,
    central crop) and normalisation."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import v2

    from zoo.errors import CorruptDataError

    if not Path(path).is_file():
        raise DataNotFoundError(f"image file not found: {path}")
    cfg = data_config(state)
    channels, size = cfg["input_size"][0], cfg["input_size"][1]
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise CorruptDataError(f"cannot read image {path}: {e}") from None
    resize = _eval_resize(state)
    interpolation = v2.InterpolationMode(cfg["interpolation"])
    # as evaluation did: the short side to resize_size, the central crop (before it was stored: the whole image)
    geometry = ([v2.Resize(int(resize["resize_size"]), interpolation=interpolation, antialias=True), v2.CenterCrop(size)]
                if resize else [v2.Resize((size, size), interpolation=interpolation, antialias=True)])
    transform = v2.Compose([v2.PILToTensor(), *geometry, v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(list(cfg["mean"]), list(cfg["std"]))])
    return transform(img)[None]
