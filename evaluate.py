"""Evaluate a checkpoint: ``python evaluate.py ckpt_path=outputs/<date>/<time>/checkpoints/best.pt``.

Model and data settings come from the config stored in the checkpoint. Thin Hydra entry point; the
work happens in :func:`zoo.pipeline.evaluate`.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from zoo.cli import guarded, preflight
from zoo.sweep import exit_status

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@hydra.main(config_path=str(CONFIG_DIR), config_name="evaluate", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> None:
    from zoo.pipeline import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    preflight(CONFIG_DIR)
    main()
    sys.exit(exit_status())  # a multirun whose jobs failed: non-zero
