#!/usr/bin/env python
"""Train the digits scorer, the VAE and the DCGAN, and print the generative-model results table.

Every training run is ``python train.py experiment=<name> ...`` in its own process and directory
(finished ones are reused, never overwritten):

1. ``digits_scorer``: LeNet-5 without label smoothing, whose penultimate features and class
   probabilities score samples (``task.classifier_ckpt``).
2. ``vae_digits``: the MLP VAE; a second, 10-epoch run with the same seed keeps a checkpoint per
   epoch, each evaluated on the test split (test ELBO per epoch).
3. ``gan_digits``: the DCGAN, scored at every epoch (Fréchet distance of 360 samples to the
   validation digits).

Finally the best checkpoints are sampled (360 images, fixed seed) and scored against the validation
digits next to two baselines with the same number of images: the held-out test digits and uniform
noise.

    python scripts/generative_digits.py                    # runs under outputs/generative_digits
    python scripts/generative_digits.py --update-readme    # also rewrite README's table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, not an installed one

import torch  # noqa: E402

from zoo_results import train_run, update_readme  # noqa: E402

START, END = "<!-- generative:start -->", "<!-- generative:end -->"
N_IMAGES = 360  # the size of the test split: every score below uses this many images
SIDE = 32  # the scorer's input side


def test_elbo_per_epoch(run_dir: Path, epochs: int) -> list[float]:
    """Test-split ELBO of ``run_dir/checkpoints/epoch_<k>.pt`` for k = 1..epochs (evaluate.py in-process)."""
    from hydra import compose, initialize_config_dir

    from zoo.pipeline import evaluate

    values = []
    for k in range(1, epochs + 1):
        out = run_dir / f"eval_epoch_{k}"
        if (out / "metrics.json").exists():  # evaluated earlier: reuse
            values.append(json.loads((out / "metrics.json").read_text())["test"]["elbo"])
            continue
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"paths.output_dir={out}", f"ckpt_path={run_dir}/checkpoints/epoch_{k}.pt",
                                                 "task.iw_samples=0", "logger=none", "progress_bar=false"])
        values.append(evaluate(cfg)["test"]["elbo"])
    return values


def sample_scores(scorer_ckpt: Path, model_ckpts: dict[str, Path], threshold: float) -> dict[str, dict[str, float]]:
    """Scores of held-out digits, noise and each model's samples against the validation digits."""
    from zoo.data import build_datamodule
    from zoo.engine.checkpoint import load_checkpoint
    from zoo.metrics.generative import ClassifierScorer, feature_statistics
    from zoo.pipeline import build_model

    scorer = ClassifierScorer.from_checkpoint(scorer_ckpt)
    data = build_datamodule({"name": "digits", "batch_size": 64, "image_size": SIDE, "normalize": "none"})
    reference = feature_statistics(scorer(data.val.x)[0])  # type: ignore[attr-defined]
    rows = {
        "real held-out digits (test split)": scorer.score(data.test.x[:N_IMAGES], reference, threshold),  # type: ignore[attr-defined]
        "uniform noise": scorer.score(torch.rand(N_IMAGES, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)), reference, threshold),
    }
    for label, path in model_ckpts.items():
        state = load_checkpoint(path)
        model, _ = build_model({**state["config"]["model"], "pretrained": None})
        model.load_state_dict(state["model"])
        with torch.no_grad():
            samples = model.eval().sample(N_IMAGES, torch.Generator().manual_seed(1))  # type: ignore[operator]
            rows[label] = scorer.score(model.to_unit_range(samples), reference, threshold)  # type: ignore[operator]
    return rows


def tables(vae: dict[str, Any], vae_test: list[float], gan: dict[str, Any], scores: dict[str, dict[str, float]], threshold: float) -> str:
    vae_hist, gan_hist = vae["history"], gan["history"]
    lines = [
        f"**VAE** (`experiment=vae_digits`: MLP, 8x8 digits, 8-d latent, {vae['epochs_run']} epochs, "
        f"{vae['fit_time_s']:.0f} s): ELBO in nats per image (Bernoulli pixels), higher is better.",
        "",
        "| epoch | " + " | ".join(str(k) for k in range(1, len(vae_test) + 1)) + f" | {len(vae_hist)} |",
        "|---|" + "---:|" * (len(vae_test) + 1),
        "| val ELBO | " + " | ".join(f"{row['val/elbo']:.2f}" for row in vae_hist[: len(vae_test)]) + f" | {vae_hist[-1]['val/elbo']:.2f} |",
        "| test ELBO | " + " | ".join(f"{v:.2f}" for v in vae_test) + f" | {vae['test']['elbo']:.2f} |",
        "",
        f"Best checkpoint on the test split: ELBO {vae['test']['elbo']:.2f}, importance-sampled log-likelihood "
        f"{vae['test']['log_likelihood']:.2f} nats (k = 1000, Burda et al. 2016).",
        "",
        f"**DCGAN** (`experiment=gan_digits`: 32x32, {gan['epochs_run']} epochs, {gan['fit_time_s']:.0f} s): Fréchet distance "
        f"of {N_IMAGES} samples to the validation digits after each epoch, lower is better.",
        "",
        "| epoch | " + " | ".join(str(int(row["epoch"]) + 1) for row in gan_hist) + " |",
        "|---|" + "---:|" * len(gan_hist),
        "| FD | " + " | ".join(f"{row['val/fid']:.1f}" for row in gan_hist) + " |",
        "",
        f"**Sample quality** ({N_IMAGES} images each, best checkpoints, features and probabilities of the "
        f"`digits_scorer` LeNet-5, reference: the 180 validation digits):",
        "",
        f"| images | Fréchet distance | confident (top class p >= {threshold:g}) | classes among confident |",
        "|---|---:|---:|---:|",
    ]
    for label, s in scores.items():
        lines.append(f"| {label} | {s['fid']:.1f} | {100 * s['confident']:.1f}% | {int(s['classes'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "generative_digits")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS per run")
    parser.add_argument("--first-epochs", type=int, default=10, help="epochs with a test ELBO each")
    parser.add_argument("--threshold", type=float, default=0.9, help="confidence threshold of the sample scores")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def run(name: str, *overrides: str) -> dict[str, Any]:
        print(f"training {name} ...", file=sys.stderr)
        metrics = train_run(args.out / name, list(overrides), args.threads)
        if metrics is None:
            raise SystemExit(f"error: the {name} run failed; see {args.out / name}")
        return metrics

    run("scorer", "experiment=digits_scorer", "logger=none")
    scorer_ckpt = args.out / "scorer" / "checkpoints" / "best.pt"
    scoring = [f"task.classifier_ckpt={scorer_ckpt}", f"task.confidence_threshold={args.threshold}"]
    vae = run("vae", "experiment=vae_digits", *scoring)
    run("vae_first_epochs", "experiment=vae_digits", f"trainer.max_epochs={args.first_epochs}", "callbacks.checkpoint.every_n_epochs=1",
        "test=false", "logger=none")
    vae_test = test_elbo_per_epoch(args.out / "vae_first_epochs", args.first_epochs)
    gan = run("gan", "experiment=gan_digits", *scoring, f"task.num_samples={N_IMAGES}")
    scores = sample_scores(scorer_ckpt, {"VAE samples": args.out / "vae" / "checkpoints" / "best.pt",
                                         "DCGAN samples": args.out / "gan" / "checkpoints" / "best.pt"}, args.threshold)
    text = tables(vae, vae_test, gan, scores, args.threshold)
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
