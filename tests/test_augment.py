"""Augmentation ops (batched and torchvision v2), presets, and test-time augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from tests.helpers import CONFIG_DIR, FAST, make_cfg
from zoo.cli import check_overrides
from zoo.data.augment import ColorJitter, HorizontalFlip, RandomCrop, RandomResizedCrop, parse_augmentation
from zoo.data.tta import TTAModel, build_tta, center_views, ten_crop_views
from zoo.errors import ConfigError, UnknownNameError
from zoo.pipeline import evaluate, train


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 16, c: int = 3, side: int = 8) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=_gen(1))


def test_hflip_flips_the_chosen_images_only() -> None:
    x = _images()
    out = HorizontalFlip(0.5)(x, _gen())
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert torch.all(flipped ^ kept) and 0 < flipped.sum() < len(x)
    assert torch.equal(HorizontalFlip(1.0)(x, _gen()), x.flip(-1)) and torch.equal(HorizontalFlip(0.0)(x, _gen()), x)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_random_crop_takes_windows_of_the_padded_image(mode: str) -> None:
    x, p = _images(32), 2
    out = RandomCrop(p, mode)(x, _gen())
    torch_mode = {"edge": "replicate"}.get(mode, mode)
    padded = torch.nn.functional.pad(x, (p,) * 4, mode=torch_mode)
    offsets = set()
    for o, full in zip(out, padded):
        hits = [(i, j) for i in range(2 * p + 1) for j in range(2 * p + 1) if torch.equal(full[:, i : i + 8, j : j + 8], o)]
        assert hits, "output is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets vary per image
    v2_out = RandomCrop(p, mode).v2(8)(x[0])
    assert v2_out.shape == (3, 8, 8)


def test_random_resized_crop_and_color_jitter_identities() -> None:
    x = _images()
    identity = RandomResizedCrop(scale=(1, 1), ratio=(1, 1))(x, _gen())
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)
    zoomed = RandomResizedCrop(scale=(0.2, 0.3))(x, _gen())
    assert zoomed.shape == x.shape and not torch.allclose(zoomed, x)
    assert torch.equal(ColorJitter(0, 0, 0)(x, _gen()), x)
    jitter = ColorJitter(0.4, 0.4, 0.4)
    a, b = jitter(x, _gen(3)), jitter(x, _gen(3))
    assert torch.equal(a, b) and not torch.allclose(a, x) and a.min() >= 0 and a.max() <= 1
    gray = x[:, :1].expand(-1, 3, -1, -1)  # saturation leaves grey images grey
    assert torch.allclose(ColorJitter(0, 0, 0.9)(gray, _gen()), gray, atol=1e-6)


def test_v2_ops_match_the_batched_ones_in_kind() -> None:
    image = (torch.rand(3, 40, 30, generator=_gen()) * 255).to(torch.uint8)
    cfg = {"ops": {"random_resized_crop": {"scale": [0.5, 1.0]}, "hflip": {"p": 1.0}, "color_jitter": {"brightness": 0.2},
                   "affine": {"degrees": 5, "translate": 0.1, "scale": [0.9, 1.1]}}}
    ops = parse_augmentation(cfg)
    pipeline = v2.Compose([op.v2(24) for op in ops])
    assert pipeline(image).shape == (3, 24, 24) and pipeline(image).dtype == torch.uint8
    assert [type(t).__name__ for t in pipeline.transforms] == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomAffine"]


def test_augmentation_configs_compose_and_fail_clearly() -> None:
    cfg = make_cfg(Path("/tmp/unused"), "augmentation=[flip_crop,color_jitter]", "augmentation.ops.hflip=null")
    ops = parse_augmentation(dict(cfg.augmentation))
    assert [type(op).__name__ for op in ops] == ["RandomCrop", "ColorJitter"]
    assert check_overrides(["augmentation=[flip_crop,color_jitter]"], CONFIG_DIR) is None
    assert "color_jitter" in (check_overrides(["augmentation=[flip_crop,colour_jitter]"], CONFIG_DIR) or "")
    with pytest.raises(UnknownNameError, match="hflip"):
        parse_augmentation({"ops": {"hflp": {}}})
    with pytest.raises(ConfigError, match="padding >= 0"):
        parse_augmentation({"ops": {"random_crop": {"padding": -1}}})
    with pytest.raises(ConfigError, match="augmentation.ops"):
        parse_augmentation({"hflip": {"p": 0.5}})
    for preset in sorted((CONFIG_DIR / "augmentation").glob("*.yaml")):  # every preset builds
        parse_augmentation(dict(make_cfg(Path("/tmp/unused"), f"augmentation={preset.stem}").augmentation))


class _Probe(nn.Module):
    """Logits that record the views they saw: class 0 scores the mean of the left half, class 1 the right."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        w = x.shape[-1]
        return torch.stack([x[..., : w // 2].mean((1, 2, 3)), x[..., w // 2 :].mean((1, 2, 3))], 1) * 10


def test_ten_crop_views_and_averaging() -> None:
    x = torch.arange(2 * 12 * 12, dtype=torch.float32).view(2, 1, 12, 12) / 288
    views = list(ten_crop_views(8)(x))  # larger than the input: crops of the image itself
    assert len(views) == 10 and all(v.shape == (2, 1, 8, 8) for v in views)
    assert torch.equal(views[0], x[..., :8, :8]) and torch.equal(views[7], x[..., 4:, 4:].flip(-1))
    assert torch.equal(views[8], x[..., 2:10, 2:10])
    small = list(ten_crop_views(12, padding=2)(x))  # at the input size: padded first, centre crop = image
    assert torch.equal(small[8], x) and small[0][..., :2, :].abs().sum() == 0
    rgb = torch.rand(1, 3, 6, 6, generator=_gen())
    black = [-0.5 / 0.25, -0.4 / 0.2, -0.3 / 0.3]  # (0 - mean) / std per channel: what the training crops pad with
    corner = next(iter(build_tta({"name": "ten_crop", "padding": 2}, 6, black)(rgb)))  # the top-left crop
    assert torch.equal(corner[0, :, 2:, 2:], rgb[0, :, :4, :4])
    assert [corner[0, c, :2].unique().tolist() for c in range(3)] == [[b] for b in torch.tensor(black).tolist()]
    probe = _Probe()
    out = TTAModel(probe, ten_crop_views(8))(x)
    expected = torch.stack([probe.__class__.forward(_Probe(), v).softmax(-1) for v in views]).mean(0).log()
    torch.testing.assert_close(out, expected)
    assert len(probe.seen) == 10
    plain = TTAModel(_Probe(), center_views(8))(x)
    torch.testing.assert_close(plain, _Probe()(x[..., 2:10, 2:10]).log_softmax(-1))


def test_ten_crop_without_mirrors_keeps_the_five_crops() -> None:
    x = torch.rand(2, 1, 12, 12, generator=_gen())
    mirrored = list(ten_crop_views(8)(x))
    plain = list(build_tta({"name": "ten_crop", "mirror": False}, 8)(x))
    assert len(plain) == 5 and all(torch.equal(a, b) for a, b in zip(plain, mirrored[::2]))
    probe = _Probe()
    TTAModel(probe, build_tta({"name": "multiscale", "scales": [0.5, 2.0], "views": "full", "mirror": False}, 8))(x)
    assert [v.shape[-1] for v in probe.seen] == [4, 16]
    probe = _Probe()
    TTAModel(probe, build_tta({"name": "multiscale", "scales": [1.0, 1.5], "padding": 2, "mirror": False}, 8))(x)
    assert len(probe.seen) == 10
    with pytest.raises(ConfigError, match="tta.mirror must be true or false"):
        build_tta({"name": "ten_crop", "mirror": "no"}, 8)


def test_flip_tta_symmetrises_and_multiscale_counts_views() -> None:
    x = torch.rand(4, 1, 8, 8, generator=_gen())
    flip = TTAModel(_Probe(), build_tta({"name": "flip"}, 8))(x)
    torch.testing.assert_close(flip, flip.flip(-1).flip(-1))
    torch.testing.assert_close(flip[:, 0], flip[:, 1])  # left/right scores averaged with the mirror: equal
    probe = _Probe()
    TTAModel(probe, build_tta({"name": "multiscale", "scales": [1.0, 1.5], "padding": 2}, 8))(x)
    assert len(probe.seen) == 20 and {v.shape[-1] for v in probe.seen} == {8}
    probe = _Probe()
    TTAModel(probe, build_tta({"name": "multiscale", "scales": [0.5, 2.0], "views": "full"}, 8))(x)
    assert [v.shape[-1] for v in probe.seen] == [4, 4, 16, 16]
    with pytest.raises(ConfigError, match="tta.scales"):
        build_tta({"name": "multiscale", "scales": [0.5], "views": "ten_crop"}, 8)
    with pytest.raises(ConfigError, match="unknown tta"):
        build_tta({"name": "twelve_crop"}, 8)


def test_evaluate_reports_with_and_without_tta(tmp_path: Path) -> None:
    train(make_cfg(tmp_path / "run", *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=5", "test=false"))
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    results = {}
    for tta in ("ten_crop", "multiscale"):
        out = tmp_path / f"eval_{tta}"
        results[tta] = evaluate(make_cfg(out, f"ckpt_path={ckpt}", f"tta={tta}", "split=val", "progress_bar=false", "logger=none",
                                         config_name="evaluate"))
        stored = json.loads((out / "metrics.json").read_text())
        assert set(stored["val"]) == set(stored["val_tta"]) == {"loss", "acc", "acc5"} and stored["tta"]["name"] == tta
        assert stored["val"] == results["ten_crop"]["val"]  # the plain metrics do not depend on the TTA choice
    assert results["ten_crop"]["val_tta"]["loss"] != results["multiscale"]["val_tta"]["loss"]
