"""Loggers: the composed ``logger`` group, the collection, and each backend read back with its own reader."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from tests.helpers import make_cfg  # noqa: E402
from zoo.engine.loggers import LOGGERS, Logger, LoggerCollection, build_loggers, flatten_config  # noqa: E402
from zoo.engine.loggers.csv import CSVLogger  # noqa: E402
from zoo.engine.loggers.tensorboard import TensorBoardLogger  # noqa: E402
from zoo.errors import ConfigError  # noqa: E402


class MyLogger(Logger):
    """A user's logger, built from ``+logger.mine._target_=tests.test_loggers.MyLogger``; records its calls."""

    instances: list[MyLogger] = []

    def __init__(self, run_dir: Path, prefix: str = "", fail_close: bool = False) -> None:
        self.run_dir, self.prefix, self.fail_close = run_dir, prefix, fail_close
        MyLogger.instances.append(self)
        self.calls: list[tuple[Any, ...]] = []
        self.figure_open: list[bool] = []

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.calls.append(("scalars", {self.prefix + k: v for k, v in scalars.items()}, step))

    def log_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:
        self.figure_open.append(plt.fignum_exists(figure.number))
        super().log_figure(tag, figure, step, close)

    def close(self, status: str = "success") -> None:
        self.calls.append(("close", status))
        if self.fail_close:
            raise RuntimeError("close failed")


def loggers_of(tmp_path: Path, *overrides: str) -> LoggerCollection:
    return build_loggers(make_cfg(tmp_path, *overrides).get("logger"), tmp_path)


# --- the config group ---------------------------------------------------------------------------

def test_registry_names() -> None:
    assert LOGGERS.list() == ["csv", "mlflow", "tensorboard"]


def test_compose_default_list_and_none(tmp_path: Path) -> None:
    default = loggers_of(tmp_path / "a")
    assert [type(x) for x in default] == [TensorBoardLogger]
    both = loggers_of(tmp_path / "b", "logger=[tensorboard,csv]")
    assert [type(x) for x in both] == [TensorBoardLogger, CSVLogger] and len(both) == 2 and both
    assert both.loggers[1].path == tmp_path / "b" / "metrics.csv"
    none = loggers_of(tmp_path / "c", "logger=none")
    assert len(none) == 0 and not none
    off = loggers_of(tmp_path / "d", "logger=[tensorboard,csv]", "logger.tensorboard=null")
    assert [type(x) for x in off] == [CSVLogger]
    evaluate = make_cfg(tmp_path / "e", config_name="evaluate")
    assert [type(x) for x in build_loggers(evaluate.logger, tmp_path / "e")] == [TensorBoardLogger]
    for logger in (*default, *both, *off):
        logger.close()


def test_unknown_logger_names_the_known_ones(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "logger=none", "+logger.tensorbord.flush_secs=5").logger
    with pytest.raises(ConfigError, match=r"unknown logger 'tensorbord'; known: csv, mlflow, tensorboard \(or _target_"):
        build_loggers(cfg, tmp_path)


def test_unknown_option_names_the_key(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "+logger.tensorboard.flush_sec=5").logger
    with pytest.raises(ConfigError, match=r"logger\.tensorboard\.flush_sec; known: flush_secs, log_graph$"):
        build_loggers(cfg, tmp_path)
    with pytest.raises(ConfigError, match="run_dir is set by zoo"):
        build_loggers({"csv": {"run_dir": "/elsewhere"}}, tmp_path)
    with pytest.raises(ConfigError, match="logger.csv must be a mapping"):
        build_loggers({"csv": True}, tmp_path)
    with pytest.raises(ConfigError, match="must be a mapping of logger names"):
        build_loggers({"name": "tensorboard"}.get("name"), tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.glob("tensorboard"))  # nothing built before the error


def test_user_logger_from_target(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "logger=none", "+logger.mine._target_=tests.test_loggers.MyLogger", "+logger.mine.prefix=p/")
    (mine,) = build_loggers(cfg.logger, tmp_path)
    # pytest imports this file as a top-level module, Hydra as tests.test_loggers: two copies of the class
    assert (type(mine).__module__, type(mine).__name__) == ("tests.test_loggers", "MyLogger") and isinstance(mine, Logger)
    assert mine.prefix == "p/" and Path(mine.run_dir) == tmp_path
    loggers = LoggerCollection([mine])
    loggers.log_scalars({"loss": 1.5}, 3)
    loggers.close("interrupted")
    assert mine.calls == [("scalars", {"p/loss": 1.5}, 3), ("close", "interrupted")]


def test_loggers_built_before_an_error_are_closed(tmp_path: Path) -> None:
    import importlib

    cfg = {"mine": {"_target_": "tests.test_loggers.MyLogger"}, "tensorbord": {}}
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'"):
        build_loggers(cfg, tmp_path)
    mine = importlib.import_module("tests.test_loggers").MyLogger.instances[-1]  # Hydra's copy of this module
    assert Path(mine.run_dir) == tmp_path and mine.calls == [("close", "failed")]


def test_user_target_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"logger\.mine: .*collections\.Counter.* not a zoo\.engine\.loggers\.Logger"):
        build_loggers({"mine": {"_target_": "collections.Counter"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"logger\.mine: .*tests\.test_loggers\.Nope"):
        build_loggers({"mine": {"_target_": "tests.test_loggers.Nope"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"logger\.mine: .*colour"):
        build_loggers({"mine": {"_target_": "tests.test_loggers.MyLogger", "colour": "red"}}, tmp_path)


# --- the collection and helpers -----------------------------------------------------------------

def test_collection_closes_a_shared_figure_once_after_all(tmp_path: Path) -> None:
    a, b = MyLogger(tmp_path), MyLogger(tmp_path)
    loggers = LoggerCollection([a, b])
    figure = plt.figure()
    loggers.log_figure("f", figure, 0)
    assert a.figure_open == [True] and b.figure_open == [True]  # neither closed it for the other
    assert not plt.fignum_exists(figure.number)
    unseen = plt.figure()
    LoggerCollection([]).log_figure("f", unseen, 0)
    assert not plt.fignum_exists(unseen.number)


def test_collection_closes_all_and_raises_the_first_error(tmp_path: Path) -> None:
    a, b = MyLogger(tmp_path, fail_close=True), MyLogger(tmp_path)
    with pytest.raises(RuntimeError, match="close failed"):
        LoggerCollection([a, b]).close("failed")
    assert a.calls == b.calls == [("close", "failed")]
    with pytest.raises(ValueError, match="success, failed, interrupted"):
        LoggerCollection([]).close("done")


def test_flatten_config() -> None:
    cfg = {"model": {"name": "lenet5", "depth": 3}, "optimizer": {"lr": 0.01, "nesterov": True},
           "tags": ["a", "b"], "ckpt_path": None, "logger": {}}
    assert flatten_config(cfg) == {"model.name": "lenet5", "model.depth": 3, "optimizer.lr": 0.01,
                                   "optimizer.nesterov": True, "tags": "['a', 'b']", "ckpt_path": "None", "logger": "{}"}
    assert flatten_config({"lr": 0.1}, prefix="opt.") == {"opt.lr": 0.1}


# --- CSV ----------------------------------------------------------------------------------------

def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_csv_rows_merge_per_step_and_columns_rewrite_the_header(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_every=1000)
    logger.log_scalars({"train/loss": 2.0, "lr": 0.1}, 10)
    logger.log_scalars({"val/acc": 0.5}, 10)  # same step, new keys: same row
    logger.log_scalars({"train/loss": 1.5}, 10)  # a repeated key: a new row
    logger.log_scalars({"train/loss": 1.0}, 20)
    logger.flush()
    header, rows = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "lr", "val/acc"]
    assert [(r["step"], r["train/loss"], r["val/acc"]) for r in rows] == [("10", "2.0", "0.5"), ("10", "1.5", ""), ("20", "1.0", "")]
    logger.log_scalars({"val/acc": 0.75}, 20)  # fills the row already written
    logger.log_scalars({"train/loss": 0.5}, 30)
    logger.flush()
    assert [(r["step"], r["val/acc"]) for r in read_csv(tmp_path / "metrics.csv")[1]] == [
        ("10", "0.5"), ("10", ""), ("20", "0.75"), ("30", "")]
    logger.log_scalars({"test/acc": 0.9}, 30)  # a column added later: the whole file again, full header
    logger.close()
    header, rows = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "lr", "val/acc", "test/acc"]
    assert [(r["step"], r["val/acc"], r["test/acc"]) for r in rows] == [("10", "0.5", ""), ("10", "", ""), ("20", "0.75", ""), ("30", "", "0.9")]
    assert float(rows[0]["lr"]) == 0.1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_csv_writes_every_n_rows_appends_and_keeps_earlier_rows(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_every=2)
    logger.log_scalars({"loss": 1.0}, 1)
    assert not (tmp_path / "metrics.csv").exists()
    logger.log_scalars({"loss": 0.5}, 2)
    assert len(read_csv(tmp_path / "metrics.csv")[1]) == 2
    logger.log_scalars({"loss": 0.25}, 3)
    logger.log_scalars({"loss": 0.125}, 4)  # appended
    assert [r["loss"] for r in read_csv(tmp_path / "metrics.csv")[1]] == ["1.0", "0.5", "0.25", "0.125"]
    logger.close()
    resumed = CSVLogger(tmp_path)  # the same run directory again (a resumed run)
    resumed.log_scalars({"loss": 0.1, "acc": 0.9}, 5)
    resumed.close()
    header, rows = read_csv(tmp_path / "metrics.csv")
    assert header == ["step", "loss", "acc"] and [r["step"] for r in rows] == ["1", "2", "3", "4", "5"]


def test_csv_hparams_yaml(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"optimizer.lr": 0.01, "model.name": "lenet5", "tags": "[]"}, {"val/acc": 0.0})
    logger.log_tags(["baseline", "digits"])
    logger.log_images("x", torch.rand(1, 1, 4, 4), 0)  # ignored
    logger.log_histogram("weights/w", torch.randn(10), 0)  # ignored
    logger.close()
    assert yaml.safe_load((tmp_path / "hparams.yaml").read_text()) == {
        "params": {"optimizer.lr": 0.01, "model.name": "lenet5", "tags": "[]"}, "tags": ["baseline", "digits"]}
    assert {p.name for p in tmp_path.iterdir()} == {"hparams.yaml"}  # no rows, no metrics.csv


# --- TensorBoard --------------------------------------------------------------------------------

def test_tensorboard_scalars_hparams_text_and_grid(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    logger = TensorBoardLogger(tmp_path, flush_secs=1)
    logger.log_config({"model": {"name": "lenet5"}, "tags": ["a"]})
    logger.log_hyperparams({"optimizer.lr": 0.01, "model.name": "lenet5", "trainer.compile": False}, {"val/acc": 0.0})
    logger.log_tags(["baseline", "digits"])
    for step in (1, 2, 3):
        logger.log_scalars({"val/acc": 0.25 * step}, step)
    logger.log_image_grid("val/grid", torch.rand(5, 1, 8, 8), 3)  # 8 px -> 32 px, 5 in a row, 2 px gaps
    logger.log_histogram("weights/w", torch.arange(100.0).view(10, 10), 3)
    logger.close()
    assert [p.name for p in tmp_path.iterdir()] == ["tensorboard"]
    assert all(p.is_file() for p in (tmp_path / "tensorboard").iterdir())  # no hparams sub-run
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("val/acc")] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    (hist,) = acc.Histograms("weights/w")
    assert hist.step == 3 and (hist.histogram_value.num, hist.histogram_value.min, hist.histogram_value.max) == (100, 0, 99)
    content = acc.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optimizer.lr"].number_value == 0.01 and start.hparams["model.name"].string_value == "lenet5"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/acc"]
    config = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert config.splitlines() == ["    model:", "      name: lenet5", "    tags:", "    - a"]
    assert acc.Tensors("tags/text_summary")[0].tensor_proto.string_val[0].decode() == "baseline, digits"
    grid = acc.Images("val/grid")[0]
    assert (grid.step, grid.width, grid.height) == (3, 5 * 34 + 2, 34 + 2)


# --- MLflow -------------------------------------------------------------------------------------

def test_mlflow_run_read_back(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    (logger,) = build_loggers(make_cfg(tmp_path, "logger=mlflow").logger, tmp_path)
    assert logger.tracking_uri == (tmp_path / "mlruns").resolve().as_uri()
    logger.log_config({"model": {"name": "lenet5"}, "optimizer": {"lr": 0.01}})
    logger.log_hyperparams({"optimizer.lr": 0.01, "model.name": "lenet5", "long": "x" * 7000})
    logger.log_tags(["baseline", "digits"])
    for step in (1, 2):
        logger.log_scalars({"val/acc": 0.5 * step, "lr": 0.1}, step)
    figure = plt.figure()
    logger.log_figure("val/confusion", figure, 2)
    assert not plt.fignum_exists(figure.number)
    logger.log_images("val/samples", torch.rand(4, 1, 8, 8), 2)
    logger.log_text("val/captions", "| a | b |", 2)
    logger.close("success")

    client = MlflowClient(logger.tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.params["optimizer.lr"] == "0.01" and run.data.params["model.name"] == "lenet5"
    assert run.data.params["long"] == "x" * 6000
    assert run.data.tags["tags"] == "baseline,digits" and run.data.tags["tag.digits"] == "true"
    assert [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "val/acc")] == [(1, 0.5), (2, 1.0)]
    top = {a.path for a in client.list_artifacts(logger.run_id)}
    assert {"config.yaml", "figures", "text", "images"} <= top
    assert [a.path for a in client.list_artifacts(logger.run_id, "figures")] == ["figures/val_confusion_2.png"]
    assert [a.path for a in client.list_artifacts(logger.run_id, "text")] == ["text/val_captions_2.txt"]
    config = yaml.safe_load(Path(client.download_artifacts(logger.run_id, "config.yaml", str(tmp_path))).read_text())
    assert config == {"model": {"name": "lenet5"}, "optimizer": {"lr": 0.01}}


def test_mlflow_failed_status_and_own_experiment(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "store").as_uri()
    runs = [build_loggers({"mlflow": {"tracking_uri": uri, "experiment_name": "exp", "run_name": f"r{i}", "log_images": False}},
                          tmp_path / f"run{i}") for i in range(2)]
    runs[0].close("failed")
    runs[1].close("interrupted")
    client = MlflowClient(uri)
    assert [client.get_run(r.loggers[0].run_id).info.status for r in runs] == ["FAILED", "KILLED"]
    assert len({r.loggers[0].experiment_id for r in runs}) == 1 and not (tmp_path / "run0" / "mlruns").exists()


def test_mlflow_missing_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"^logger=mlflow needs mlflow, which is not installed: pip install -e '\.\[mlflow\]'"):
        build_loggers({"mlflow": {}}, tmp_path)
