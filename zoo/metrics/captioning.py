"""Captioning metrics: corpus BLEU-1..4 (Papineni et al. 2002) through NLTK's implementation."""

from __future__ import annotations

import warnings
from typing import Sequence

#: cumulative n-gram weights of BLEU-1 .. BLEU-4
BLEU_WEIGHTS = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]


def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]],
                prefix: str = "") -> dict[str, float]:
    """``{prefix}bleu1`` .. ``{prefix}bleu4`` of tokenised ``hypotheses`` against their lists of tokenised
    ``references`` (corpus-level: n-gram counts pooled over all captions, one brevity penalty, no smoothing)."""
    from zoo.extras import require

    require("captioning", "BLEU")
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return {}
    with warnings.catch_warnings():  # NLTK warns when some n-gram order has no match; the score is then 0
        warnings.simplefilter("ignore")
        scores = nltk_corpus_bleu(references, hypotheses, weights=BLEU_WEIGHTS)
    return {f"{prefix}bleu{n + 1}": float(s) for n, s in enumerate(scores)}
