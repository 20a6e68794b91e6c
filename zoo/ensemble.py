"""Ensembles of checkpoints: ``python evaluate.py 'ckpt_path=[a.pt,b.pt,c.pt]'``.

The members' class probabilities (the softmax of each member's scores) are averaged, and the mean is
scored like one model's output (Hansen & Salamon 1990; Lakshminarayanan et al. 2017 average the same
way). Snapshot ensembles (Huang et al. 2017) are the checkpoints ``snapshot-<k>.pt`` that
``callbacks.checkpoint.snapshots=true`` keeps at the end of every cycle of ``scheduler=cosine_restarts``
(SGDR, Loshchilov & Hutter 2017): ``ckpt_path=<run>/checkpoints`` names them all.

* :func:`checkpoint_paths`: what ``ckpt_path`` names (one path, a list, a glob, a directory).
* :func:`check_members`: the same task, dataset and classes for every member, and a task that ensembles.
* :class:`MemberBatches`: the members' loaders of one split side by side, each with its member's own
  preprocessing (input size, normalisation), batch for batch.
* :class:`Ensemble`: a :class:`~zoo.tasks.base.Task` over the members' tasks; each task turns its batch
  into probabilities (``Task.ensemble_probabilities``) and scores probabilities (``Task.score_probabilities``).
"""

from __future__ import annotations

import copy
import glob
import re
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.tasks import TASKS
from zoo.tasks.base import Task, cannot_ensemble

#: the files a directory in ``ckpt_path`` stands for
SNAPSHOTS = "snapshot-*.pt"


def _natural(path: str) -> list[Any]:
    """Sort key: ``snapshot-10.pt`` after ``snapshot-9.pt``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _expand(spec: str) -> list[str]:
    """One ``ckpt_path`` entry: a glob's matches or a directory's snapshots (natural order), else the path itself."""
    if Path(spec).is_dir():
        found = sorted(glob.glob(str(Path(spec) / SNAPSHOTS)), key=_natural)
        if not found:
            raise ConfigError(f"ckpt_path={spec} is a directory without {SNAPSHOTS} files (callbacks.checkpoint.snapshots=true "
                              "writes them); pass a checkpoint file, a list of them or a glob")
        return found
    if glob.has_magic(spec):
        found = sorted(glob.glob(spec), key=_natural)
        if not found:
            raise ConfigError(f"ckpt_path={spec} matches no file; check the pattern (quote it so the shell leaves it alone)")
        return found
    return [spec]


def checkpoint_paths(spec: Any) -> list[str]:
    """The checkpoints ``ckpt_path`` names: a path, or a list of paths, globs (``.../snapshot-*.pt``) and
    directories (their ``snapshot-*.pt``), in order; a checkpoint named twice is a ``ConfigError``."""
    entries = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not entries or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"ckpt_path must be a checkpoint path or a list of them, got {spec!r}")
    paths = [path for entry in entries for path in _expand(entry)]
    seen: dict[Path, str] = {}
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            raise ConfigError(f"ckpt_path names {path} twice (also as {seen[key]}); an ensemble lists each checkpoint once")
        seen[key] = path
    return paths


def _facts(state: dict[str, Any]) -> dict[str, Any]:
    """What members must share: their task, dataset, class count and class names."""
    info = state.get("data_info") or {}
    return {"task": state["config"]["task"]["name"], "dataset": state["config"]["data"]["name"],
            "class count": info.get("num_classes"), "class names": info.get("class_names")}


def _shown(value: Any) -> str:
    return f"{len(value)} other ones" if isinstance(value, list) and len(value) > 4 else repr(value)


def check_members(members: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """``(path, checkpoint)`` pairs: refuse a task that cannot ensemble, and a member whose task, dataset,
    class count or class names differ from the first member's (one line naming the member and the difference)."""
    first_path, first = members[0]
    want = _facts(first)
    for i, (path, state) in enumerate(members[1:], 2):
        for key, have in _facts(state).items():
            if have != want[key]:
                raise ConfigError(f"ensemble member {i} ({path}) has {key} {_shown(have)} but member 1 ({first_path}) has "
                                  f"{_shown(want[key])}; an ensemble averages checkpoints of one task on the same data")
    task = TASKS.get(want["task"]).obj
    if not getattr(task, "ensembles", False):
        raise ConfigError(f"task={want['task']}: {cannot_ensemble(task)}")


class MemberBatches:
    """The loaders of one split, one per member, iterated together: each item is a tuple of the members'
    batches of the same samples (a member's loader applies its own preprocessing)."""

    def __init__(self, loaders: Sequence[Any], names: Sequence[str]) -> None:
        self.loaders, self.names = list(loaders), list(names)
        for name, loader in zip(self.names[1:], self.loaders[1:]):
            if len(loader) != len(self.loaders[0]):
                raise ConfigError(f"ensemble member {name} gives {len(loader)} batches of the split but {self.names[0]} gives "
                                  f"{len(self.loaders[0])}; the members must see the same samples")

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self.loaders, strict=True)


def _metrics_copy(task: Task) -> Task:
    """``task`` with metric state of its own and the same model (not copied): the ensemble's scorer."""
    return copy.deepcopy(task, {id(task.model): task.model})


class Ensemble(Task):
    """The members' tasks side by side. ``validation_step`` takes one batch per member: every member scores
    its own probabilities (``member_metrics``), and the members' mean probabilities are scored by a copy of
    the first member's task (``compute_metrics``, ``report``)."""

    def __init__(self, members: Sequence[Task], names: Sequence[str]) -> None:
        super().__init__(nn.ModuleList(members))
        self.members, self.names = list(members), list(names)
        self.scorer = _metrics_copy(self.members[0])

    def validation_step(self, batch: Sequence[Any]) -> None:
        outputs = [member.ensemble_probabilities(b) for member, b in zip(self.members, batch)]
        for member, chunks in zip(self.members, outputs):
            for probs, target in chunks:
                member.score_probabilities(probs, target)
        for i, chunks in enumerate(outputs[1:], 1):
            self._check_targets(i, chunks, outputs[0])
        for j, (_, target) in enumerate(outputs[0]):
            self.scorer.score_probabilities(torch.stack([chunks[j][0] for chunks in outputs]).mean(0), target)

    def _check_targets(self, i: int, chunks: list[tuple[torch.Tensor, torch.Tensor]],
                       first: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Member ``i`` is scored against the first member's targets with probabilities of the same shape."""
        same = len(chunks) == len(first) and all(
            p.shape == q.shape and t.shape == u.shape and torch.equal(t, u) for (p, t), (q, u) in zip(chunks, first))
        if not same:
            raise ConfigError(f"ensemble member {i + 1} ({self.names[i]}) gives other targets or output sizes than member 1 "
                              f"({self.names[0]}) on the same batch; the members must be evaluated on the same samples "
                              "(the same data split settings) and predict at the same resolution")

    def reset_metrics(self) -> None:
        for task in (*self.members, self.scorer):
            task.final_evaluation = self.final_evaluation  # set on the ensemble by Trainer.test
            task.reset_metrics()

    def compute_metrics(self) -> dict[str, float]:
        """The ensemble's metrics: those of the averaged probabilities."""
        return self.scorer.compute_metrics()

    def member_metrics(self) -> list[dict[str, float]]:
        """Each member's metrics of the last pass, in order."""
        return [member.compute_metrics() for member in self.members]

    def report(self, logger: Any, split: str, step: int) -> dict[str, Any]:
        return self.scorer.report(logger, split, step)

    @contextmanager
    def members_evaluating_with(self, models: Sequence[nn.Module | None]) -> Iterator[None]:
        """Each member evaluates with its own view of its model (:meth:`Task.evaluation_views`)."""
        with ExitStack() as stack:
            for member, model in zip(self.members, models):
                stack.enter_context(member.evaluating_with(model))
            yield
