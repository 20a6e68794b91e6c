#!/usr/bin/env python
"""FCN-32s against FCN-8s on the digit scenes, each with and without dense-CRF post-processing.

1. ``python train.py experiment=fcn32s_digit_scenes`` and ``experiment=fcn8s_digit_scenes``, each in its
   own process and run directory (finished runs are reused, never overwritten).
2. The CRF's kernel weights and colour scale are chosen on the *validation* scenes with FCN-8s's best
   checkpoint (a small grid; the scores are computed once and refined by each CRF setting).
3. Both best checkpoints are evaluated on the test scenes by ``evaluate.py`` (in-process) with that CRF:
   mIoU, pixel accuracy and boundary-region accuracy before and after the CRF, CRF ms per image.
4. ``experiment=fcn8s_crfrnn_digit_scenes model.pretrained=<FCN-8s best.pt>``: FCN-8s fine-tuned with a
   trainable CRF layer (CRF-as-RNN), whose own output is reported.

    OMP_NUM_THREADS=1 python scripts/segmentation_digits.py                  # runs under outputs/segmentation_digits
    OMP_NUM_THREADS=1 python scripts/segmentation_digits.py --update-readme  # also rewrite README's table
    OMP_NUM_THREADS=1 python scripts/segmentation_digits.py -- trainer.max_epochs=4   # overrides for every run
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, not an installed one
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402

from zoo_results import split_overrides, train_run, update_readme  # noqa: E402

START, END = "<!-- segmentation:start -->", "<!-- segmentation:end -->"
EXPERIMENTS = {"FCN-32s": "fcn32s_digit_scenes", "FCN-8s": "fcn8s_digit_scenes"}
#: the CRF settings tried on the validation scenes (lattice message passing, theta_gamma = 1 px, 5 iterations)
GRID = {"w1": [2.0, 5.0, 10.0, 20.0], "theta_alpha": [8.0, 30.0], "theta_beta": [10.0, 30.0], "w2": [3.0]}
FIXED = {"theta_gamma": 1.0, "iterations": 5, "method": "lattice"}


def _model_and_data(ckpt: Path, split: str) -> tuple[torch.nn.Module, Any]:
    from zoo.data import build_datamodule
    from zoo.engine.checkpoint import load_checkpoint
    from zoo.pipeline import build_model

    state = load_checkpoint(ckpt)
    data = build_datamodule(state["config"]["data"], None)
    model, _ = build_model({**state["config"]["model"], "pretrained": None}, data)
    model.load_state_dict(state["model"])
    return model.eval(), data.loader(split)


def tune_crf(ckpt: Path, boundary_width: int) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """The grid setting with the highest validation mIoU after the CRF, and every setting's score."""
    from zoo.metrics.segmentation import SegmentationMetrics
    from zoo.models.crf import DenseCRF

    model, loader = _model_and_data(ckpt, "val")
    batches = []
    with torch.no_grad():
        for images, targets in loader:
            batches.append((images, model(images), torch.stack([t["mask"] for t in targets])))
    scores = []
    for values in itertools.product(*GRID.values()):
        params = {**dict(zip(GRID, values)), **FIXED}
        crf, metrics = DenseCRF(model.num_classes, **params), SegmentationMetrics(model.num_classes, 255, boundary_width)  # type: ignore[arg-type]
        with torch.no_grad():
            for images, logits, masks in batches:
                metrics.update(crf(logits, images).argmax(1), masks)
        scores.append((params, metrics.compute(per_class=False)["miou"]))
        print(f"  val miou_crf {scores[-1][1]:.4f} with {params}", file=sys.stderr, flush=True)
    return max(scores, key=lambda s: s[1])[0], scores


def evaluate_with_crf(ckpt: Path, out: Path, crf: dict[str, float]) -> dict[str, Any]:
    """``evaluate.py ckpt_path=<ckpt> +task.crf={...}`` in-process (reused when ``out`` has results)."""
    from hydra import compose, initialize_config_dir

    from zoo.pipeline import evaluate

    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    crf_arg = "{" + ",".join(f"{k}:{'null' if v is None else v}" for k, v in {"enabled": "true", **crf}.items()) + "}"
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"paths.output_dir={out}", f"ckpt_path={ckpt}", f"+task.crf={crf_arg}",
                                             "progress_bar=false"])
    return evaluate(cfg)


def table(rows: dict[str, tuple[dict[str, Any], dict[str, Any]]], crfrnn: dict[str, Any] | None) -> str:
    lines = ["| model | params | epochs | train time (s) | test mIoU | + CRF | pixel acc | + CRF | boundary acc | + CRF | CRF ms/image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, (run, ev) in rows.items():
        t = ev["test"]
        lines.append(f"| {label} (`{run['model']}`) | {run['params']:,} | {run['epochs_run']} | {run['fit_time_s']:.0f} | "
                     f"{t['miou']:.4f} | {t['miou_crf']:.4f} | {t['pixel_acc']:.4f} | {t['pixel_acc_crf']:.4f} | "
                     f"{t['boundary_acc']:.4f} | {t['boundary_acc_crf']:.4f} | {t['crf_ms_per_image']:.1f} |")
    if crfrnn is not None:
        t = crfrnn["test"]
        lines.append(f"| FCN-8s + trainable CRF layer, fine-tuned (`{crfrnn['model']}`, CRF-as-RNN) | {crfrnn['params']:,} | "
                     f"+{crfrnn['epochs_run']} | {crfrnn['fit_time_s']:.0f} | - | {t['miou']:.4f} | - | {t['pixel_acc']:.4f} | - | "
                     f"{t['boundary_acc']:.4f} | - |")
    return "\n".join(lines)


def main() -> None:
    argv, overrides = split_overrides(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "segmentation_digits",
                        help="run directories go to OUT/<experiment>; finished ones are reused")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the training processes")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the table between the README markers")
    args = parser.parse_args(argv)

    runs = {}
    for label, name in EXPERIMENTS.items():
        start = time.perf_counter()
        run = train_run(args.out / name, [f"experiment={name}", *overrides], args.threads)
        if run is None:
            raise SystemExit(f"error: {name} failed; see above")
        runs[label] = run
        print(f"  {name}: test mIoU {run['test']['miou']:.4f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    fcn8s_ckpt = args.out / EXPERIMENTS["FCN-8s"] / "checkpoints" / "best.pt"
    grid_file = args.out / "crf_grid.json"
    if grid_file.exists():  # tuned before: reuse
        grid = [(row["crf"], row["val_miou_crf"]) for row in json.loads(grid_file.read_text())]
        crf = max(grid, key=lambda s: s[1])[0]
    else:
        crf, grid = tune_crf(fcn8s_ckpt, boundary_width=3)
        grid_file.write_text(json.dumps([{"crf": p, "val_miou_crf": s} for p, s in grid], indent=1))
    crfrnn = train_run(args.out / "fcn8s_crfrnn_digit_scenes", ["experiment=fcn8s_crfrnn_digit_scenes",
                                                                 f"model.pretrained={fcn8s_ckpt}", *overrides], args.threads)
    rows = {label: (run, evaluate_with_crf(args.out / EXPERIMENTS[label] / "checkpoints" / "best.pt",
                                            args.out / f"eval_{EXPERIMENTS[label]}", crf)) for label, run in runs.items()}
    text = (table(rows, crfrnn) + f"\n\nCRF (chosen on the 200 validation scenes by FCN-8s's mIoU after the CRF, out of {len(grid)} "
            f"settings): `{json.dumps(crf)}`.")
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    if args.update_readme:
        update_readme(text, START, END)


if __name__ == "__main__":
    main()
