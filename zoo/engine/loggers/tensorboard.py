"""TensorBoard: event files in ``<run_dir>/tensorboard``, so ``tensorboard --logdir outputs`` shows every run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.engine.loggers.base import LOGGERS, Logger, Scalar, config_yaml, flatten_config

if TYPE_CHECKING:
    from torch import Tensor


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Logger):
    """Scalars, images, figures and text; the config and tags as text (step 0); hyperparameters in the
    HPARAMS tab, written into the run's own event directory (not a sub-run as ``add_hparams`` makes)."""

    def __init__(self, run_dir: str | Path, flush_secs: int = 30) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=int(flush_secs))

    def log_config(self, config: dict[str, Any]) -> None:
        # indented 4 spaces: a Markdown code block, so TensorBoard keeps the YAML's layout
        self.writer.add_text("config", "\n".join(f"    {line}" for line in config_yaml(config).splitlines()), 0)

    def log_hyperparams(self, params: dict[str, Scalar], metrics: dict[str, float] | None = None) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(flatten_config(params), dict(metrics or {})):
            self.writer.file_writer.add_summary(summary)

    def log_tags(self, tags: list[str]) -> None:
        self.writer.add_text("tags", ", ".join(tags), 0)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        self.writer.add_images(tag, images, step)

    def log_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:
        self.writer.add_figure(tag, figure, step, close=close)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str = "success") -> None:
        self.writer.close()
