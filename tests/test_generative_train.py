"""VAE, denoising autoencoder and GAN through the real configs, pipeline and trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import FAST, make_cfg
from zoo.engine.checkpoint import load_checkpoint
from zoo.engine.trainer import Trainer
from zoo.errors import CheckpointError, ConfigError
from zoo.metrics.generative import ClassifierScorer, feature_statistics
from zoo.pipeline import evaluate, train

QUICK = [*FAST, "trainer.limit_train_batches=4"]


@pytest.fixture(scope="module")
def scorer_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits classifier of a few epochs: good enough to tell digits from noise."""
    run_dir = tmp_path_factory.mktemp("scorer")
    train(make_cfg(run_dir, "experiment=digits_scorer", *FAST, "trainer.max_epochs=3", "test=false"))
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory, scorer_ckpt: Path) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("vae")
    cfg = make_cfg(run_dir, "experiment=vae_digits", "trainer.max_epochs=3", "logger=tensorboard",
                   "model.latent_dim=2", "task.iw_samples=20", "task.num_samples=100", f"task.classifier_ckpt={scorer_ckpt}")
    return run_dir, train(cfg)


def test_vae_trains_reports_elbo_and_scores(vae_run: tuple[Path, dict[str, Any]]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, result = vae_run
    elbo = [row["val/elbo"] for row in result["history"]]
    assert elbo[-1] > elbo[0]  # the bound improves
    first = result["history"][0]
    assert first["train/elbo"] == pytest.approx(-first["train/loss"])  # beta = 1
    assert first["val/elbo"] == pytest.approx(-(first["val/recon"] + first["val/kl"]), rel=1e-5)
    test = result["test"]
    # the importance-sampled log-likelihood of the final evaluation is a tighter bound than the ELBO
    assert test["log_likelihood"] >= test["elbo"]
    assert {"fid", "confident", "classes"} <= set(test) and "val/fid" in first
    assert result["best/val/elbo"] == max(elbo)
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {"samples/fixed_noise", "val/reconstructions", "samples/latent_manifold"} <= set(acc.Tags()["images"])
    assert len(acc.Images("samples/fixed_noise")) == 3


def test_evaluate_vae_checkpoint_reports_log_likelihood(vae_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run_dir, result = vae_run
    cfg = make_cfg(tmp_path, f"ckpt_path={run_dir}/checkpoints/best.pt", "progress_bar=false", "logger=none",
                   "task.iw_samples=20", config_name="evaluate")
    out = evaluate(cfg)["test"]
    assert out["elbo"] == pytest.approx(result["test"]["elbo"])
    assert out["log_likelihood"] == pytest.approx(result["test"]["log_likelihood"], abs=1e-4)
    assert (tmp_path / "metrics.json").is_file()


def test_scorer_separates_real_digits_from_noise(scorer_ckpt: Path) -> None:
    from zoo.data import build_datamodule

    scorer = ClassifierScorer.from_checkpoint(scorer_ckpt)
    data = build_datamodule({"name": "digits", "batch_size": 64, "image_size": 16, "normalize": "none"})
    reference = feature_statistics(scorer(data.val.x)[0])  # type: ignore[attr-defined]
    real = scorer.score(data.test.x, reference)  # type: ignore[attr-defined]
    noise = scorer.score(torch.rand(360, 1, 16, 16, generator=torch.Generator().manual_seed(0)), reference)
    assert real["fid"] < 0.1 * noise["fid"]
    assert real["confident"] > 0.5 > noise["confident"]
    assert real["classes"] == 10


def test_denoising_autoencoder_trains(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, "experiment=dae_digits", *QUICK, "trainer.max_epochs=2"))
    history = result["history"]
    assert history[-1]["val/loss"] < history[0]["val/loss"] and "loss" in result["test"]


class _StepRecorder:
    """Wraps ``Trainer._optimizer_step`` to record, per step, which network's parameters moved and
    whether the other network held gradients."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[tuple[str, bool, bool, bool]] = []
        original = Trainer._optimizer_step

        def step(trainer: Trainer, task: Any, name: str, optimizer: torch.optim.Optimizer, closure: Any = None) -> None:
            gan = task.model
            other = gan.discriminator if name == "generator" else gan.generator
            other_grads = any(p.grad is not None for p in other.parameters())
            before = {n: [p.detach().clone() for p in getattr(gan, n).parameters()] for n in ("generator", "discriminator")}
            original(trainer, task, name, optimizer, closure)
            moved = {n: any(not torch.equal(a, p) for a, p in zip(before[n], getattr(gan, n).parameters())) for n in before}
            self.steps.append((name, moved["generator"], moved["discriminator"], other_grads))

        monkeypatch.setattr(Trainer, "_optimizer_step", step)


def test_generator_and_discriminator_change_only_under_their_own_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _StepRecorder(monkeypatch)
    result = train(make_cfg(tmp_path, "experiment=gan_digits", *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                            "test=false"))
    assert recorder.steps == [
        ("discriminator", False, True, False),
        ("generator", True, False, False),
    ] * 3
    row = result["history"][0]
    assert {"train/loss/discriminator", "train/loss/generator", "lr/discriminator", "lr/generator", "val/loss/generator"} <= set(row)
    assert row["lr/generator"] == row["lr/discriminator"] == pytest.approx(2e-4)


def test_gan_per_network_optimizer_overrides(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, "experiment=gan_mlp_digits", *QUICK, "trainer.max_epochs=1", "test=false",
                            "+task.optimizers.discriminator.lr=0.0001"))
    row = result["history"][0]
    assert row["lr/discriminator"] == pytest.approx(1e-4) and row["lr/generator"] == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match="task.optimizers has unknown entries"):
        train(make_cfg(tmp_path / "bad", "experiment=gan_mlp_digits", *QUICK, "+task.optimizers.critic.lr=0.1"))


def test_gan_resume_restores_both_networks_and_optimizers(tmp_path: Path) -> None:
    common = ["experiment=gan_digits", *QUICK, "trainer.max_epochs=3", "trainer.deterministic=true", "test=false"]
    full = train(make_cfg(tmp_path / "full", *common, "callbacks.checkpoint.every_n_epochs=1"))
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_2.pt")
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    assert any(k.startswith("generator.") for k in state["model"]) and any(k.startswith("discriminator.") for k in state["model"])
    assert "fixed_noise" in state["model"]

    resumed = train(make_cfg(tmp_path / "resumed", *common, f"ckpt_path={tmp_path}/full/checkpoints/epoch_2.pt"))
    assert [row["epoch"] for row in resumed["history"]] == [2]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    for name in ("generator", "discriminator"):
        for pid, moments in a["optimizers"][name]["state"].items():
            for k, v in moments.items():
                torch.testing.assert_close(b["optimizers"][name]["state"][pid][k], v, rtol=0, atol=0)
    assert resumed["history"][-1]["val/loss/generator"] == full["history"][-1]["val/loss/generator"]


def test_gan_with_scorer_monitors_frechet_distance(tmp_path: Path, scorer_ckpt: Path) -> None:
    result = train(make_cfg(tmp_path, "experiment=gan_mlp_digits", *QUICK, "trainer.max_epochs=1", "task.num_samples=50",
                            f"task.classifier_ckpt={scorer_ckpt}"))
    assert "best/val/fid" in result and result["best/val/fid"] == result["history"][0]["val/fid"] > 0
    assert {"fid", "confident", "classes"} <= set(result["test"])


@pytest.mark.parametrize(
    "overrides, error, needle",
    [
        (["experiment=vae_digits", "data.normalize=channel"], ConfigError, "set data.normalize=none"),
        (["experiment=gan_digits", "data.normalize=channel"], ConfigError, "set data.normalize=symmetric"),
        (["experiment=vae_digits", "task=classification"], ConfigError, "use task=vae"),
        (["experiment=vae_digits", "task.classifier_ckpt=/no/such.pt"], CheckpointError, "task.classifier_ckpt: checkpoint not found"),
    ],
)
def test_bad_generative_configs(overrides: list[str], error: type[Exception], needle: str, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *overrides, *QUICK, "trainer.max_epochs=1", "test=false")
    with pytest.raises(error, match=needle):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_classifier_ckpt_must_be_a_classifier(vae_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run_dir, _ = vae_run
    with pytest.raises(CheckpointError, match="not a zoo classifier checkpoint"):
        ClassifierScorer.from_checkpoint(run_dir / "checkpoints" / "best.pt")
