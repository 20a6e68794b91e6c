"""zoo: a PyTorch model zoo and Hydra-driven training framework for the classic CNN architectures.

The model API is imported lazily, so ``import zoo.cli`` (every command-line start) does not pay for
importing torch before it is needed.
"""

from __future__ import annotations

import time
from typing import Any

__version__ = "0.1.0"

#: when zoo was first imported (``time.time()``): the process start where the system does not say it
#: (see :func:`zoo.engine.utils.seconds_since_start`)
IMPORTED_AT = time.time()

__all__ = ["Registry", "create_model", "list_models", "load_model", "model_info", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models", "model_info"):
        from zoo import models

        return getattr(models, name)
    if name == "load_model":  # a checkpoint's model for inference, its preprocessing in model.pretrained_cfg
        from zoo.trained import load_model

        return load_model
    if name == "Registry":
        from zoo.registry import Registry

        return Registry
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
