"""zoo: a PyTorch model zoo and Hydra-driven training framework for the classic CNN architectures."""

from zoo.models import create_model, list_models, model_info
from zoo.registry import Registry

__version__ = "0.1.0"

__all__ = ["Registry", "create_model", "list_models", "model_info", "__version__"]
