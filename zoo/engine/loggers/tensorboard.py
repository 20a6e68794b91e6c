"""TensorBoard: event files in ``<run_dir>/tensorboard``, so ``tensorboard --logdir outputs`` shows every run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.engine.loggers.base import LOGGERS, Logger, Scalar, config_yaml, flatten_config

if TYPE_CHECKING:
    from torch import Tensor, nn

log = logging.getLogger("zoo")


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Logger):
    """Scalars, images, histograms, figures and text; the config and tags as text (step 0); hyperparameters in the
    HPARAMS tab, written into the run's own event directory (not a sub-run as ``add_hparams`` makes);
    the model's graph (the GRAPHS tab) unless ``log_graph=False``."""

    def __init__(self, run_dir: str | Path, flush_secs: int = 30, log_graph: bool = True) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=int(flush_secs))
        self.graph = bool(log_graph)

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

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    def log_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:
        self.writer.add_figure(tag, figure, step, close=close)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def log_graph(self, model: nn.Module, example_input: Tensor) -> None:
        """``add_graph`` (a ``torch.jit.trace`` in eval mode) with the random state, the model's mode and
        its buffers as they were; a model the tracer cannot follow (several inputs, dict outputs) is a
        warning line."""
        if not self.graph:
            return
        import contextlib
        import io
        import warnings

        import torch

        devices = [example_input.device.index or 0] if example_input.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), warnings.catch_warnings(), \
                    contextlib.redirect_stdout(io.StringIO()):  # add_graph prints the tracer's error
                warnings.simplefilter("ignore")  # TracerWarnings
                self.writer.add_graph(model, example_input)
        except Exception as e:  # noqa: BLE001 - a graph is never worth a failed run
            message = next((line for line in str(e).splitlines() if line.strip()), "")
            log.warning("tensorboard: no model graph, %s cannot be traced on a %s input (%s: %s); "
                        "logger.tensorboard.log_graph=false skips it", type(model).__name__, tuple(example_input.shape),
                        type(e).__name__, message[:200])

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str = "success") -> None:
        self.writer.close()
