"""MLflow: one MLflow run per zoo run, through an ``MlflowClient`` (no global MLflow state)."""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from zoo.engine.loggers.base import LOGGERS, Logger, Scalar, close_figure, image_grid
from zoo.extras import require

if TYPE_CHECKING:
    from torch import Tensor

#: MLflow's limits: characters of a parameter value, entries of one log_batch call
MAX_PARAM_VALUE = 6000
BATCH = 100
_RUN_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_INVALID_KEY = re.compile(r"[^\w./\- :]")  # MLflow keys: alphanumerics, _ - . / space :
_INVALID_FILE = re.compile(r"[^\w.\-]+")


@contextmanager
def _file_store_allowed(tracking_uri: str) -> Iterator[None]:
    """A ``file:`` store (our default) while the client builds it: recent MLflow refuses one unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set (set here unless the user set it either way; MLflow caches
    the store by URI), some earlier 3.x versions warn that it is deprecated."""
    if not tracking_uri.startswith("file:"):
        yield
        return
    opt_in = "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    if opt_in:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*filesystem tracking backend", category=FutureWarning)
            yield
    finally:
        if opt_in:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), BATCH):
        yield items[i:i + BATCH]


def _file_name(tag: str, step: int) -> str:
    return f"{_INVALID_FILE.sub('_', tag)}_{step}"


@LOGGERS.register("mlflow")
class MLflowLogger(Logger):
    """Parameters, metrics, tags, the config (``config.yaml``), images (``log_images``: MLflow's image
    log, a grid for several images), figures (``figures/``) and text (``text/``) in one MLflow run (no histograms),
    named after the run directory unless ``run_name``. The tracking store is ``tracking_uri``, by
    default a local ``file:`` store in ``<run_dir>/mlruns`` (``mlflow ui --backend-store-uri <it>``)."""

    extras = ("mlflow",)

    def __init__(self, run_dir: str | Path, tracking_uri: str | None = None, experiment_name: str = "zoo",
                 run_name: str | None = None, log_images: bool = True) -> None:
        require("mlflow", "logger=mlflow")
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri or (run_dir / "mlruns").resolve().as_uri()
        self.images = bool(log_images)
        with _file_store_allowed(self.tracking_uri):
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment(experiment_name)
        self.run_id: str = self.client.create_run(self.experiment_id, run_name=run_name or run_dir.name).info.run_id
        self._closed = False

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another process created it meanwhile
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_config(self, config: dict[str, Any]) -> None:
        self.client.log_dict(self.run_id, config, "config.yaml")

    def log_hyperparams(self, params: dict[str, Scalar], metrics: dict[str, float] | None = None) -> None:
        from mlflow.entities import Param

        entries = [Param(_INVALID_KEY.sub("_", k), str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
        for chunk in _chunks(entries):
            self.client.log_batch(self.run_id, params=chunk)

    def log_tags(self, tags: list[str]) -> None:
        from mlflow.entities import RunTag

        entries = [RunTag("tags", ",".join(tags))] + [RunTag(f"tag.{_INVALID_KEY.sub('_', t)}", "true") for t in tags]
        for chunk in _chunks(entries):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(_INVALID_KEY.sub("_", k), float(v), now, int(step)) for k, v in scalars.items()]
        for chunk in _chunks(entries):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        if not self.images:
            return
        grid = images[0] if len(images) == 1 else image_grid(images, nrow=math.ceil(math.sqrt(len(images))))
        array = (grid.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        array = array[..., 0] if array.shape[-1] == 1 else array  # MLflow takes grey images as (H, W)
        try:
            self.client.log_image(self.run_id, array, key=_INVALID_KEY.sub("_", tag), step=int(step))
        except TypeError:  # an MLflow without the image log (< 2.12): a plain artifact
            self.client.log_image(self.run_id, array, artifact_file=f"images/{_file_name(tag, step)}.png")

    def log_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:
        try:
            self.client.log_figure(self.run_id, figure, f"figures/{_file_name(tag, step)}.png")
        finally:
            if close:
                close_figure(figure)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"text/{_file_name(tag, step)}.txt")

    def close(self, status: str = "success") -> None:
        if not self._closed:
            self.client.set_terminated(self.run_id, _RUN_STATUS.get(status, "FAILED"))
            self._closed = True
