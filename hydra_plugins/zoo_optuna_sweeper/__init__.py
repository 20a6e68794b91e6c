"""zoo's Optuna sweeper for Hydra (``hydra/sweeper=optuna``, ``hparams_search=...``).

Hydra only instantiates sweepers defined under the ``hydra_plugins`` package, and it imports every
module here whenever it starts, so this module stays light: the search itself is in
:mod:`zoo.search`, imported when a sweep begins.
"""

from __future__ import annotations

from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Ask Optuna for each trial's values, run the trials through Hydra's launcher, tell Optuna the
    values ``train.py`` returns (its best monitored validation metric)."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from zoo.search import run_search

        assert self.config is not None and self.launcher is not None
        return run_search(self.options, arguments, self.config, self.launcher, self.validate_batch_is_legal)
