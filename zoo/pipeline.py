"""What ``train.py`` and ``evaluate.py`` run: config in, objects from the registries, engine out.

Both functions take a composed Hydra config (usable from tests with ``hydra.compose``) and return
the metrics they also write to ``<run_dir>/metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from zoo.data import DataModule, build_datamodule
from zoo.engine.checkpoint import FORMAT, load_checkpoint
from zoo.engine.loggers import NullLogger, build_logger
from zoo.engine.trainer import Trainer, TrainerConfig
from zoo.engine.utils import seed_everything
from zoo.errors import CheckpointError, ConfigError
from zoo.models import create_model, model_info
from zoo.models.base import count_parameters
from zoo.tasks import Task, build_task
from zoo.transfer import build_transfer

log = logging.getLogger("zoo")


def _container(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def prepare_run_dir(path: str | Path) -> Path:
    """The run directory, refusing one that already holds another run's checkpoints or metrics."""
    run_dir = Path(path)
    ckpts = run_dir / "checkpoints"
    if (ckpts.is_dir() and any(ckpts.iterdir())) or (run_dir / "metrics.json").exists():
        raise ConfigError(f"run directory {run_dir} already holds a run; refusing to overwrite it (choose a new hydra.run.dir)")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=float)
        f.write("\n")
    os.replace(tmp, path)


def build_model(model_cfg: dict[str, Any], data: DataModule | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Create the model of ``model_cfg``; every key but ``input_size`` goes to :func:`create_model`."""
    kwargs = dict(model_cfg)
    kwargs.pop("input_size", None)
    name = kwargs.pop("name")
    info = model_info(name)
    if data is not None:
        for key, have in (("num_classes", data.num_classes), ("in_chans", data.in_chans)):
            want = kwargs.get(key)
            if want is not None and int(want) != have:
                raise ConfigError(f"model.{key}={want} but the data has {key}={have}; drop the override or pick matching data")
    try:
        model = create_model(name, **kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}") from None
    return model, info


def _log_confusion(logger: NullLogger, task: Task, class_names: list[str], tag: str, step: int) -> None:
    matrix = getattr(getattr(task, "confusion", None), "matrix", None)
    if matrix is None or type(logger) is NullLogger:
        return
    from zoo.metrics.classification import confusion_figure

    logger.log_figure(tag, confusion_figure(matrix, class_names), step)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``; test the best checkpoint; write ``metrics.json``."""
    start = time.perf_counter()
    run_dir = prepare_run_dir(cfg.paths.output_dir)
    c = _container(cfg)
    trainer_cfg = TrainerConfig.from_dict(c["trainer"])
    seed_everything(int(c["seed"]), trainer_cfg.deterministic)
    trainer_device = Trainer(trainer_cfg, run_dir).device  # fail fast on a bad device before loading data

    model_name = c["model"]["name"]
    model_info(model_name)  # fail fast on an unknown model name before loading data
    data = build_datamodule(c["data"], c.get("augmentation"), device=trainer_device, seed=int(c["seed"]))
    model, info = build_model(c["model"], data)
    task = build_task(c["task"], model, info["task"], num_classes=data.num_classes)
    policy = build_transfer(c.get("transfer"), model)
    if policy is not None:
        task.param_lr_mult = policy.lr_mult
        log.info(policy.describe())
        if not c["model"].get("pretrained") and policy.trainable < len(policy.stages):
            log.warning("transfer=%s without model.pretrained: the frozen stages keep their random initialisation", policy.cfg.name)
    n_params, n_trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    log.info(
        "model %s (%s parameters, %s trainable) | data %s %s, %d classes, %dx%d | device %s",
        model_name, f"{n_params:,}", f"{n_trainable:,}", c["data"]["name"], data.sizes(), data.num_classes,
        data.image_size, data.image_size, trainer_device,
    )

    logger = build_logger(c.get("logger"), run_dir)
    run_info = {
        "model_name": model_name,
        "task": info["task"],
        "config": c,
        "data_info": {"class_names": data.class_names, "mean": data.mean, "std": data.std, "num_classes": data.num_classes},
    }
    trainer = Trainer(trainer_cfg, run_dir, logger, run_info, callbacks=[policy] if policy is not None else [])
    try:
        fit = trainer.fit(task, data, c["optimizer"], c["scheduler"], ckpt_path=c.get("ckpt_path"))
        result: dict[str, Any] = {
            "model": model_name,
            "dataset": c["data"]["name"],
            "optimizer": c["optimizer"]["name"],
            "scheduler": c["scheduler"]["name"],
            "params": n_params,
            "trainable_params": n_trainable,
            "run_dir": str(run_dir),
            **{k: v for k, v in fit.items() if k != "history"},
        }
        if fit["history"]:
            result["final"] = {k: v for k, v in fit["history"][-1].items() if k.startswith(("train/", "val/"))}
        if c.get("test", True) and len(data.test) > 0:
            best = trainer.ckpt_dir / "best.pt"
            if best.exists():
                model.load_state_dict(load_checkpoint(best, map_location=trainer.device)["model"])
            test = trainer.evaluate(task, data.test, desc="test")
            result["test"] = test
            logger.log_scalars({f"test/{k}": v for k, v in test.items()}, trainer.global_step)
            _log_confusion(logger, task, data.class_names, "test/confusion_matrix", trainer.global_step)
            log.info("test (%s weights): %s", "best" if best.exists() else "final", _fmt(test))
        result["wall_time_s"] = time.perf_counter() - start
        result["history"] = fit["history"]
        write_json(result, run_dir / "metrics.json")
        log.info("run directory: %s", run_dir)
        return result
    finally:
        logger.close()


def _fmt(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; model and data come from the config stored in the checkpoint."""
    c = _container(cfg)
    if not c.get("ckpt_path"):
        raise ConfigError("evaluate.py needs a checkpoint: python evaluate.py ckpt_path=<run>/checkpoints/best.pt")
    run_dir = prepare_run_dir(cfg.paths.output_dir)
    state = load_checkpoint(c["ckpt_path"])
    if state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{c['ckpt_path']} is not a zoo training checkpoint (it has no stored config)")
    train_cfg = state["config"]
    data_cfg = {**train_cfg["data"], **{k: v for k, v in (c.get("data") or {}).items() if v is not None}}
    trainer_cfg = TrainerConfig(max_epochs=1, device=c.get("device", "auto"), precision=c.get("precision", "auto"),
                                progress_bar=bool(c.get("progress_bar", True)))
    trainer = Trainer(trainer_cfg, run_dir, build_logger(c.get("logger"), run_dir))
    data = build_datamodule(data_cfg, None, device=trainer.device, seed=int(train_cfg.get("seed", 0)))
    model_cfg = {**train_cfg["model"], "pretrained": None}
    model, info = build_model(model_cfg, data)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{c['ckpt_path']}: weights do not fit model {model_cfg['name']}: {str(e).splitlines()[0]}") from None
    task = trainer.setup(build_task(train_cfg["task"], model, info["task"], num_classes=data.num_classes))
    split = c.get("split", "test")
    try:
        metrics = trainer.evaluate(task, data.loader(split), desc=split)
        result: dict[str, Any] = {
            "ckpt_path": str(c["ckpt_path"]),
            "model": model_cfg["name"],
            "dataset": data_cfg["name"],
            "split": split,
            "epoch": int(state.get("epoch", -1)) + 1,
            split: metrics,
        }
        log.info("%s %s on %s/%s: %s", model_cfg["name"], c["ckpt_path"], data_cfg["name"], split, _fmt(metrics))
        confusion = getattr(getattr(task, "confusion", None), "matrix", None)
        if confusion is not None:
            from zoo.metrics.classification import format_confusion

            result["confusion_matrix"] = confusion.cpu().tolist()
            log.info("confusion matrix (rows: true class, columns: predicted)\n%s", format_confusion(confusion, data.class_names))
            trainer.logger.log_scalars({f"{split}/{k}": v for k, v in metrics.items()}, 0)
            _log_confusion(trainer.logger, task, data.class_names, f"{split}/confusion_matrix", 0)
        write_json(result, run_dir / "metrics.json")
        return result
    finally:
        trainer.logger.close()
