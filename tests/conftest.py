from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache for the test; downloads are forbidden."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    return tmp_path / "torch"


@pytest.fixture(scope="session")
def lenet5_digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A LeNet-5 trained 4 epochs on the digits (no augmentation) and the last six digits of the set as
    8x8 grey PNG files with their labels: what the explain and visualize tests inspect."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from tests.helpers import make_cfg
    from zoo.pipeline import train

    tmp = tmp_path_factory.mktemp("lenet5_digits")
    train(make_cfg(tmp / "run", "trainer.max_epochs=4", "logger=none", "test=false", "augmentation=none",
                   "callbacks.progress.mode=none"))
    bunch = load_digits()
    files, labels = [], []
    for i in range(-6, 0):
        path = tmp / f"digit{len(files)}.png"
        Image.fromarray((bunch.images[i] * 255 / 16).astype(np.uint8), mode="L").save(path)
        files.append(path)
        labels.append(int(bunch.target[i]))
    return {"ckpt": tmp / "run" / "checkpoints" / "best.pt", "files": files, "labels": labels, "dir": tmp}
