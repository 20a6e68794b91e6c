"""Nonparametric classification (``task=knn``, the task of :mod:`zoo.models.knn`): training memorises.

There is nothing to optimise (``optimizer_names = ()``): the trainer runs ``training_step`` as a plain
forward pass, which adds the batch to the model's memory. Every epoch stores the training split anew (as
the loader delivers it, augmented if ``augmentation`` says so), so the memory holds one epoch's samples;
``experiment=knn_digits`` stores it once (``trainer.max_epochs=1``, ``augmentation=none``). A mid-epoch
resume (``callbacks.checkpoint.every_n_steps``, a signal) keeps the memory the checkpoint holds, the
batches before the resumed one, and goes on adding to it.

Validation is the classification task's (top-1 accuracy, confusion matrix, ``report``, test-time
augmentation over the vote shares) without a loss: votes have none. With ``model.k=null`` every
validation pass of ``fit`` scores each of ``model.k_candidates`` and keeps the most accurate in the model
(``val/acc`` is the chosen k's, ``val/k`` the choice, ``val/acc_k<k>`` each candidate's); test passes and
``evaluate.py`` (``final_evaluation``) use the stored choice.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.metrics.classification import ConfusionMatrix
from zoo.tasks.base import TASKS
from zoo.tasks.classification import ClassificationTask


@TASKS.register("knn")
class KNNTask(ClassificationTask):
    """Wraps a :class:`~zoo.models.knn.KNN` (``memorise``, ``forget``, ``vote_shares``, ``k``)."""

    optimizer_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__(model, num_classes)
        self.topk = None  # the other classes' shares of k votes are mostly tied zeros: no top-5
        self._new_epoch = True
        self._candidates: list[int] = []
        self._candidate_confusions: list[ConfusionMatrix] = []

    def train(self, mode: bool = True) -> KNNTask:
        """The trainer switches to training at the start of every epoch: the memory starts over then."""
        self._new_epoch = mode
        return super().train(mode)

    def resume_epoch(self, batches: int) -> None:
        """The checkpoint's memory holds this epoch's first ``batches`` batches: keep it."""
        self._new_epoch = False

    def soft_targets_refused(self) -> str | None:
        return "task=knn stores one class per training image for its votes"

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        if self._new_epoch:
            self.model.forget()  # type: ignore[operator]
            self._new_epoch = False
        x, y = batch
        self.model.memorise(x, y)  # type: ignore[operator]
        return {}

    @property
    def choosing_k(self) -> bool:
        """Whether this pass chooses k: a validation pass of ``fit`` with ``model.k=null``."""
        return not self.final_evaluation and self.model.auto_k  # type: ignore[return-value]

    def validation_step(self, batch: Any) -> None:
        x, y = batch
        if not self.choosing_k:
            self._count(self.model(x).float(), y)
            return
        if not self._candidates:
            self._candidates = self.model.usable_candidates()  # type: ignore[operator]
            self._candidate_confusions = [ConfusionMatrix(self.num_classes) for _ in self._candidates]
        shares = self.model.vote_shares(x, self._candidates)  # type: ignore[operator]
        for share, confusion in zip(shares, self._candidate_confusions):
            confusion.update(share.argmax(1), y)

    def reset_metrics(self) -> None:
        super().reset_metrics()
        self._candidates, self._candidate_confusions = [], []

    def compute_metrics(self) -> dict[str, float]:
        if not self._candidates:
            return self._accuracies() if int(self.confusion.matrix.sum()) else {}
        correct = [int(c.matrix.diagonal().sum()) for c in self._candidate_confusions]
        best = correct.index(max(correct))  # the smallest k of the most accurate
        self.model.k.fill_(self._candidates[best])  # type: ignore[union-attr, operator]
        self.confusion.matrix = self._candidate_confusions[best].matrix.clone()
        n = int(self.confusion.matrix.sum())
        return {**self._accuracies(), "k": float(self._candidates[best]),
                **{f"acc_k{k}": c / n for k, c in zip(self._candidates, correct)}}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        raise ConfigError("task=knn runs in one process (each process would memorise only its share of the data); "
                          "run it without torchrun")
