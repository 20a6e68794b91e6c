"""Ensembles of checkpoints in evaluate.py, SGDR (scheduler=cosine_restarts) and snapshot ensembles (issue 22)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers import FAST, make_cfg, run_cli
from zoo.engine.checkpoint import load_checkpoint, save_checkpoint
from zoo.engine.optim import Schedule, build_optimizer, param_groups
from zoo.ensemble import Ensemble, check_members, checkpoint_paths
from zoo.errors import ConfigError
from zoo.pipeline import evaluate, train

QUIET = ["callbacks.progress=null", "trainer.max_epochs=1", "trainer.limit_train_batches=5"]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two linear classifiers of the digits with different preprocessing: 8x8 inputs with the channel
    statistics, and 12x12 inputs scaled to [-1, 1]."""
    root = tmp_path_factory.mktemp("members")
    train(make_cfg(root / "a", *FAST, *QUIET, "model=linear"))
    train(make_cfg(root / "b", *FAST, *QUIET, "model=linear", "model.input_size=12", "data.normalize=symmetric", "seed=1"))
    return root / "a" / "checkpoints" / "best.pt", root / "b" / "checkpoints" / "best.pt"


def _evaluate(out: Path, ckpt_path: str, *overrides: str) -> dict[str, Any]:
    return evaluate(make_cfg(out, f"ckpt_path={ckpt_path}", "progress_bar=false", "logger=none", *overrides,
                             config_name="evaluate"))


def _probabilities_by_hand(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax of a member's scores on the test split, its data built from its own stored config."""
    from zoo.data import build_datamodule
    from zoo.trained import load_classifier

    model, state = load_classifier(path, "member")
    data = build_datamodule(state["config"]["data"], None, device="cpu", seed=0)
    with torch.no_grad():
        pairs = [(model(x).softmax(1), y) for x, y in data.test]
    return torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])


def test_an_ensemble_scores_the_mean_of_its_members_probabilities(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = members
    out = _evaluate(tmp_path / "ens", f"[{a},{b}]")
    (pa, y), (pb, yb) = _probabilities_by_hand(a), _probabilities_by_hand(b)
    assert pa.shape == pb.shape == (360, 10) and torch.equal(y, yb)
    mean = (pa + pb) / 2
    ensemble = out["ensemble"]
    assert ensemble["acc"] == int((mean.argmax(1) == y).sum()) / 360
    assert ensemble["acc5"] == int((mean.topk(5, 1).indices == y[:, None]).any(1).sum()) / 360
    assert ensemble["loss"] == pytest.approx(float(-mean.gather(1, y[:, None]).log().mean()), rel=1e-5)
    for probs, member in zip((pa, pb), out["members"]):  # each member's own metrics, from the same pass
        assert member["test"]["acc"] == int((probs.argmax(1) == y).sum()) / 360
    assert torch.tensor(out["confusion_matrix"]).sum() == 360  # the ensemble's predictions
    written = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert written["ckpt_path"] == [str(a), str(b)] and written["ensemble"] == ensemble
    assert [m["ckpt_path"] for m in written["members"]] == [str(a), str(b)]
    assert {"model", "epoch", "test"} <= set(written["members"][0])


def test_a_single_checkpoint_keeps_its_report_and_matches_its_member_entry(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = members
    alone = _evaluate(tmp_path / "one", str(a))
    assert set(alone) == {"ckpt_path", "model", "dataset", "split", "epoch", "test", "confusion_matrix", "predictions"}
    assert alone["ckpt_path"] == str(a)
    listed = _evaluate(tmp_path / "listed", f"[{a}]")  # a list of one is the same evaluation
    assert listed["test"] == alone["test"] and listed["ckpt_path"] == str(a)
    both = _evaluate(tmp_path / "both", f"[{a},{b}]")
    own = both["members"][0]["test"]
    assert own["acc"] == alone["test"]["acc"] and own["acc5"] == alone["test"]["acc5"]
    assert own["loss"] == pytest.approx(alone["test"]["loss"], rel=1e-5)  # cross-entropy = NLL of the softmax


def test_test_time_augmentation_composes_with_an_ensemble(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = members
    out = _evaluate(tmp_path / "tta", f"[{a},{b}]", "tta=flip")
    alone = _evaluate(tmp_path / "alone", str(b), "tta=flip")
    assert set(out["ensemble_tta"]) == {"loss", "acc", "acc5"} and out["tta"]["name"] == "flip"
    assert out["members"][1]["test_tta"]["acc"] == alone["test_tta"]["acc"]  # each member averages its own views


def _altered(path: Path, tmp_path: Path, name: str, change: Any) -> Path:
    state = load_checkpoint(path)
    change(state)
    return save_checkpoint(state, tmp_path / name)


def _set(state: dict[str, Any], *keys: str, value: Any) -> None:
    for key in keys[:-1]:
        state = state[key]
    state[keys[-1]] = value


@pytest.mark.parametrize(("change", "needle"), [
    (lambda s: (_set(s, "data_info", "num_classes", value=5), _set(s, "config", "data", "num_classes", value=5)),
     "has class count 5 but member 1"),
    (lambda s: _set(s, "config", "data", "name", value="mnist"), "has dataset 'mnist' but member 1"),
    (lambda s: _set(s, "config", "task", "name", value="knn"), "has task 'knn' but member 1"),
    (lambda s: _set(s, "data_info", "class_names", value=list("abcdefghij")), "has class names 10 other ones"),
], ids=["classes", "dataset", "task", "class_names"])
def test_mismatched_members_are_refused_in_one_line(members: tuple[Path, Path], tmp_path: Path, change: Any,
                                                    needle: str) -> None:
    a, _ = members
    other = _altered(a, tmp_path, "other.pt", change)
    with pytest.raises(ConfigError, match=f"ensemble member 2 \\({other}\\) {needle}") as error:
        _evaluate(tmp_path / "run", f"[{a},{other}]")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_command_line_refuses_a_mismatched_member_with_one_error_line(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = members
    other = _altered(a, tmp_path, "other.pt", lambda s: _set(s, "config", "data", "name", value="mnist"))
    proc = run_cli("evaluate.py", f"ckpt_path=[{a},{other}]", f"hydra.run.dir={tmp_path}/run", "logger=none")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "ensemble member 2" in errors[0] and "dataset 'mnist'" in errors[0]


@pytest.mark.parametrize(("task", "cls"), [("detection", "DetectionTask"), ("vae", "VAETask"), ("captioning", "CaptioningTask"),
                                            ("gan", "GANTask"), ("autoencoder", "AutoencoderTask")])
def test_tasks_without_class_probabilities_refuse_an_ensemble(task: str, cls: str) -> None:
    state = {"config": {"task": {"name": task}, "data": {"name": "digit_scenes"}}, "data_info": {}}
    with pytest.raises(ConfigError, match=f"task={task}: several checkpoints .* a {cls} has none to average"):
        check_members([("a.pt", state), ("b.pt", state)])


def test_an_ensemble_is_not_evaluated_on_the_shuffled_training_split(members: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = members
    with pytest.raises(ConfigError, match="split=val or split=test"):
        _evaluate(tmp_path / "run", f"[{a},{b}]", "split=train")


def test_ckpt_path_takes_lists_globs_and_snapshot_directories(tmp_path: Path) -> None:
    for k in (1, 2, 10):
        (tmp_path / f"snapshot-{k}.pt").touch()
    (tmp_path / "best.pt").touch()
    snapshots = [str(tmp_path / f"snapshot-{k}.pt") for k in (1, 2, 10)]  # natural order
    assert checkpoint_paths(str(tmp_path)) == snapshots
    assert checkpoint_paths(f"{tmp_path}/snapshot-*.pt") == snapshots
    assert checkpoint_paths([str(tmp_path / "best.pt"), f"{tmp_path}/snapshot-1*.pt"]) == [str(tmp_path / "best.pt"), *snapshots[::2]]
    assert checkpoint_paths("no/such.pt") == ["no/such.pt"]  # a plain path is left to the loader's error
    for spec, needle in ((f"{tmp_path}/none-*.pt", "matches no file"),
                         ([str(tmp_path / "best.pt"), f"{tmp_path}/best.*"], "names .* twice"),
                         (str(tmp_path.parent), "directory without snapshot-\\*.pt"), ([], "must be a checkpoint path")):
        with pytest.raises(ConfigError, match=needle):
            checkpoint_paths(spec)


def test_train_refuses_several_checkpoints_to_resume_from() -> None:
    from zoo.resume import resume_config

    with pytest.raises(ConfigError, match="resumes from one checkpoint"):
        resume_config({"ckpt_path": ["a.pt", "b.pt"]}, [])


# ---- segmentation: per-pixel probabilities ---------------------------------------------------------------------------


def test_a_segmentation_ensemble_scores_the_mean_per_pixel_probabilities() -> None:
    from zoo.metrics.segmentation import SegmentationMetrics
    from zoo.tasks.segmentation import SegmentationTask

    models = [nn.Conv2d(1, 3, 3, padding=1) for _ in range(2)]
    ensemble = Ensemble([SegmentationTask(m, 3).eval() for m in models], ["a.pt", "b.pt"])
    x = torch.randn(2, 1, 6, 5)
    targets = [{"mask": torch.randint(0, 3, (6, 5))} for _ in range(2)]
    targets[0]["mask"][0] = 255  # ignored pixels
    ensemble.final_evaluation = True
    ensemble.reset_metrics()
    with torch.no_grad():
        ensemble.validation_step(((x, targets), (x, targets)))
        mean = torch.stack([m(x).softmax(1) for m in models]).mean(0)
    y = torch.stack([t["mask"] for t in targets])
    expected = SegmentationMetrics(3)
    expected.update(mean.argmax(1), y)
    metrics = ensemble.compute_metrics()
    assert metrics["miou"] == pytest.approx(expected.compute()["miou"])
    valid = y != 255
    nll = -mean.clamp_min(1e-12).log().gather(1, y.clamp_max(2)[:, None])[:, 0][valid].mean()
    assert metrics["loss"] == pytest.approx(float(nll), rel=1e-5) and "iou/0" in metrics  # per-class IoUs at the final pass
    own = ensemble.member_metrics()
    assert len(own) == 2 and set(own[0]) == set(metrics)


def test_members_that_see_other_targets_are_refused() -> None:
    from zoo.tasks.classification import ClassificationTask

    ensemble = Ensemble([ClassificationTask(nn.Linear(4, 3), 3) for _ in range(2)], ["a.pt", "b.pt"])
    x = torch.randn(5, 4)
    ensemble.reset_metrics()
    with pytest.raises(ConfigError, match=r"ensemble member 2 \(b.pt\) gives other targets"):
        ensemble.validation_step(((x, torch.tensor([0, 1, 2, 0, 1])), (x, torch.tensor([0, 1, 2, 0, 2]))))


# ---- SGDR and snapshots ----------------------------------------------------------------------------------------------


def _rates(cfg: dict[str, Any], steps_per_epoch: int, epochs: int) -> list[float]:
    opt = build_optimizer({"name": "sgd", "lr": 1.0}, param_groups(nn.Linear(2, 2), 0.0))
    schedule = Schedule(opt, cfg, steps_per_epoch, epochs)
    rates = []
    for _ in range(steps_per_epoch * epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step_batch()
    return rates


@pytest.mark.parametrize(("t_mult", "starts"), [(1, [0, 2, 4, 6, 8]), (2, [0, 2, 6])])
def test_cosine_restarts_follows_sgdr_at_the_cycle_boundaries(t_mult: int, starts: list[int]) -> None:
    spe, m = 4, 0.1
    cfg = {"name": "cosine_restarts", "t_0": 2, "t_mult": t_mult, "min_lr_factor": m}
    rates = _rates(cfg, spe, 10)
    for i, start in enumerate(starts):  # eq. 5 of Loshchilov & Hutter: 1 at a restart, near the minimum just before
        length = 2 * t_mult**i
        assert rates[start * spe] == pytest.approx(1.0)
        end = (start + length) * spe - 1
        if end < len(rates):
            assert rates[end] == pytest.approx(m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (length - 1 / spe) / length)))
        mid = (start * spe + end + 1) // 2
        if mid < len(rates):
            assert rates[mid] == pytest.approx(m + (1 - m) * 0.5, abs=1e-12)  # half-way down the cycle
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    torch_sgdr = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=t_mult, eta_min=m)
    for step, rate in enumerate(rates):  # the same rate as torch's, stepped with fractional epochs
        torch_sgdr.step(step / spe)
        assert rate == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), step
    opt = build_optimizer({"name": "sgd", "lr": 1.0}, param_groups(nn.Linear(2, 2), 0.0))
    assert Schedule(opt, cfg, spe, 10).cycle_ends == tuple(s for s in starts[1:] if s <= 10) + ((10,) if t_mult == 1 else ())
    assert Schedule(opt, {"name": "cosine"}, spe, 10).cycle_ends is None


def test_cosine_restarts_refuses_bad_values() -> None:
    opt = build_optimizer({"name": "sgd", "lr": 1.0}, param_groups(nn.Linear(2, 2), 0.0))
    for bad in ({"t_0": 0}, {"t_mult": 0}, {"min_lr_factor": 1.5}):
        with pytest.raises(ConfigError, match="scheduler\\."):
            Schedule(opt, {"name": "cosine_restarts", **bad}, 4, 10)


SNAPSHOT_RUN = [*FAST, "model=linear", "callbacks.progress=null", "trainer.limit_train_batches=5",
                "scheduler=cosine_restarts", "scheduler.t_0=1", "scheduler.t_mult=2", "callbacks.checkpoint.snapshots=true"]


@pytest.fixture(scope="module")
def snapshot_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """Cycles of 1 and 2 epochs (ends after epochs 1 and 3): two epochs, then a resume to three in a new directory."""
    root = tmp_path_factory.mktemp("snapshots")
    train(make_cfg(root / "first", *SNAPSHOT_RUN, "trainer.max_epochs=2", "test=false"))
    resumed = train(make_cfg(root / "resumed", *SNAPSHOT_RUN, "trainer.max_epochs=3",
                             f"ckpt_path={root / 'first' / 'checkpoints' / 'last.pt'}"), overrides=["trainer.max_epochs=3"])
    return root / "first", root / "resumed", resumed


def test_snapshots_are_kept_at_each_cycle_end_and_survive_a_resume(snapshot_runs: tuple[Path, Path, dict[str, Any]]) -> None:
    first, resumed, result = snapshot_runs
    assert sorted(p.name for p in (first / "checkpoints").glob("snapshot-*")) == ["snapshot-1.pt"]  # the source is left alone
    kept = resumed / "checkpoints"
    assert result["snapshots"] == [str(kept / "snapshot-1.pt"), str(kept / "snapshot-2.pt")]
    assert json.loads((resumed / "metrics.json").read_text())["snapshots"] == result["snapshots"]
    assert [load_checkpoint(kept / f"snapshot-{k}.pt")["epoch"] + 1 for k in (1, 2)] == [1, 3]  # the cycles' last epochs
    assert load_checkpoint(kept / "last.pt")["callbacks"]["checkpoint"]["snapshots"] == ["snapshot-1.pt", "snapshot-2.pt"]
    assert not list(kept.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_snapshots_evaluate_as_an_ensemble(snapshot_runs: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, resumed, _ = snapshot_runs
    out = _evaluate(tmp_path / "ens", str(resumed / "checkpoints"))
    assert [m["epoch"] for m in out["members"]] == [1, 3] and set(out["ensemble"]) == {"loss", "acc", "acc5"}
    assert _evaluate(tmp_path / "glob", f"{resumed}/checkpoints/snapshot-*.pt")["ensemble"] == out["ensemble"]


def test_snapshots_need_a_schedule_with_cycles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheduler=cosine has none; use scheduler=cosine_restarts"):
        train(make_cfg(tmp_path / "run", *FAST, *QUIET, "model=linear", "callbacks.checkpoint.snapshots=true", "scheduler=cosine"))
    with pytest.raises(ConfigError, match="no cycle of scheduler=cosine_restarts ends within trainer.max_epochs=1"):
        train(make_cfg(tmp_path / "run2", *FAST, *QUIET, "model=linear", "callbacks.checkpoint.snapshots=true",
                       "scheduler=cosine_restarts", "scheduler.t_0=2"))
