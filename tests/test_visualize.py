"""``python -m zoo visualize`` (:mod:`zoo.visualize`) on a LeNet-5 trained on digits here."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zoo.__main__ import main

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits(lenet5_digits: dict[str, Any]) -> dict[str, Any]:
    """The shared LeNet-5 checkpoint (conftest) and two of its test digits as 8x8 PNG files."""
    return {"ckpt": lenet5_digits["ckpt"], "files": lenet5_digits["files"][-2:], "dir": lenet5_digits["dir"]}


def _run(digits: dict[str, Any], out: Path, *args: str) -> int:
    return main(["visualize", str(digits["ckpt"]), "--out", str(out), *args])


def test_filters_writes_a_grid(digits: dict[str, Any], tmp_path: Path) -> None:
    assert _run(digits, tmp_path, "--what", "filters") == 0
    assert (tmp_path / "filters.png").stat().st_size > 0


def test_activations_writes_a_grid_per_stage(digits: dict[str, Any], tmp_path: Path) -> None:
    from zoo.trained import load_classifier

    model, _ = load_classifier(digits["ckpt"], "ckpt")
    stages = [info.module for info in model.feature_info]
    assert _run(digits, tmp_path, "--what", "activations", "--image", *map(str, digits["files"])) == 0
    assert sorted(p.name for p in tmp_path.glob("activations_*.png")) == sorted(
        f"activations_{s.replace('.', '_')}.png" for s in stages)
    one = tmp_path / "one"
    assert _run(digits, one, "--what", "activations", "--image", str(digits["files"][0]), "--layer", stages[0]) == 0
    assert [p.name for p in one.glob("*.png")] == [f"activations_{stages[0].replace('.', '_')}.png"]


def test_tsne_has_one_point_per_image(digits: dict[str, Any], tmp_path: Path) -> None:
    assert _run(digits, tmp_path, "--what", "tsne", "--split", "val", "--max-points", "60") == 0
    with open(tmp_path / "tsne.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60
    assert [int(r["index"]) for r in rows] == list(range(60))
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)
    assert len({r["label"] for r in rows}) > 1
    assert (tmp_path / "tsne.png").stat().st_size > 0 and (tmp_path / "tsne_mosaic.png").stat().st_size > 0


def test_class_model_ascent_raises_the_target_score(digits: dict[str, Any], tmp_path: Path) -> None:
    from zoo.trained import load_classifier
    from zoo.visualize import class_model

    model, state = load_classifier(digits["ckpt"], "ckpt")
    for p in model.parameters():
        p.requires_grad_(False)
    size = int(state["config"]["data"].get("image_size") or state["config"]["model"]["input_size"])
    start = torch.zeros(1, 1, size, size)  # the data mean
    for target in (3, 7):
        before = float(model(start)[0, target])
        image = class_model(model, target, (1, size, size), steps=50, lr=0.1, l2=1e-3, start=start)
        assert float(model(image)[0, target]) > before + 1.0
    assert _run(digits, tmp_path, "--what", "class_model", "--target", "3", "7", "--steps", "10") == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["class_model_3.png", "class_model_7.png"]
    every = tmp_path / "every"
    assert _run(digits, every, "--what", "class_model", "--steps", "2") == 0
    assert len(list(every.glob("class_model_*.png"))) == 10


@pytest.mark.parametrize("args, message", [
    (["--what", "tsnee"], "unknown --what 'tsnee'"),
    (["--what", "class_model", "--target", "10"], "--target 10 is out of range"),
    (["--what", "activations"], "needs --image"),
    (["--what", "activations", "--image", "missing.png"], "image file not found"),
    (["--what", "activations", "--image", "IMAGE", "--layer", "nope"], "--layer 'nope'"),
    (["--what", "filters", "--octaves", "5"], "--octaves does not apply to --what filters; it is for --what dream"),
    (["--what", "tsne", "--image", "IMAGE"], "--image does not apply to --what tsne"),
])
def test_bad_input_is_one_error_line(digits: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    args = [str(digits["files"][0]) if a == "IMAGE" else a for a in args]
    out = tmp_path / "out"
    assert _run(digits, out, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_missing_checkpoint_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["visualize", str(tmp_path / "none.pt"), "--what", "filters", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()


def test_dream_raises_the_stage_objective(digits: dict[str, Any], tmp_path: Path) -> None:
    from zoo.explain import module_named
    from zoo.trained import load_image
    from zoo.trained import load_classifier
    from zoo.visualize import DreamOptions, dream

    model, state = load_classifier(digits["ckpt"], "ckpt")
    for p in model.parameters():
        p.requires_grad_(False)
    x = load_image(digits["files"][0], state)
    stage = [info.module for info in model.feature_info][1]
    dreamt, before, after = dream(model, module_named(model, stage), x, DreamOptions(steps=10, octaves=2))
    assert dreamt.shape == x.shape and after > 1.5 * before
    assert _run(digits, tmp_path, "--what", "dream", "--image", *map(str, digits["files"]), "--steps", "3") == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"dream_{Path(f).stem}.png" for f in digits["files"])
    noise = tmp_path / "noise"
    assert _run(digits, noise, "--what", "dream", "--layer", stage, "--steps", "3", "--octaves", "1") == 0
    assert [p.name for p in noise.glob("*.png")] == ["dream_noise.png"]


@pytest.fixture(scope="module")
def vgg_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VGG-16 (small) checkpoint of two steps on the digits: style transfer needs VGG features, not good ones."""
    from tests.helpers import make_cfg
    from zoo.pipeline import train

    run = tmp_path_factory.mktemp("vgg_digits") / "run"
    train(make_cfg(run, "model=vgg16_small", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "trainer.limit_val_batches=1", "logger=none", "test=false", "augmentation=none",
                   "callbacks.progress.mode=none"))
    return run / "checkpoints" / "last.pt"


def test_style_transfer_loss_falls(vgg_digits: Path, digits: dict[str, Any], tmp_path: Path) -> None:
    content, style = map(str, digits["files"])
    assert main(["visualize", str(vgg_digits), "--what", "style", "--image", content, "--style", style, "--steps", "8",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["style.png", "style_loss.csv", "style_result.png"]
    with open(tmp_path / "style_loss.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) >= 8 and losses[-1] < 0.1 * losses[0], losses
    from PIL import Image

    with Image.open(tmp_path / "style_result.png") as img:
        assert img.size == (32, 32) and img.mode == "L"  # the checkpoint's own input: 32x32 grey


def test_vgg_layer_names_are_the_papers() -> None:
    """relu<stage>_<conv> in torchvision's VGG-19 layout: the indices every style-transfer code uses."""
    from zoo.models import create_model
    from zoo.style import vgg_layer_names

    names = vgg_layer_names(create_model("vgg19_small", num_classes=10).features)  # the layout of vgg19
    assert len(names) == 16
    assert {n: names[n] for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1", "relu5_4")} == {
        "relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29, "relu5_4": 35}
    bn = vgg_layer_names(create_model("vgg16_bn_small", num_classes=10).features)
    assert len(bn) == 13 and bn["relu1_1"] == 2 and bn["relu4_2"] == 29


@pytest.mark.slow
def test_style_transfer_with_torchvision_vgg19_from_the_cache(torch_home: Path, digits: dict[str, Any],
                                                              tmp_path: Path) -> None:
    from torchvision.models import vgg19

    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"  # the name torchvision downloads to
    path.parent.mkdir(parents=True)
    torch.save(vgg19(weights=None).state_dict(), path)
    content, style = map(str, digits["files"])
    out = tmp_path / "out"
    assert main(["visualize", "torchvision:vgg19", "--what", "style", "--image", content, "--style", style,
                 "--size", "48", "--steps", "5", "--out", str(out)]) == 0
    with open(out / "style_loss.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0]
    from PIL import Image

    with Image.open(out / "style_result.png") as img:
        assert img.size == (48, 48) and img.mode == "RGB"


@pytest.mark.parametrize("which, args, message", [
    ("lenet", ["--image", "A", "--style", "B"], "LeNet5 is not a VGG"),
    ("torchvision:vgg19", ["--image", "A", "--style", "B"], "are not cached at"),
    ("torchvision:resnet18", ["--image", "A", "--style", "B"], "names resnet18 weights"),
    ("vgg", ["--image", "A"], "needs --image CONTENT (one file) and --style"),
    ("vgg", ["--image", "A", "--style", "missing.png"], "image file not found: missing.png"),
    ("vgg", ["--image", "A", "--style", "B", "--size", "64"], "--size applies to torchvision:<weights>"),
])
def test_style_bad_input_is_one_error_line(vgg_digits: Path, digits: dict[str, Any], torch_home: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], which: str, args: list[str],
                                           message: str) -> None:
    ckpt = {"lenet": str(digits["ckpt"]), "vgg": str(vgg_digits)}.get(which, which)
    files = {"A": str(digits["files"][0]), "B": str(digits["files"][1])}
    out = tmp_path / "out"
    assert main(["visualize", ckpt, "--what", "style", *[files.get(a, a) for a in args], "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Downloading")]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_evaluate_draws_the_figures_into_the_run_and_tensorboard(digits: dict[str, Any], tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.helpers import make_cfg
    from zoo.pipeline import evaluate

    run = tmp_path / "eval"
    files = ",".join(map(str, digits["files"]))
    metrics = evaluate(make_cfg(run, f"ckpt_path={digits['ckpt']}", "progress_bar=false", "split=val",
                                "figures.visualize=[filters,tsne,dream]", "figures.explain=[gradcam]",
                                f"figures.images=[{files}]", config_name="evaluate"))
    assert 0.0 <= metrics["val"]["acc"] <= 1.0
    stems = [Path(f).stem for f in digits["files"]]
    pngs = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert pngs == sorted(["filters.png", "tsne.png", "tsne_mosaic.png", *[f"dream_{s}.png" for s in stems],
                           *[f"{s}_gradcam.png" for s in stems]])
    with open(run / "figures" / "tsne.csv") as f:
        assert len(list(csv.DictReader(f))) == 180  # every val image: 10% of the 1,797 digits
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    figures = sorted(t for t in events.Tags()["images"] if t.startswith("figures/"))
    assert figures == sorted(f"figures/{Path(p).stem}" for p in pngs)


@pytest.mark.parametrize("overrides, message", [
    (["figures.visualize=[filter]"], "unknown figures.visualize 'filter'"),
    (["figures.visualize=[style]"], "needs a content and a style image"),
    (["figures.explain=[gradcam]"], "figures.explain needs image files"),
    (["figures.visualize=[activations]", "figures.images=[missing.png]"], "image file not found: missing.png"),
    (["figures.visualize=[filters]", "figures.images=[a.png]"], "neither asks for them"),
])
def test_evaluate_figures_bad_input_is_refused_before_the_run(digits: dict[str, Any], tmp_path: Path,
                                                              overrides: list[str], message: str) -> None:
    from tests.helpers import make_cfg
    from zoo.errors import ZooError
    from zoo.pipeline import evaluate

    run = tmp_path / "eval"
    with pytest.raises(ZooError, match=message):
        evaluate(make_cfg(run, f"ckpt_path={digits['ckpt']}", *overrides, config_name="evaluate"))
    assert not run.exists()
