"""Classification metrics accumulated on the device without per-batch host syncs."""

from __future__ import annotations

from typing import Sequence

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Number of samples whose target is among the ``k`` highest scores (a 0-d tensor)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == target.unsqueeze(1)).any(dim=1).sum()


def ranked_columns(indices: torch.Tensor, probs: torch.Tensor, class_names: Sequence[str]) -> list[dict[str, object]]:
    """One row per sample of top-k ``indices`` and their ``probs`` (``(N, k)``, most probable first), as the
    columns ``class_1, probability_1, ..., class_k, probability_k`` of the prediction tables (CSV, JSON)."""
    rows: list[dict[str, object]] = []
    for idx, p in zip(indices.tolist(), probs.tolist()):
        row: dict[str, object] = {}
        for rank, (i, q) in enumerate(zip(idx, p), 1):
            row[f"class_{rank}"], row[f"probability_{rank}"] = class_names[i] if i < len(class_names) else str(i), round(q, 6)
        rows.append(row)
    return rows


class ConfusionMatrix:
    """``matrix[t, p]`` counts samples of true class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.matrix.device != preds.device:
            self.matrix = self.matrix.to(preds.device)
        idx = target.flatten() * self.num_classes + preds.flatten()
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def per_class_accuracy(self) -> torch.Tensor:
        m = self.matrix.double()
        return m.diagonal() / m.sum(1).clamp_min(1)


def format_confusion(matrix: torch.Tensor, class_names: Sequence[str]) -> str:
    """The matrix as an aligned text table, true classes in rows, predictions in columns."""
    names = [str(n) for n in class_names]
    m = matrix.cpu().tolist()
    width = max(max(len(n) for n in names), max(len(str(v)) for row in m for v in row), 4)
    header = " " * (width + 1) + "pred ->" + "\n" + " " * (width + 1) + " ".join(n.rjust(width) for n in names)
    rows = [names[i].rjust(width) + " " + " ".join(str(v).rjust(width) for v in row) for i, row in enumerate(m)]
    return "\n".join([header, *rows])


def confusion_figure(matrix: torch.Tensor, class_names: Sequence[str]) -> "object":
    """A matplotlib figure of the row-normalised confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.cpu().double()
    norm = m / m.sum(1, keepdim=True).clamp_min(1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 1.0 + 0.5 * n), dpi=100)
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in class_names], rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j] > 0:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig
