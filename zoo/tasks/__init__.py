"""Tasks: how a batch becomes losses and metrics for one kind of model."""

from zoo.tasks import captioning as _captioning  # noqa: F401  (registers the task)
from zoo.tasks import classification as _classification  # noqa: F401  (registers the task)
from zoo.tasks import generative as _generative  # noqa: F401  (autoencoder, vae, gan)
from zoo.tasks import detection as _detection  # noqa: F401  (registers the task)
from zoo.tasks import segmentation as _segmentation  # noqa: F401  (registers the task)
from zoo.tasks.base import TASKS, Task, build_task

__all__ = ["TASKS", "Task", "build_task"]
