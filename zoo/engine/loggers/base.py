"""The logger protocol, the collection that fans calls out to several loggers, and shared helpers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from zoo.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor, nn

#: every logger by name (``logger=<name>`` on the command line); built by :func:`zoo.engine.loggers.build_loggers`
LOGGERS: Registry[Logger] = Registry("logger")

#: how a run ended, as :meth:`Logger.close` is told
STATUSES = ("success", "failed", "interrupted")

Scalar = int | float | str | bool


class Logger:
    """An experiment logger. Every method is a no-op here; a subclass overrides what its backend supports.

    Images are ``(N, C, H, W)`` tensors in [0, 1]. A figure is a matplotlib figure; ``log_figure``
    closes it unless told ``close=False`` (a :class:`LoggerCollection` closes it once after all
    its loggers have drawn it).
    """

    #: the optional extras (:mod:`zoo.extras`) the backend needs, checked before a run starts
    extras: tuple[str, ...] = ()

    def log_config(self, config: dict[str, Any]) -> None:
        """The whole resolved run config (nested)."""

    def log_hyperparams(self, params: dict[str, Scalar], metrics: dict[str, float] | None = None) -> None:
        """Flat ``{"optimizer.lr": 0.01, ...}`` parameters (see :func:`flatten_config`); ``metrics``
        names the metric tags to show next to them, with initial values."""

    def log_tags(self, tags: list[str]) -> None:
        """Free-form labels of the run."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Metric values at ``step``."""

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        """``(N, C, H, W)`` images in [0, 1]."""

    def log_image_grid(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        """The images tiled into one (see :func:`image_grid`), given to :meth:`log_images`."""
        self.log_images(tag, image_grid(images, nrow)[None], step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        """The distribution of ``values`` (any shape; TensorBoard's HISTOGRAMS tab). Backends without
        histograms (csv, mlflow) ignore it: a histogram per layer and step is no metric to chart."""

    def log_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:
        """A matplotlib figure; closed afterwards when ``close``."""
        if close:
            close_figure(figure)

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Markdown text."""

    def log_graph(self, model: nn.Module, example_input: Tensor) -> None:
        """The model's graph, traced on ``example_input``; once, at the start of a run. A model that
        cannot be traced is a warning, never an error."""

    def flush(self) -> None:
        """Write what is buffered."""

    def close(self, status: str = "success") -> None:
        """End the run; ``status`` is one of :data:`STATUSES`."""


class LoggerCollection(Logger):
    """Forwards every call to each of ``loggers``. False when empty, so that callers can skip
    building images and figures nobody receives: ``if logger: logger.log_figure(...)``."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = list(loggers)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def __len__(self) -> int:
        return len(self.loggers)

    def __iter__(self) -> Iterator[Logger]:
        return iter(self.loggers)

    def __repr__(self) -> str:
        return f"LoggerCollection([{', '.join(type(x).__name__ for x in self.loggers)}])"

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for logger in self.loggers:
            getattr(logger, method)(*args, **kwargs)

    def log_config(self, config: dict[str, Any]) -> None:
        self._each("log_config", config)

    def log_hyperparams(self, params: dict[str, Scalar], metrics: dict[str, float] | None = None) -> None:
        self._each("log_hyperparams", params, metrics)

    def log_tags(self, tags: list[str]) -> None:
        self._each("log_tags", tags)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._each("log_scalars", scalars, step)

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        self._each("log_images", tag, images, step)

    def log_image_grid(self, tag: str, images: Tensor, step: int, nrow: int = 8) -> None:
        self._each("log_image_grid", tag, images, step, nrow=nrow)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        self._each("log_histogram", tag, values, step)

    def log_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:
        """Each logger draws ``figure`` without closing it; then it is closed once (when ``close``)."""
        try:
            self._each("log_figure", tag, figure, step, close=False)
        finally:
            if close:
                close_figure(figure)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._each("log_text", tag, text, step)

    def log_graph(self, model: nn.Module, example_input: Tensor) -> None:
        self._each("log_graph", model, example_input)

    def flush(self) -> None:
        self._each("flush")

    def close(self, status: str = "success") -> None:
        """Close every logger, even when one of them fails (the first error is raised afterwards)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        error: BaseException | None = None
        for logger in self.loggers:
            try:
                logger.close(status)
            except Exception as e:  # noqa: BLE001 - the others still get closed
                error = error or e
        if error is not None:
            raise error


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """``{"optimizer": {"lr": 0.01}}`` -> ``{"optimizer.lr": 0.01}``: int, float, str and bool values
    stay, anything else (lists, None, an empty mapping) becomes its string."""
    flat: dict[str, Scalar] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def image_grid(images: Tensor, nrow: int = 8) -> Tensor:
    """``(N, C, H, W)`` images in [0, 1] tiled ``nrow`` per row into one ``(3, H', W')`` image, 2-pixel
    white gaps; images smaller than 32 pixels are enlarged (nearest neighbour) to stay legible. The
    layout of ``torchvision.utils.make_grid(images, nrow, padding=2, pad_value=1)`` (one image: itself),
    without importing torchvision."""
    import torch.nn.functional as F

    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[-1] < 32:
        images = F.interpolate(images, scale_factor=-(-32 // images.shape[-1]), mode="nearest")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if len(images) == 1:
        return images[0]
    n, channels, h, w = images.shape
    pad, cols = 2, min(nrow, n)
    rows = -(-n // cols)
    grid = images.new_ones(channels, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for k, image in enumerate(images):
        top, left = pad + (k // cols) * (h + pad), pad + (k % cols) * (w + pad)
        grid[:, top:top + h, left:left + w] = image
    return grid


def close_figure(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def config_yaml(data: Any) -> str:
    """``data`` as block-style YAML, keys in their order."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
