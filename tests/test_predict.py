"""Predictions of classifiers (issue 25): ``python -m zoo predict``, ``zoo.load_model`` and evaluate.py's
``predictions_<split>.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import zoo
from tests.helpers import make_cfg, one_error
from zoo.__main__ import main
from zoo.trained import data_config, load_classifier, load_image


def test_predict_prints_the_topk_of_each_image_and_writes_csv_and_json(lenet5_digits: dict[str, Any], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, files = str(lenet5_digits["ckpt"]), lenet5_digits["files"]
    for out in (tmp_path / "p.csv", tmp_path / "p.json"):
        assert main(["predict", ckpt, str(files[0].parent), "--topk", "3", "--out", str(out)]) == 0  # a directory: its images
        lines = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[0] for line in lines] == [str(f) for f in sorted(files)]  # not the run/ directory
        pairs = [line.split("\t")[1].split("  ") for line in lines]
        assert all(len(p) == 3 for p in pairs)
        probs = [[float(x.split()[1]) for x in p] for p in pairs]
        assert all(p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-3 for p in probs)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(rows[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2", "class_3", "probability_3"]
    assert json.loads((tmp_path / "p.json").read_text())[0]["class_1"] == rows[0]["class_1"]
    right = sum(row["class_1"] == str(label) for row, label in zip(rows, lenet5_digits["labels"]))
    assert right >= 4  # the trained LeNet-5 reads most of them


def test_predict_refuses_bad_input_with_one_line_and_writes_nothing(lenet5_digits: dict[str, Any], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, image = str(lenet5_digits["ckpt"]), str(lenet5_digits["files"][0])
    out = ["--out", str(tmp_path / "p.csv")]
    one_error(capsys, ["predict", ckpt, str(tmp_path / "nope.png"), *out], "image file not found")
    one_error(capsys, ["predict", str(tmp_path / "nope.pt"), image, *out], "checkpoint not found")
    torch.save({"model": {}}, tmp_path / "other.pt")
    one_error(capsys, ["predict", str(tmp_path / "other.pt"), image, *out], "is not a zoo classifier checkpoint")
    one_error(capsys, ["predict", ckpt, image, "--topk", "0", *out], "--topk must be in 1..10")
    one_error(capsys, ["predict", ckpt, image, "--topk", "11", *out], "--topk must be in 1..10")
    (tmp_path / "empty").mkdir()
    one_error(capsys, ["predict", ckpt, str(tmp_path / "empty"), *out], "no image files in directory")
    one_error(capsys, ["predict", ckpt, image, "--out", str(tmp_path / "p.txt")], "use a .csv or .json file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "other.pt"]


def test_load_model_is_ready_for_inference_with_its_preprocessing(lenet5_digits: dict[str, Any]) -> None:
    model = zoo.load_model(lenet5_digits["ckpt"])
    assert not model.training
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == "lenet5" and cfg["input_size"] == (1, 32, 32) and cfg["num_classes"] == 10
    assert cfg["label_names"] == [str(i) for i in range(10)] and len(cfg["mean"]) == len(cfg["std"]) == 1
    classifier, state = load_classifier(lenet5_digits["ckpt"], "test")
    x = load_image(lenet5_digits["files"][0], state)
    with torch.no_grad():
        assert torch.equal(model(x), classifier(x))


def test_evaluate_writes_per_sample_predictions(lenet5_digits: dict[str, Any], tmp_path: Path) -> None:
    from zoo.pipeline import evaluate

    result = evaluate(make_cfg(tmp_path / "eval", f"ckpt_path={lenet5_digits['ckpt']}", "split=val", "progress_bar=false",
                               "logger=none", config_name="evaluate"))
    path = tmp_path / "eval" / "predictions_val.csv"
    assert result["predictions"] == [str(path)]
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["index", "target", "predicted", "probability",
                             *[f"{k}_{r}" for r in range(1, 6) for k in ("class", "probability")]]
    matrix = torch.tensor(result["confusion_matrix"])
    assert len(rows) == int(matrix.sum()) and [int(r["index"]) for r in rows] == list(range(len(rows)))
    correct = sum(r["target"] == r["predicted"] for r in rows)
    assert correct == int(matrix.diagonal().sum())
    assert abs(correct / len(rows) - result["val"]["acc"]) < 1e-9
    assert all(r["predicted"] == r["class_1"] and float(r["probability"]) >= float(r["probability_2"]) for r in rows)


def test_load_model_rebuilds_the_model_of_another_task(tmp_path: Path) -> None:
    from zoo.pipeline import train
    from zoo.trained import rebuild_model, read_checkpoint

    train(make_cfg(tmp_path / "run", "experiment=dae_digits", "trainer.max_epochs=1", "logger=none", "test=false",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "callbacks.progress.mode=none"))
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    model = zoo.load_model(ckpt)
    assert not model.training and type(model).__name__ == type(rebuild_model(read_checkpoint(ckpt, "test"))).__name__
    channels, height, width = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        out = model(torch.randn(2, channels, height, width))
    assert out.shape == (2, channels, height, width)  # a denoising autoencoder reconstructs its input


def test_an_image_file_is_prepared_as_evaluation_prepared_the_data(tmp_path: Path) -> None:
    """Short side to data.resize_size, then the central crop, the data's interpolation and statistics: a file
    of the test split through ``load_image`` is the tensor evaluation fed the model (a 40 x 30 photo, 24 px
    crops of a 32 px short side). Checkpoints without the stored geometry keep the whole-image resize."""
    from tests.data_fixtures import make_image_folder
    from zoo.data import build_datamodule

    make_image_folder(tmp_path / "photos", {"train": 3, "val": 1, "test": 1}, ["cat", "dog"], size=(40, 30))
    data = build_datamodule({"name": "imagefolder", "root": str(tmp_path / "photos"), "image_size": 24, "resize_size": 32,
                             "interpolation": "bicubic", "in_memory": False, "batch_size": 2, "eval_batch_size": 2,
                             "num_workers": 0, "val_dir": "val", "test_dir": "test"})
    state = {"config": {"data": {"image_size": 24}, "model": {"name": "resnet18", "input_size": 24}},
             "data_info": {"mean": data.mean, "std": data.std, "num_classes": 2, "class_names": data.class_names,
                           "info": data.info}}
    assert data_config(state)["crop_pct"] == 24 / 32 and data_config(state)["interpolation"] == "bicubic"
    x, _ = next(iter(data.test))
    files = sorted((tmp_path / "photos" / "test").rglob("*.png"))
    assert torch.allclose(load_image(files[0], state)[0], x[0], atol=1e-5)
    del state["data_info"]["info"]
    assert load_image(files[0], state).shape == (1, 3, 24, 24) and data_config(state)["crop_pct"] == 1.0
