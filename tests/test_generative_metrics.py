"""The VAE's loss terms, the importance-sampled log-likelihood and the Fréchet distance against
independent calculations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from zoo.metrics.generative import (
    bernoulli_nll,
    feature_statistics,
    frechet_distance,
    gaussian_kl,
    importance_sampled_log_likelihood,
)
from zoo.models import create_model


def test_kl_matches_closed_form_and_monte_carlo() -> None:
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    q, p = Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p).sum(1))
    # known case: N(1, 4) against N(0, 1) in one dimension = 0.5 * (4 + 1 - 1 - log 4)
    assert float(gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]]))) == pytest.approx(0.5 * (4 - math.log(4)))
    # Monte Carlo: E_q[log q(z) - log p(z)]
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(mc, gaussian_kl(mu, logvar), atol=0.05, rtol=0.01)
    assert float(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max()) == 0.0


def test_bernoulli_nll_is_binary_cross_entropy_per_image() -> None:
    logits, x = torch.tensor([[[[0.0, 2.0]]]]), torch.tensor([[[[1.0, 0.0]]]])
    expected = math.log(2) + math.log(1 + math.exp(2))
    assert float(bernoulli_nll(logits, x)[0]) == pytest.approx(expected)


def test_reparameterisation_passes_gradients_to_the_encoder() -> None:
    model = create_model("vae_mlp", image_size=8, latent_dim=2, hidden=[16])
    out = model(torch.rand(3, 1, 8, 8))
    assert out.z.shape == (3, 2) and not torch.equal(out.z, out.mu)
    out.logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def _tiny_vae() -> torch.nn.Module:
    torch.manual_seed(3)
    model = create_model("vae_mlp", image_size=2, latent_dim=1, hidden=[8]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # a decoder that depends strongly on z, so the bound is not tight
    return model


def test_importance_sampled_log_likelihood_matches_quadrature() -> None:
    """With a 1-d latent, log p(x) = log of the integral of p(x|z) N(z; 0, 1) over z, by quadrature."""
    model = _tiny_vae()
    x = torch.tensor([[[[1.0, 0.0], [0.2, 0.9]]], [[[0.0, 0.5], [1.0, 1.0]]]])
    z = torch.linspace(-10, 10, 4001).unsqueeze(1)
    with torch.no_grad():
        log_joint = torch.stack([-bernoulli_nll(model.decode(z), xi.expand(len(z), -1, -1, -1)) for xi in x], 0)
        log_joint = log_joint + Normal(0.0, 1.0).log_prob(z.squeeze(1))
        exact = torch.logsumexp(log_joint, 1) + math.log(float(z[1] - z[0]))
        gen = torch.Generator().manual_seed(0)
        estimate = importance_sampled_log_likelihood(model, x, k=20000, generator=gen)
        mu, logvar = model.posterior(x)
        elbo = torch.stack([-(bernoulli_nll(model.decode(model.reparameterize(mu, logvar)), x)) for _ in range(300)]).mean(0)
        elbo = elbo - gaussian_kl(mu, logvar)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
    assert (elbo < exact - 0.05).all(), (elbo, exact)  # the ELBO is a strictly looser bound here
    with torch.no_grad():
        k1 = importance_sampled_log_likelihood(model, x, k=1, generator=torch.Generator().manual_seed(1))
        with pytest.raises(ValueError, match="k >= 1"):
            importance_sampled_log_likelihood(model, x, k=0)
    assert torch.isfinite(k1).all()


def test_frechet_distance_identical_and_diagonal_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    stats = feature_statistics(feats)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = 1 + 4 + (1 + 1 + 0)
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float((mu1 - mu2) @ (mu1 - mu2) + s1.trace() + s2.trace() - 2 * covmean.trace())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(torch.randn(1, 5))
