"""The open engine: built-in callbacks, a user's callback from config, debug switches, the profiler,
strict trainer/callback settings."""

from __future__ import annotations

import csv
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from tests.helpers import FAST, make_cfg, run_cli
from zoo.engine.callbacks import Callback, Progress
from zoo.engine.checkpoint import load_checkpoint
from zoo.errors import ConfigError
from zoo.pipeline import train

QUICK = [*FAST, "test=false", "augmentation=none"]


def _named(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "checkpoints").glob("epoch=*.pt"))


def test_top_k_keeps_the_k_lowest_val_loss_plus_last(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *QUICK, "trainer.max_epochs=5", "callbacks.checkpoint.monitor=val/loss",
                            "callbacks.checkpoint.mode=min", "callbacks.checkpoint.save_top_k=2", "optimizer.lr=0.02"))
    losses = {h["epoch"] + 1: h["val/loss"] for h in result["history"]}
    best_two = sorted(losses, key=losses.get)[:2]
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == sorted([*(f"epoch={e}-val_loss={losses[e]:.4f}.pt" for e in best_two), "best.pt", "last.pt"])
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] + 1 == best_two[0] and best["metrics"]["val/loss"] == min(losses.values())
    assert (tmp_path / "checkpoints" / "best.pt").stat().st_ino == (tmp_path / "checkpoints" / best["callbacks"]["checkpoint"]
                                                                     ["top"][0][2]).stat().st_ino  # a link, no extra disk
    assert result["best/val/loss"] == min(losses.values()) and result["best_epoch"] == best_two[0]


def test_top_k_minus_one_keeps_every_epoch_and_zero_none(tmp_path: Path) -> None:
    train(make_cfg(tmp_path / "all", *QUICK, "trainer.max_epochs=3", "callbacks.checkpoint.save_top_k=-1"))
    assert [p.name.split("-")[0] for p in _named(tmp_path / "all")] == ["epoch=1", "epoch=2", "epoch=3"]
    result = train(make_cfg(tmp_path / "none", *FAST, "callbacks.checkpoint.save_top_k=0"))
    assert sorted(p.name for p in (tmp_path / "none" / "checkpoints").iterdir()) == ["last.pt"]
    assert "test" in result  # scored with the final weights


def test_early_stopping_on_a_chosen_monitor(tmp_path: Path) -> None:
    # a learning rate too small to move the validation loss by min_delta
    result = train(make_cfg(tmp_path, *QUICK, "trainer.max_epochs=20", "optimizer.lr=1e-9", "scheduler=none",
                            "callbacks.early_stopping.monitor=val/loss", "callbacks.early_stopping.patience=2",
                            "callbacks.early_stopping.min_delta=1e-3"))
    assert result["stopped_early"] and result["epochs_run"] == 3 and result["stopped_epoch"] == 3
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["callbacks"]["early_stopping"]
    assert state["monitor"] == "val/loss" and state["bad_epochs"] == 2


def test_learning_rate_of_every_group_logged_once_per_step(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *QUICK, "logger=csv", "model=alexnet_small", "trainer.max_epochs=1", "trainer.log_every_n_steps=5",
                   "transfer=finetune_all", "transfer.backbone_lr_mult=0.1", "transfer.stage_lr_decay=0.5", "scheduler=none"))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    lr_rows = [r for r in rows if r.get("lr")]
    assert [int(r["step"]) for r in lr_rows] == [1, 5, 10, 15, 20]  # every 5 steps, the first step, the epoch end: once each
    groups = sorted({k for k in rows[0] if k == "lr" or k.startswith(("lr/", "lr_"))})
    values = sorted({round(float(lr_rows[0][k]), 12) for k in groups}, reverse=True)
    lr = 0.005  # adam's default
    assert values[0] == lr and values[1] == pytest.approx(0.1 * lr) and values[2] == pytest.approx(0.05 * lr)
    assert len(groups) >= 4 and "lr_pg1" in groups


class Recorder(Callback):
    """A user's callback: writes the hooks called to ``path`` (Hydra builds it from the config, so
    the test reads what it saw from the file)."""

    def __init__(self, path: str, note: str = "") -> None:
        self.path, self.note = Path(path), note
        self.seen: dict[str, Any] = {"calls": [], "restored": []}

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name.startswith("on_") or name == "teardown":
            def record(*args: Any) -> None:
                self.seen["calls"].append(name)
                self.path.write_text(json.dumps(self.seen))
                attr(*args)
            return record
        return attr

    def state_dict(self) -> dict[str, Any]:
        return {"note": self.note, "calls": len(self.seen["calls"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen["restored"].append(state)


def _collapse(calls: list[str]) -> list[str]:
    out: list[str] = []
    for c in calls:
        if not out or out[-1] != c:
            out.append(c)
    return out


def test_user_callback_from_config_sees_the_hooks_in_order(tmp_path: Path) -> None:
    train(make_cfg(tmp_path / "a", *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accumulate_grad_batches=2",
                   "data.eval_batch_size=16", "trainer.limit_val_batches=3", "trainer.limit_test_batches=2",
                   "+callbacks.recorder._target_=tests.test_callbacks.Recorder", "+callbacks.recorder.note=hi",
                   f"+callbacks.recorder.path={tmp_path / 'a.json'}"))
    calls = json.loads((tmp_path / "a.json").read_text())["calls"]
    batch = ["on_train_batch_start", "on_before_backward", "on_after_backward", "on_train_batch_end"]
    assert _collapse(calls) == [
        "on_fit_start", "on_train_epoch_start",
        *batch, "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_train_batch_end",
        "on_eval_start", "on_eval_batch_end", "on_eval_end", "on_validation_end",
        "on_train_epoch_end", "on_save_checkpoint",  # the checkpoint callback (order 90) assembles it after this one (50)
        "on_fit_end", "teardown", "on_eval_start", "on_eval_batch_end", "on_eval_end", "on_test_end",
    ]
    assert calls.count("on_eval_batch_end") == 3 + 2  # limit_val_batches, limit_test_batches
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert state["callbacks"]["recorder"]["note"] == "hi"
    resume = [f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.pt'}", "+callbacks.recorder._target_=tests.test_callbacks.Recorder",
              f"+callbacks.recorder.path={tmp_path / 'b.json'}", "resume.allow_changes=true"]
    train(make_cfg(tmp_path / "b", *FAST, *resume), overrides=resume)
    restored = json.loads((tmp_path / "b.json").read_text())["restored"]
    assert restored == [{"note": "hi", "calls": state["callbacks"]["recorder"]["calls"]}]


def test_no_sync_between_accumulated_backward_passes() -> None:
    """Under DDP the gradients are all-reduced once per update: every backward but the last of an
    accumulation runs inside ``model.no_sync()``."""
    from zoo.data.types import DataModule
    from zoo.data.loaders import TensorLoader
    from zoo.engine.distributed import DistEnv
    from zoo.engine.state import TrainerConfig
    from zoo.engine.trainer import Trainer
    from zoo.tasks.classification import ClassificationTask

    class Counting(torch.nn.Linear):
        def __init__(self) -> None:
            super().__init__(4, 2)
            self.inside, self.backwards = 0, []

        @contextmanager
        def no_sync(self) -> Iterator[None]:
            self.inside += 1
            yield
            self.inside -= 1

    model = Counting()
    model.weight.register_hook(lambda g: model.backwards.append(model.inside) or g)
    x, y = torch.randn(24, 4), torch.randint(0, 2, (24,))
    loader = TensorLoader(x, y, 4)
    loader.shard = lambda rank, world: None  # type: ignore[attr-defined]
    data = DataModule(loader, TensorLoader(x, y, 8), TensorLoader(x, y, 8), 2, 4, 1, ["a", "b"], [0.0], [1.0])
    trainer = Trainer(TrainerConfig(max_epochs=1, device="cpu", accumulate_grad_batches=3), "unused")
    trainer.dist = DistEnv(rank=0, local_rank=0, world_size=2)  # as under torchrun; wrap_model is a no-op in one process
    result = trainer.fit(ClassificationTask(model, 2), data, {"name": "sgd", "lr": 0.1}, {"name": "none"})
    assert model.backwards == [1, 1, 0, 1, 1, 0] and result["global_step"] == 2


def test_fast_dev_run_writes_no_run_files(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, "trainer.fast_dev_run=true", "logger=[tensorboard,csv]", "data.eval_batch_size=16",
                            "callbacks.checkpoint.every_n_steps=1"))
    assert result["global_step"] == 1 and len(result["history"]) == 1 and "test" in result
    assert not tmp_path.exists()  # no checkpoints, metrics, logs, claim: not even the directory
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'cli'}", "debug=fast")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "cli").exists()  # .hydra/ and train.log neither


def test_overfit_batches_drives_the_training_loss_down(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, *QUICK, "trainer.overfit_batches=1", "trainer.max_epochs=40", "optimizer.lr=0.01",
                            "scheduler=none", "debug=overfit"))
    first, last = result["history"][0], result["history"][-1]
    assert last["train/loss"] < 0.25 * first["train/loss"]
    assert last["val/acc"] == 1.0  # validation sees the same 64 images
    assert not (tmp_path / "checkpoints").exists()  # debug=overfit switches checkpointing off


def test_torch_profiler_writes_a_chrome_trace(tmp_path: Path) -> None:
    train(make_cfg(tmp_path, *QUICK, "trainer.profiler=torch", "trainer.max_epochs=1", "trainer.limit_train_batches=6"))
    traces = list((tmp_path / "profiler").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any("ProfilerStep#" in e.get("name", "") for e in events)
    assert "Self CPU" in (tmp_path / "profiler" / "key_averages.txt").read_text()


def test_progress_lines_honour_the_batch_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="zoo.progress"):
        train(make_cfg(tmp_path, *QUICK, "trainer.max_epochs=2", "trainer.limit_train_batches=6", "trainer.log_every_n_steps=3",
                       "callbacks.progress.mode=lines"))
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo.progress" and "samples/s" in r.getMessage()]
    assert [line.split(" | ")[1] for line in lines] == ["batch 3/6", "batch 6/6"] * 2
    assert lines[-1].startswith("epoch 2/2") and "step 12" in lines[-1] and "ETA 0:00:00" in lines[-1]
    assert "loss " in lines[0] and "lr " in lines[0]


def test_progress_bar_totals_honour_the_batch_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars: list[Any] = []

    class Bar:
        def __init__(self, total: int, desc: str, **kw: Any) -> None:
            self.total, self.desc, self.n = total, desc, 0
            bars.append(self)

        def update(self, k: int) -> None:
            self.n += k

        def set_postfix(self, *a: Any, **k: Any) -> None: ...
        def close(self) -> None: ...

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    train(make_cfg(tmp_path, *QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=10", "callbacks.progress.mode=bar"))
    epoch = [b for b in bars if b.desc.startswith("epoch")]
    assert [(b.total, b.n) for b in epoch] == [(10, 10)]


@pytest.mark.parametrize(("override", "message"), [
    ("+trainer.foo=1", "unknown trainer option 'foo'; known: "),
    ("+trainer.checkpoint.save_top_k=3", "trainer.checkpoint moved to callbacks.checkpoint"),
    ("+callbacks.checkpoint.save_top=3", "unknown option callbacks.checkpoint.save_top; known: monitor, mode, save_top_k"),
    ("+callbacks.chekpoint.monitor=val/loss", "unknown callback 'chekpoint'; known: checkpoint, "),
    ("+callbacks.mine._target_=tests.test_callbacks.NoSuchThing", "callbacks.mine"),
    ("+callbacks.mine._target_=null", "callbacks.mine._target_ must name a class"),
    ("+callbacks.mine._target_=collections.OrderedDict", "made a OrderedDict, not a zoo.engine.callbacks.Callback subclass"),
    ("callbacks.checkpoint.mode=biggest", "mode must be min, max or null"),
])
def test_unknown_settings_are_one_line_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path, *FAST, override))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("key", ["checkpoint", "early_stopping"])
def test_unknown_monitor_of_any_callback_is_a_config_error(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"callbacks.{key}.monitor=val/acc6 is not a logged metric; logged: .*val/acc5"):
        train(make_cfg(tmp_path, *QUICK, "trainer.max_epochs=1", f"callbacks.{key}.monitor=val/acc6"))


def test_unknown_monitor_stops_at_the_first_validation(tmp_path: Path) -> None:
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_epochs=3", "logger=none",
                   "callbacks.checkpoint.monitor=val/does_not_exist")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "callbacks.checkpoint.monitor=val/does_not_exist is not a logged metric" in errors[0]
    assert "val/acc" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_callbacks_none_turns_every_callback_off(tmp_path: Path) -> None:
    result = train(make_cfg(tmp_path, "trainer.max_epochs=1", "logger=none", "callbacks=none"))
    assert not (tmp_path / "checkpoints").exists() and "test" in result and "best_epoch" not in result


def test_progress_is_quiet_off_rank_zero() -> None:
    from zoo.engine.distributed import DistEnv

    class FakeTrainer:
        dist = DistEnv(rank=1, local_rank=1, world_size=2)

    assert Progress("lines")._active(FakeTrainer()) == "none"  # type: ignore[arg-type]


def test_every_logger_gets_config_hyperparameters_and_tags(tmp_path: Path) -> None:
    import yaml
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(make_cfg(tmp_path, *QUICK, "logger=[tensorboard,csv,mlflow]", "tags=[digits,smoke]", "optimizer.lr=0.003"))
    assert result["tags"] == ["digits", "smoke"]
    assert json.loads((tmp_path / "metrics.json").read_text())["tags"] == ["digits", "smoke"]
    hparams = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    assert hparams["tags"] == ["digits", "smoke"] and hparams["params"]["optimizer.lr"] == 0.003
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    client = MlflowClient((tmp_path / "mlruns").resolve().as_uri())
    run = client.search_runs([client.get_experiment_by_name("zoo").experiment_id])[0]
    assert run.data.params["optimizer.lr"] == "0.003" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [20, 40]


def test_resume_into_a_new_directory_carries_the_kept_checkpoints(tmp_path: Path) -> None:
    common = [*QUICK, "scheduler=none", "callbacks.checkpoint.save_top_k=2"]
    train(make_cfg(tmp_path / "a", *common, "trainer.max_epochs=2"))
    kept_a = {p.name for p in _named(tmp_path / "a")}
    assert len(kept_a) == 2
    resume = ["trainer.max_epochs=3", f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.pt'}"]
    train(make_cfg(tmp_path / "b", *common, *resume), overrides=resume)
    top = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["callbacks"]["checkpoint"]["top"]
    kept_b = {p.name for p in _named(tmp_path / "b")}
    assert kept_b == {t[2] for t in top} and len(kept_b) == 2  # the best two of epochs 1-3, wherever they were written
    assert kept_b - kept_a <= {n for n in kept_b if n.startswith("epoch=3-")}
    best = load_checkpoint(tmp_path / "b" / "checkpoints" / "best.pt")
    assert best["epoch"] + 1 == top[0][1]
