"""Tasks: how a batch becomes losses and metrics for one kind of model.

Every module here but ``base`` is imported, so a new task is one new file with ``@TASKS.register``.
"""

from zoo.registry import import_modules
from zoo.tasks.base import TASKS, Task, build_task

import_modules(__name__, __path__, {"base"})

__all__ = ["TASKS", "Task", "build_task"]
