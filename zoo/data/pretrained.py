"""The data config a pretrained model needs (timm's ``resolve_data_config``).

With ``model.pretrained=torchvision:<model>.<weights>`` on a classifier, the data is normalised with
the mean and std the weights were trained with, and image folders are resized and cropped as
torchvision evaluated them (resize side, crop ratio, interpolation): :func:`resolve_data_config`
fills the ``data.*`` keys the user left ``null`` from :func:`zoo.models.pretrained.weights_cfg`.
Keys the user set win; a zoo checkpoint or a state_dict file as the source changes nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

from zoo.data.types import DATASETS
from zoo.models import model_info
from zoo.models.pretrained import TORCHVISION, weights_cfg


def resolve_data_config(data_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """``data_cfg`` with the preprocessing of ``model_cfg``'s torchvision weights where the user left
    it unset, and one log line saying what was taken (``None`` when nothing was)."""
    data = dict(data_cfg)
    model = dict(model_cfg or {})
    source = model.get("pretrained")
    if not isinstance(source, str) or not source.startswith(TORCHVISION):
        return data, None
    if model.get("name") and model_info(str(model["name"]))["task"] != "classification":
        return data, None
    cfg = weights_cfg(source)
    if cfg is None:
        return data, None
    entry = DATASETS.get(str(data["name"]))
    in_chans = int(data.get("in_chans") or entry.metadata["in_chans"])
    taken: list[str] = []
    if data.get("normalize") is None and in_chans == len(cfg.mean):
        for key in ("mean", "std"):
            if data.get(key) is None:
                data[key] = list(getattr(cfg, key))
                taken.append(f"{key} {tuple(data[key])}")
    if entry.metadata.get("variable_size"):
        side = int(data.get("image_size") or cfg.input_size)
        if data.get("resize_size") is None:
            data["resize_size"] = round(side / cfg.crop_pct)
            taken.append(f"resize {data['resize_size']}, crop {side}")
        if data.get("interpolation") is None:
            data["interpolation"] = cfg.interpolation
            taken.append(cfg.interpolation)
    if not taken:
        return data, None
    return data, (f"preprocessing of {cfg.source}: {', '.join(taken)}; "
                  "override with data.mean/data.std (data.normalize, data.resize_size, data.interpolation)")
