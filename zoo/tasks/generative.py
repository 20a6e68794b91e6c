"""Generative tasks: autoencoders, the VAE and GANs in the shared trainer.

* ``autoencoder`` (:class:`AutoencoderTask`): Bernoulli reconstruction loss of the clean input from
  a (possibly corrupted) input (Vincent et al. 2008); monitors the validation reconstruction loss.
* ``vae`` (:class:`VAETask`): the negative ELBO ``-log p(x|z) + beta * KL(q(z|x) || p(z))`` per image
  (Kingma & Welling 2014; ``beta != 1`` is Higgins et al. 2017's beta-VAE). ``elbo`` is always
  reported with beta = 1, in nats per image; best.pt keeps the highest validation ELBO. The final
  evaluation adds the importance-sampled log-likelihood (Burda et al. 2016).
* ``gan`` (:class:`GANTask`): two optimizers, ``discriminator`` then ``generator`` on every batch
  (Goodfellow et al. 2014, Algorithm 1 with k = 1); the generator minimises the non-saturating
  ``-log D(G(z))``. best.pt keeps the lowest validation Fréchet distance when a classifier
  checkpoint is configured, else the lowest validation generator loss (a weak proxy: document
  your choice of checkpoint when there is no scorer).

With ``classifier_ckpt`` (a digits classifier trained by ``train.py``) the VAE and GAN tasks also
score samples from the prior at every validation: the Fréchet distance of their classifier
features to those of the validation images, and the fraction classified confidently
(:class:`zoo.metrics.generative.ClassifierScorer`). After each validation they log sample grids
from the model's fixed noise to TensorBoard.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from zoo.errors import ConfigError
from zoo.metrics.generative import (
    ClassifierScorer,
    bernoulli_nll,
    feature_statistics,
    gaussian_kl,
    importance_sampled_log_likelihood,
)
from zoo.models.base import GenerativeModel
from zoo.tasks.base import TASKS, Task


def _batch_images(batch: Any) -> torch.Tensor:
    """The images of an ``(images, labels)`` batch (labels are unused) or of a bare tensor."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class _Sums:
    """Running per-image sums of named metrics, kept on the device (no per-batch host sync)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, n: int, **values: torch.Tensor) -> None:
        """``values`` are per-batch sums over its ``n`` images."""
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += n

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.count for k, v in self.sums.items()} if self.count else {}


class _ImageTask(Task):
    """What every image-generating task shares: a pixel-range check against the model's output
    range, per-image metric sums, and reconstruction grids."""

    model: GenerativeModel

    def __init__(self, model: GenerativeModel) -> None:
        if not isinstance(model, GenerativeModel):
            raise ConfigError(f"task {type(self).__name__} needs a generative zoo model, got {type(model).__name__}")
        super().__init__(model)
        self._range_checked = False
        self._metrics = _Sums()
        self._shown: torch.Tensor | None = None  # first validation images, for image summaries

    def _checked(self, batch: Any) -> torch.Tensor:
        """The batch's images, once verified to lie in the model's output range."""
        x = _batch_images(batch)
        if not self._range_checked:
            low, high = self.model.output_range
            lo, hi = float(x.min()), float(x.max())
            if lo < low - 1e-4 or hi > high + 1e-4:
                fix = "none" if low == 0 else "symmetric"
                raise ConfigError(
                    f"{type(self.model).__name__} models pixels in [{low:g}, {high:g}], but a batch spans "
                    f"[{lo:.3g}, {hi:.3g}]; set data.normalize={fix}"
                )
            self._range_checked = True
        return x

    def _remember(self, x: torch.Tensor) -> None:
        if self._shown is None:
            self._shown = x[:32].detach()

    def reset_metrics(self) -> None:
        self._metrics = _Sums()
        self._shown = None


def _bce(logits: torch.Tensor, real: bool, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy of discriminator logits against the label real (1) or generated (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)


@TASKS.register("autoencoder")
class AutoencoderTask(_ImageTask):
    """Reconstruct the clean input with a Bernoulli likelihood; a denoising autoencoder corrupts its
    input itself in training mode (:meth:`zoo.models.vae.Autoencoder.corrupt`)."""

    monitor = "loss"
    monitor_mode = "min"

    def __init__(self, model: GenerativeModel, num_classes: int | None = None) -> None:
        """``num_classes`` is unused (the pipeline passes the dataset's class count to every task)."""
        super().__init__(model)

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x = self._checked(batch)
        return {"loss": bernoulli_nll(self.model(x), x).mean()}

    def validation_step(self, batch: Any) -> None:
        x = self._checked(batch)
        self._remember(x)
        self._metrics.add(len(x), loss=bernoulli_nll(self.model(x), x).sum())

    def compute_metrics(self) -> dict[str, float]:
        return self._metrics.means()

    def on_validation_end(self, logger: Any, step: int) -> None:
        if self._shown is None:
            return
        x = self._shown[:16]
        corrupted = self.model.corrupt(x)  # type: ignore[operator]
        recon = torch.sigmoid(self.model.decode(self.model.encode(corrupted)))  # type: ignore[operator]
        rows = (x, corrupted.clamp(0, 1), recon) if not torch.equal(corrupted, x) else (x, recon)
        logger.log_image_grid("val/reconstructions", torch.cat(rows), step, nrow=len(x))


class _SamplingTask(_ImageTask):
    """Tasks whose model samples from a prior: fixed-noise grids, and classifier-based scores of
    ``num_samples`` fresh samples against the evaluated split's images."""

    def __init__(
        self,
        model: GenerativeModel,
        classifier_ckpt: str | None = None,
        num_samples: int = 500,
        confidence_threshold: float = 0.9,
        sample_seed: int = 0,
    ) -> None:
        super().__init__(model)
        if num_samples < 2 or not 0 < confidence_threshold <= 1:
            raise ConfigError(
                f"task.num_samples must be >= 2 and task.confidence_threshold in (0, 1]; got {num_samples}, {confidence_threshold}"
            )
        self.scorer = ClassifierScorer.from_checkpoint(classifier_ckpt) if classifier_ckpt else None
        self.num_samples, self.confidence_threshold, self.sample_seed = num_samples, confidence_threshold, sample_seed
        self._real_features: list[torch.Tensor] = []
        self._eval_gen = torch.Generator()

    def reset_metrics(self) -> None:
        super().reset_metrics()
        self._real_features = []
        self._eval_gen = torch.Generator().manual_seed(self.sample_seed)  # same draws at every validation

    def _eval_randn(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise from the validation generator: validation is deterministic and
        leaves the global RNG (training's) untouched."""
        return torch.randn(shape, generator=self._eval_gen).to(device=like.device, dtype=torch.float32)

    def _observe_real(self, x: torch.Tensor) -> None:
        self._remember(x)
        if self.scorer is not None:
            self._real_features.append(self.scorer(self.model.to_unit_range(x))[0].double())

    @torch.no_grad()
    def sample_scores(self) -> dict[str, float]:
        """Classifier scores of ``num_samples`` samples (fixed seed) against the real images seen."""
        if self.scorer is None or sum(len(f) for f in self._real_features) < 2:
            return {}
        gen = torch.Generator().manual_seed(self.sample_seed + 1)
        samples = torch.cat([self.model.sample(min(512, self.num_samples - i), gen) for i in range(0, self.num_samples, 512)])
        reference = feature_statistics(torch.cat(self._real_features))
        return self.scorer.score(self.model.to_unit_range(samples), reference, self.confidence_threshold)

    def compute_metrics(self) -> dict[str, float]:
        metrics = self._metrics.means()
        return {**metrics, **self.sample_scores()} if metrics else {}

    def _log_samples(self, logger: Any, step: int) -> None:
        logger.log_image_grid("samples/fixed_noise", self.model.to_unit_range(self.model.generate(self.model.fixed_noise)), step)


@TASKS.register("vae")
class VAETask(_SamplingTask):
    """Negative ELBO with a Bernoulli decoder and a N(0, I) prior (see the module docstring)."""

    monitor = "elbo"
    monitor_mode = "max"

    def __init__(
        self,
        model: GenerativeModel,
        beta: float = 1.0,
        iw_samples: int = 100,
        num_classes: int | None = None,
        **sampling: Any,
    ) -> None:
        """``iw_samples``: importance samples per image for the log-likelihood of the final
        evaluation (0: skip; Burda et al. used 5000). ``num_classes`` is unused."""
        super().__init__(model, **sampling)
        if beta < 0 or iw_samples < 0:
            raise ConfigError(f"task.beta and task.iw_samples must be >= 0, got {beta} and {iw_samples}")
        self.beta, self.iw_samples = beta, iw_samples

    def _terms(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction NLL and KL; ``eps`` fixes the reparameterisation noise."""
        mu, logvar = self.model.posterior(x)  # type: ignore[operator]
        z = self.model.reparameterize(mu, logvar, eps)  # type: ignore[operator]
        return bernoulli_nll(self.model.decode(z), x), gaussian_kl(mu.float(), logvar.float())  # type: ignore[operator]

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x = self._checked(batch)
        recon, kl = self._terms(x)
        return {
            "loss": (recon + self.beta * kl).mean(),
            "elbo": -(recon + kl).mean().detach(),
            "recon": recon.mean().detach(),
            "kl": kl.mean().detach(),
        }

    def validation_step(self, batch: Any) -> None:
        x = self._checked(batch)
        self._observe_real(x)
        recon, kl = self._terms(x, self._eval_randn(len(x), self.model.latent_dim, like=x))
        values = {"loss": (recon + self.beta * kl).sum(), "elbo": -(recon + kl).sum(), "recon": recon.sum(), "kl": kl.sum()}
        if self.final_evaluation and self.iw_samples:
            ll = importance_sampled_log_likelihood(self.model, x, self.iw_samples, generator=self._eval_gen)
            values["log_likelihood"] = ll.sum()
        self._metrics.add(len(x), **values)

    def on_validation_end(self, logger: Any, step: int) -> None:
        self._log_samples(logger, step)
        if self._shown is not None:
            x = self._shown[:16]
            recon = torch.sigmoid(self.model.decode(self.model.encode(x)))  # type: ignore[operator]
            logger.log_image_grid("val/reconstructions", torch.cat([x, recon]), step, nrow=len(x))
        if self.model.latent_dim == 2:
            logger.log_image_grid("samples/latent_manifold", self.latent_manifold(), step, nrow=15)

    def latent_manifold(self, n: int = 15) -> torch.Tensor:
        """Decodings of an ``n x n`` grid of latents: linearly spaced points of the unit square mapped
        through the inverse Gaussian CDF (Kingma & Welling 2014, Fig. 4); needs a 2-d latent."""
        p = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
        q = math.sqrt(2) * torch.erfinv(2 * p - 1)
        zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
        z = torch.stack([zx.flatten(), zy.flatten()], dim=1).to(self.model.fixed_noise.device)
        return self.model.generate(z)


@TASKS.register("gan")
class GANTask(_SamplingTask):
    """Alternating discriminator / generator updates with binary cross-entropy on logits."""

    optimizer_names = ("discriminator", "generator")
    monitor_mode = "min"

    def __init__(
        self,
        model: GenerativeModel,
        optimizers: dict[str, dict[str, Any]] | None = None,
        num_classes: int | None = None,
        **sampling: Any,
    ) -> None:
        """``optimizers``: per-network overrides of the run's optimizer config, e.g.
        ``{"discriminator": {"lr": 1e-4}}``. ``num_classes`` is unused."""
        super().__init__(model, **sampling)
        self.optimizer_overrides = {k: dict(v or {}) for k, v in (optimizers or {}).items()}
        unknown = sorted(set(self.optimizer_overrides) - set(self.optimizer_names))
        if unknown:
            raise ConfigError(f"task.optimizers has unknown entries {unknown}; use {list(self.optimizer_names)}")
        self.monitor = "fid" if self.scorer is not None else "loss/generator"

    def optimizer_param_groups(self, name: str, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
        from zoo.engine.optim import param_groups

        return param_groups(getattr(self.model, name), weight_decay, decay_norm_and_bias)

    def optimizer_config(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, **self.optimizer_overrides.get(name, {})}

    def _losses(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batch sums of the discriminator loss on real ``x`` and ``G(z)``, the generator's
        non-saturating loss, and the discriminator's probabilities of "real"."""
        real = self.model.discriminate(x).float()  # type: ignore[operator]
        fake = self.model.discriminate(self.model.generate(z)).float()  # type: ignore[operator]
        return {
            "loss/discriminator": _bce(real, True, "sum") + _bce(fake, False, "sum"),
            "loss/generator": _bce(fake, True, "sum"),
            "d_real": torch.sigmoid(real).sum(),
            "d_fake": torch.sigmoid(fake).sum(),
        }

    def training_step(self, batch: Any, name: str = "generator") -> dict[str, torch.Tensor]:
        """One player's loss; the trainer freezes the other player's parameters meanwhile."""
        if name not in self.optimizer_names:
            raise ValueError(f"GANTask has no optimizer {name!r}; it steps {self.optimizer_names}")
        x = self._checked(batch)
        fake = self.model.generate(torch.randn(len(x), self.model.latent_dim, device=x.device))
        if name == "generator":
            return {"loss": _bce(self.model.discriminate(fake).float(), True)}  # type: ignore[operator]
        real_logits = self.model.discriminate(x).float()  # type: ignore[operator]
        fake_logits = self.model.discriminate(fake.detach()).float()  # type: ignore[operator]
        return {
            "loss": _bce(real_logits, True) + _bce(fake_logits, False),
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }

    def validation_step(self, batch: Any) -> None:
        x = self._checked(batch)
        self._observe_real(x)
        self._metrics.add(len(x), **self._losses(x, self._eval_randn(len(x), self.model.latent_dim, like=x)))

    def on_validation_end(self, logger: Any, step: int) -> None:
        self._log_samples(logger, step)
