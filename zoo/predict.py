"""Run a trained captioning checkpoint on image files: ``python -m zoo caption <ckpt> <image> [...]``.

Everything comes from the checkpoint: the model config, the weights, the vocabulary
(``data_info["info"]["vocab"]``), the input size and the normalisation statistics; no dataset is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.errors import CheckpointError, ConfigError
from zoo.trained import load_image


def load_captioner(ckpt_path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(model, vocabulary, checkpoint)`` of a captioning checkpoint, the model in eval mode on ``device``."""
    from zoo.data.captions import Vocabulary
    from zoo.engine.checkpoint import FORMAT, load_checkpoint
    from zoo.pipeline import build_model, fill_from_info

    state = load_checkpoint(ckpt_path, map_location="cpu")
    if state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{ckpt_path} is not a zoo training checkpoint (it has no stored config)")
    info = (state.get("data_info") or {}).get("info") or {}
    if state.get("task") != "captioning" or "vocab" not in info:
        raise CheckpointError(f"{ckpt_path} is a {state.get('task')} checkpoint without a vocabulary; pass a captioning checkpoint")
    model_cfg = {k: None if k.endswith("pretrained") else v for k, v in state["config"]["model"].items()}
    model, _ = build_model(fill_from_info(model_cfg, info))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Vocabulary(info["vocab"]), state


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
