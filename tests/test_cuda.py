"""What only a GPU can check (``pytest -m cuda``; skipped without CUDA): mixed precision in bf16 and in fp16
with the gradient scaler, channels_last, torch.compile, DistributedDataParallel over NCCL (one process) and
the dense CRF on the device. ``scripts/device_check.sh`` runs them with the GPU benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, make_cfg

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FAST = ["trainer.device=cuda", "logger=none", "augmentation=none", "callbacks.progress.mode=none", "test=true"]


def _train(tmp_path: Path, *overrides: str) -> dict:
    from zoo.pipeline import train

    return train(make_cfg(tmp_path / "run", *FAST, *overrides))


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_trains_lenet5(tmp_path: Path, precision: str) -> None:
    result = _train(tmp_path, f"trainer.precision={precision}", "trainer.max_epochs=5")
    assert result["test"]["acc"] > 0.9
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    scaler = state.get("scaler") or {}
    if precision == "16":  # the gradient scaler is on and its scale was saved
        assert scaler and float(scaler.get("scale", 0)) > 0
    losses = [h["train/loss"] for h in result["history"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_channels_last_and_compile_train_resnet20(tmp_path: Path) -> None:
    result = _train(tmp_path, "model=resnet20", "trainer.channels_last=true", "trainer.compile=true",
                    "trainer.precision=bf16", "trainer.max_epochs=3", "data.batch_size=128")
    assert result["test"]["acc"] > 0.8


def test_ddp_over_nccl_with_one_process(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", str(REPO / "train.py"),
         "trainer=ddp", "trainer.max_epochs=2", "logger=none", "augmentation=none", f"hydra.run.dir={run}"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nccl backend" in proc.stdout + proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["acc"] > 0.8


def test_dense_crf_on_cuda_matches_the_cpu() -> None:
    from zoo.models.crf import DenseCRF

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 64, generator=gen)
    logits = torch.randn(2, 5, 64, 64, generator=gen)
    crf = DenseCRF(num_classes=5)
    on_cpu = crf(logits, image)
    on_gpu = crf.to("cuda")(logits.cuda(), image.cuda()).cpu()
    torch.testing.assert_close(on_gpu.softmax(1), on_cpu.softmax(1), atol=1e-3, rtol=0)
