"""On-disk datasets in their real formats, read through torchvision, on both loading paths."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.data_fixtures import corrupt_idx, make_cifar, make_image_folder, make_mnist, make_svhn
from tests.helpers import run_cli
from zoo.data import build_datamodule
from zoo.data.types import DataModule
from zoo.errors import ConfigError, CorruptDataError, DataNotFoundError

FOLDER_CLASSES = ["cat", "dog", "fox"]


def _cfg(name: str, root: Path, **kw: object) -> dict:
    return {"name": name, "root": str(root), "batch_size": 16, "num_workers": 0, "val_fraction": 0.1, **kw}


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def _pixel_label(x: torch.Tensor, dm: DataModule) -> torch.Tensor:
    """The label written into channel 0 of the fixture images, read back through the normalisation."""
    pixel = x[:, 0].mean(dim=(1, 2)) * dm.std[0] + dm.mean[0]
    return torch.round(pixel * 255 / 20).long()


FORMATS: dict[str, tuple[Callable[[Path, pytest.MonkeyPatch], None], int, int, int]] = {
    # name: (fixture, channels, side, train + val images); one validation image per class
    "mnist": (lambda root, mp: make_mnist(root, gz=True), 1, 28, 100),
    "fashion_mnist": (lambda root, mp: make_mnist(root, folder="FashionMNIST"), 1, 28, 100),
    "cifar10": (lambda root, mp: make_cifar(root, mp), 3, 32, 100),
    "cifar100": (lambda root, mp: make_cifar(root, mp, hundred=True), 3, 32, 200),
    "svhn": (lambda root, mp: make_svhn(root, mp), 3, 32, 100),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_real_formats_load_split_and_normalise(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make, chans, side, n = FORMATS[name]
    make(tmp_path, monkeypatch)
    classes = 100 if name == "cifar100" else 10
    dm = build_datamodule(_cfg(name, tmp_path, image_size=side, val_fraction=classes / n))
    assert (dm.num_classes, dm.in_chans, dm.image_size, len(dm.class_names)) == (classes, chans, side, classes)
    sizes = dm.sizes()
    assert sizes["train"] + sizes["val"] == n and sizes["test"] == 20 and sizes["val"] == classes
    val_x, val_y = _all(dm.val)
    assert torch.equal(torch.bincount(val_y, minlength=classes), torch.ones(classes, dtype=torch.long))  # stratified
    train_x, train_y = _all(dm.train)
    assert train_x.shape[1:] == (chans, side, side) and train_x.dtype == torch.float32
    assert train_x.mean().abs() < 1e-4 and (train_x.std() - 1).abs() < 1e-2  # training statistics
    for x, y in ((train_x, train_y), (val_x, val_y), _all(dm.test)):
        assert torch.equal(_pixel_label(x, dm), y % 12)  # images and labels stay paired
    assert len(list((tmp_path / ".zoo_stats").glob(f"{name}-*.json"))) == 1


def test_mnist_resized_to_three_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist(tmp_path)
    dm = build_datamodule(_cfg("mnist", tmp_path, image_size=32, in_chans=3, normalize="none"))
    x, y = _all(dm.test)
    assert x.shape == (20, 3, 32, 32) and dm.in_chans == 3
    assert torch.equal(x[:, 0], x[:, 2]) and torch.allclose(x[:, :, 4:28, 4:28].mean((2, 3))[:, 0] * 255 / 20, y.float(), atol=0.05)


def test_missing_data_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        build_datamodule(_cfg("cifar10", tmp_path / "nowhere"))
    message = str(info.value)
    assert f"{tmp_path}/nowhere/cifar-10-batches-py" in message and "data.download=true" in message and "\n" not in message
    with pytest.raises(DataNotFoundError, match="train/<class name>"):
        build_datamodule(_cfg("imagefolder", tmp_path, image_size=24))


def test_incomplete_data_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="incomplete or corrupted"):
        build_datamodule(_cfg("cifar10", tmp_path))


@pytest.mark.parametrize("how, file", [("truncate", "train-images-idx3-ubyte"), ("header", "t10k-labels-idx1-ubyte"),
                                       ("gz", "train-labels-idx1-ubyte.gz")])
def test_corrupt_idx_file_is_named(how: str, file: str, tmp_path: Path) -> None:
    make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    corrupt_idx(raw / file.removesuffix(".gz"), how)
    with pytest.raises(CorruptDataError) as info:
        build_datamodule(_cfg("mnist", tmp_path))
    message = str(info.value)
    assert f"cannot read {raw / file} (" in message and "download it again" in message and "\n" not in message
    assert not list(raw.glob(".*.tmp"))


def test_null_data_root_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.root is null; set data.root=<the folder holding the mnist files>"):
        build_datamodule({**_cfg("mnist", tmp_path), "root": None})


def test_statistics_are_cached_per_split_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.data.sources as sources

    make_cifar(tmp_path, monkeypatch)
    first = build_datamodule(_cfg("cifar10", tmp_path))
    cache = list((tmp_path / ".zoo_stats").glob("*.json"))
    assert len(cache) == 1 and json.loads(cache[0].read_text())["stats"]["mean"] == first.mean

    def no_recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(sources, "stats_of", no_recompute)
    assert build_datamodule(_cfg("cifar10", tmp_path)).mean == first.mean
    with pytest.raises(AssertionError, match="recomputed"):  # another split is another key
        build_datamodule(_cfg("cifar10", tmp_path, val_fraction=0.2))


def test_statistics_follow_a_replaced_image(tmp_path: Path) -> None:
    import shutil

    from PIL import Image

    make_image_folder(tmp_path, {"train": 4, "val": 1}, FOLDER_CLASSES)
    cfg = _cfg("imagefolder", tmp_path, image_size=24, val_dir="val")
    first = build_datamodule(cfg)
    assert build_datamodule(cfg).mean == first.mean and len(list((tmp_path / ".zoo_stats").iterdir())) == 1
    Image.new("RGB", (40, 30), (255, 255, 255)).save(tmp_path / "train" / "cat" / "0.png")  # another picture, same name
    second = build_datamodule(cfg)
    assert second.mean != first.mean
    shutil.rmtree(tmp_path / ".zoo_stats")
    assert build_datamodule(cfg).mean == second.mean  # what a run without any cache computes


def test_image_mean_subtraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar(tmp_path, monkeypatch)
    dm = build_datamodule(_cfg("cifar10", tmp_path, normalize="image_mean", val_fraction=0.0))
    x, _ = _all(dm.train)
    assert x.mean(0).abs().max() < 1e-5  # the mean training image is zero everywhere
    assert x.std() > 0.2  # no scaling to unit variance


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_memory_and_dataloader_paths_agree(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "cifar10":
        make_cifar(tmp_path, monkeypatch)
        cfg = _cfg(name, tmp_path)
    else:
        make_image_folder(tmp_path, {"train": 4, "val": 2}, FOLDER_CLASSES)
        cfg = _cfg(name, tmp_path, image_size=24, val_fraction=0.25)
    fast = build_datamodule({**cfg, "in_memory": True})
    loader = build_datamodule({**cfg, "in_memory": False})
    assert type(fast.test).__name__ == "TensorLoader" and type(loader.test).__name__ == "ImageLoader"
    assert fast.sizes() == loader.sizes() and fast.mean == pytest.approx(loader.mean)
    for split in ("val", "test"):
        (xa, ya), (xb, yb) = _all(fast.loader(split)), _all(loader.loader(split))
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)
    aug = {"ops": {"hflip": {"p": 0.5}, "random_crop": {"padding": 2}, "color_jitter": {"brightness": 0.2}}}
    for dm in (build_datamodule({**cfg, "in_memory": True}, aug), build_datamodule({**cfg, "in_memory": False}, aug)):
        x, y = next(iter(dm.train))
        assert x.shape[1:] == (3, dm.image_size, dm.image_size) and x.dtype == torch.float32 and len(y) == len(x)


def test_image_folder_layout(tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"train": 4, "val": 2}, FOLDER_CLASSES, size=(40, 30))
    make_image_folder(tmp_path / "extra", {"test": 1}, FOLDER_CLASSES[1:])  # a test folder lacking "cat"
    (tmp_path / "test").symlink_to(tmp_path / "extra" / "test")
    dm = build_datamodule(_cfg("imagefolder", tmp_path, image_size=24, val_dir="val", test_dir="test", resize_size=None))
    assert dm.class_names == FOLDER_CLASSES and dm.num_classes == 3
    assert dm.sizes() == {"train": 12, "val": 6, "test": 2}
    x, y = _all(dm.test)
    assert x.shape == (2, 3, 24, 24) and y.tolist() == [1, 2]  # labels follow the training folder
    assert _pixel_label(x, dm).tolist() == [0, 1]  # the fixture wrote this folder's classes as 0, 1
    wide = build_datamodule(_cfg("imagefolder", tmp_path, image_size=24, val_dir="val", eval_crop=False, in_memory=False))
    assert next(iter(wide.val))[0].shape[-2:] == (27, 27)  # 24 / 0.875, uncropped for test-time augmentation
    with pytest.raises(ConfigError, match="data.num_classes=5"):
        build_datamodule(_cfg("imagefolder", tmp_path, image_size=24, val_dir="val", num_classes=5))


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named(workers: int, tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"train": 3, "val": 1}, FOLDER_CLASSES)
    bad = tmp_path / "train" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    dm = build_datamodule(_cfg("imagefolder", tmp_path, image_size=16, in_memory=False, num_workers=workers,
                               normalize="none", val_fraction=0.0))
    with pytest.raises(CorruptDataError) as info:
        list(dm.train)
    message = str(info.value)
    assert str(bad) in message and "data.skip_corrupt=true" in message and "\n" not in message


def test_corrupt_images_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_image_folder(tmp_path, {"train": 3, "val": 1}, FOLDER_CLASSES)
    for name in ("cat/0.png", "fox/2.png"):
        (tmp_path / "train" / name).write_text("not an image")
    cfg = _cfg("imagefolder", tmp_path, image_size=16, skip_corrupt=True, val_fraction=0.0, normalize="none")
    with caplog.at_level(logging.WARNING):
        dm = build_datamodule({**cfg, "in_memory": False})
        caplog.clear()
        x, _ = _all(dm.train)
    assert len(x) == 7 and "skipped 2 unreadable image(s) in the train split" in caplog.text
    assert build_datamodule({**cfg, "in_memory": True}).train.x.shape[0] == 7


@pytest.mark.slow  # the same message in-process: test_missing_data_names_the_directory
def test_missing_data_on_the_command_line(tmp_path: Path) -> None:
    proc = run_cli("train.py", "data=cifar10", f"data.root={tmp_path}", "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cifar-10-batches-py" in errors[0] and "data.download=true" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("data", ["cifar10", "imagefolder"])
def test_training_runs_on_both_paths(data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import FAST, make_cfg
    from zoo.models import create_model
    from zoo.models.base import count_parameters
    from zoo.pipeline import train

    if data == "cifar10":
        make_cifar(tmp_path / "data", monkeypatch)
        extra = ["augmentation=[flip_crop,color_jitter]"]
    else:  # DataLoader path; the class count comes from the folders
        make_image_folder(tmp_path / "data", {"train": 6, "val": 2}, FOLDER_CLASSES)
        extra = ["augmentation=random_resized_crop", "data.in_memory=false", "data.val_fraction=0.2"]
    result = train(make_cfg(tmp_path / "run", *FAST, "trainer.max_epochs=1", f"data={data}", f"data.root={tmp_path / 'data'}",
                            "data.num_workers=0", "data.batch_size=8", *extra))
    classes = 10 if data == "cifar10" else 3
    assert result["epochs_run"] == 1 and set(result["test"]) >= {"loss", "acc"}
    assert result["dataset"] == data
    assert result["params"] == count_parameters(create_model("lenet5", num_classes=classes, in_chans=3))


def _mnist_pixels(root: Path) -> torch.Tensor:
    """The official MNIST test images of the fixture in [0, 1], as torchvision reads them."""
    from torchvision.datasets import MNIST

    return MNIST(str(root), train=False).data[:, None].float() / 255


@pytest.mark.parametrize("in_memory", [True, False])
def test_mnist_symmetric_and_explicit_statistics(in_memory: bool, tmp_path: Path) -> None:
    make_mnist(tmp_path)
    pixels = _mnist_pixels(tmp_path)
    symmetric = build_datamodule(_cfg("mnist", tmp_path, image_size=28, normalize="symmetric", in_memory=in_memory))
    torch.testing.assert_close(_all(symmetric.test)[0], pixels * 2 - 1)
    assert (symmetric.mean, symmetric.std) == ([0.5], [0.5])
    explicit = build_datamodule(_cfg("mnist", tmp_path, image_size=28, mean=[0.2], std=0.4, in_memory=in_memory))
    torch.testing.assert_close(_all(explicit.test)[0], (pixels - 0.2) / 0.4)
    assert (explicit.mean, explicit.std) == ([0.2], [0.4])
    assert not (tmp_path / ".zoo_stats").exists()  # both given: no statistics pass
    half = build_datamodule(_cfg("mnist", tmp_path, image_size=28, mean=0.2, in_memory=in_memory))
    computed = build_datamodule(_cfg("mnist", tmp_path, image_size=28, in_memory=in_memory))
    assert half.mean == [0.2] and half.std == pytest.approx(computed.std) and computed.mean != [0.2]


@pytest.mark.parametrize(("kw", "match"), [
    (dict(mean=[0.1, 0.2]), r"^data.mean=\[0.1, 0.2\] needs one number; e.g. data.mean=\[0.5\]$"),
    (dict(std=[0.0]), r"^data.std=\[0.0\] needs one number, all > 0"),
    (dict(mean=0.1, normalize="image_mean"), r"^data.mean/data.std apply to data.normalize=channel, not image_mean"),
])
def test_bad_explicit_statistics(kw: dict, match: str, tmp_path: Path) -> None:
    make_mnist(tmp_path)
    with pytest.raises(ConfigError, match=match):
        build_datamodule(_cfg("mnist", tmp_path, image_size=28, **kw))


def test_cifar_mean_per_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cifar(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"needs 1 or 3 numbers \(one per channel\)"):
        build_datamodule(_cfg("cifar10", tmp_path, mean=[0.1, 0.2]))
    dm = build_datamodule(_cfg("cifar10", tmp_path, mean=[0.1, 0.2, 0.3], std=[0.5]))
    assert (dm.mean, dm.std) == ([0.1, 0.2, 0.3], [0.5] * 3)


def test_statistics_pass_shows_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    import zoo.data.sources as sources
    import zoo.data.stats as stats

    make_image_folder(tmp_path, {"train": 10, "val": 1}, FOLDER_CLASSES)  # 30 training images
    monkeypatch.setattr(sources, "DECODE_BATCH", 4)
    cfg = _cfg("imagefolder", tmp_path, image_size=16, val_dir="val", in_memory=False)
    with caplog.at_level(logging.INFO, logger="zoo.data.stats"):
        build_datamodule(cfg)  # stderr is not a terminal here: log lines
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("normalisation statistics:")]
    assert lines[0] == "normalisation statistics: 30 images to read"
    assert lines[1:] == [f"normalisation statistics: {n}/30 images ({100 * n // 30}%)" for n in (4, 8, 12, 16, 20, 24, 28, 30)]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo.data.stats"):
        build_datamodule(cfg)  # cached: no pass
    assert not [r for r in caplog.records if "images" in r.getMessage()]
    monkeypatch.setattr(stats, "on_terminal", lambda: True)
    capsys.readouterr()
    build_datamodule({**cfg, "image_size": 12})  # another key: a pass, as a tqdm bar on stderr
    err = capsys.readouterr().err
    assert "normalisation statistics:" in err and "/30 [" in err and "img/s" in err
