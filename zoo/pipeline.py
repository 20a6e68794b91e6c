"""What ``train.py`` and ``evaluate.py`` run: config in, objects from the registries, engine out.

Both functions take a composed Hydra config (usable from tests with ``hydra.compose``) and return
the metrics they also write to ``<run_dir>/metrics.json``.
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.cli import register_resolvers
from zoo.data import DataModule, build_datamodule
from zoo.data.augment import mixing
from zoo.data.pretrained import resolve_data_config
from zoo.data.tta import build_tta
from zoo.engine import distributed
from zoo.engine.callbacks import Progress, Unfreeze, build_callbacks
from zoo.engine.checkpoint import FORMAT, load_checkpoint
from zoo.engine.loggers import LoggerCollection, build_loggers, check_loggers, flatten_config
from zoo.engine.optim import check_closure, check_warmup
from zoo.engine.regularizers import build_regularizer
from zoo.engine.state import TrainerConfig
from zoo.engine.trainer import Trainer
from zoo.engine.utils import resolve_device, resolve_precision, seed_everything, write_json
from zoo.ensemble import Ensemble, MemberBatches, check_members, checkpoint_paths
from zoo.errors import CheckpointError, ConfigError, TrainingInterrupted
from zoo.extras import require as require_extra
from zoo.figures import check_classifier, check_figures, requested, write_figures
from zoo.resume import resume_config
from zoo.rundir import prepare_run_dir, record_hydra_run, release_run_dir
from zoo.schema import check_config, check_options, check_value
from zoo.models import MODELS, create_model, model_info
from zoo.models.base import count_parameters
from zoo.tasks import TASKS, Task, build_task
from zoo.tasks.base import for_display
from zoo.trained import fill_from_info
from zoo.transfer import TransferConfig, TransferPolicy, build_transfer, strict_loading

log = logging.getLogger("zoo")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_resolvers()  # ${zoo_input_size:...} of a config composed by hydra.compose (tests, scripts), not by train.py

def _container(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve the config: {' '.join(str(e).split())}") from None


def _check_train(c: dict[str, Any]) -> None:
    """Every value of a training config that can be checked without data: types against the yaml
    files and the engine's annotations, names and ranges of the trainer, callbacks and loggers."""
    check_config(c, CONFIG_DIR, "train")
    check_value("model.input_size", c["model"].get("input_size"), int | None)  # its yaml default is the registry's
    model = {k: v for k, v in c["model"].items() if k not in ("name", "input_size") and v is not None}  # null: filled from the data
    model_info(c["model"]["name"])  # an unknown name, with close matches; imports the families
    check_options("model", model, MODELS.get(c["model"]["name"]).obj)
    trainer = TrainerConfig.from_dict(c["trainer"])
    check_warmup(c["scheduler"].get("warmup_epochs", 0), trainer.max_epochs)  # fast_dev_run keeps the run's schedule
    check_closure(c["optimizer"]["name"], str(trainer.precision), trainer.accumulate_grad_batches)  # auto: when it resolves
    build_regularizer(c.get("regularizer"))
    for callback in build_callbacks(c.get("callbacks")):
        callback.check_trainer(trainer)
    check_loggers(c.get("logger"))  # and the extras of their backends
    check_task_extras((c.get("task") or {}).get("name"))


def check_task_extras(task: str | None, feature: str = "task={}") -> None:
    """The optional extras (:mod:`zoo.extras`) that ``task``'s metrics need, before anything runs; ``feature``
    (formatted with the task's name) says who needs them."""
    if task in TASKS:
        for extra in TASKS.get(task).obj.extras:
            require_extra(extra, feature.format(task))


def _check_evaluate(c: dict[str, Any]) -> None:
    """The same for an evaluation config (whether its device exists is the machine's, checked when it runs)."""
    if not c.get("ckpt_path"):
        raise ConfigError("evaluate.py needs a checkpoint: python evaluate.py ckpt_path=<run>/checkpoints/best.pt")
    members = len(checkpoint_paths(c["ckpt_path"]))
    if members > 1 and c.get("split", "test") == "train":
        raise ConfigError("an ensemble is evaluated on split=val or split=test (the training split is shuffled, "
                          "so the members would not see the same samples in the same order)")
    check_config(c, CONFIG_DIR, "evaluate")
    check_figures(c.get("figures"), members)
    build_tta(c.get("tta") or {"name": "none"}, 1)
    check_loggers(c.get("logger"))


def _hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _in_claimed_run(check: Callable[[dict[str, Any]], None], resumes: bool = False) -> Callable[..., Any]:
    """Run ``fn(c, run_dir)`` (``c`` the resolved config) in the run directory this process claims
    (see :mod:`zoo.rundir`), once ``check`` has found every value valid: bad input never claims a
    directory. With ``resumes``, a ``ckpt_path`` run takes the config stored in the checkpoint
    (:mod:`zoo.resume`; ``overrides``: the command line's, by default Hydra's). A run that fails
    before writing any checkpoint or metrics gives its directory back, so the same
    ``hydra.run.dir`` can be used once the input is fixed."""
    def decorate(fn: Callable[[dict[str, Any], Path], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(fn)
        def wrapper(cfg: DictConfig | dict[str, Any], overrides: Sequence[str] | None = None) -> dict[str, Any]:
            c = _container(cfg)
            if resumes and c.get("ckpt_path"):
                c = resume_config(c, _hydra_overrides() if overrides is None else overrides)
            check(c)
            run_dir = prepare_run_dir(c["paths"]["output_dir"], claim=distributed.env().is_main)
            dry = bool((c.get("trainer") or {}).get("fast_dev_run"))  # writes nothing, .hydra/ and the log included
            try:
                with record_hydra_run(run_dir, c) if distributed.env().is_main and not dry else nullcontext():
                    return fn(c, run_dir)
            except BaseException:
                release_run_dir(run_dir)
                raise
        return wrapper
    return decorate


def build_model(model_cfg: dict[str, Any], data: DataModule | None = None,
                transfer_cfg: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Create the model of ``model_cfg``; every key but ``input_size`` goes to :func:`create_model`.
    Pretrained weights load as strictly as ``transfer_cfg`` (``transfer.strict``) says."""
    kwargs = dict(model_cfg)
    kwargs.pop("input_size", None)
    name = kwargs.pop("name")
    info = model_info(name)
    if data is not None:
        for key, have in (("num_classes", data.num_classes), ("in_chans", data.in_chans)):
            if key not in kwargs:  # a model without that argument (a VAE has no classes)
                continue
            want = kwargs[key]
            if want is None:  # e.g. an image folder's class count, known only once the data is read
                kwargs[key] = have
            elif int(want) != have:
                raise ConfigError(f"model.{key}={want} but the data has {key}={have}; drop the override or pick matching data")
        kwargs = fill_from_info(kwargs, data.info)
    with strict_loading(TransferConfig.from_dict(transfer_cfg).strict):
        model = MODELS.build_from({"name": name, **kwargs}, group="model", call=create_model)
    return model, info


@dataclass
class Run:
    """What ``train`` and ``evaluate`` both assemble from a config: the data, the model, its task."""

    data: DataModule
    model: torch.nn.Module
    task: Task
    policy: TransferPolicy | None = None


def build_run(c: dict[str, Any], device: torch.device, checkpoint: dict[str, Any] | None = None) -> Run:
    """The data, model and task of run config ``c`` (``data``, ``model``, ``task``, ``augmentation``,
    ``transfer``, ``regularizer``, ``seed``). With a zoo ``checkpoint`` (evaluation) the weights come from
    it instead of any ``*pretrained`` source, the data learns the training run's vocabulary and the like,
    and neither augmentation, a transfer policy nor a regulariser applies."""
    data_cfg, note = resolve_data_config(c["data"], c["model"])  # e.g. the preprocessing of torchvision weights
    if note and checkpoint is None:
        log.info(note)
    data = build_datamodule(data_cfg, c.get("augmentation") if checkpoint is None else None, device=device,
                            seed=int(c.get("seed", 0)))
    model_cfg = c["model"]
    if checkpoint is not None:
        data.info.update((checkpoint.get("data_info") or {}).get("info") or {})
        model_cfg = {**model_cfg, "pretrained": None, **{k: None for k in model_cfg if k.endswith("_pretrained")}}
    model, info = build_model(model_cfg, data, c.get("transfer"))
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{c.get('ckpt_path')}: weights do not fit model {model_cfg['name']}: "
                                  f"{str(e).splitlines()[0]}") from None
    policy = build_transfer(c.get("transfer"), model) if checkpoint is None else None
    regularizer = build_regularizer(c.get("regularizer")) if checkpoint is None else None
    task = build_task(fill_from_info(c["task"], data.info), model, info["task"], policy.lr_mult if policy else None,
                      regularizer, num_classes=data.num_classes)
    task.set_class_names(data.class_names)
    mixes = mixing(c.get("augmentation")) if checkpoint is None else []
    refused = task.soft_targets_refused() if mixes else None
    if refused:
        raise ConfigError(f"augmentation {'+'.join(mixes)} trains on mixed class probabilities, but {refused}; "
                          f"or drop it (augmentation.ops.{mixes[0]}=null)")
    if policy is not None:
        log.info(policy.describe())
        if not model_cfg.get("pretrained") and policy.trainable < len(policy.stages):
            log.warning("transfer=%s without model.pretrained: the frozen stages keep their random initialisation", policy.cfg.name)
    return Run(data, model, task, policy)


def _log_model_graph(logger: LoggerCollection, model: torch.nn.Module, data: DataModule) -> None:
    """The model's graph (TensorBoard), traced on one zero input of the data's channels and size."""
    if not logger:
        return
    from zoo.tools.target import input_shape_of

    device = next(model.parameters(), torch.empty(0)).device
    logger.log_graph(model, torch.zeros(input_shape_of(model, 1, data.in_chans, data.image_size), device=device))


def _log_augmented_images(logger: LoggerCollection, loader: Any, count: int = 64) -> None:
    """A grid of the first augmented training batch, each image min-max scaled for display."""
    if not logger:
        return
    batch = next(iter(loader), None)
    if batch is None or not isinstance(batch[0], torch.Tensor):  # variable-size images come as a list
        return
    logger.log_image_grid("data/train_augmented", for_display(batch[0][:count].detach().float().cpu()), 0)


@_in_claimed_run(_check_train, resumes=True)
def train(c: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train ``c["model"]`` on ``c["data"]``; test the best checkpoint; write ``metrics.json``."""
    start = time.perf_counter()
    main = distributed.env().is_main
    trainer_cfg = TrainerConfig.from_dict(c["trainer"])
    seed_everything(int(c["seed"]), trainer_cfg.deterministic)
    trainer_device = distributed.local_device(resolve_device(trainer_cfg.device))
    callbacks = build_callbacks(c.get("callbacks"))
    dist_env = distributed.setup(trainer_device)
    if dist_env.enabled:
        log.info("distributed: %d processes, %s backend", dist_env.world_size, torch.distributed.get_backend())

    model_name = c["model"]["name"]
    run = build_run(c, trainer_device)
    data, model, task, policy = run.data, run.model, run.task, run.policy
    n_params, n_trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    log.info(
        "model %s (%s parameters, %s trainable) | data %s %s, %d classes, %dx%d | device %s",
        model_name, f"{n_params:,}", f"{n_trainable:,}", c["data"]["name"], data.sizes(), data.num_classes,
        data.image_size, data.image_size, trainer_device,
    )

    if policy is not None:
        callbacks.append(Unfreeze(policy))
    dry = trainer_cfg.fast_dev_run  # nothing written
    logger = build_loggers(c.get("logger"), run_dir) if main and not dry else LoggerCollection([])
    tags = [str(t) for t in c.get("tags") or []]
    logger.log_config(c)
    logger.log_hyperparams(flatten_config({k: c[k] for k in ("model", "data", "augmentation", "task", "optimizer", "scheduler",
                                                             "regularizer", "trainer", "transfer", "seed") if k in c}),
                           {f"val/{task.monitor}": float("nan"), f"test/{task.monitor}": float("nan")})
    logger.log_tags(tags)
    _log_augmented_images(logger, data.train)
    _log_model_graph(logger, model, data)
    run_info = {
        "model_name": model_name,
        "task": model_info(model_name)["task"],
        "config": c,
        "data_info": {"class_names": data.class_names, "mean": data.mean, "std": data.std, "num_classes": data.num_classes,
                      "info": data.info},
    }
    trainer = Trainer(trainer_cfg, run_dir, logger, run_info, callbacks=callbacks)
    status = "failed"
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
            "tags": tags,
            **{k: v for k, v in fit.items() if k != "history"},
        }
        if fit["history"]:
            result["final"] = {k: v for k, v in fit["history"][-1].items() if k.startswith(("train/", "val/"))}
        distributed.barrier()  # rank 0's last checkpoint is on disk
        if c.get("test", True) and len(data.test) > 0:
            best = trainer.best_checkpoint
            if best is not None:
                model.load_state_dict(load_checkpoint(best, map_location=trainer.device)["model"])
            test = trainer.test(task, data.test)
            result["test"] = test
            logger.log_scalars({f"test/{k}": v for k, v in test.items()}, trainer.state.global_step)
            log.info("test (%s weights): %s", "best" if best is not None else "final", _fmt(test))
            task.report(logger, "test", trainer.state.global_step)
        result["wall_time_s"] = time.perf_counter() - start
        result["history"] = fit["history"]
        if main and not dry:
            write_json(result, run_dir / "metrics.json")
        if dry:
            release_run_dir(run_dir, remove_if_empty=True)  # a dry run leaves nothing behind
            log.info("fast_dev_run: every stage ran one batch; nothing was written")
        else:
            log.info("run directory: %s", run_dir)
        status = "success"
        return result
    except TrainingInterrupted:
        status = "interrupted"
        raise
    finally:
        logger.close(status)
        distributed.teardown()


def _fmt(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _stored_run(c: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint at ``path`` and the run config that evaluates it: the one stored in it, with the
    evaluation's non-null ``data`` and ``task`` keys (``c``) applied."""
    state = load_checkpoint(path)
    if state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{path} is not a zoo training checkpoint (it has no stored config)")
    train_cfg = state["config"]
    run_cfg = {**train_cfg, "ckpt_path": path,
               "data": {**train_cfg["data"], **{k: v for k, v in (c.get("data") or {}).items() if v is not None}},
               "task": {**train_cfg["task"], **{k: v for k, v in (c.get("task") or {}).items() if v is not None}}}
    if (c.get("tta") or {}).get("name", "none") != "none":
        run_cfg["data"]["eval_crop"] = False  # image folders: evaluate uncropped at resize_size; TTA crops itself
    return state, run_cfg


def _evaluation_trainer(c: dict[str, Any], run_dir: Path) -> Trainer:
    """One pass's trainer on evaluate.yaml's ``device`` and ``precision``, with its loggers and progress."""
    device, precision = c.get("device", "auto"), c.get("precision", "auto")
    resolve_precision(precision, resolve_device(device, key="device"), key="precision")  # errors name evaluate.yaml's keys
    progress = [Progress()] if c.get("progress_bar", True) else []
    return Trainer(TrainerConfig(max_epochs=1, device=device, precision=precision), run_dir,
                   build_loggers(c.get("logger"), run_dir), callbacks=progress)


def _views(task: Task, data: DataModule, tta_cfg: dict[str, Any]) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """``task``'s single evaluation view and its averaged test-time views of ``data``'s images."""
    black = [-m / s for m, s in zip(data.mean, data.std)]  # what the training crops pad with, normalised
    return task.evaluation_views(tta_cfg, data.image_size, black)


@_in_claimed_run(_check_evaluate)
def evaluate(c: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; model and data come from the config stored in the checkpoint.
    Several checkpoints (a list, a glob, a directory of snapshots) are evaluated as an ensemble."""
    paths = checkpoint_paths(c["ckpt_path"])
    if len(paths) > 1:
        return _evaluate_ensemble(c, run_dir, paths)
    if paths[0] != c["ckpt_path"]:  # a list of one, or a glob that matches one file
        c = {**c, "ckpt_path": paths[0]}
    state, run_cfg = _stored_run(c, c["ckpt_path"])
    check_classifier(state, c.get("figures"))
    check_task_extras(run_cfg["task"]["name"], "evaluating a {} checkpoint")
    tta_cfg = c.get("tta") or {"name": "none"}
    trainer = _evaluation_trainer(c, run_dir)
    run = build_run(run_cfg, trainer.device, checkpoint=state)
    task, data = trainer.setup(run.task), run.data
    split = c.get("split", "test")
    try:
        single, averaged = _views(task, data, tta_cfg)
        tta_metrics: dict[str, float] = {}
        if averaged is not None:
            with task.evaluating_with(averaged):
                tta_metrics = _with_full_views_hint(lambda: trainer.test(task, data.loader(split), f"{split} tta={tta_cfg['name']}"),
                                                    tta_cfg)
        with task.evaluating_with(single):
            metrics = trainer.test(task, data.loader(split), split)
        written = task.write_predictions(run_dir, split)
        with torch.no_grad():
            task.on_validation_end(trainer.logger, 0)
        trainer.logger.log_scalars({f"{split}/{k}": v for k, v in metrics.items()}, 0)
        result: dict[str, Any] = {
            "ckpt_path": str(c["ckpt_path"]),
            "model": run_cfg["model"]["name"],
            "dataset": run_cfg["data"]["name"],
            "split": split,
            "epoch": int(state.get("epoch", -1)) + 1,
            split: metrics,
        }
        log.info("%s %s on %s/%s: %s", run_cfg["model"]["name"], c["ckpt_path"], run_cfg["data"]["name"], split, _fmt(metrics))
        if written:
            result["predictions"] = [str(p) for p in written]
            log.info("predictions written to %s", ", ".join(map(str, written)))
        if tta_metrics:
            result.update({f"{split}_tta": tta_metrics, "tta": tta_cfg})
            log.info("with test-time augmentation (%s): %s", tta_cfg["name"], _fmt(tta_metrics))
            trainer.logger.log_scalars({f"{split}_tta/{k}": v for k, v in tta_metrics.items()}, 0)
        result.update(task.report(trainer.logger, split, 0))  # of the last pass: the single view
        write_json(result, run_dir / "metrics.json")
        if requested(c.get("figures")):
            figures = write_figures(c["ckpt_path"], c["figures"], split, run_dir / "figures", trainer.logger,
                                    str(trainer.device))
            log.info("%d figures written to %s", len(figures), run_dir / "figures")
        return result
    finally:
        trainer.logger.close()


def _evaluate_ensemble(c: dict[str, Any], run_dir: Path, paths: list[str]) -> dict[str, Any]:
    """Evaluate the checkpoints ``paths`` as an ensemble (:mod:`zoo.ensemble`): each member with its own
    model and preprocessing, the ensemble as the mean of their class probabilities. ``metrics.json`` holds
    every member's metrics (``members``) and the ensemble's (``ensemble``, with TTA also ``ensemble_tta``)."""
    stored = [_stored_run(c, path) for path in paths]
    check_members([(path, state) for path, (state, _) in zip(paths, stored)])
    first_data = stored[0][1]["data"]
    batch_size = first_data.get("eval_batch_size") or first_data["batch_size"]
    for _, run_cfg in stored:  # batch for batch, the members see the same samples
        run_cfg["data"]["eval_batch_size"] = batch_size
    tta_cfg = c.get("tta") or {"name": "none"}
    split = c.get("split", "test")
    trainer = _evaluation_trainer(c, run_dir)
    try:
        runs = [build_run(run_cfg, trainer.device, checkpoint=state) for state, run_cfg in stored]
        ensemble = Ensemble([trainer.setup(run.task) for run in runs], paths)
        loader = MemberBatches([run.data.loader(split) for run in runs], paths)
        views = [_views(task, run.data, tta_cfg) for task, run in zip(ensemble.members, runs)]
        tta_metrics: dict[str, float] = {}
        tta_members: list[dict[str, float]] = []
        if views[0][1] is not None:
            with ensemble.members_evaluating_with([averaged for _, averaged in views]):
                tta_metrics = _with_full_views_hint(lambda: trainer.test(ensemble, loader, f"{split} tta={tta_cfg['name']}"),
                                                    tta_cfg)
            tta_members = ensemble.member_metrics()
        with ensemble.members_evaluating_with([single for single, _ in views]):
            metrics = trainer.test(ensemble, loader, split)
        members: list[dict[str, Any]] = []
        for i, ((state, run_cfg), own) in enumerate(zip(stored, ensemble.member_metrics())):
            entry = {"ckpt_path": run_cfg["ckpt_path"], "model": run_cfg["model"]["name"],
                     "epoch": int(state.get("epoch", -1)) + 1, split: own}
            if tta_metrics:
                entry[f"{split}_tta"] = tta_members[i]
            members.append(entry)
            log.info("member %d, %s %s: %s", i + 1, entry["model"], entry["ckpt_path"], _fmt(own))
            trainer.logger.log_scalars({f"{split}/member{i + 1}/{k}": v for k, v in own.items()}, 0)
        result: dict[str, Any] = {"ckpt_path": list(paths), "dataset": stored[0][1]["data"]["name"], "split": split,
                                  "members": members, "ensemble": metrics}
        log.info("ensemble of %d on %s/%s: %s", len(paths), result["dataset"], split, _fmt(metrics))
        trainer.logger.log_scalars({f"{split}/ensemble/{k}": v for k, v in metrics.items()}, 0)
        if tta_metrics:
            result.update({"ensemble_tta": tta_metrics, "tta": tta_cfg})
            log.info("ensemble with test-time augmentation (%s): %s", tta_cfg["name"], _fmt(tta_metrics))
            trainer.logger.log_scalars({f"{split}_tta/ensemble/{k}": v for k, v in tta_metrics.items()}, 0)
        result.update(ensemble.report(trainer.logger, split, 0))  # the ensemble's, of the single views
        write_json(result, run_dir / "metrics.json")
        return result
    finally:
        trainer.logger.close()


def _with_full_views_hint(evaluate: Callable[[], dict[str, float]], tta_cfg: dict[str, Any]) -> dict[str, float]:
    """``evaluate()``; a shape error of ``tta.views=full`` (a model without global pooling) as one line."""
    try:
        return evaluate()
    except RuntimeError as e:
        if tta_cfg.get("views") != "full":
            raise
        raise ConfigError(f"tta.views=full needs a model that takes any input size (global pooling); use tta.views=ten_crop "
                          f"({str(e).splitlines()[0]})") from None
