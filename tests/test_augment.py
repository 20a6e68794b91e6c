"""Augmentation ops (batched and torchvision v2), presets, and test-time augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torchvision.transforms import v2

from tests.helpers import CONFIG_DIR, FAST, make_cfg
from zoo.cli import check_overrides
from zoo.data import build_datamodule
from zoo.data.augment import (AutoAugment, BatchMix, ColorJitter, Compose, CutMix, HorizontalFlip, MixUp, RandAugment,
                              RandomCrop, RandomErasing, RandomResizedCrop, Stages, TrivialAugment, parse_augmentation)
from zoo.data.loaders import TensorLoader
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


NEW_PRESETS = ("mixup", "cutmix", "randaugment", "trivialaugment", "autoaugment", "random_erasing")


def _labelled(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` distinct random images and ``n`` distinct labels (so a mixed target shows both weights)."""
    return torch.rand(n, 1, 16, 16, generator=_gen(2)), torch.arange(n)


def test_mixup_targets_and_images_are_the_same_convex_combination() -> None:
    x, y = _labelled()
    out, target = BatchMix([MixUp(0.2)], num_classes=10)(x, y, _gen())
    assert target.shape == (10, 10) and torch.allclose(target.sum(1), torch.ones(10))
    lam = target[0, 0]  # one lam per batch, each image mixed with its neighbour (v2.MixUp's roll by one)
    assert 0 <= lam <= 1 and target.min() >= 0
    expected = lam * torch.eye(10) + (1 - lam) * torch.eye(10).roll(1, 0)
    torch.testing.assert_close(target, expected)
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.roll(1, 0))
    again = BatchMix([MixUp(0.2)], num_classes=10)(x, y, _gen())  # a function of the generator
    assert torch.equal(again[1], target)


def test_cutmix_label_weight_is_the_pasted_area_fraction() -> None:
    x, y = _labelled()
    lams = set()
    for seed in range(5):
        out, target = BatchMix([CutMix(1.0)], num_classes=10)(x, y, _gen(seed))
        assert torch.allclose(target.sum(1), torch.ones(10))
        pasted = (out != x).all(1)  # (N, H, W): pixels from the neighbour
        assert torch.equal(out[pasted.unsqueeze(1).expand_as(out)], x.roll(1, 0)[pasted.unsqueeze(1).expand_as(out)])
        fraction = pasted.float().mean((1, 2))
        torch.testing.assert_close(1 - target[torch.arange(10), y], fraction)
        torch.testing.assert_close(target[torch.arange(10), y.roll(1)], fraction)
        lams.add(round(float(fraction[0]), 4))
    assert len(lams) > 1


def test_mixup_or_cutmix_per_batch() -> None:
    x, y = _labelled()
    mix = BatchMix([MixUp(0.2), CutMix(1.0)], num_classes=10)
    kinds = set()
    for seed in range(12):
        out, target = mix(x, y, _gen(seed))
        lam = target[0, 0]
        kinds.add("mixup" if torch.allclose(out, lam * x + (1 - lam) * x.roll(1, 0)) else "cutmix")
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize("op", [RandAugment(), TrivialAugment(), AutoAugment("svhn"), AutoAugment("cifar10")],
                         ids=["randaugment", "trivialaugment", "autoaugment_svhn", "autoaugment_cifar10"])
def test_policies_draw_their_own_operation_for_every_image(op: RandAugment) -> None:
    image = torch.rand(1, 1, 16, 16, generator=_gen(4))
    batch = image.expand(32, -1, -1, -1).contiguous()  # one grey image 32 times
    state = torch.get_rng_state()
    out = op(batch, _gen())
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert out.shape == batch.shape and out.dtype == batch.dtype and 0 <= out.min() and out.max() <= 1
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 8, "the images of a batch got the same operation"
    assert torch.equal(op(batch, _gen()), out)  # reproducible from the loader's generator
    assert op.v2(16)((image[0] * 255).to(torch.uint8)).shape == (1, 16, 16)  # the DataLoader path's transform


def test_random_erasing_erases_one_rectangle_within_the_scale_range() -> None:
    x = torch.rand(64, 1, 32, 32, generator=_gen(5)) + 1  # normalised images with no zero pixel
    scale = (0.05, 0.2)
    op = RandomErasing(p=1.0, scale=scale, value=0.0)
    assert op.stage == "normalized"
    out = op(x, _gen())
    boxes = set()
    for o in out[:, 0]:
        erased = o == 0
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        assert len(rows), "nothing erased with p=1"
        box = erased[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and int(erased.sum()) == box.numel()  # one solid rectangle
        assert scale[0] * 0.8 <= box.numel() / erased.numel() <= scale[1] * 1.2  # (sides rounded to pixels)
        boxes.add((int(rows[0]), int(cols[0]), box.shape))
    assert len(boxes) > 32  # a rectangle of its own for every image
    assert torch.equal(RandomErasing(p=0.0)(x, _gen()), x)
    noise = RandomErasing(p=1.0, value="random")(x, _gen())
    assert ((noise != x).float().mean() > 0) and not (noise == 0).any()
    with pytest.raises(ConfigError, match="value a number or random"):
        parse_augmentation({"ops": {"random_erasing": {"value": "mean"}}})
    # the batched version draws the rectangles of v2.RandomErasing (the DataLoader path's)
    batched = torch.cat([(RandomErasing(p=1.0)(x, _gen(s)) == 0).float().mean((1, 2, 3)) for s in range(16)])
    torch.manual_seed(0)
    erase = RandomErasing(p=1.0).v2(32)
    per_sample = torch.stack([(erase(image) == 0).float().mean() for image in x.repeat(16, 1, 1, 1)])
    assert abs(batched.mean() - per_sample.mean()) < 0.01 and abs(batched.std() - per_sample.std()) < 0.01


def test_stages_run_in_order_whatever_the_list_order() -> None:
    ops = parse_augmentation({"ops": {"mixup": {}, "random_erasing": {}, "randaugment": {}, "hflip": {}}})
    stages = Stages.of(ops)
    assert [type(op).__name__ for op in stages.pixels] == ["RandAugment", "HorizontalFlip"]
    assert [type(op).__name__ for op in stages.normalized] == ["RandomErasing"]
    assert [type(op).__name__ for op in stages.mix] == ["MixUp"] and stages.mixer(10) is not None
    assert Stages.of(parse_augmentation({"ops": {"hflip": {}}})).mixer(10) is None
    with pytest.raises(ConfigError, match="policy imagenet|cifar10|svhn"):
        parse_augmentation({"ops": {"autoaugment": {"policy": "mnist"}}})
    with pytest.raises(ConfigError, match="unknown option augmentation.ops.mixup.beta"):
        parse_augmentation({"ops": {"mixup": {"beta": 1.0}}})
    with pytest.raises(ConfigError, match="alpha > 0"):
        parse_augmentation({"ops": {"cutmix": {"alpha": 0}}})
    with pytest.raises(ConfigError, match="magnitude"):
        parse_augmentation({"ops": {"randaugment": {"magnitude": 31}}})


def test_fast_path_policies_and_mixing_resume_mid_epoch_exactly() -> None:
    x, y = torch.rand(40, 1, 16, 16, generator=_gen(6)), torch.arange(40) % 10
    ops = Stages.of(parse_augmentation({"ops": {"trivialaugment": {}, "random_erasing": {"p": 0.5}, "mixup": {}, "cutmix": {}}}))

    def loader() -> TensorLoader:
        return TensorLoader(x, y, 8, shuffle=True, transform=Compose([*ops.pixels, *ops.normalized]), seed=3,
                            mix=ops.mixer(10))

    full = list(loader())
    first = loader()
    it = iter(first)
    next(it), next(it)
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert len(rest) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(full[2:], rest):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("in_memory", [True, False], ids=["fast", "dataloader"])
@pytest.mark.parametrize("preset", NEW_PRESETS)
def test_both_paths_take_every_new_preset(preset: str, in_memory: bool) -> None:
    cfg = make_cfg(Path("/tmp/unused"), f"augmentation=[flip_crop,{preset}]", f"++data.in_memory={in_memory}",
                   "++data.num_workers=0", "data.batch_size=16")
    c = OmegaConf.to_container(cfg, resolve=True)
    data = build_datamodule(c["data"], c["augmentation"])
    x, y = next(iter(data.train))
    assert x.shape == (16, 1, 32, 32) and x.dtype == torch.float32
    if preset in ("mixup", "cutmix"):
        assert y.shape == (16, 10) and torch.allclose(y.sum(1), torch.ones(16))
    else:
        assert y.shape == (16,) and y.dtype == torch.long
    assert next(iter(data.val))[1].ndim == 1  # evaluation keeps class indices


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["mixup", "[flip_crop,trivialaugment]"])
def test_training_with_the_new_augmentation_lowers_the_loss(tmp_path: Path, augmentation: str) -> None:
    metrics = train(make_cfg(tmp_path / "run", "trainer.max_epochs=3", "logger=none", f"augmentation={augmentation}",
                             "test=false"))
    losses = [epoch["train/loss"] for epoch in metrics["history"]]
    assert losses[-1] < losses[0] and metrics["history"][-1]["val/acc"] > 0.5


@pytest.mark.parametrize(("overrides", "needle"), [
    (("task.loss=hinge", "task.label_smoothing=null"),
     "task.loss=hinge takes class indices only; use task.loss=bce|cross_entropy"),
    (("task.loss=squared_hinge", "task.label_smoothing=null"), "task.loss=squared_hinge"),
    (("model=knn",), "task=knn"),
], ids=["hinge", "squared_hinge", "knn"])
def test_what_cannot_take_soft_targets_refuses_mixup_in_one_line(tmp_path: Path, overrides: tuple[str, ...],
                                                                 needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        train(make_cfg(tmp_path / "run", *FAST, *overrides, "augmentation=[digits,mixup]"))
    message = str(info.value)
    assert "\n" not in message and needle in message and "augmentation.ops.mixup=null" in message


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
