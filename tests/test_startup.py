"""Start-up: heavy libraries are imported where they are used, not by importing zoo (issue 20).

One subprocess (a fresh interpreter: nothing imported by other tests) first imports the parts of zoo
that need no data and builds LeNet-5, then runs ``train.py`` on digits for two batches with every
``import`` statement audited: no zoo module outside ``zoo.data`` may import an optional heavy library.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO
from zoo.schema import annotations_of

#: libraries a LeNet-5 digits run has no use for outside its data (torchvision alone costs ~1.5 s:
#: its ops import torch._dynamo)
HEAVY = ("torchvision", "sklearn", "scipy", "mlflow", "captum", "optuna", "pycocotools", "nltk", "pandas", "PIL")

#: the zoo packages allowed to import HEAVY in the run: zoo.data still imports torchvision at module
#: level (augment.py, sources.py, vision.py) and sklearn for the digits. Once it imports torchvision
#: lazily, drop the xfail of test_a_digits_run_does_not_import_torchvision
ALLOWED_IMPORTERS = ("zoo.data",)

SCRIPT = r"""
import builtins, json, runpy, sys

HEAVY, ALLOWED, TRAIN, RUN_DIR = sys.argv[1].split(","), tuple(sys.argv[2].split(",")), sys.argv[3], sys.argv[4]
report = {"offending": []}
_import = builtins.__import__


def audited(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    heavy = level == 0 and name.partition(".")[0] in HEAVY
    if heavy and importer.startswith("zoo") and not importer.startswith(ALLOWED):
        report["offending"].append(f"{importer} imports {name}")
    return _import(name, globals, locals, fromlist, level)


def loaded(names):
    return sorted(n for n in names if n in sys.modules)


builtins.__import__ = audited

# 1. what needs no data: the model registry with every family, the engine, transfer, the command lines
import zoo.__main__, zoo.cli, zoo.engine.callbacks, zoo.engine.loggers, zoo.engine.optim, zoo.engine.trainer
import zoo.metrics, zoo.resume, zoo.sweep, zoo.transfer
from zoo.models import create_model, list_models

list_models()
create_model("lenet5")
report["no_data"] = loaded([*HEAVY, "tensorboard", "matplotlib", "torch._dynamo", "zoo.data", "zoo.tasks"])
zoo.__main__.main(["list", "lenet*"])  # no model there has torchvision weights
report["zoo_list_lenet"] = loaded(["torchvision"])

# 2. a digits run with the default logger (tensorboard)
sys.argv = [TRAIN, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "callbacks.progress.mode=lines", f"hydra.run.dir={RUN_DIR}"]
sys.path[0] = TRAIN.rpartition("/")[0]  # as `python train.py` has it
try:
    runpy.run_path(TRAIN, run_name="__main__")
except SystemExit as e:
    report["exit"] = e.code
report["run"] = loaded(HEAVY)
print("STARTUP-REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("startup")
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "2"}
    args = [",".join(HEAVY), ",".join(ALLOWED_IMPORTERS), str(REPO / "train.py"), str(tmp / "run")]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)
    found = re.search(r"^STARTUP-REPORT (.*)$", proc.stdout, re.M)
    assert proc.returncode == 0 and found, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(found.group(1))
    report["log"] = proc.stdout + proc.stderr
    assert report.get("exit") in (None, 0), report["log"][-3000:]
    return report


def test_models_engine_and_commands_import_no_optional_library(digits_run: dict[str, Any]) -> None:
    """Every model family registered, LeNet-5 built, the engine, transfer and the CLIs imported: none of
    torchvision, sklearn, tensorboard, matplotlib, torch._dynamo; not even zoo.data or zoo.tasks."""
    assert digits_run["no_data"] == []
    assert digits_run["zoo_list_lenet"] == []  # the weights column asks torchvision only about its twins


def test_a_digits_run_imports_heavy_libraries_only_in_zoo_data(digits_run: dict[str, Any]) -> None:
    assert digits_run["offending"] == []


@pytest.mark.xfail(strict=True, reason="zoo.data imports torchvision at module level (vision.py, augment.py)")
def test_a_digits_run_does_not_import_torchvision(digits_run: dict[str, Any]) -> None:
    assert "torchvision" not in digits_run["run"]


def test_the_run_logs_its_first_training_step(digits_run: dict[str, Any]) -> None:
    line = r"first training step ([\d.]+) s after process start \(fit began at ([\d.]+) s\)"
    found = re.findall(line, digits_run["log"])
    assert len(found) == 1, digits_run["log"][-3000:]
    first_step, fit_began = map(float, found[0])
    assert 0 < fit_began <= first_step < 300


def test_process_start_is_before_zoo_was_imported() -> None:
    import time

    import zoo
    from zoo.engine.utils import seconds_since_start

    assert seconds_since_start() >= time.time() - zoo.IMPORTED_AT


def test_every_registered_builder_keeps_checkable_annotations() -> None:
    """Config values are type-checked against the builders' annotations (zoo.schema); an annotation
    naming a type imported only for type checkers (a lazily imported library's) would turn every check
    of that builder off without a word."""
    import zoo.data  # noqa: F401 - registers the datasets
    from zoo.data.augment import AUGMENTATIONS
    from zoo.data.base import DATASETS
    from zoo.data.tta import TTA
    from zoo.engine.callbacks import CALLBACKS
    from zoo.engine.loggers import LOGGERS
    from zoo.engine.optim import OPTIMIZERS, SCHEDULERS
    from zoo.models import MODELS, list_models
    from zoo.tasks.base import TASKS

    list_models()
    unchecked = []
    for registry in (MODELS, TASKS, OPTIMIZERS, SCHEDULERS, CALLBACKS, LOGGERS, DATASETS, TTA, AUGMENTATIONS):
        for name in registry:
            obj = registry.get(name).obj
            target = obj.__init__ if isinstance(obj, type) and not hasattr(obj, "__dataclass_fields__") else obj
            if getattr(target, "__annotations__", None) and not annotations_of(obj):
                unchecked.append(f"{registry.kind} {name}")
    assert unchecked == []


def test_torchvision_twins_are_the_models_torchvision_has() -> None:
    """``torchvision=True`` at registration (what ``zoo list`` and ``pretrained_cfg`` read instead of
    importing torchvision) marks exactly the zoo models torchvision has weights for."""
    import torchvision

    from zoo.models import list_models, model_info

    twins = {n for n in list_models() if model_info(n).get("torchvision")}
    builders = set(torchvision.models.list_models())
    have = {n for n in list_models() if n in builders and torchvision.models.get_model_weights(n)}
    assert twins == have


def test_image_grid_is_torchvisions_layout() -> None:
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    from zoo.engine.loggers import image_grid

    cases = [((5, 1, 8, 8), 8), ((64, 1, 32, 32), 8), ((7, 3, 40, 36), 3), ((1, 1, 8, 8), 8), ((1, 3, 40, 40), 8)]
    for shape, nrow in cases:
        images = torch.rand(shape)
        shown = images if shape[-1] >= 32 else F.interpolate(images, scale_factor=-(-32 // shape[-1]), mode="nearest")
        assert torch.equal(image_grid(images, nrow), make_grid(shown, nrow=nrow, padding=2, pad_value=1.0))


def test_detection_parts_still_load_from_their_old_module() -> None:
    """The torchvision-backed classes moved to zoo.models.detection; pickles and imports name them in
    zoo.models.faster_rcnn."""
    import pickle

    from zoo.models import create_model
    from zoo.models.detection import ZooFasterRCNN
    from zoo.models.faster_rcnn import ZooFasterRCNN as Old

    assert Old is ZooFasterRCNN
    model = create_model("fasterrcnn_resnet20")
    assert isinstance(model, ZooFasterRCNN)
    assert isinstance(pickle.loads(pickle.dumps(model)), ZooFasterRCNN)
    with pytest.raises(AttributeError):
        __import__("zoo.models.faster_rcnn", fromlist=["x"]).NoSuchThing  # noqa: B018
