"""Faster R-CNN detection: VOC/COCO loading, the pycocotools mAP, the models, training and the entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.detection_fixtures import COCO_IMAGES, make_coco, make_voc
from tests.helpers import FAST, make_cfg
from zoo.data import build_datamodule
from zoo.data.detection import VOC_CLASSES, coco, voc
from zoo.errors import ConfigError, DataNotFoundError
from zoo.metrics.detection import DetectionMAP
from zoo.models import create_model, model_info
from zoo.tasks import build_task

PLAIN = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])  # images in [0, 1]: white where the objects are


def _white_inside(image: torch.Tensor, boxes: torch.Tensor) -> None:
    """The image is white exactly inside the boxes (the fixtures draw each object as a white rectangle)."""
    inside = torch.zeros(image.shape[-2:], dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.round().long().tolist():
        inside[y1:y2, x1:x2] = True
    assert torch.equal(image.amin(0) == 1.0, inside)


# ---- data ----------------------------------------------------------------------------------------------------------


def test_voc_reads_xml_boxes_labels_and_difficult(tmp_path: Path) -> None:
    make_voc(tmp_path)
    splits = voc(root=str(tmp_path), hflip=0.0, **PLAIN)
    assert splits.class_names == ["background", *VOC_CLASSES] and len(splits.train) == 3 and len(splits.test) == 2
    image, target = splits.train[0]
    assert image.shape == (3, 40, 48)
    assert target["boxes"].tolist() == [[4.0, 5.0, 20.0, 30.0], [29.0, 3.0, 44.0, 36.0]]  # 1-based inclusive -> x1 y1 x2 y2
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    _white_inside(image, target["boxes"])
    # image 000002: its difficult dog is left out of training and kept (as iscrowd, ignored) for evaluation
    assert splits.train[1][1]["labels"].tolist() == [VOC_CLASSES.index("cat") + 1]
    val_target = splits.val[0][1]
    assert val_target["labels"].tolist() == [VOC_CLASSES.index("cat") + 1, VOC_CLASSES.index("dog") + 1]
    assert val_target["iscrowd"].tolist() == [0, 1]


def test_voc_training_flip_moves_boxes_with_pixels(tmp_path: Path) -> None:
    make_voc(tmp_path)
    splits = voc(root=str(tmp_path), hflip=1.0, **PLAIN)
    image, target = splits.train[0]
    assert target["boxes"].tolist() == [[28.0, 5.0, 44.0, 30.0], [4.0, 3.0, 19.0, 36.0]]  # width 48
    _white_inside(image, target["boxes"])
    assert splits.test[0][1]["boxes"][0].tolist() == [4.0, 5.0, 20.0, 30.0]  # evaluation images are never flipped


def test_voc_normalisation_options(tmp_path: Path) -> None:
    """The same data.normalize / data.mean / data.std as every dataset; channel defaults to ImageNet's."""
    make_voc(tmp_path)
    plain = voc(root=str(tmp_path), hflip=0.0, normalize="none").train[0][0]
    assert plain.max() == 1.0 and plain.min() >= 0  # the pixels in [0, 1]
    torch.testing.assert_close(voc(root=str(tmp_path), hflip=0.0, normalize="symmetric").train[0][0], plain * 2 - 1)
    imagenet = voc(root=str(tmp_path), hflip=0.0)
    assert (imagenet.mean, imagenet.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    mean = torch.tensor(imagenet.mean).view(3, 1, 1)
    torch.testing.assert_close(imagenet.train[0][0], (plain - mean) / torch.tensor(imagenet.std).view(3, 1, 1))
    assert voc(root=str(tmp_path), mean=0.5, std=0.25).mean == [0.5] * 3
    with pytest.raises(ConfigError, match="data.normalize=image_mean needs in-memory images of one size"):
        voc(root=str(tmp_path), normalize="image_mean")
    with pytest.raises(ConfigError, match="data.mean/data.std apply to data.normalize=channel"):
        voc(root=str(tmp_path), normalize="symmetric", mean=[0.5])


def test_coco_reads_instances_json(tmp_path: Path) -> None:
    make_coco(tmp_path)
    splits = coco(root=str(tmp_path), hflip=0.0, **PLAIN)
    assert splits.class_names == ["background", "car", "kite"] and splits.info["category_ids"] == [3, 7]
    assert len(splits.train) == len(COCO_IMAGES)
    image, target = splits.train[0]
    assert image.shape == (3, 40, 50)
    assert target["boxes"].tolist() == [[4.0, 5.0, 24.0, 15.0], [30.0, 20.0, 42.0, 35.0]]
    assert target["labels"].tolist() == [1, 2]  # category ids 3, 7 -> contiguous labels
    _white_inside(image, target["boxes"])
    assert splits.val[1][1]["iscrowd"].tolist() == [0, 1]
    empty = splits.val[2][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_detection_datamodule_batches_variable_sizes(tmp_path: Path) -> None:
    make_voc(tmp_path)
    cfg = make_cfg(tmp_path / "run", "data=voc", f"data.root={tmp_path}", "data.num_workers=0")
    from omegaconf import OmegaConf

    data = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True))
    images, targets = next(iter(data.train))
    assert isinstance(images, list) and len(images) == 2 and len(targets) == 2  # 40x48 and 48x40: not stackable
    assert data.num_classes == 21 and data.info["max_size"] == 1000


@pytest.mark.parametrize("name, expected", [("voc", "VOCdevkit/VOC2007/Annotations"), ("coco", "coco/annotations/instances_")])
def test_missing_detection_data_names_the_layout(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataNotFoundError, match=expected):
        voc(root=str(tmp_path)) if name == "voc" else coco(root=str(tmp_path))


def test_missing_voc_image_set_is_named(tmp_path: Path) -> None:
    make_voc(tmp_path, sets={"train": ["000001"], "val": ["000002"]})
    with pytest.raises(DataNotFoundError, match=r"ImageSets/Main/test.txt"):
        voc(root=str(tmp_path))


# ---- metric --------------------------------------------------------------------------------------------------------


def _gt() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[5.0, 5, 25, 30]]), "labels": torch.tensor([2])},
    ]


def _perfect(gt: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{**t, "scores": torch.ones(len(t["labels"]))} for t in gt]


def test_map_of_perfect_predictions_is_one() -> None:
    metric = DetectionMAP(["background", "a", "b"])
    metric.update(_perfect(_gt()), _gt())
    m = metric.compute()
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0) and m["map75"] == pytest.approx(1.0)
    assert m["ap/a"] == pytest.approx(1.0) and m["ap/b"] == pytest.approx(1.0)


def test_map_counts_wrong_labels_misses_and_ignores_crowds() -> None:
    metric = DetectionMAP(["background", "a", "b"])
    preds = _perfect(_gt())
    preds[1]["labels"] = torch.tensor([1])  # a false positive of a, a miss of b
    metric.update(preds, _gt())
    m = metric.compute()
    assert m["ap/b"] == pytest.approx(0.5, abs=0.01)  # one of two b found, at top score
    assert m["ap/a"] < 1.0 and m["map"] < 1.0
    # a detection on a crowd (VOC difficult) region is neither a false positive nor a needed hit
    metric.reset()
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1]),
           "iscrowd": torch.tensor([0, 1])}]
    preds = [{"boxes": torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10]]), "labels": torch.tensor([1, 1]),
              "scores": torch.tensor([0.9, 0.8])}]
    metric.update(preds, gt)
    assert metric.compute()["map"] == pytest.approx(1.0)
    metric.reset()
    metric.update([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}], gt)
    assert metric.compute()["map"] == 0.0


def test_map_iou_thresholds() -> None:
    """A box of IoU 0.6 counts at IoU .5 but not at .75: mAP@0.5 = 1, mAP@.5:.95 = 3/10 (thresholds .5, .55, .6)."""
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    pred = [{"boxes": torch.tensor([[0.0, 0, 10, 6]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]
    metric = DetectionMAP(num_classes=2)
    metric.update(pred, gt)
    m = metric.compute()
    assert m["map50"] == pytest.approx(1.0) and m["map75"] == 0.0 and m["map"] == pytest.approx(0.3)


# ---- models --------------------------------------------------------------------------------------------------------


def test_zf_reads_conv5_at_stride_16() -> None:
    x = torch.randn(1, 3, 64, 64)
    zf = create_model("fasterrcnn_zf")
    assert model_info("fasterrcnn_zf")["task"] == "detection" and zf.backbone.reductions == [16]
    assert zf.backbone(x)["0"].shape[-1] == 3  # 64 / 16, less the unpadded conv2's border
    assert all(p.requires_grad for p in zf.parameters())  # the paper fine-tunes all of ZF


@pytest.mark.slow  # VGG16's 138M parameters take ~12 s to initialise
def test_vgg16_reads_conv5_3_at_stride_16_and_fixes_conv1_conv2() -> None:
    x = torch.randn(1, 3, 64, 64)
    vgg = create_model("fasterrcnn_vgg16")
    assert vgg.backbone.reductions == [16] and vgg.backbone(x)["0"].shape[-1] == 4
    frozen = {n.rsplit(".", 1)[0] for n, p in vgg.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {f"body.model.features.{i}" for i in (0, 2, 5, 7)}  # conv1_x, conv2_x: fixed as in the paper


def test_resnet50_fpn_levels_and_frozen_batch_norm() -> None:
    from torchvision.ops import FrozenBatchNorm2d

    model = create_model("fasterrcnn_resnet50_fpn", num_classes=5)
    assert model.backbone.reductions == [4, 8, 16, 32, 64] and model.backbone.out_channels == 256
    body = model.backbone.body.model
    assert isinstance(body.bn1, FrozenBatchNorm2d) and isinstance(body.layer1[0].bn1, FrozenBatchNorm2d)
    assert not isinstance(body.layer2[0].bn1, FrozenBatchNorm2d) and body.layer2[0].conv1.weight.requires_grad
    assert not body.layer1[0].conv1.weight.requires_grad
    body = create_model("fasterrcnn_resnet50_fpn", num_classes=5, frozen_batch_norm=True).backbone.body.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert isinstance(body.layer4[2].bn3, FrozenBatchNorm2d) and body.layer4[2].conv3.weight.requires_grad


def test_bad_detector_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="one anchor size per level"):
        create_model("fasterrcnn_resnet20_fpn", anchor_sizes=[16, 32])
    with pytest.raises(ConfigError, match="roi_op"):
        create_model("fasterrcnn_resnet20", roi_op="warp")
    with pytest.raises(ConfigError, match="trainable_backbone_layers"):
        create_model("fasterrcnn_resnet20", trainable_backbone_layers=9)
    with pytest.raises(ConfigError, match="fpn=true"):
        create_model("fasterrcnn_resnet20", backbone_indices=[2, 3])


def test_backbone_pretrained_loads_a_classifier(tmp_path: Path) -> None:
    classifier = create_model("resnet20", num_classes=10, in_chans=1)
    torch.save(classifier.state_dict(), tmp_path / "resnet20.pt")
    model = create_model("fasterrcnn_resnet20", backbone_pretrained=str(tmp_path / "resnet20.pt"))
    assert torch.equal(model.backbone.body.model.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)


def test_torchvision_coco_detector_checkpoint_loads_and_detects_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's detector file, from where torchvision caches it, gives the same detections; with other
    classes everything but the box predictor loads (fine-tuning a COCO detector)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights, fasterrcnn_resnet50_fpn

    from zoo.transfer import torchvision_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    small = dict(min_size=96, max_size=128, box_score_thresh=0.0, rpn_post_nms_top_n_test=50)
    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, **small).eval()
    with torch.no_grad():  # not the initial values: statistics and a class layer that say something
        for name, buffer in reference.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        reference.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.1)
    path = torchvision_cache_path(weights)
    path.parent.mkdir(parents=True)
    # as in torchvision's file, whose batch norms are all FrozenBatchNorm2d: no num_batches_tracked
    saved = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(saved, path)

    model = create_model("fasterrcnn_resnet50_fpn", pretrained="torchvision:fasterrcnn_resnet50_fpn.COCO_V1", **small).eval()
    image = torch.rand(3, 80, 112)
    # torchvision's detector normalises inside its transform; the zoo's data pipeline normalises before the model
    mean, std = (torch.tensor(v)[:, None, None] for v in (reference.transform.image_mean, reference.transform.image_std))
    with torch.no_grad():
        expected = reference([image])[0]
        got = model([(image - mean) / std])[0]
    assert len(expected["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)

    from zoo.transfer import load_pretrained

    report = load_pretrained(create_model("fasterrcnn_resnet50_fpn", num_classes=4), "torchvision:fasterrcnn_resnet50_fpn.COCO_V1")
    assert sorted(report.reinitialised) == ["roi_heads.box_predictor.bbox_pred.bias", "roi_heads.box_predictor.bbox_pred.weight",
                                            "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight"]
    assert not report.unexpected and len(report.loaded) == len(saved) - 4  # all the rest, under the zoo's names
    assert all(k.endswith("num_batches_tracked") for k in report.missing)


# ---- task and training ---------------------------------------------------------------------------------------------


def _scene_batch(n: int = 8) -> tuple[torch.Tensor, list[dict]]:
    from zoo.data.loaders import collate_samples
    from zoo.data.scenes import digit_scenes

    splits = digit_scenes(train_scenes=n, val_scenes=1, test_scenes=1)
    images, targets, _ = collate_samples([splits.train[i] for i in range(n)])
    return images, targets


def test_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    task = build_task({"name": "detection"}, create_model("fasterrcnn_resnet20"), "detection", num_classes=11)
    batch = _scene_batch(4)
    optimizer = torch.optim.Adam(task.parameters(), lr=2e-3)
    task.train()
    losses = []
    for _ in range(10):
        out = task.training_step(batch)
        assert set(out) == {"loss", "loss/classifier", "loss/box_reg", "loss/objectness", "loss/rpn_box_reg"}
        assert torch.allclose(out["loss"].detach(), sum(v for k, v in out.items() if k != "loss"))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_fpn_detector_trains_every_level() -> None:
    model = create_model("fasterrcnn_resnet20_fpn")
    assert model.backbone.reductions == [2, 4, 8] and model.backbone.names == ["0", "1", "pool"]
    images, targets = _scene_batch(2)
    losses = model(list(images), [{k: t[k] for k in ("boxes", "labels")} for t in targets])
    sum(losses.values()).backward()
    fpn = model.backbone.fpn
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fpn.parameters())
    assert model.backbone.body.model.layer2[0].conv1.weight.grad is not None


def test_task_scores_and_draws_validation_batches() -> None:
    task = build_task({"name": "detection", "num_images": 3}, create_model("fasterrcnn_resnet20"), "detection", num_classes=11)
    task.set_class_names(["background"] + [str(d) for d in range(10)])
    images, targets = _scene_batch(4)
    task.eval()
    task.reset_metrics()
    with torch.no_grad():
        task.validation_step((images, targets))
    metrics = task.compute_metrics()
    assert {"map", "map50", "map75"} <= set(metrics) and all(0 <= v <= 1 for v in metrics.values())
    assert any(k.startswith("ap/") and k[3:].isdigit() for k in metrics)
    grid = task.drawn()
    assert grid.shape == (3, 3, 192, 192) and 0 <= grid.min() and grid.max() <= 1
    assert (grid[:, 1] > grid[:, 0] + 0.5).any()  # green ground-truth boxes are drawn


def test_train_and_evaluate_entry_points_on_digit_scenes(tmp_path: Path) -> None:
    from zoo.pipeline import evaluate, train

    run = tmp_path / "run"
    cfg = make_cfg(run, "experiment=fasterrcnn_digit_scenes", *FAST, "trainer.max_epochs=1", "data.train_scenes=16",
                   "data.val_scenes=8", "data.test_scenes=8", "data.batch_size=8")
    result = train(cfg)
    assert {"map", "map50", "ap/3"} <= set(result["test"])
    assert result["best/val/map"] is not None
    assert "train/loss/objectness" in result["history"][0]
    assert (run / "checkpoints" / "best.pt").is_file() and json.loads((run / "metrics.json").read_text())["test"]
    ev = evaluate(make_cfg(tmp_path / "eval", f"ckpt_path={run}/checkpoints/best.pt", "logger=none", "progress_bar=false",
                           config_name="evaluate"))
    assert ev["test"]["map"] == pytest.approx(result["test"]["map"], abs=1e-6)


def test_train_on_tiny_voc_through_the_pipeline(tmp_path: Path) -> None:
    from zoo.pipeline import train

    make_voc(tmp_path / "data")
    cfg = make_cfg(tmp_path / "run", "data=voc", f"data.root={tmp_path / 'data'}", "model=fasterrcnn_resnet20", "task=detection",
                   "augmentation=none", "data.image_size=48", "data.max_size=64", "data.num_workers=0", "optimizer=adamw",
                   "scheduler=none", *FAST, "trainer.max_epochs=1")
    result = train(cfg)
    assert result["model"] == "fasterrcnn_resnet20" and "map50" in result["test"]
