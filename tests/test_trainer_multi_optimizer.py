"""The trainer with a task that steps two optimizers per batch (the GAN pattern), no model special case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.data.types import DataModule
from zoo.data.loaders import TensorLoader
from zoo.engine.checkpoint import load_checkpoint
from zoo.engine.callbacks import ModelCheckpoint
from zoo.engine.state import TrainerConfig
from zoo.engine.trainer import Trainer
from zoo.tasks.base import Task


class TwoPlayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 1)


class TwoOptimizerTask(Task):
    """``a`` minimises ``b(a(x))``, ``b`` maximises it: each loss reaches the other module's weights."""

    optimizer_names = ("b", "a")

    def __init__(self, model: TwoPlayer) -> None:
        super().__init__(model)
        self.grads_seen: list[tuple[str, bool, bool]] = []
        self._n = 0

    def training_step(self, batch: Any, name: str = "a") -> dict[str, torch.Tensor]:
        x, _ = batch
        score = self.model.b(self.model.a(x)).mean()
        loss = -score if name == "b" else score
        self.grads_seen.append((name, self.model.a.weight.requires_grad, self.model.b.weight.requires_grad))
        return {"loss": loss}

    def optimizer_param_groups(self, name: str, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
        return [{"params": list(getattr(self.model, name).parameters())}]

    def optimizer_config(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, "lr": 0.1 if name == "a" else 0.01}

    def validation_step(self, batch: Any) -> None:
        self._n += len(batch[0])

    def reset_metrics(self) -> None:
        self._n = 0

    def compute_metrics(self) -> dict[str, float]:
        return {"loss": float(self._n)}


def _data() -> DataModule:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.zeros(32, dtype=torch.long)
    return DataModule(train=TensorLoader(x, y, 8, shuffle=True), val=TensorLoader(x, y, 16), test=TensorLoader(x, y, 16),
                      num_classes=1, in_chans=4, image_size=1, class_names=["x"], mean=[0.0], std=[1.0])


def _fit(run_dir: Path, epochs: int, ckpt: Path | None = None) -> tuple[TwoOptimizerTask, dict[str, Any]]:
    torch.manual_seed(0)
    task = TwoOptimizerTask(TwoPlayer())
    trainer = Trainer(TrainerConfig(max_epochs=epochs, device="cpu"), run_dir, run_info={"model_name": "toy"},
                      callbacks=[ModelCheckpoint()])
    result = trainer.fit(task, _data(), {"name": "sgd", "lr": 1.0}, {"name": "none"}, ckpt_path=ckpt)
    return task, result


def test_each_optimizer_steps_only_its_own_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = TwoOptimizerTask(TwoPlayer())
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer = Trainer(TrainerConfig(max_epochs=1, device="cpu", limit_train_batches=1), tmp_path)
    trainer.fit(task, _data(), {"name": "sgd", "lr": 1.0}, {"name": "none"})
    # per batch: b first with a frozen, then a with b frozen; flags restored afterwards
    assert task.grads_seen == [("b", False, True), ("a", True, False)]
    assert task.model.a.weight.requires_grad and task.model.b.weight.requires_grad
    after = task.model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # both moved, each by its own step


def test_per_optimizer_config_logging_and_resume(tmp_path: Path) -> None:
    task, result = _fit(tmp_path / "full", 3)
    row = result["history"][-1]
    assert {"train/loss/a", "train/loss/b", "lr/a", "lr/b"} <= set(row)
    assert row["lr/a"] == 0.1 and row["lr/b"] == 0.01
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"a", "b"}

    _fit(tmp_path / "part", 2)
    resumed, _ = _fit(tmp_path / "resumed", 3, ckpt=tmp_path / "part" / "checkpoints" / "last.pt")
    for k, v in task.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v)
