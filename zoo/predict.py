"""Run a trained checkpoint on image files: ``python -m zoo caption <ckpt> <image> [...]`` (a captioner) and
``python -m zoo predict <ckpt> <image or directory> [...] --topk K`` (a classifier).

Everything comes from the checkpoint: the model config, the weights, the class names or the vocabulary
(``data_info["info"]["vocab"]``), the input size and the normalisation statistics; no dataset is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.errors import CheckpointError, ConfigError, DataNotFoundError
from zoo.trained import load_classifier, load_image, read_checkpoint, rebuild_model


def load_captioner(ckpt_path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(model, vocabulary, checkpoint)`` of a captioning checkpoint, the model in eval mode on ``device``."""
    from zoo.data.captions import Vocabulary

    state = read_checkpoint(ckpt_path, "caption CKPT", "captioning", "pass a captioning checkpoint")
    info = (state.get("data_info") or {}).get("info") or {}
    if "vocab" not in info:
        raise CheckpointError(f"{ckpt_path} is a captioning checkpoint without a vocabulary; pass one that train.py wrote")
    return rebuild_model(state).to(device), Vocabulary(info["vocab"]), state


@torch.no_grad()
def caption_files(ckpt_path: str | Path, images: Sequence[str | Path], decode: str = "beam", beam_size: int | None = None,
                  temperature: float = 1.0, seed: int = 0, device: str = "cpu") -> list[str]:
    """One caption per image file: ``beam`` search (the checkpoint's ``task.beam_size`` unless given),
    ``greedy``, or ``sample`` at ``temperature`` (seeded)."""
    model, vocab, state = load_captioner(ckpt_path, device)
    task_cfg = state["config"].get("task", {})
    max_len = int(task_cfg.get("max_len", model.max_len))
    batch = torch.cat([load_image(p, state) for p in images]).to(device)
    if decode == "beam":
        seqs = model.beam_search(batch, int(beam_size or task_cfg.get("beam_size", 3)), max_len, float(task_cfg.get("alpha", 0.0)))[0]
    elif decode == "greedy":
        seqs = model.greedy(batch, max_len)
    elif decode == "sample":
        seqs = model.sample(batch, max_len, temperature, torch.Generator().manual_seed(seed))
    else:
        raise ConfigError(f"unknown decoding {decode!r}; use beam, greedy or sample")
    return [" ".join(vocab.decode(s)) for s in seqs.tolist()]


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files of ``inputs``: each file as given, each directory's image files (by extension), sorted."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
            if not found:
                raise DataNotFoundError(f"no image files in directory {item} (looked for {', '.join(IMG_EXTENSIONS)})")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise DataNotFoundError(f"image file not found: {item}")
    return files


@torch.no_grad()
def classify_files(ckpt_path: str | Path, inputs: Sequence[str | Path], topk: int = 5, device: str = "cpu",
                   batch_size: int = 64) -> list[dict[str, Any]]:
    """The ``topk`` most probable classes of each image file of ``inputs`` (:func:`image_files`) under the classifier
    checkpoint ``ckpt_path``: one row per image, ``path`` then ``class_1, probability_1, ...``."""
    from zoo.engine.utils import resolve_device
    from zoo.metrics.classification import ranked_columns

    model, state = load_classifier(ckpt_path, "predict CKPT")
    names = list(state["data_info"]["class_names"])
    if not 1 <= topk <= len(names):
        raise ConfigError(f"--topk must be in 1..{len(names)} (the checkpoint's classes), got {topk}")
    target = resolve_device(device, key="--device")
    files = image_files(inputs)
    images = [load_image(p, state) for p in files]  # every file read before anything is predicted
    model.to(target)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(images), batch_size):
        out = model(torch.cat(images[start:start + batch_size]).to(target))
        top = (out[0] if isinstance(out, tuple) else out).float().softmax(1).topk(topk, dim=1)
        ranked = ranked_columns(top.indices.cpu(), top.values.cpu(), names)
        rows += [{"path": str(p), **r} for p, r in zip(files[start:start + batch_size], ranked)]
    return rows


def format_prediction(row: dict[str, Any]) -> str:
    """One line of ``python -m zoo predict``: the path, then ``class probability`` pairs, most probable first."""
    ranks = range(1, sum(k.startswith("class_") for k in row) + 1)
    return f"{row['path']}\t" + "  ".join(f"{row[f'class_{r}']} {row[f'probability_{r}']:.4f}" for r in ranks)
