"""k-nearest neighbours (Cover & Hart 1967; the notes' section 2.1): the training set is the model.

"Training" stores every training sample's embedding and label in two buffers (``memory``,
``memory_labels``, saved with the weights, so ``evaluate.py`` needs no data but the checkpoint); a query
takes the majority label of its ``k`` nearest stored samples under the L1 or L2 distance, computed in
chunks of the memory (``torch.cdist``). Ties between classes go to the smallest class index, as in
scikit-learn's ``KNeighborsClassifier``. The embedding is the flattened pixels, or with
``features=<zoo classifier checkpoint>`` that classifier's ``forward_features`` (feature maps averaged
over their positions, then flattened), frozen and in eval mode.

``k=None`` chooses k on the validation split from ``k_candidates`` (the task ``knn`` does it at every
validation of ``fit``; the most accurate, the smallest of equals); the choice is the ``k`` buffer, saved
with the memory. The model registers ``task="knn"`` (:class:`zoo.tasks.knn.KNNTask`): nothing to optimise.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.models import register_model

log = logging.getLogger("zoo")


class KNN(nn.Module):
    """Stores ``(embedding, label)`` pairs with :meth:`memorise`; ``forward(x)`` gives each class's share of
    the ``k`` nearest neighbours' votes, ``(B, num_classes)``."""

    #: rows of the memory compared with a batch at once
    chunk_size = 8192

    def __init__(self, num_classes: int = 10, in_chans: int = 1, k: int | None = None,
                 k_candidates: Sequence[int] = (1, 3, 5, 7, 9, 11, 15, 21), distance: Literal["l1", "l2"] = "l2",
                 features: str | None = None) -> None:
        super().__init__()
        if distance not in ("l1", "l2"):
            raise ConfigError(f"model.distance must be l1 or l2, got {distance!r}")
        if k is not None and k < 1:
            raise ConfigError(f"model.k must be >= 1 or null (chosen on the validation split), got {k}")
        if not k_candidates or min(k_candidates) < 1:
            raise ConfigError(f"model.k_candidates must list positive values of k, got {list(k_candidates)}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.auto_k = k is None
        self.k_candidates = sorted({int(c) for c in k_candidates})
        self.p = 1.0 if distance == "l1" else 2.0
        self.extractor, self.extractor_size = self._extractor(features)
        self.register_buffer("k", torch.tensor(k or 0))  # 0: not chosen yet
        self.register_buffer("memory", torch.zeros(0))
        self.register_buffer("memory_labels", torch.zeros(0, dtype=torch.long))
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._warned = False

    @staticmethod
    def _extractor(path: str | None) -> tuple[nn.Module | None, int | None]:
        if not path:
            return None, None
        from zoo.trained import load_classifier

        model, state = load_classifier(path, "model.features")
        return model.requires_grad_(False), int(state["config"]["model"]["input_size"])

    def train(self, mode: bool = True) -> KNN:
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()  # a frozen embedding: batch norm keeps its statistics
        return self

    # ---- the memory ----------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` float32 embeddings of images ``x``."""
        if self.extractor is not None:
            if x.shape[-1] != self.extractor_size:
                raise ConfigError(f"model.features was trained on {self.extractor_size}-pixel images, the data has "
                                  f"{x.shape[-1]}; set model.input_size={self.extractor_size}")
            x = self.extractor.forward_features(x)  # type: ignore[operator]
            x = x.mean((-2, -1)) if x.dim() == 4 else x
        return torch.flatten(x, 1).float()

    @torch.no_grad()
    def memorise(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of images and labels to the memory."""
        self._pending.append((self.embed(x), y.detach().long()))

    def forget(self) -> None:
        """Empty the memory."""
        self._pending = []
        self.memory, self.memory_labels = self.memory[:0], self.memory_labels[:0]

    def _consolidate(self) -> None:
        """Join the batches memorised since the last call to the memory (one copy, not one per batch)."""
        if self._pending:
            old = [(self.memory, self.memory_labels)] if len(self.memory_labels) else []
            xs, ys = zip(*old, *self._pending)
            self.memory, self.memory_labels, self._pending = torch.cat(xs), torch.cat(ys), []

    @property
    def num_stored(self) -> int:
        return len(self.memory_labels) + sum(len(y) for _, y in self._pending)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        self._consolidate()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A checkpoint's memory has its own size: the buffers take it before the copy."""
        self._pending = []
        for name in ("memory", "memory_labels"):
            stored = state_dict.get(prefix + name)
            if isinstance(stored, torch.Tensor):
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ---- queries -------------------------------------------------------------------------------------

    @torch.no_grad()
    def neighbours(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances ``(B, k)`` and stored indices ``(B, k)`` of the ``k`` nearest neighbours, nearest first."""
        self._consolidate()
        if k > len(self.memory_labels):
            raise ConfigError(f"k={k} neighbours asked of {len(self.memory_labels)} stored training samples; "
                              "lower model.k (or model.k_candidates) or train on more data")
        q = self.embed(x)
        best_d = q.new_empty(len(q), 0)
        best_i = torch.empty(len(q), 0, dtype=torch.long, device=q.device)
        with torch.autocast(q.device.type, enabled=False):
            for start in range(0, len(self.memory), self.chunk_size):
                d = torch.cdist(q, self.memory[start:start + self.chunk_size], p=self.p)
                idx = torch.arange(start, start + d.shape[1], device=q.device).expand(len(q), -1)
                d, i = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
                best_d, pick = d.topk(min(k, d.shape[1]), dim=1, largest=False, sorted=True)
                best_i = i.gather(1, pick)
        return best_d, best_i

    @torch.no_grad()
    def vote_shares(self, x: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
        """``(len(ks), B, num_classes)``: for each ``k`` of ``ks``, each class's share of the ``k`` nearest labels."""
        _, idx = self.neighbours(x, max(ks))
        votes = F.one_hot(self.memory_labels[idx], self.num_classes).cumsum(1)  # (B, max k, C): of the j + 1 nearest
        return torch.stack([votes[:, k - 1] / k for k in ks]).float()

    def usable_candidates(self) -> list[int]:
        """The ``k_candidates`` that the memory holds enough samples for."""
        self._consolidate()
        return [k for k in self.k_candidates if k <= len(self.memory_labels)] or [1]

    def current_k(self) -> int:
        """``k``: the chosen or configured one; before any choice the smallest candidate (with a warning)."""
        if int(self.k) == 0:
            if not self._warned:
                log.warning("knn: k was never chosen on a validation split; using k=%d (set model.k, or keep a "
                            "validation split)", self.k_candidates[0])
                self._warned = True
            return self.k_candidates[0]
        return int(self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vote_shares(x, [self.current_k()])[0]


@register_model(family="knn", task="knn", input_size=8,
                paper="Cover & Hart 1967, Nearest neighbor pattern classification")
def knn(num_classes: int = 10, in_chans: int = 1, k: int | None = None,
        k_candidates: Sequence[int] = (1, 3, 5, 7, 9, 11, 15, 21), distance: Literal["l1", "l2"] = "l2",
        features: str | None = None) -> KNN:
    """k-nearest neighbours on pixels (input size 8: the digits' own resolution) or on a zoo classifier's features."""
    return KNN(num_classes=num_classes, in_chans=in_chans, k=k, k_candidates=k_candidates, distance=distance,
               features=features)
