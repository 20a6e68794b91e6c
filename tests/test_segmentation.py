"""FCN, the dense CRF, segmentation metrics, the segmentation task and the VOC dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import FAST, make_cfg
from zoo.data import build_datamodule
from zoo.errors import ConfigError, DataNotFoundError
from zoo.metrics.segmentation import SegmentationMetrics, boundary_band, iou_per_class
from zoo.models import create_model
from zoo.models.crf import DenseCRF
from zoo.models.fcn import FCN, Upsample
from zoo.pipeline import evaluate, train

# ---- dense CRF ---------------------------------------------------------------------------------------------------------


def _example(seed: int = 0, size: tuple[int, int] = (12, 10), labels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, labels, *size, generator=g) * 2, torch.rand(2, 1, *size, generator=g)


def test_crf_with_zero_pairwise_weights_returns_the_unary_argmax() -> None:
    logits, image = _example()
    crf = DenseCRF(4, w1=0.0, w2=0.0, iterations=5)
    log_q = crf(logits, image)
    assert torch.equal(log_q.argmax(1), logits.argmax(1))
    assert torch.allclose(log_q, F.log_softmax(logits, 1), atol=1e-6)


@pytest.mark.parametrize("method", ["lattice", "window", "exact"])
def test_mean_field_free_energy_does_not_increase(method: str) -> None:
    logits, image = _example(1)
    crf = DenseCRF(4, w1=3.0, w2=2.0, theta_alpha=3.0, theta_beta=30.0, theta_gamma=1.0, method=method, window=2)
    energies = [crf.free_energy(logits, image, crf(logits, image, iterations=t)) for t in range(6)]
    for before, after in zip(energies, energies[1:]):
        assert torch.all(after <= before + 1e-4)
    assert torch.all(energies[-1] < energies[0] - 1.0)  # and the pairwise terms do change the marginals


def test_local_window_covering_the_image_equals_all_pairs() -> None:
    logits, image = _example(2, size=(7, 9))
    kwargs = dict(w1=2.0, w2=1.0, theta_alpha=3.0, theta_beta=40.0, theta_gamma=1.5, iterations=4)
    local, dense = DenseCRF(4, method="window", window=8, **kwargs), DenseCRF(4, method="exact", **kwargs)
    assert torch.allclose(local(logits, image), dense(logits, image), atol=1e-4)


@pytest.mark.parametrize("method", ["lattice", "window", "exact"])
def test_gradients_flow_through_the_trainable_crf_layer(method: str) -> None:
    """To the unaries, the kernel weights and the compatibility, whichever message passing (the lattice's own
    backward included)."""
    logits, image = _example(3)
    logits.requires_grad_(True)
    crf = DenseCRF(4, w1=1.0, w2=1.0, theta_alpha=3.0, theta_beta=30.0, trainable=True, learn_compatibility=True,
                   method=method)
    target = torch.randint(0, 4, (2, 12, 10), generator=torch.Generator().manual_seed(0))
    F.nll_loss(crf(logits, image), target).backward()
    for grad in (logits.grad, crf.log_weights.grad, crf.compatibility.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["lattice", "window", "exact"])
def test_crf_removes_label_noise_along_image_edges(method: str) -> None:
    """Two flat regions with noisy unaries: the bilateral kernel restores the regions' labels."""
    image = torch.zeros(1, 1, 16, 16)
    image[..., 8:] = 1.0
    truth = (image[:, 0] > 0.5).long()
    g = torch.Generator().manual_seed(0)
    logits = F.one_hot(truth, 2).permute(0, 3, 1, 2).float() * 1.0 + torch.randn(1, 2, 16, 16, generator=g) * 1.2
    before = (logits.argmax(1) == truth).float().mean()
    crf = DenseCRF(2, w1=5.0, w2=0.5, theta_alpha=4.0, theta_beta=10.0, method=method)
    after = (crf(logits, image).argmax(1) == truth).float().mean()
    assert before < 0.9 and after > 0.99


def test_crf_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="theta"):
        DenseCRF(3, theta_beta=0.0)
    with pytest.raises(ConfigError, match="differ"):
        DenseCRF(3)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 5, 4))


# ---- metrics -----------------------------------------------------------------------------------------------------------


def test_segmentation_metrics_on_known_inputs() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 2, 0]]])
    m = SegmentationMetrics(3, ignore_index=255, boundary_width=1)
    m.update(pred, target)
    out = m.compute()
    # class 0: TP 3, FP 0, FN 1 -> 3/4; class 1: TP 2, FP 1, FN 1 -> 2/4; class 2: TP 0, FP 1 -> 0
    assert out["iou/0"] == pytest.approx(0.75) and out["iou/1"] == pytest.approx(0.5) and out["iou/2"] == 0.0
    assert out["miou"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert out["pixel_acc"] == pytest.approx(5 / 7)  # the ignored pixel does not count
    assert out["mean_acc"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # classes present in the truth
    assert torch.isnan(iou_per_class(torch.zeros(2, 2, dtype=torch.long))).all()


def test_boundary_band_marks_pixels_near_label_changes() -> None:
    target = torch.zeros(1, 1, 9, dtype=torch.long)
    target[..., 5:] = 3
    band = boundary_band(target, 2)[0, 0]
    assert band.tolist() == [False, False, False, True, True, True, True, False, False]


# ---- FCN ---------------------------------------------------------------------------------------------------------------


def test_upsample_starts_as_bilinear_interpolation() -> None:
    x = torch.randn(1, 3, 5, 6)
    up = Upsample(3, 4)(x)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    assert up.shape == ref.shape
    assert torch.allclose(up[..., 4:-4, 4:-4], ref[..., 4:-4, 4:-4], atol=1e-5)  # borders: zero padding


@pytest.mark.parametrize("name,strides", [("fcn32s_small", [16]), ("fcn16s_small", [8, 16]), ("fcn8s_small", [4, 8, 16])])
def test_small_fcns_give_input_sized_scores(name: str, strides: list[int]) -> None:
    model = create_model(name, num_classes=11, in_chans=1)
    assert model.strides == strides
    for size in ((64, 64), (50, 71)):
        assert model(torch.randn(2, 1, *size)).shape == (2, 11, *size)


@pytest.mark.slow
def test_fcn8s_vgg16_taps_pool3_pool4_and_matches_the_paper_size() -> None:
    model = create_model("fcn8s_vgg16")
    assert sum(p.numel() for p in model.parameters()) == 134_489_759  # ~134M in Long et al.
    assert [f.module for f in model.backbone.feature_info] == ["features.15", "features.22", "features.30"]
    assert model.pool_factors == [2, 2, 1]  # conv3_3 and conv4_3 pooled: pool3 and pool4
    assert model(torch.randn(1, 3, 70, 90)).shape == (1, 21, 70, 90)


def test_fcn_on_resnet_taps_layer2_and_layer3() -> None:
    model = FCN("resnet18", num_classes=5, skips=2, head_width=0)
    assert [f.module for f in model.backbone.feature_info] == ["layer2", "layer3", "layer4"]
    assert model.pool_factors == [1, 1, 1] and model.strides == [8, 16, 32]
    assert model(torch.randn(1, 3, 70, 90)).shape == (1, 5, 70, 90)


def test_fcn_skips_start_as_no_ops_and_crf_layer_returns_log_marginals() -> None:
    model = create_model("fcn8s_small", crf={"w1": 1.0, "window": 2, "iterations": 3, "trainable": True})
    x = torch.randn(2, 1, 32, 32)
    for score in model.score_skips:
        assert score.weight.abs().sum() == 0
    out = model(x)
    assert torch.allclose(out.exp().sum(1), torch.ones(2, 32, 32), atol=1e-5)
    F.cross_entropy(out, torch.randint(0, 11, (2, 32, 32))).backward()
    assert model.crf.log_weights.grad is not None and model.score.weight.grad.abs().sum() > 0


def test_fcn_convolutionalises_a_pretrained_vgg_classifier(tmp_path: Path) -> None:
    vgg = create_model("vgg16_bn_small", num_classes=10, in_chans=1)
    torch.save(vgg.state_dict(), tmp_path / "vgg.pt")
    fcn = create_model("fcn8s_small", backbone_pretrained=str(tmp_path / "vgg.pt"), head_width=256, head_kernel=1)
    assert torch.equal(fcn.head[0].weight.flatten(1), vgg.classifier[0].weight)
    assert torch.equal(fcn.head[3].bias, vgg.classifier[3].bias)
    conv = fcn.backbone.model.features[0]
    assert torch.equal(conv.weight, vgg.features[0].weight)


def test_fcn_rejects_bad_skips() -> None:
    with pytest.raises(ConfigError, match="skips"):
        FCN("vgg16_bn_small", skips=3)
    with pytest.raises(ConfigError, match="skip_stages"):
        create_model("fcn8s_small", skip_stages=[3, 2])


# ---- task, pipeline, data ----------------------------------------------------------------------------------------------

SCENES = ["data.train_scenes=64", "data.val_scenes=8", "data.test_scenes=8", "data.image_size=32", "data.min_scale=8",
          "data.max_scale=14", "trainer.max_epochs=2"]


def test_fcn8s_trains_on_digit_scenes_and_evaluates_with_crf(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(make_cfg(run_dir, "experiment=fcn8s_digit_scenes", *FAST, *SCENES, "logger=tensorboard", "optimizer.lr=0.01"))
    history = result["history"]
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    test = result["test"]
    assert {"miou", "pixel_acc", "boundary_acc", "iou/0", "miou_crf", "boundary_acc_crf", "crf_ms_per_image"} <= set(test)
    assert "val/miou" in history[0] and "val/miou_crf" not in history[0]  # the CRF runs at the final evaluation
    assert 0.0 <= test["miou"] <= 1.0 and test["pixel_acc"] > 0.8  # mostly background is already right
    assert json.loads((run_dir / "metrics.json").read_text())["best/val/miou"] == max(h["val/miou"] for h in history)

    out = tmp_path / "eval"
    metrics = evaluate(make_cfg(out, f"ckpt_path={run_dir}/checkpoints/best.pt", "progress_bar=false", config_name="evaluate"))
    assert metrics["test"]["miou"] == pytest.approx(test["miou"], abs=1e-6)
    assert metrics["test"]["miou_crf"] == pytest.approx(test["miou_crf"], abs=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    image = acc.Images("val/segmentation")[0]
    assert image.height > 4 * 32  # input, prediction, prediction + CRF, ground truth rows


def test_task_evaluates_variable_size_images_one_by_one_with_and_without_crf() -> None:
    from zoo.tasks.segmentation import SegmentationTask

    task = SegmentationTask(create_model("fcn8s_small", num_classes=3, in_chans=1), 3, crf={"window": 2}).eval()
    task.final_evaluation = True
    images = [torch.randn(1, 20, 24), torch.randn(1, 28, 16)]
    targets = [{"mask": torch.randint(0, 3, image.shape[-2:])} for image in images]
    targets[0]["mask"][:4] = 255
    task.reset_metrics()
    with torch.no_grad():
        task.validation_step((images, targets))
    metrics = task.compute_metrics()
    assert task.metrics.confusion.matrix.sum() == 20 * 24 - 4 * 24 + 28 * 16  # ignored pixels left out
    assert {"miou", "miou_crf", "iou/0", "iou_crf/0", "crf_ms_per_image"} <= set(metrics)
    loss = task.training_step((images, targets))["loss"]
    assert loss.requires_grad and torch.isfinite(loss)


def _write_voc(root: Path, ids: dict[str, list[str]]) -> None:
    from PIL import Image

    folder = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, image_id in enumerate(sorted({i for v in ids.values() for i in v})):
        h, w = 40 + 4 * k, 48
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[10:20, 10:30], mask[9, 10:30] = 15, 255  # a person with its boundary
        png = Image.fromarray(mask, mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0] * 128)
        png.save(folder / "SegmentationClass" / f"{image_id}.png")
    for split, names in ids.items():
        (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")


def test_voc_segmentation_layout_crops_and_masks(tmp_path: Path) -> None:
    _write_voc(tmp_path, {"train": ["a", "b", "c"], "val": ["d", "e"]})
    cfg = {"name": "voc_seg", "root": str(tmp_path), "batch_size": 2, "eval_batch_size": 2, "num_workers": 0, "crop_size": 32}
    data = build_datamodule(cfg)
    assert data.num_classes == 21 and data.in_chans == 3 and data.sizes() == {"train": 3, "val": 2, "test": 2}
    images, targets = next(iter(data.train))
    assert images.shape == (2, 3, 32, 32) and targets[0]["mask"].shape == (32, 32)
    images, targets = next(iter(data.val))
    assert isinstance(images, list) and images[0].shape[-2:] != images[1].shape[-2:]  # whole images
    mask = targets[0]["mask"]
    assert set(mask.unique().tolist()) == {0, 15, 255} and int((mask == 15).sum()) == 200


@pytest.mark.slow
def test_fcn_trains_on_voc_layout_with_variable_size_evaluation(tmp_path: Path) -> None:
    _write_voc(tmp_path / "voc", {"train": ["a", "b"], "val": ["c", "d"]})
    result = train(make_cfg(tmp_path / "run", "model=fcn8s_small", "data=voc_seg", f"data.root={tmp_path / 'voc'}",
                            "task=segmentation", "augmentation=none", "data.crop_size=32", "data.num_workers=0",
                            "data.batch_size=2", "model.input_size=32", *FAST))
    assert 0.0 <= result["test"]["miou"] <= 1.0 and "iou/15" in result["test"]


def test_voc_missing_root_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="set data.root"):
        build_datamodule({"name": "voc_seg", "root": str(tmp_path / "nowhere"), "batch_size": 2})
