"""Exceptions a user can act on.

Every error that stems from user input (a config value, a name, a path, a checkpoint) derives from
:class:`ZooError`. The command-line entry points print such errors as a single line and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class ZooError(Exception):
    """Base class for errors caused by user input."""

    #: the process exit status the command-line entry points use for this error
    exit_code: int = 2


class ConfigError(ZooError, ValueError):
    """An invalid or inconsistent configuration value."""


class UnknownNameError(ConfigError):
    """A name that is not in a registry (model, dataset, optimizer, ...)."""


class DataNotFoundError(ZooError, FileNotFoundError):
    """A dataset that is not where the config says it is."""


class CheckpointError(ZooError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the run."""


class WriteError(CheckpointError, OSError):
    """A checkpoint or another run output that cannot be written (disk full, read-only, no permission)."""


class TrainingInterrupted(ZooError):
    """SIGINT/SIGTERM arrived during training; ``last.pt`` was saved first."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "terminated by signal N"


class CorruptDataError(ZooError, ValueError):
    """A data file that exists but cannot be read (a truncated or non-image file)."""


def brief(text: str, limit: int = 160) -> str:
    """The first sentence of ``text``'s first non-empty line for a one-line message; beyond ``limit``
    characters cut at the last clause (``;``, ``:``, ``,``) or word boundary, never inside a word (one
    long word stays whole)."""
    line = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z(`])", line, maxsplit=1)[0].rstrip(". ")
    if len(sentence) <= limit:
        return sentence
    for boundary in ("; ", ": ", ", ", " "):
        cut = sentence.rfind(boundary, limit // 3, limit)
        if cut > 0:
            return sentence[:cut] + " ..."
    return sentence


class ExportError(ZooError):
    """A model that cannot be exported in the asked format, an exported file that disagrees with PyTorch, or an
    exporter that is not installed."""
