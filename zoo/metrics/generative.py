"""Generative-model scores that work offline.

* :func:`gaussian_kl` / :func:`bernoulli_nll`: the two terms of the VAE's negative ELBO (Kingma &
  Welling 2014, Eq. 10 and Appendix B).
* :func:`importance_sampled_log_likelihood`: ``log p(x)`` estimated with ``k`` samples of the
  encoder as proposal, ``log mean_k p(x, z_k) / q(z_k|x)`` (Burda, Grosse & Salakhutdinov,
  "Importance Weighted Autoencoders", ICLR 2016); a lower bound that tightens as ``k`` grows.
* :func:`frechet_distance`: the Fréchet distance between Gaussians fitted to two feature sets
  (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium", NeurIPS 2017: FID). FID proper uses Inception-v3 pool features; offline we use the
  penultimate layer of a zoo classifier trained on the same data (:class:`ClassifierScorer`), so the
  numbers are comparable within this project only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, in closed form:
    ``0.5 * sum(exp(logvar) + mu^2 - 1 - logvar)``."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``-log p(x|z)`` per image for independent Bernoulli pixels with the given logits (nats)."""
    return F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(dim=1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over the last dimension."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(dim=-1)


@torch.no_grad()
def importance_sampled_log_likelihood(
    model: Any, x: torch.Tensor, k: int, max_batch: int = 8192, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image estimate of ``log p(x)`` for a :class:`~zoo.models.vae.VAE` from ``k`` importance
    samples ``z_k ~ q(z|x)``: ``logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k``.

    Decodes at most ``max_batch`` latents at a time; ``generator`` (CPU) fixes the draw.
    """
    if k < 1:
        raise ValueError(f"the importance-sampled log-likelihood needs k >= 1 samples, got {k}")
    mu, logvar = model.posterior(x)
    mu, logvar = mu.float(), logvar.float()
    std = torch.exp(0.5 * logvar)
    chunk = max(1, max_batch // len(x))
    log_w = []
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = torch.randn((c, *mu.shape), generator=generator).to(mu.device)
        z = mu + std * eps  # (c, N, D)
        logits = model.decode(z.flatten(0, 1))
        log_px_z = -bernoulli_nll(logits, x.expand(c, *x.shape).flatten(0, 1)).view(c, len(x))
        log_qz = -0.5 * (eps.pow(2) + logvar + _LOG_2PI).sum(dim=-1)
        log_w.append(log_px_z + standard_normal_log_prob(z) - log_qz)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of ``(N, D)`` features, in float64."""
    f = features.double()
    if f.dim() != 2 or len(f) < 2:
        raise ValueError(f"feature statistics need an (N >= 2, D) matrix, got shape {tuple(features.shape)}")
    return f.mean(dim=0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between N(mu1, S1) and N(mu2, S2).

    ``tr (S1 S2)^(1/2)`` is the sum of the square roots of the eigenvalues of the symmetric
    ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``), which avoids a non-symmetric sqrtm.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(sigma1)
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * cross)


class ClassifierScorer(nn.Module):
    """Features and class probabilities of a trained zoo classifier for images in [0, 1].

    Images are resized to the classifier's input side and normalised with the statistics stored in
    its checkpoint; features are the penultimate layer (``forward_head(..., pre_logits=True)``).
    The classifier's weights are frozen and it always runs in eval mode.
    """

    def __init__(self, classifier: nn.Module, mean: list[float], std: list[float], input_size: int, in_chans: int) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.input_size, self.in_chans = input_size, in_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, option: str = "task.classifier_ckpt") -> ClassifierScorer:
        """Load a classifier trained by ``train.py`` (its config and data statistics are in the file)."""
        from zoo.trained import load_classifier

        classifier, state = load_classifier(path, option, "train one with `python train.py experiment=lenet5_digits` and "
                                                          "pass <run>/checkpoints/best.pt")
        info = state.get("data_info", {})
        in_chans = int(state["config"]["model"].get("in_chans", 1))
        mean, std = info.get("mean") or [0.0] * in_chans, info.get("std") or [1.0] * in_chans
        return cls(classifier, mean, std, int(state["config"]["model"]["input_size"]), in_chans)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, probabilities)`` of images in [0, 1], shape (N, C, H, W)."""
        self.classifier.eval()
        x = images.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if x.shape[1] != self.in_chans:
            x = x.mean(dim=1, keepdim=True).expand(-1, self.in_chans, -1, -1)
        x = (x - self.mean) / self.std
        features = self.classifier.forward_features(x)
        logits = self.classifier.forward_head(features)
        return self.classifier.forward_head(features, pre_logits=True).flatten(1), logits.float().softmax(dim=1)

    def score(
        self, images: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor], threshold: float = 0.8, batch_size: int = 512
    ) -> dict[str, float]:
        """Scores of ``images`` (in [0, 1]) against reference feature statistics (mean, covariance):

        ``fid``: Fréchet distance of the feature Gaussians; ``confident``: fraction of images whose
        most probable class has probability >= ``threshold``; ``classes``: number of classes that are
        the confident prediction for at least one image (a collapsed generator covers few).
        """
        feats, probs = zip(*(self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)))
        top, pred = torch.cat(probs).max(dim=1)
        sure = top >= threshold
        return {
            "fid": frechet_distance(*feature_statistics(torch.cat(feats)), *reference),
            "confident": float(sure.float().mean()),
            "classes": float(pred[sure].unique().numel()),
        }
