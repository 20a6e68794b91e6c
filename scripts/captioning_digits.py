#!/usr/bin/env python
"""Train captioners on the digit scenes and print BLEU-1..4 of greedy and beam-search captions.

Each run ``CELL:VARIANT`` (``--runs``; cells lstm, gru, rnn; variants ``attention``, the experiment's soft
attention over the encoder's feature map, Xu et al. 2015; ``show_tell``, a 2x2 grid of pooled features as
one code fed as the first input, Vinyals et al. 2015, without dropout) is trained as a user runs it, ``python train.py
experiment=captioner_digit_scenes model=captioner_resnet20_<cell> [overrides]``, in its own process and
directory (finished runs are reused, never overwritten); its best checkpoint is then evaluated on the test
split with ``evaluate.py`` once per beam width (greedy captions come with every evaluation).

    python scripts/captioning_digits.py                          # lstm:attention lstm:show_tell, under outputs/captioning_digits
    python scripts/captioning_digits.py --runs lstm:attention gru:attention rnn:attention   # compare decoder cells
    python scripts/captioning_digits.py --update-readme          # also rewrite README's table

Options after ``--`` go to every training run as Hydra overrides (e.g. ``-- trainer.max_epochs=5``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, not an installed one

from zoo_results import split_overrides, train_run, update_readme  # noqa: E402

START, END = "<!-- captioning:start -->", "<!-- captioning:end -->"
#: variant -> (how the table names it, its overrides of the experiment)
VARIANTS = {
    "attention": ("attention", []),
    # without the dropout the attention decoder uses: on the one image code it slows learning (val BLEU-4 0.29 at epoch 31)
    "show_tell": ("2x2 code as first input", ["model.image_as=input", "model.pool_size=2", "model.drop_rate=0.0"]),
}


def evaluate_beam(ckpt: Path, out: Path, beam_size: int) -> dict[str, Any]:
    """``evaluate.py`` on the test split with ``task.beam_size``; reuses a finished evaluation."""
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    from hydra import compose, initialize_config_dir

    from zoo.pipeline import evaluate

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"paths.output_dir={out}", f"ckpt_path={ckpt}", f"task.beam_size={beam_size}",
                                             "logger=none", "progress_bar=false"])
    return evaluate(cfg)


def bleu(metrics: dict[str, float], prefix: str = "") -> str:
    return " | ".join(f"{metrics[f'{prefix}bleu{n}']:.3f}" for n in range(1, 5))


def main() -> None:
    own, overrides = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runs = [f"{cell}:{variant}" for cell in ("lstm", "gru", "rnn") for variant in VARIANTS]
    parser.add_argument("--runs", nargs="+", default=["lstm:attention", "lstm:show_tell"], choices=runs, metavar="CELL:VARIANT")
    parser.add_argument("--beams", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "captioning_digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(own)

    lines = ["| decoder | image | params | epochs | train time (s) | decoding | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for cell, variant in (run.split(":") for run in args.runs):
        run_dir = args.out / f"{cell}_{variant}"
        label, variant_overrides = VARIANTS[variant]
        print(f"training {cell} ({variant}) -> {run_dir}", file=sys.stderr)
        metrics = train_run(run_dir, ["experiment=captioner_digit_scenes", f"model=captioner_resnet20_{cell}",
                                      *variant_overrides, *overrides], args.threads)
        if metrics is None:
            continue
        head = f"| {cell.upper()} | {label} | {metrics['params']:,} | {metrics['epochs_run']} | {metrics['fit_time_s']:.0f}"
        evals = {k: evaluate_beam(run_dir / "checkpoints" / "best.pt", run_dir / f"eval_beam{k}", k)["test"] for k in args.beams}
        first = evals[args.beams[0]]
        lines.append(f"{head} | greedy | {bleu(first)} |")
        lines += [f"| | | | | | beam {k} | {bleu(m, 'beam_')} |" for k, m in evals.items()]
        print(f"  {cell} ({variant}): test perplexity {first['perplexity']:.3f}, token accuracy {first['token_acc']:.4f}", file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
