"""The digit-scenes generator: deterministic, leak-free, with boxes, masks and captions that agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import build_datamodule
from zoo.data.scenes import IGNORE_INDEX, INK, DigitScenes, SceneOptions, describe, digit_scenes, relation
from zoo.errors import ConfigError

from tests.helpers import make_cfg


def small(**kw):
    args = dict(train_scenes=40, val_scenes=10, test_scenes=20, normalize="none")
    return digit_scenes(**{**args, **kw})


def test_scene_is_a_pure_function_of_seed_split_and_index():
    a, b = small(), small(train_scenes=80)
    for i in (0, 7, 39):
        x, t = a.train[i]
        y, u = b.train[i]
        assert torch.equal(x, y) and torch.equal(t["boxes"], u["boxes"]) and t["caption"] == u["caption"]
    other = small(seed=1)
    assert not torch.equal(a.train[0][0], other.train[0][0])
    assert not torch.equal(a.train[0][0], a.test[0][0])


def test_boxes_masks_and_labels_agree():
    splits = small()
    for i in range(20):
        scene = splits.train.scene(i)
        boxes, labels, mask, image = scene["boxes"], scene["labels"], scene["mask"], scene["image"]
        assert 1 <= len(boxes) <= 3 and len(boxes) == len(labels)
        assert ((labels >= 1) & (labels <= 10)).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes.min() >= 0 and boxes.max() <= 64
        covered = torch.zeros_like(mask, dtype=torch.bool)
        for (x1, y1, x2, y2), label in zip(boxes.long().tolist(), labels.tolist()):
            region = mask[y1:y2, x1:x2]
            assert (region == label).any()  # the digit's ink is inside its box ...
            # ... and the box is tight: every border row/column holds ink of this digit
            assert (region[0] == label).any() and (region[-1] == label).any()
            assert (region[:, 0] == label).any() and (region[:, -1] == label).any()
            covered[y1:y2, x1:x2] = True
        labelled = (mask > 0) & (mask != IGNORE_INDEX)
        assert not (labelled & ~covered).any()  # no ink outside the boxes
        assert torch.equal(labelled, image > INK)
        assert set(mask.unique().tolist()) <= {0, IGNORE_INDEX, *labels.tolist()}


def test_boxes_do_not_overlap():
    splits = small(min_digits=3, max_digits=3)
    for i in range(20):
        boxes = splits.train.scene(i)["boxes"]
        for j in range(len(boxes)):
            for k in range(j + 1, len(boxes)):
                a, b = boxes[j], boxes[k]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_captions_describe_digits_left_to_right():
    assert relation((10, 30), (40, 32)) == "left of"
    assert relation((10, 10), (14, 40)) == "above"
    assert relation((10, 40), (14, 10)) == "below"
    assert describe([7, 3], [(50, 30), (10, 30)]) == "a 3 left of a 7"
    assert describe([1, 8, 4], [(10, 10), (30, 40), (50, 40)]) == "a 1 above a 8 and a 8 left of a 4"
    assert describe([5], [(5, 5)]) == "a 5"
    for i in range(20):
        scene = small().train.scene(i)
        said = {int(w) for w in scene["caption"].split() if w.isdigit()}
        assert said == set((scene["labels"] - 1).tolist())


def test_splits_use_disjoint_digit_images():
    from sklearn.datasets import load_digits

    from zoo.data.digits import stratified_split

    train, val, test = stratified_split(load_digits().target, 0.1, 0.2, 0)
    images = load_digits().images / 16.0
    splits = small()
    assert not set(train) & set(test) and not set(train) & set(val)
    assert torch.equal(splits.train.digits, torch.from_numpy(images[train].astype(np.float32)))
    assert torch.equal(splits.test.digits, torch.from_numpy(images[test].astype(np.float32)))


def test_normalisation_uses_training_statistics():
    splits = digit_scenes(train_scenes=300, val_scenes=0, test_scenes=10)
    images = torch.stack([splits.train[i][0] for i in range(256)])
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-3
    assert splits.mean[0] > 0 and len(splits.mean) == 1


def test_rgb_and_noise_options():
    splits = small(in_chans=3, noise=0.05)
    x, _ = splits.train[0]
    assert x.shape == (3, 64, 64) and torch.equal(x[0], x[2])
    assert 0 < float((x[0] > 0).float().mean()) and float(x.max()) <= 1


@pytest.mark.parametrize("kw, message", [
    (dict(max_digits=9, max_scale=28), "do not reliably fit"),
    (dict(min_digits=0), "min_digits"),
    (dict(min_scale=30, max_scale=20), "min_scale"),
    (dict(num_classes=10), "num_classes=11"),
    (dict(normalize="image_mean"), "^data.normalize=image_mean is for classification images; for digit scenes use channel"),
    (dict(mean=[0.1, 0.2]), r"^data.mean=\[0.1, 0.2\] needs one number"),
    (dict(train_scenes=0), "train_scenes"),
])
def test_bad_options_raise_one_clear_error(kw, message):
    with pytest.raises(ConfigError, match=message):
        small(**kw)


def test_datamodule_collates_images_and_target_lists():
    cfg = {"name": "digit_scenes", "train_scenes": 20, "val_scenes": 8, "test_scenes": 8, "batch_size": 4,
           "eval_batch_size": 8, "num_workers": 0}
    data = build_datamodule(cfg)
    assert data.num_classes == 11 and data.class_names[0] == "background" and data.in_chans == 1
    assert data.sizes() == {"train": 20, "val": 8, "test": 8}
    x, targets = next(iter(data.train))
    assert x.shape == (4, 1, 64, 64) and len(targets) == 4
    assert {"boxes", "labels", "mask", "caption", "image_id"} <= set(targets[0])
    orders = []
    for epoch in (0, 1, 0):  # the shuffle is a function of (seed, epoch)
        data.train.set_epoch(epoch)
        orders.append([t["image_id"] for _, ts in data.train for t in ts])
    assert orders[0] == orders[2] != orders[1] and sorted(orders[0]) == list(range(20))
    with pytest.raises(ConfigError, match=r"^data=digit_scenes does not take data.eval_crop, data.resize_size; drop"):
        build_datamodule({**cfg, "eval_crop": False, "resize_size": 80, "interpolation": None})


@pytest.mark.parametrize("data", ["digit_scenes", "digit_scene_captions", "voc", "voc_seg", "coco", "coco_captions",
                                  "karpathy"])
def test_datasets_with_their_own_targets_select_no_augmentation(data: str) -> None:
    """Flips and crops would have to move boxes, masks and caption words: these data configs choose
    augmentation=none, and an augmentation given anyway is refused, not dropped."""
    assert dict(make_cfg(Path("unused"), f"data={data}").augmentation) == {"ops": {}}
    assert make_cfg(Path("unused"), f"data={data}", "augmentation=flip_crop").augmentation.ops


def test_an_augmentation_for_samples_with_their_own_targets_is_one_error() -> None:
    cfg = {"name": "digit_scenes", "train_scenes": 4, "val_scenes": 2, "test_scenes": 2, "batch_size": 2,
           "eval_batch_size": 2, "num_workers": 0}
    with pytest.raises(ConfigError, match=r"^augmentation hflip, random_crop does not apply to data=digit_scenes: "
                                          r"its samples carry their own targets"):
        build_datamodule(cfg, {"ops": {"hflip": {"p": 0.5}, "random_crop": {"padding": 4}}})
    assert build_datamodule(cfg, {"ops": {}}).sizes()["train"] == 4


def test_scene_options_fit_check():
    SceneOptions(image_size=64, max_digits=4, max_scale=28).check()
    with pytest.raises(ConfigError):
        DigitScenes(np.zeros((1, 8, 8)), np.zeros(1), 1, SceneOptions(), 0, in_chans=2)


def test_symmetric_and_explicit_statistics():
    raw = small(normalize="none")
    symmetric, explicit = small(normalize="symmetric"), small(normalize="channel", mean=0.2, std=[0.4])
    for split in ("train", "test"):
        x0 = getattr(raw, split)[0][0]
        torch.testing.assert_close(getattr(symmetric, split)[0][0], x0 * 2 - 1)
        torch.testing.assert_close(getattr(explicit, split)[0][0], (x0 - 0.2) / 0.4)
    assert (symmetric.mean, symmetric.std, explicit.mean, explicit.std) == ([0.5], [0.5], [0.2], [0.4])
