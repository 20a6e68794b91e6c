"""CSV: ``<run_dir>/metrics.csv``, one row per logged step, readable by any spreadsheet or pandas."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

from zoo.engine.loggers.base import LOGGERS, Logger, Scalar, config_yaml
from zoo.engine.utils import write_atomic


@LOGGERS.register("csv")
class CSVLogger(Logger):
    """Scalars as rows of ``<run_dir>/<filename>``: a ``step`` column, then one column per metric in the
    order they first appear. Consecutive calls at the same step fill one row until a key repeats; a
    new step or a repeated key starts a new row. The rows stay in memory and the file is written on
    :meth:`flush`, :meth:`close` and every ``flush_every`` new rows: appended to while the columns and
    the written rows stay the same, else rewritten whole (atomically, with the full header).

    Hyperparameters and tags go to ``<run_dir>/hparams.yaml``. The config (already in
    ``.hydra/config.yaml``), images, histograms, figures and text are not logged.
    """

    def __init__(self, run_dir: str | Path, filename: str = "metrics.csv", flush_every: int = 100) -> None:
        self.path = Path(run_dir) / filename
        self.hparams_path = Path(run_dir) / "hparams.yaml"
        self.flush_every = max(1, int(flush_every))
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = ["step"]
        self._written_rows = 0  # rows in the file
        self._written_columns: list[str] = []  # the file's header
        self._stale = False  # a row in the file has changed since
        if self.path.exists():  # a resumed run in the same directory: keep the earlier rows
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.rows = [{**{k: v for k, v in row.items() if v != ""}, "step": int(row["step"])} for row in reader]
                self.columns = list(reader.fieldnames or ["step"])
            self._written_rows, self._written_columns = len(self.rows), list(self.columns)
        self._params: dict[str, Scalar] = {}
        self._tags: list[str] = []

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        if not scalars:
            return
        step = int(step)
        last = self.rows[-1] if self.rows else None
        if last is not None and last["step"] == step and not scalars.keys() & last.keys():
            self._stale |= self._written_rows == len(self.rows)
            last.update(scalars)
        else:
            self.rows.append({"step": step, **scalars})
        self.columns += [key for key in scalars if key not in self.columns]
        if len(self.rows) - self._written_rows >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self._stale or self._written_columns != self.columns or not self.path.exists():
            write_atomic(self.path, self._write_all)
            self._written_columns, self._stale = list(self.columns), False
        elif self._written_rows < len(self.rows):
            with self.path.open("a", newline="") as f:
                self._writer(f).writerows(self.rows[self._written_rows:])
        self._written_rows = len(self.rows)

    def _writer(self, f: TextIO) -> csv.DictWriter:
        return csv.DictWriter(f, fieldnames=self.columns, restval="")

    def _write_all(self, f: TextIO) -> None:
        writer = self._writer(f)
        writer.writeheader()
        writer.writerows(self.rows)

    def log_hyperparams(self, params: dict[str, Scalar], metrics: dict[str, float] | None = None) -> None:
        self._params = dict(params)
        self._write_hparams()

    def log_tags(self, tags: list[str]) -> None:
        self._tags = list(tags)
        self._write_hparams()

    def _write_hparams(self) -> None:
        text = config_yaml({"params": self._params, "tags": self._tags})
        write_atomic(self.hparams_path, lambda f: f.write(text))

    def close(self, status: str = "success") -> None:
        self.flush()
