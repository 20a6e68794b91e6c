"""The package's optional extras (``pip install -e '.[detection]'``) and the one-line refusal of a feature
whose extra is missing.

The base install trains and evaluates classifiers; each extra adds the libraries of one feature, named in
``pyproject.toml``'s ``[project.optional-dependencies]`` with the same names as here, and ``all`` (and ``dev``,
which the README's set-up installs) holds every one. A feature calls :func:`require` before it does anything, so
a missing library is one ``error:`` line naming the extra, never a traceback halfway through a run.
"""

from __future__ import annotations

import importlib.util
import sys

from zoo.errors import ConfigError

#: extra -> the modules it provides (import names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "detection": ("pycocotools",),       # COCOeval mAP, COCO annotations
    "captioning": ("nltk",),             # corpus BLEU
    "mlflow": ("mlflow",),               # logger=mlflow
    "search": ("optuna",),               # hparams_search=..., hydra/sweeper=optuna
    "viz": ("captum",),                  # python -m zoo explain
}


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it; ``sys.modules[module] = None`` blocks it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, feature: str) -> None:
    """A :class:`ConfigError` naming ``extra`` when a module of it is not installed; ``feature`` says what
    needs it (``task=detection``)."""
    missing = [m for m in EXTRAS[extra] if not available(m)]
    if missing:
        raise ConfigError(f"{feature} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          f"installed: pip install -e '.[{extra}]' (or pip install {' '.join(missing)})")
