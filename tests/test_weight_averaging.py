"""Weight averaging (issue 22): ``callbacks=[default,ema]`` (Polyak & Juditsky 1992) and ``callbacks=[default,swa]``
(Izmailov et al. 2018). The average is what is validated, checkpointed as ``model`` (best.pt, evaluate.py) and
tested; training goes on with the raw weights (``training_model``), and a resume is exact."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import FAST, make_cfg
from zoo.engine.callbacks import Callback
from zoo.engine.checkpoint import load_checkpoint
from zoo.errors import ConfigError, TrainingInterrupted
from zoo.pipeline import evaluate, train

QUICK = [*FAST, "augmentation=none", "trainer.deterministic=true"]
#: an MLP with batch norm on 8x8 digits: 20 steps an epoch at batch size 64
MLP_BN = ["model=mlp", "model.batch_norm=true", "model.hidden=[32]"]
PROBE = "+callbacks.probe._target_=tests.test_weight_averaging.Probe"
STOP = "+callbacks.stop._target_=tests.test_weight_averaging.StopAt"
SWA = [*QUICK, *MLP_BN, "trainer.max_epochs=3", "callbacks=[default,swa]", "callbacks.swa.swa_start=2",
       "callbacks.swa.swa_lr=0.01", "callbacks.swa.anneal_epochs=1"]


def _raw(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Probe(Callback):
    """Records the raw weights (at the start, after every step, at every epoch end) and the last epoch's inputs."""

    order = 85  # after the averaging callbacks (80)
    last: Probe | None = None

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.steps: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.epochs: list[dict[str, torch.Tensor]] = []
        self.inputs: list[torch.Tensor] = []
        Probe.last = self

    def on_fit_start(self, trainer: Any, task: Any) -> None:
        self.start = _raw(trainer.model)

    def on_train_epoch_start(self, trainer: Any, task: Any) -> None:
        self.inputs = []

    def on_train_batch_start(self, trainer: Any, task: Any, batch: Any, batch_idx: int) -> None:
        self.inputs.append(batch[0].clone())

    def on_train_batch_end(self, trainer: Any, task: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.state.stepped:
            self.steps.append((trainer.state.global_step, _raw(trainer.model)))

    def on_train_epoch_end(self, trainer: Any, task: Any, metrics: dict[str, float]) -> None:
        self.epochs.append(_raw(trainer.model))


class StopAt(Callback):
    """Asks the trainer to stop after optimizer step ``step``, as a SIGTERM would: last.pt is saved mid-epoch."""

    order = 85

    def __init__(self, step: int = 0) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Any, task: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.state.stepped and trainer.state.global_step == self.step:
            trainer.state.interrupt = signal.SIGTERM


def _assert_equal(a: Any, b: Any, where: str = "") -> None:
    """Bit for bit, through nested dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _assert_same_run(a: Path, b: Path, key: str) -> None:
    """Two runs ended on the same averaged and raw weights, optimizer and schedule states and metrics."""
    ca, cb = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    for entry in ("model", "training_model", "optimizers", "schedulers", "global_step", "epoch"):
        _assert_equal(ca[entry], cb[entry], entry)
    _assert_equal(*({k: v for k, v in c["metrics"].items() if not k.startswith("time/")} for c in (ca, cb)), "metrics")
    _assert_equal(ca["callbacks"][key], cb["callbacks"][key], f"callbacks.{key}")


def _probe() -> Probe:
    """The last Probe a config built (Hydra imports this file as ``tests.test_weight_averaging``, pytest by another name)."""
    import importlib

    probe = importlib.import_module("tests.test_weight_averaging").Probe.last
    assert probe is not None
    return probe


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


# ---- EMA ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("buffers", ["average", "copy"])
def test_ema_is_the_hand_computed_average(tmp_path: Path, buffers: str) -> None:
    """Updates at every second step; decay 0.2 with the warm-up: update 1 uses 2/11 < 0.2, the later ones 0.2."""
    train(make_cfg(tmp_path, *QUICK, *MLP_BN, "trainer.max_epochs=1", "trainer.limit_train_batches=7", "test=false",
                   "callbacks=[default,ema]", "callbacks.ema.decay=0.2", "callbacks.ema.every_n_steps=2",
                   f"callbacks.ema.buffers={buffers}", PROBE))
    probe = _probe()
    assert [s for s, _ in probe.steps] == list(range(1, 8))
    expected = {k: v.double() for k, v in probe.start.items()}
    k = 1
    for step, weights in probe.steps:
        if step % 2:
            continue
        decay = min(0.2, (1 + k) / (10 + k))
        for name, value in weights.items():
            average = value.is_floating_point() and (buffers == "average" or "running" not in name)
            expected[name] = decay * expected[name] + (1 - decay) * value.double() if average else value.double()
        k += 1
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["callbacks"]["ema"]["n_averaged"] == 1 + 3  # the starting weights, then steps 2, 4, 6
    for name, value in state["model"].items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-6, atol=1e-7, msg=name)
    _assert_equal(state["model"], state["callbacks"]["ema"]["model"])
    _assert_equal(state["training_model"], probe.steps[-1][1])  # the raw weights go on training


@pytest.fixture(scope="module")
def plain_and_ema(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path, dict[str, Any]]:
    """The same two-epoch run without and with EMA."""
    root = tmp_path_factory.mktemp("ema")
    run = [*QUICK, *MLP_BN, "optimizer.lr=0.02"]
    plain = train(make_cfg(root / "plain", *run))
    ema = train(make_cfg(root / "ema", *run, "callbacks=[default,ema]", "callbacks.ema.decay=0.9"))
    return root / "plain", plain, root / "ema", ema


Runs = tuple[Path, dict, Path, dict]


def test_ema_leaves_training_alone_and_is_what_is_validated(plain_and_ema: Runs, tmp_path: Path) -> None:
    plain_dir, plain, ema_dir, ema = plain_and_ema
    last = load_checkpoint(ema_dir / "checkpoints" / "last.pt")
    _assert_equal(last["training_model"], load_checkpoint(plain_dir / "checkpoints" / "last.pt")["model"])  # bit for bit
    assert _differs(last["model"], last["training_model"])
    assert ema["history"][-1]["val/loss"] != plain["history"][-1]["val/loss"]
    # the logged validation metrics are those of the checkpoint's model: the average
    scored = evaluate(make_cfg(tmp_path, f"ckpt_path={ema_dir / 'checkpoints' / 'last.pt'}", "split=val", "logger=none",
                               "progress_bar=false", config_name="evaluate"))
    for name in ("loss", "acc"):
        assert scored["val"][name] == pytest.approx(ema["history"][-1][f"val/{name}"], rel=1e-6, abs=1e-9)
    assert ema["ema/n_averaged"] == 1 + ema["global_step"]


def test_best_pt_holds_the_ema_weights_and_is_what_is_tested(plain_and_ema: Runs, tmp_path: Path) -> None:
    _, _, ema_dir, ema = plain_and_ema
    best = load_checkpoint(ema_dir / "checkpoints" / "best.pt")
    _assert_equal(best["model"], best["callbacks"]["ema"]["model"])
    assert _differs(best["model"], best["training_model"])
    assert best["metrics"]["val/acc"] == ema["best/val/acc"]
    scored = evaluate(make_cfg(tmp_path, f"ckpt_path={ema_dir / 'checkpoints' / 'best.pt'}", "logger=none",
                               "progress_bar=false", config_name="evaluate"))
    assert scored["test"] == pytest.approx(ema["test"], rel=1e-6)
    # the averaged weights are stored once: the callback's state shares the checkpoint's model tensors
    plain_size = (plain_and_ema[0] / "checkpoints" / "last.pt").stat().st_size
    weights = sum(v.numel() * v.element_size() for v in best["model"].values())
    assert (ema_dir / "checkpoints" / "last.pt").stat().st_size < plain_size + 1.5 * weights


EMA_RUN = [*QUICK, *MLP_BN, "test=false", "callbacks=[default,ema]", "callbacks.ema.decay=0.95",
           "callbacks.ema.every_n_steps=3", "callbacks.checkpoint.every_n_epochs=1"]


@pytest.fixture(scope="module")
def ema_whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ema_whole")
    train(make_cfg(run, *EMA_RUN))
    return run


def _resume(ckpt: Path, run_dir: Path) -> None:
    overrides = [f"ckpt_path={ckpt}", "logger=none"]
    train(make_cfg(run_dir, *overrides), overrides=overrides)


def test_ema_resumes_exactly_inside_an_epoch(ema_whole: Path, tmp_path: Path) -> None:
    """Stopped inside the second epoch (step 26 of 40, between the updates of steps 24 and 27): the same weights."""
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(tmp_path / "stopped", *EMA_RUN, STOP, "+callbacks.stop.step=26"))
    last = tmp_path / "stopped" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["partial_epoch"]["batches"] == 6
    _resume(last, tmp_path / "resumed")
    _assert_same_run(ema_whole, tmp_path / "resumed", "ema")


def test_ema_resumes_exactly_from_an_epoch_end(ema_whole: Path, tmp_path: Path) -> None:
    _resume(ema_whole / "checkpoints" / "epoch_1.pt", tmp_path)
    _assert_same_run(ema_whole, tmp_path, "ema")


# ---- SWA ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swa_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Probe]:
    run = tmp_path_factory.mktemp("swa")
    result = train(make_cfg(run, *SWA, "test=false", PROBE))
    return run, result, _probe()


def test_swa_is_the_mean_of_the_epoch_ends_with_batch_norm_recomputed(swa_run: tuple[Path, dict, Probe]) -> None:
    run, result, probe = swa_run
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    averaged = state["model"]
    assert state["callbacks"]["swa"]["n_averaged"] == 2 and result["swa/start_epoch"] == 2
    for name, value in averaged.items():
        if "running" not in name and "num_batches" not in name:  # the parameters: epochs 2 and 3 end
            torch.testing.assert_close(value, (probe.epochs[1][name] + probe.epochs[2][name]) / 2, msg=name)
    # batch norm of the averaged weights, on the last epoch's training batches (one equal-weight mean per batch)
    hidden = [x.flatten(1).double() @ averaged["features.0.0.weight"].double().T for x in probe.inputs]
    mean = torch.stack([h.mean(0) for h in hidden]).mean(0)
    var = torch.stack([h.var(0) for h in hidden]).mean(0)
    torch.testing.assert_close(averaged["features.0.1.running_mean"].double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(averaged["features.0.1.running_var"].double(), var, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(averaged["features.0.1.running_mean"], state["training_model"]["features.0.1.running_mean"])
    _assert_equal(state["training_model"], probe.epochs[2])


def test_swa_takes_over_the_learning_rate(swa_run: tuple[Path, dict, Probe]) -> None:
    """Epoch 2 (the first averaged) keeps the rate the schedule reached, SWALR anneals to swa_lr over one epoch;
    the trainer's schedule stopped stepping when the phase began."""
    run, result, _ = swa_run
    lrs = [h["lr"] for h in result["history"]]
    assert lrs[1] == lrs[0] != 0.01 and lrs[2] == pytest.approx(0.01)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["schedulers"]["model"]["step_count"] == 20
    assert [g["lr"] for g in state["optimizers"]["model"]["param_groups"]] == pytest.approx([0.01] * 2)


def test_swa_validates_and_keeps_the_average_as_best(swa_run: tuple[Path, dict, Probe], tmp_path: Path) -> None:
    run, result, _ = swa_run
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert result["best_epoch"] == best["epoch"] + 1 == 3  # an epoch of the phase
    _assert_equal(best["model"], best["callbacks"]["swa"]["model"])
    assert _differs(best["model"], best["training_model"])
    scored = evaluate(make_cfg(tmp_path, f"ckpt_path={run / 'checkpoints' / 'last.pt'}", "split=val", "logger=none",
                               "progress_bar=false", config_name="evaluate"))
    assert scored["val"]["loss"] == pytest.approx(result["history"][-1]["val/loss"], rel=1e-6)


@pytest.mark.parametrize("step", [40, 47], ids=["end_of_first_swa_epoch", "inside_the_phase"])
def test_swa_resumes_exactly(swa_run: tuple[Path, dict, Probe], tmp_path: Path, step: int) -> None:
    """Stopped after the last step of the first averaged epoch (before it is averaged in) or inside the next one."""
    with pytest.raises(TrainingInterrupted):
        train(make_cfg(tmp_path / "stopped", *SWA, "test=false", STOP, f"+callbacks.stop.step={step}"))
    _resume(tmp_path / "stopped" / "checkpoints" / "last.pt", tmp_path / "resumed")
    _assert_same_run(swa_run[0], tmp_path / "resumed", "swa")


# ---- configs and refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["ema", "swa"])
def test_callbacks_compose_with_the_defaults(tmp_path: Path, choice: str) -> None:
    from omegaconf import OmegaConf

    from zoo.pipeline import _check_train

    cfg = make_cfg(tmp_path, f"callbacks=[default,{choice}]")
    assert list(cfg.callbacks) == ["checkpoint", "early_stopping", "lr_monitor", "nonfinite", "signals", "progress", choice]
    _check_train(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


BAD = [
    ("ema", "decay=1.5", "callbacks.ema.decay must be in (0, 1)"),
    ("ema", "decay=0", "callbacks.ema.decay must be in (0, 1)"),
    ("ema", "every_n_steps=0", "callbacks.ema.every_n_steps must be >= 1"),
    ("ema", "buffers=mean", "callbacks.ema.buffers must be one of average, copy"),
    ("swa", "swa_start=3", "callbacks.swa.swa_start=3 is beyond trainer.max_epochs=2"),
    ("swa", "swa_start=1.5", "callbacks.swa.swa_start must be the epoch"),
    ("swa", "swa_start=0", "callbacks.swa.swa_start must be the epoch"),
    ("swa", "swa_lr=-0.1", "callbacks.swa.swa_lr must be > 0"),
    ("swa", "anneal_epochs=-1", "callbacks.swa.anneal_epochs must be >= 0"),
    ("swa", "anneal_strategy=step", "callbacks.swa.anneal_strategy must be one of cos, linear"),
]


@pytest.mark.parametrize(("key", "setting", "message"), BAD, ids=[f"{k}.{s}" for k, s, _ in BAD])
def test_bad_settings_are_one_line_before_the_run_starts(tmp_path: Path, key: str, setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path / "run", *FAST, f"callbacks=[default,{key}]", f"callbacks.{key}.{setting}"))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory was claimed


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=gan_mlp_digits", "callbacks=[default,ema]"],
     "trains 2 optimizers (discriminator, generator); drop it (callbacks.ema=null)"),
    (["callbacks=[default,ema,swa]"], "callbacks.ema and callbacks.swa both average the weights"),
], ids=["gan", "both"])
def test_refused_combinations(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path, *FAST, "trainer.limit_train_batches=1", *overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


# ---- DDP ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_swa_under_ddp_averages_batch_norm_over_the_processes(tmp_path: Path) -> None:
    """Two processes (gloo) with SWA on the MLP with batch norm: each recomputes the statistics on its shard, and
    the means over the processes are those of the global batches, as one process with the global batch gets."""
    import itertools
    import os
    import subprocess
    import sys

    from omegaconf import OmegaConf
    from torch.optim.swa_utils import update_bn

    from tests.helpers import REPO
    from zoo.pipeline import build_run

    run = [*SWA, "test=false", "trainer.device=cpu", "trainer.limit_train_batches=19"]  # full global batches only
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(REPO / "train.py"), *run, "data.batch_size=32", f"hydra.run.dir={tmp_path / 'ddp'}"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert state["callbacks"]["swa"]["n_averaged"] == 2
    cfg = OmegaConf.to_container(make_cfg(tmp_path / "one", *run, "data.batch_size=64"), resolve=True)
    one = build_run(cfg, torch.device("cpu"), checkpoint=state)  # type: ignore[arg-type]  # the averaged weights
    one.data.train.set_epoch(2)  # the last epoch's global batches
    update_bn(itertools.islice(one.data.train, 19), one.model)
    torch.testing.assert_close(state["model"]["features.0.1.running_mean"], one.model.features[0][1].running_mean,
                               rtol=1e-5, atol=1e-6)


def test_swa_recomputes_batch_norm_through_the_tasks_training_forward(tmp_path: Path) -> None:
    """A detector in training mode needs its targets: the batch-norm pass feeds batches as training does
    (``update_bn``'s ``model(batch[0])`` would fail here), and the averaged backbone gets fresh statistics."""
    result = train(make_cfg(tmp_path, "experiment=fasterrcnn_digit_scenes", "logger=none", "test=false",
                            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                            "data.train_scenes=32", "data.val_scenes=8", "data.test_scenes=8", "data.eval_batch_size=8",
                            "callbacks=[default,swa]", "callbacks.swa.swa_start=1", "callbacks.progress.mode=none"))
    assert result["swa/start_epoch"] == 1
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    means = [k for k in state["model"] if k.endswith("running_mean")]
    assert means and state["callbacks"]["swa"]["n_averaged"] == 1
    # one averaged epoch end: the weights are the trained ones, the statistics those of the two batches' pass
    assert all(torch.equal(state["model"][k], state["training_model"][k]) for k in state["model"] if "running" not in k
               and "num_batches" not in k)
    assert any(not torch.allclose(state["model"][k], state["training_model"][k]) for k in means)
