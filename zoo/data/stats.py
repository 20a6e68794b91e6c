"""Normalisation statistics of a training split, and their cache next to the data.

The preprocessings of the course notes: per-channel mean/std standardisation (VGG, ResNet),
subtraction of the mean training image (Krizhevsky et al. 2012, sec. 2), and PCA or ZCA whitening
(the covariance of the training images, ``Σ = U S Uᵀ``: ``pca_whiten`` maps an image ``x`` to
``S^-1/2 Uᵀ (x - μ)``, its coordinates on the principal components in order of variance, laid out as
an image; ``zca`` to ``U S^-1/2 Uᵀ (x - μ)``, back in pixel space; ``data.whiten_eps`` is added to
every eigenvalue so the directions of almost no variance do not blow up noise). Besides, ``symmetric``
maps [0, 1] pixels to [-1, 1] (tanh generators) and ``none`` leaves them in [0, 1]. ``data.mean`` /
``data.std`` (one value per channel, or one for all) replace the computed statistics, e.g. those a
pretrained network was trained with (:func:`resolve_stats`). Statistics come from the
training split only; for on-disk datasets they are cached as a small JSON file under
``<data.root>/.zoo_stats/``, keyed by the dataset and everything that changes the training pixels
(split fraction and seed, image size, channels, and the files with their sizes and modification
times), so the second run does not recompute them and a replaced image does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from zoo.engine.utils import write_atomic, write_json
from zoo.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("channel", "image_mean", "symmetric", "none", "pca_whiten", "zca")
#: modes whose statistics are a whitening matrix: in-memory data of at most ``MAX_WHITEN_DIM`` values per image
WHITEN_MODES = ("pca_whiten", "zca")
MAX_WHITEN_DIM = 4096
#: ``data.whiten_eps`` when not set (pixels in [0, 1])
WHITEN_EPS = 0.1
Stats = dict[str, Any]
#: ImageNet's statistics (what torchvision's pretrained backbones were trained with), and their grey version
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = [0.449], [0.226]


def check_mode(mode: str | None) -> str:
    """``data.normalize``; ``null`` (not set) is ``channel``."""
    mode = mode or "channel"
    if mode not in MODES:
        raise ConfigError(f"unknown data.normalize {mode!r}; use one of: {', '.join(MODES)}")
    return mode


def fixed_stats(mode: str, in_chans: int) -> Stats | None:
    """The statistics of the modes that need no pass over the data (``symmetric``, ``none``), else ``None``."""
    if mode == "symmetric":
        return {"mode": "symmetric", "mean": [0.5] * in_chans, "std": [0.5] * in_chans}
    if mode == "none":
        return {"mode": "none", "mean": [0.0] * in_chans, "std": [1.0] * in_chans}
    return None


def per_channel(key: str, value: Any, in_chans: int) -> list[float] | None:
    """``data.<key>`` as one float per channel (a single value is repeated); ``None`` when not set."""
    if value is None:
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        floats = []
    if len(floats) not in (1, in_chans) or (key == "std" and min(floats) <= 0):
        count = "one number" if in_chans == 1 else f"1 or {in_chans} numbers (one per channel)"
        raise ConfigError(f"data.{key}={value!r} needs {count}{', all > 0' if key == 'std' else ''}; "
                          f"e.g. data.{key}=[{', '.join(['0.5'] * in_chans)}]")
    return floats * in_chans if len(floats) == 1 else floats


def resolve_stats(mode: str | None, in_chans: int, mean: Any, std: Any, compute: Callable[[str], Stats]) -> Stats:
    """The statistics a dataset is normalised with: ``data.mean``/``data.std`` where set (both set: no
    pass over the data), fixed ones for ``symmetric``/``none``, else ``compute(mode)`` (the pass over the
    training split, usually through :func:`cached_stats`)."""
    mode = check_mode(mode)
    given = {k: v for k, v in (("mean", per_channel("mean", mean, in_chans)), ("std", per_channel("std", std, in_chans)))
             if v is not None}
    if given and mode != "channel":
        raise ConfigError(f"data.mean/data.std apply to data.normalize=channel, not {mode}; drop them or set data.normalize=channel")
    fixed = fixed_stats(mode, in_chans)
    if fixed is not None:
        return fixed
    if len(given) == 2:
        return {"mode": "channel", **given}
    return {**compute(mode), **given}


def photo_stats(mode: str | None, in_chans: int, mean: Any = None, std: Any = None) -> Stats:
    """The statistics of photographs read per sample (VOC, COCO, caption datasets), with the same
    ``data.normalize``/``data.mean``/``data.std`` as every dataset: ``channel`` takes ``data.mean``/
    ``data.std``, by default ImageNet's (no pass over the data: these datasets are fine-tuned from
    ImageNet backbones); ``symmetric`` and ``none`` as everywhere; ``image_mean`` needs images of one size."""

    def imagenet(m: str) -> Stats:
        if m == "image_mean" or m in WHITEN_MODES:
            raise ConfigError(f"data.normalize={m} needs in-memory images of one size; use channel, symmetric or none here")
        grey = in_chans == 1
        return {"mode": "channel", "mean": IMAGENET_GREY_MEAN if grey else IMAGENET_MEAN,
                "std": IMAGENET_GREY_STD if grey else IMAGENET_STD}

    return resolve_stats(mode, in_chans, mean, std, imagenet)


class StatsAccumulator:
    """Streams batches of ``(N, C, H, W)`` images in [0, 1] and returns the statistics of ``mode``."""

    def __init__(self, mode: str, whiten_eps: float = WHITEN_EPS) -> None:
        self.mode = check_mode(mode)
        self.whiten_eps = check_whiten_eps(whiten_eps)
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sum_sq: torch.Tensor | None = None
        self.image_sum: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None  # sum of x xᵀ over flattened images (whitening)

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        if self.mode in WHITEN_MODES:
            flat = x.flatten(1)
            if flat.shape[1] > MAX_WHITEN_DIM:
                raise ConfigError(f"data.normalize={self.mode} needs images of at most {MAX_WHITEN_DIM} values (channels x "
                                  f"height x width), got {flat.shape[1]}; lower data.image_size or use normalize=channel")
            self.gram = flat.T @ flat if self.gram is None else self.gram + flat.T @ flat
        per_channel = x.sum(dim=(0, 2, 3))
        per_channel_sq = x.square().sum(dim=(0, 2, 3))
        image = x.sum(0)
        if self.sum is None:
            self.sum, self.sum_sq, self.image_sum = per_channel, per_channel_sq, image
        else:
            self.sum, self.sum_sq = self.sum + per_channel, self.sum_sq + per_channel_sq  # type: ignore[operator]
            self.image_sum = self.image_sum + image  # type: ignore[operator]
        self.count += x.shape[0]

    def result(self) -> Stats:
        if not self.count or self.sum is None or self.image_sum is None or self.sum_sq is None:
            raise ConfigError("the training split is empty; lower data.val_fraction or add data")
        pixels = self.count * self.image_sum[0].numel()
        mean = self.sum / pixels
        if self.mode == "channel":
            std = (self.sum_sq / pixels - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
            return {"mode": "channel", "mean": mean.tolist(), "std": std.tolist()}
        if self.mode == "image_mean":
            image = (self.image_sum / self.count).to(torch.float32)
            return {"mode": "image_mean", "mean": mean.tolist(), "std": [1.0] * len(mean), "mean_image": image.tolist()}
        if self.mode in WHITEN_MODES and self.gram is not None:
            return {"mode": self.mode, "mean": mean.tolist(), "std": [1.0] * len(mean), "whiten_eps": self.whiten_eps,
                    **whitening(self.gram / self.count, self.image_sum.flatten() / self.count, self.mode, self.whiten_eps)}
        return fixed_stats(self.mode, len(mean))  # type: ignore[return-value]


def check_whiten_eps(eps: Any) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
        raise ConfigError(f"data.whiten_eps must be a number > 0 (added to the covariance's eigenvalues), got {eps!r}")
    return float(eps)


def whitening(second_moment: torch.Tensor, mean: torch.Tensor, mode: str, eps: float) -> dict[str, torch.Tensor]:
    """The whitening of ``mode`` from the flattened images' mean ``E[x]`` and second moment ``E[x xᵀ]``:
    ``{"whiten_mean": μ, "whiten": W}`` with ``W`` applied as ``(x - μ) Wᵀ``."""
    cov = second_moment - torch.outer(mean, mean)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)  # principal components first
    scaled = vectors / (values + eps).sqrt()  # U S^-1/2
    matrix = scaled.T if mode == "pca_whiten" else scaled @ vectors.T  # S^-1/2 Uᵀ, or U S^-1/2 Uᵀ
    return {"whiten_mean": mean.to(torch.float32), "whiten": matrix.to(torch.float32)}


def on_terminal() -> bool:
    return sys.stderr.isatty()


def with_progress(batches: Iterable[torch.Tensor], total: int | None, desc: str,
                  every: int = 10) -> Iterator[torch.Tensor]:
    """``batches`` as they come, counting their images out of ``total``: a tqdm bar on a terminal,
    otherwise (cluster logs) a log line every ``every`` percent; nothing without a ``total``."""
    if not total:
        yield from batches
        return
    if on_terminal():
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True) as bar:
            for batch in batches:
                bar.update(len(batch))
                yield batch
        return
    log.info("%s: %s images to read", desc, f"{total:,}")
    done, next_line = 0, every
    for batch in batches:
        done += len(batch)
        percent = 100 * done // total
        if percent >= next_line:
            log.info("%s: %s/%s images (%d%%)", desc, f"{done:,}", f"{total:,}", percent)
            next_line = (percent // every + 1) * every
        yield batch


def stats_of(batches: Iterable[torch.Tensor], mode: str, total: int | None = None, whiten_eps: float = WHITEN_EPS) -> Stats:
    """Statistics of ``mode`` over an iterable of image batches in [0, 1]; with the ``total`` number of
    images, the pass shows its progress (:func:`with_progress`)."""
    acc = StatsAccumulator(mode, whiten_eps)
    for batch in with_progress(batches, total, "normalisation statistics"):
        acc.update(batch)
    return acc.result()


class Normalize:
    """Apply cached statistics to a batch (or a single image) in [0, 1]; a batched transform too."""

    def __init__(self, stats: Stats) -> None:
        self.mode = stats["mode"]
        self.matrix: torch.Tensor | None = None
        if self.mode in WHITEN_MODES:
            self.shift, self.matrix = torch.as_tensor(stats["whiten_mean"]), torch.as_tensor(stats["whiten"]).T.contiguous()
            self.scale = torch.ones(())
        elif self.mode == "image_mean":
            self.shift = torch.tensor(stats["mean_image"], dtype=torch.float32)
            self.scale = torch.ones(())
        else:
            self.shift = torch.tensor(stats["mean"], dtype=torch.float32).view(-1, 1, 1)
            self.scale = torch.tensor(stats["std"], dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.mode == "none":
            return x
        if self.shift.device != x.device:
            self.shift, self.scale = self.shift.to(x.device), self.scale.to(x.device)
            self.matrix = None if self.matrix is None else self.matrix.to(x.device)
        if self.matrix is not None:
            return ((x.flatten(-3) - self.shift) @ self.matrix).view(x.shape)
        shift = self.shift
        if self.mode == "image_mean" and shift.shape[-2:] != x.shape[-2:]:  # uncropped evaluation images
            shift = F.interpolate(shift[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        return (x - shift) / self.scale


def files_fingerprint(paths: Iterable[str]) -> str:
    """A digest of the files' names, sizes and modification times (one ``os.stat`` each, nothing read):
    it changes when an image is added, removed or replaced."""
    digest = hashlib.sha1()
    for path in sorted(paths):
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_stats(cache_dir: Path | None, key: dict[str, Any], compute: Callable[[], Stats]) -> Stats:
    """``compute()``, or its earlier result stored in ``cache_dir`` under ``key``.

    A cache directory that cannot be written (read-only data) only costs the recomputation.
    """
    if cache_dir is None:
        return compute()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{key.get('dataset', 'data')}-{digest}.json"
    tensors_path = path.with_suffix(".pt")  # matrices (whitening) beside the JSON
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            stats = dict(stored["stats"])
            if stored.get("tensors"):
                stats.update(torch.load(tensors_path, map_location="cpu", weights_only=True))
            log.info("normalisation statistics from %s", path)
            return stats
    except (OSError, ValueError, KeyError, AttributeError, RuntimeError):
        pass
    stats = compute()
    tensors = {k: v for k, v in stats.items() if isinstance(v, torch.Tensor)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tensors:
            write_atomic(tensors_path, lambda f: torch.save(tensors, f), binary=True)
        plain = {k: v for k, v in stats.items() if k not in tensors}
        write_json({"key": key, "stats": plain, "tensors": sorted(tensors)}, path)
        log.info("normalisation statistics computed from the training split; cached in %s", path)
    except OSError as e:
        log.warning("could not cache normalisation statistics in %s (%s); they will be recomputed next run", path, e)
    return stats
