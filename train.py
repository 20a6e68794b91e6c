"""Train a zoo model: ``python train.py model=lenet5 data=digits optimizer.lr=0.01``.

Thin Hydra entry point; the work happens in :func:`zoo.pipeline.train`.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from zoo.cli import guarded, preflight
from zoo.sweep import exit_status

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> float | None:
    from zoo.pipeline import train

    result = train(cfg)
    # the value a Hydra sweeper optimises: the best monitored validation metric
    return next((v for k, v in result.items() if k.startswith("best/")), None)


if __name__ == "__main__":
    preflight(CONFIG_DIR)
    main()
    sys.exit(exit_status())  # a multirun whose jobs failed: non-zero
