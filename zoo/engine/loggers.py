"""Experiment loggers. TensorBoard event files live in ``<run_dir>/tensorboard`` so
``tensorboard --logdir outputs`` shows every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class NullLogger:
    """Logs nothing; used when ``logger=none``."""

    log_dir: Path | None = None

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        pass

    def log_text(self, tag: str, text: str, step: int) -> None:
        pass

    def log_images(self, tag: str, images: Any, step: int) -> None:
        pass

    def log_image_grid(self, tag: str, images: Any, step: int, nrow: int = 8) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger(NullLogger):
    def __init__(self, log_dir: str | Path, flush_secs: int = 30) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        self.writer.add_figure(tag, figure, step, close=True)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def log_images(self, tag: str, images: Any, step: int) -> None:
        self.writer.add_images(tag, images, step)

    def log_image_grid(self, tag: str, images: Any, step: int, nrow: int = 8) -> None:
        """One image of ``(N, C, H, W)`` images in [0, 1] tiled ``nrow`` per row; images smaller than
        32 pixels are enlarged (nearest neighbour) so that they stay legible."""
        import torch.nn.functional as F
        from torchvision.utils import make_grid

        images = images.detach().float().cpu().clamp(0, 1)
        if images.shape[-1] < 32:
            images = F.interpolate(images, scale_factor=-(-32 // images.shape[-1]), mode="nearest")
        self.writer.add_image(tag, make_grid(images, nrow=nrow, padding=2, pad_value=1.0), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def build_logger(cfg: dict[str, Any] | None, run_dir: Path) -> NullLogger:
    name = (cfg or {}).get("name", "none")
    if name == "tensorboard":
        return TensorBoardLogger(run_dir / "tensorboard", flush_secs=int((cfg or {}).get("flush_secs", 30)))
    if name == "none":
        return NullLogger()
    from zoo.errors import ConfigError

    raise ConfigError(f"unknown logger {name!r}; use logger=tensorboard or logger=none")
