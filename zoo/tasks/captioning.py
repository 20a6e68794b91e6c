"""Image captioning: teacher-forced cross-entropy, decoded captions scored with corpus BLEU.

Training draws one reference caption per image and step, and minimises the cross-entropy of each next
word given the image and the true words before it (padding ignored). Validation reports, on the first
reference: ``loss`` (mean negative log-likelihood per word, ``<eos>`` included), ``perplexity``
(its exponential) and ``token_acc`` (teacher-forced next-word accuracy); and, on greedy captions against
all references, ``bleu1`` .. ``bleu4`` (the monitored ``bleu4`` selects best.pt). The final test pass,
``evaluate.py`` and ``beam_at_val=true`` add ``beam_bleu1`` .. ``beam_bleu4`` of beam-search captions.
After each validation a figure of the first images with their generated and true captions, and the
same as a text table, go to TensorBoard; an attending captioner (``image_as=attention``) adds where it
looks for each word of the first image's greedy caption (Xu et al. 2015, fig. 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo.data.captions import Vocabulary, tokenize
from zoo.errors import ConfigError
from zoo.metrics.captioning import corpus_bleu
from zoo.models.captioner import Captioner
from zoo.tasks.base import TASKS, Task, for_display


def _references(target: dict[str, Any]) -> list[str]:
    return list(target.get("captions") or [target["caption"]])


@TASKS.register("captioning")
class CaptioningTask(Task):
    """``vocab`` (the token list of the data's vocabulary) comes from ``DataModule.info`` when the config
    leaves it null; ``num_classes`` is unused."""

    monitor = "bleu4"
    monitor_mode = "max"
    extras = ("captioning",)

    def __init__(
        self,
        model: Captioner,
        vocab: list[str] | None = None,
        max_len: int = 20,
        beam_size: int = 3,
        alpha: float = 0.0,
        beam_at_val: bool = False,
        num_shown: int = 8,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(model)
        if not vocab:
            raise ConfigError("task.vocab is empty: captioning needs a dataset with a vocabulary "
                              "(data=digit_scene_captions, coco_captions or karpathy)")
        self.vocab = Vocabulary(vocab)
        if getattr(model, "vocab_size", len(self.vocab)) != len(self.vocab):
            raise ConfigError(f"model.vocab_size={model.vocab_size} but the vocabulary has {len(self.vocab)} tokens; "
                              "set model.vocab_size=null to take it from the data")
        if max_len < 1 or beam_size < 1:
            raise ConfigError(f"task.max_len and task.beam_size must be >= 1, got {max_len} and {beam_size}")
        self.max_len, self.beam_size, self.alpha = max_len, beam_size, alpha
        self.beam_at_val, self.num_shown = beam_at_val, num_shown
        self.reset_metrics()

    def _tokens(self, captions: list[str], device: torch.device) -> torch.Tensor:
        return self.vocab.batch(captions, self.max_len - 1).to(device)  # words + <eos> fit max_len steps

    @staticmethod
    def _stacked(images: Any) -> torch.Tensor:
        return images if isinstance(images, torch.Tensor) else torch.stack(images)

    def _teacher_forced(self, images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed NLL, correct next words and word count of ``captions`` (``<eos>`` counts, padding not)."""
        tokens = self._tokens(captions, images.device)
        logits = self.model(images, tokens).float()
        target = tokens[:, 1:]
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=self.vocab.pad, reduction="sum")
        real = target != self.vocab.pad
        correct = ((logits.argmax(-1) == target) & real).sum()
        return nll, correct, real.sum()

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = self._stacked(images)
        refs = [_references(t) for t in targets]
        picks = [r[int(torch.randint(len(r), ()))] if len(r) > 1 else r[0] for r in refs]
        nll, correct, count = self._teacher_forced(images, picks)
        return {"loss": nll / count, "token_acc": (correct / count).detach()}

    def decode(self, images: torch.Tensor, method: str = "greedy") -> list[list[str]]:
        """Words of the captions of ``images`` by ``greedy`` or ``beam`` search."""
        if method == "beam":
            seqs = self.model.beam_search(images, self.beam_size, self.max_len, self.alpha)[0]
        else:
            seqs = self.model.greedy(images, self.max_len)
        return [self.vocab.decode(s) for s in seqs.tolist()]

    def _use_beam(self) -> bool:
        return self.beam_at_val or self.final_evaluation

    def validation_step(self, batch: Any) -> None:
        images, targets = batch
        images = self._stacked(images)
        refs = [_references(t) for t in targets]
        nll, correct, count = self._teacher_forced(images, [r[0] for r in refs])
        self._sums = self._sums.to(images.device) + torch.stack([nll.detach(), correct.float(), count.float()])
        self._refs += [[tokenize(c) for c in r] for r in refs]
        self._hyps["greedy"] += self.decode(images, "greedy")
        if self._use_beam():
            self._hyps["beam"] += self.decode(images, "beam")
        self._ids += [t.get("image_id", len(self._ids) + i) for i, t in enumerate(targets)]
        if len(self._shown) < self.num_shown:
            self._shown += [(x.detach().float().cpu(), r[0]) for x, r in zip(images[: self.num_shown - len(self._shown)], refs)]

    def reset_metrics(self) -> None:
        self._sums = torch.zeros(3)
        self._refs: list[list[list[str]]] = []
        self._hyps: dict[str, list[list[str]]] = {"greedy": [], "beam": []}
        self._ids: list[Any] = []
        self._shown: list[tuple[torch.Tensor, str]] = []

    def compute_metrics(self) -> dict[str, float]:
        nll, correct, count = (float(v) for v in self._sums)
        if not self._refs or count == 0:
            return {}
        metrics = {"loss": nll / count, "perplexity": float(torch.exp(torch.tensor(nll / count))), "token_acc": correct / count}
        metrics.update(corpus_bleu(self._refs, self._hyps["greedy"]))
        if self._hyps["beam"]:
            metrics.update(corpus_bleu(self._refs, self._hyps["beam"], prefix="beam_"))
        return metrics

    def predictions(self) -> list[dict[str, Any]]:
        """Captions of the images seen since the last reset: greedy, beam (when decoded) and references."""
        rows = []
        for i, (image_id, refs) in enumerate(zip(self._ids, self._refs)):
            row: dict[str, Any] = {"image_id": image_id, "greedy": " ".join(self._hyps["greedy"][i])}
            if self._hyps["beam"]:
                row["beam"] = " ".join(self._hyps["beam"][i])
            row["caption"] = row.get("beam", row["greedy"])
            row["references"] = [" ".join(r) for r in refs]
            rows.append(row)
        return rows

    def write_predictions(self, run_dir: Path, split: str) -> list[Path]:
        path = Path(run_dir) / f"captions_{split}.json"
        path.write_text(json.dumps(self.predictions(), indent=1))
        return [path]

    def on_validation_end(self, logger: Any, step: int) -> None:
        if not self._shown or not logger:  # nobody receives the figures: skip decoding
            return
        images = torch.stack([x for x, _ in self._shown]).to(next(self.model.parameters()).device)
        greedy, beam = self.decode(images, "greedy"), self.decode(images, "beam")
        rows = [(" ".join(g), " ".join(b), ref) for g, b, (_, ref) in zip(greedy, beam, self._shown)]
        logger.log_figure("val/captions", _caption_figure(images.cpu(), rows), step)
        table = ["| # | greedy | beam | reference |", "|---|---|---|---|"]
        table += [f"| {i} | {g} | {b} | {r} |" for i, (g, b, r) in enumerate(rows)]
        logger.log_text("val/captions", "\n".join(table), step)
        if getattr(self.model, "attention", None) is not None and greedy[0]:
            tokens = self.vocab.batch([" ".join(greedy[0])]).to(images.device)
            maps = self.model.attention_maps(images[:1], tokens)[0]  # (words + <eos>, h, w)
            logger.log_figure("val/attention", _attention_figure(images[0].cpu(), greedy[0] + ["<eos>"], maps.cpu()), step)


def _attention_figure(image: torch.Tensor, words: list[str], maps: torch.Tensor) -> Any:
    """The image, then for each word the attention weights it was predicted with, upsampled over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gray = for_display(image.mean(0, keepdim=True))[0]
    upsampled = F.interpolate(maps[:, None].float(), size=gray.shape, mode="bilinear", align_corners=False)[:, 0]
    fig, axes = plt.subplots(1, len(words) + 1, figsize=(1.6 * (len(words) + 1), 1.9), squeeze=False)
    axes[0, 0].imshow(gray.numpy(), cmap="gray")
    for ax, word, weights in zip(axes[0, 1:], words, upsampled):
        ax.imshow(gray.numpy(), cmap="gray")
        ax.imshow(weights.numpy(), cmap="inferno", alpha=0.6)
        ax.set_title(word, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _caption_figure(images: torch.Tensor, rows: list[tuple[str, str, str]]) -> Any:
    """Each image (min-max scaled for display) above its greedy, beam and reference captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(rows))
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, (greedy, beam, ref) in zip(axes.flat, images, rows):
        shown = for_display(image).permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        ax.set_title(f"greedy: {greedy}\nbeam: {beam}\ntrue: {ref}", fontsize=7, loc="left")
    fig.tight_layout()
    return fig
