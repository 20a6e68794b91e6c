"""Transfer learning: pretrained sources, adaptation, freeze policies, learning-rate groups."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import FAST, make_cfg
from zoo.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from zoo.engine.optim import Schedule, build_optimizer, param_groups
from zoo.errors import CheckpointError, ConfigError
from zoo.models import create_model
from zoo.transfer import TransferConfig, adapt_input_conv, build_transfer, torchvision_cache_path, torchvision_weights

# ---- sources -------------------------------------------------------------------------------------------------------


def _cache_torchvision_squeezenet(torch_home: Path) -> nn.Module:
    from torchvision.models import squeezenet1_1

    reference = squeezenet1_1(weights=None).eval()
    path = torch_home / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"  # the name torchvision downloads to
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    return reference


def test_torchvision_weights_load_from_the_cache_by_name(torch_home: Path) -> None:
    reference = _cache_torchvision_squeezenet(torch_home)
    assert torchvision_cache_path(torchvision_weights("squeezenet1_1.IMAGENET1K_V1")).parent == torch_home / "hub" / "checkpoints"
    x = torch.randn(1, 3, 32, 32)
    for spec in ("squeezenet1_1.IMAGENET1K_V1", "squeezenet1_1", "SqueezeNet1_1_Weights.IMAGENET1K_V1"):
        model = create_model("squeezenet1_1", pretrained=f"torchvision:{spec}").eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x))


def test_torchvision_weights_adapt_to_classes_and_channels(torch_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    reference = _cache_torchvision_squeezenet(torch_home)
    with caplog.at_level(logging.INFO, logger="zoo"):
        model = create_model("squeezenet1_1", num_classes=5, in_chans=1, pretrained="torchvision:squeezenet1_1")
    torch.testing.assert_close(model.features[0].weight, reference.features[0].weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.features[3].squeeze.weight, reference.features[3].squeeze.weight)
    assert model.classifier[1].weight.shape == (5, 512, 1, 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrained")]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "input channels adapted: 1 (features.0.weight)" in lines[0] and "classifier reinitialised: 2" in lines[0]


def test_missing_torchvision_weights_offline(torch_home: Path) -> None:
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(CheckpointError, match="could not be downloaded") as err:
        create_model("resnet18", pretrained="torchvision:resnet18.IMAGENET1K_V1")
    assert str(expected) in str(err.value) and "\n" not in str(err.value)
    assert not expected.exists()
    with pytest.raises(ConfigError, match="did you mean: resnet18"):
        create_model("resnet18", pretrained="torchvision:resnet81")
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        create_model("resnet18", pretrained="torchvision:resnet18.IMAGENET9K")


def test_zoo_checkpoint_and_state_dict_files(tmp_path: Path) -> None:
    source = create_model("lenet5", num_classes=10)
    sd = source.state_dict()
    save_checkpoint({"format": FORMAT, "version": 1, "model": sd, "epoch": 3}, tmp_path / "best.pt")
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pt")
    for name in ("best.pt", "plain.pt", "ddp.pt"):
        model = create_model("lenet5", num_classes=10, pretrained=str(tmp_path / name))
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, sd[key])


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(create_model("resnet20").state_dict(), tmp_path / "resnet20.pt")
    deeper = create_model("resnet32", pretrained=str(tmp_path / "resnet20.pt"))  # a prefix of the network: loads
    assert torch.equal(deeper.state_dict()["layer3.2.conv2.weight"], torch.load(tmp_path / "resnet20.pt")["layer3.2.conv2.weight"])
    with pytest.raises(CheckpointError, match="do not fit ResNet"):
        create_model("resnet20", widths=(32, 64, 128), stem_width=32, pretrained=str(tmp_path / "resnet20.pt"))
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="none of its 1 tensors"):
        create_model("resnet20", pretrained=str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        create_model("resnet20", pretrained=str(tmp_path / "absent.pt"))


def test_another_models_checkpoint_is_refused_unless_not_strict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from zoo.pipeline import train
    from zoo.transfer import load_pretrained

    resnet20 = tmp_path / "resnet20.pt"
    torch.save(create_model("resnet20").state_dict(), resnet20)  # its fc.bias (10,) fits LeNet-5's classifier
    with pytest.raises(CheckpointError) as err:
        create_model("lenet5", pretrained=str(resnet20))
    assert "0 of 8 backbone tensors of LeNet5 matched" in str(err.value) and "transfer.strict=false" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="another model"):  # a deep model given a shallow one's weights
        create_model("resnet56", pretrained=str(resnet20))
    from zoo.transfer import strict_loading

    with caplog.at_level(logging.WARNING, logger="zoo"):
        report = load_pretrained(create_model("lenet5"), str(resnet20), strict=False)
        with strict_loading(False):
            create_model("lenet5", pretrained=str(resnet20))
    assert report.loaded and not report.matched
    assert sum("loading anyway" in r.getMessage() for r in caplog.records) == 2

    cfg = [*FAST, "trainer.max_epochs=1", f"model.pretrained={resnet20}"]
    with pytest.raises(CheckpointError, match="0 of 8 backbone tensors"):
        train(make_cfg(tmp_path / "strict", *cfg))
    assert train(make_cfg(tmp_path / "forced", *cfg, "transfer.strict=false"))["epochs_run"] == 1


def test_input_conv_adaptation_preserves_the_response() -> None:
    weight = torch.randn(8, 3, 3, 3)
    grey = torch.randn(2, 1, 9, 9)
    conv = lambda w, x: nn.functional.conv2d(x, w)  # noqa: E731
    torch.testing.assert_close(conv(adapt_input_conv(weight, 1), grey), conv(weight, grey.expand(-1, 3, -1, -1)))
    six = adapt_input_conv(weight, 6)
    assert six.shape == (8, 6, 3, 3)
    torch.testing.assert_close(conv(six, grey.expand(-1, 6, -1, -1)), conv(weight, grey.expand(-1, 3, -1, -1)))
    assert adapt_input_conv(weight, 4).shape == (8, 4, 3, 3)


# ---- policies ------------------------------------------------------------------------------------------------------


def _train_steps(model: nn.Module, policy_cfg: dict, steps: int = 3) -> tuple[dict[str, torch.Tensor], torch.optim.Optimizer]:
    """A few SGD steps under ``policy_cfg``; returns the state before them and the optimizer."""
    policy = build_transfer(policy_cfg, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer({"name": "momentum", "lr": 0.1}, param_groups(model, 1e-4, lr_mult=policy.lr_mult))
    model.train()
    x, y = torch.randn(8, 1, 32, 32), torch.arange(8) % 5
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return before, opt


def _changed(model: nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_linear_probe_trains_only_the_classifier() -> None:
    model = create_model("resnet20", num_classes=5, in_chans=1)
    before, opt = _train_steps(model, {"name": "linear_probe", "reset_classifier": True})
    assert _changed(model, before) == {"fc.weight", "fc.bias"}  # BN statistics included: frozen BN is in eval mode
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.training and model.fc.training


def test_finetune_last_trains_the_last_stage() -> None:
    model = create_model("resnet20", num_classes=5, in_chans=1)
    before, _ = _train_steps(model, {"name": "finetune_last", "unfreeze": 1})
    changed = _changed(model, before)
    assert {k.split(".")[0] for k in changed} == {"layer3", "fc"}
    assert any("running_mean" in k for k in changed)  # the unfrozen stage's BN keeps learning statistics
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for m in (model.layer3, model.fc) for p in m.parameters())


def test_discriminative_learning_rates_in_the_optimizer() -> None:
    model = create_model("resnet20", num_classes=5, in_chans=1)
    policy = build_transfer({"name": "finetune_all", "backbone_lr_mult": 0.1, "stage_lr_decay": 0.5}, model)
    opt = build_optimizer({"name": "sgd", "lr": 0.2}, param_groups(model, 1e-4, lr_mult=policy.lr_mult))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    expected = {"fc": 0.2, "layer3": 0.02, "layer2": 0.01, "layer1": 0.005, "conv1": 0.0025, "bn1": 0.0025}
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == pytest.approx(expected[name.split(".")[0]]), name
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # the base rate comes first (it is the one logged)
    schedule = Schedule(opt, {"name": "cosine"}, steps_per_epoch=2, max_epochs=2)
    for _ in range(2):
        opt.step()
        schedule.step_batch()
    ratios = {round(g["lr"] / (0.2 * g["lr_mult"]), 9) for g in opt.param_groups}
    assert len(ratios) == 1 and 0 < ratios.pop() < 1  # one schedule, scaled per group


def test_gradual_unfreezing_by_epoch() -> None:
    model = create_model("resnet20", num_classes=5, in_chans=1)
    policy = build_transfer({"name": "linear_probe", "gradual_unfreeze": 2}, model)
    groups = param_groups(model, 0.0, lr_mult=policy.lr_mult)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # all in the optimizer from the start

    def trainable() -> set[str]:
        return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}

    assert trainable() == {"fc"}
    policy.set_epoch(1)
    assert trainable() == {"fc"}
    policy.set_epoch(2)
    assert trainable() == {"fc", "layer3"}
    model.train()
    assert model.layer3[0].bn1.training and not model.layer2[0].bn1.training
    policy.set_epoch(100)
    assert trainable() == {"fc", "layer3", "layer2", "layer1", "conv1", "bn1"}
    policy.set_epoch(0)  # a resumed run sets the state of its epoch
    assert trainable() == {"fc"} and not model.layer3[0].bn1.training


def test_bad_transfer_config() -> None:
    model = create_model("resnet20")
    with pytest.raises(ConfigError, match="did you mean linear_probe"):
        TransferConfig.from_dict({"name": "linear_prob"})
    with pytest.raises(ConfigError, match="unknown transfer option"):
        TransferConfig.from_dict({"name": "none", "unfreez": 2})
    with pytest.raises(ConfigError, match="only 4 stages"):
        build_transfer({"name": "finetune_last", "unfreeze": 5}, model)
    with pytest.raises(ConfigError, match="gradual_unfreeze"):
        build_transfer({"name": "finetune_all", "gradual_unfreeze": 1}, model)
    assert build_transfer({"name": "none"}, model) is None


def test_pretrain_then_linear_probe_end_to_end(tmp_path: Path) -> None:
    from zoo.pipeline import train

    digits = ["data.num_classes=5", "trainer.max_epochs=1"]
    train(make_cfg(tmp_path / "pre", *FAST, *digits, "data.classes=[0,1,2,3,4]"))
    best = tmp_path / "pre" / "checkpoints" / "best.pt"
    result = train(make_cfg(tmp_path / "probe", *FAST, *digits, "data.classes=[5,6,7,8,9]", "data.train_per_class=10",
                            "transfer=linear_probe", f"model.pretrained={best}"))
    assert result["trainable_params"] == 84 * 5 + 5  # LeNet-5's classifier
    pre, probe = load_checkpoint(best)["model"], load_checkpoint(tmp_path / "probe" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(pre[k], probe[k]) for k in pre if not k.startswith("fc."))
    assert not torch.equal(pre["fc.weight"], probe["fc.weight"])


# ---- the preprocessing of pretrained weights -------------------------------------------------------------------------


def _resolved(tmp_path: Path, *overrides: str) -> tuple[dict, str | None]:
    from omegaconf import OmegaConf

    from zoo.data.pretrained import resolve_data_config

    c = OmegaConf.to_container(make_cfg(tmp_path, "data=imagefolder", *overrides), resolve=True)
    return resolve_data_config(c["data"], c["model"])  # type: ignore[index]


def test_pretrained_cfg_is_torchvision_metadata() -> None:
    from torchvision.models import ResNet50_Weights

    from zoo.models import pretrained_cfg

    reference = ResNet50_Weights.IMAGENET1K_V2.transforms()
    cfg = pretrained_cfg("resnet50")  # torchvision's DEFAULT
    assert cfg is not None and cfg.source == "torchvision:resnet50.IMAGENET1K_V2"
    assert (cfg.input_size, cfg.resize_size, cfg.interpolation) == (*reference.crop_size, *reference.resize_size, "bilinear")
    assert (list(cfg.mean), list(cfg.std)) == (reference.mean, reference.std)
    assert cfg.weights == ("IMAGENET1K_V1", "IMAGENET1K_V2") and cfg.num_classes == 1000
    assert pretrained_cfg("resnet50", "IMAGENET1K_V1").resize_size == ResNet50_Weights.IMAGENET1K_V1.transforms().resize_size[0]
    assert pretrained_cfg("resnet20") is None and pretrained_cfg("vgg16_small") is None  # torchvision lacks them
    assert pretrained_cfg("fasterrcnn_resnet50_fpn") is None  # not a classifier
    with pytest.raises(ConfigError, match="has no weights 'IMAGENET9K'"):
        pretrained_cfg("resnet50", "IMAGENET9K")


def test_googlenet_weights_take_torchvision_transform_input_into_the_data() -> None:
    """torchvision's GoogLeNet re-normalises its ImageNet-normalised input inside the network when
    it loads weights; zoo's leaves that to the data, which must then give the same network input."""
    import torchvision

    from zoo.models import pretrained_cfg

    reference = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True).eval()
    model = create_model("googlenet", aux_logits=False).eval()
    model.load_state_dict(reference.state_dict())
    tv = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.transforms()
    cfg = pretrained_cfg("googlenet")
    pixels = torch.rand(2, 3, 64, 64)

    def normalised(mean: object, std: object) -> torch.Tensor:
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    with torch.no_grad():
        torch.testing.assert_close(model(normalised(cfg.mean, cfg.std)), reference(normalised(tv.mean, tv.std)))


def test_torchvision_pretrained_sets_the_data_preprocessing(tmp_path: Path) -> None:
    from torchvision.models import ResNet18_Weights

    reference = ResNet18_Weights.IMAGENET1K_V1.transforms()
    data, message = _resolved(tmp_path, "model=resnet18", "model.pretrained=torchvision:resnet18.IMAGENET1K_V1")
    assert (data["mean"], data["std"]) == (reference.mean, reference.std)
    assert (data["image_size"], data["resize_size"]) == (*reference.crop_size, *reference.resize_size)
    assert data["interpolation"] == reference.interpolation.value and data["normalize"] is None
    assert message == ("preprocessing of torchvision:resnet18.IMAGENET1K_V1: mean (0.485, 0.456, 0.406), "
                       "std (0.229, 0.224, 0.225), resize 256, crop 224, bilinear; override with data.mean/data.std "
                       "(data.normalize, data.resize_size, data.interpolation)")
    v2, _ = _resolved(tmp_path, "model=resnet50", "model.pretrained=torchvision:resnet50", "data.image_size=160")
    assert (v2["image_size"], v2["resize_size"]) == (160, round(160 * 232 / 224))  # IMAGENET1K_V2's crop ratio


def test_explicit_data_settings_win_over_the_weights(tmp_path: Path) -> None:
    pretrained = ["model=resnet18", "model.pretrained=torchvision:resnet18.IMAGENET1K_V1"]
    data, message = _resolved(tmp_path, *pretrained, "data.mean=[0.5,0.5,0.5]", "data.resize_size=300")
    assert data["mean"] == [0.5, 0.5, 0.5] and data["std"] == [0.229, 0.224, 0.225] and data["resize_size"] == 300
    assert message is not None and "std (0.229" in message and "mean" not in message.split(":")[1]
    data, _ = _resolved(tmp_path, *pretrained, "data.normalize=channel")  # the training split's own statistics
    assert data["mean"] is None and data["std"] is None


def test_zoo_checkpoint_as_pretrained_changes_no_data_setting(tmp_path: Path) -> None:
    before, _ = _resolved(tmp_path, "model=resnet18")
    data, message = _resolved(tmp_path, "model=resnet18", f"model.pretrained={tmp_path / 'best.pt'}")
    assert data == before and message is None
    data, message = _resolved(tmp_path, "model=resnet18")
    assert data == before and message is None


def test_resolved_preprocessing_reaches_the_image_folder_loaders(tmp_path: Path) -> None:
    from PIL import Image
    from torchvision.models import ResNet50_Weights

    from tests.data_fixtures import make_image_folder
    from zoo.data import build_datamodule
    from zoo.data.pretrained import resolve_data_config

    make_image_folder(tmp_path, {"train": 2, "val": 1}, ["cat", "dog"])
    base = {"name": "imagefolder", "root": str(tmp_path), "image_size": 20, "batch_size": 4, "num_workers": 0,
            "val_dir": "val", "in_memory": False}
    data, _ = resolve_data_config(base, {"name": "resnet50", "pretrained": "torchvision:resnet50.IMAGENET1K_V2"})
    dm = build_datamodule(data)
    assert (dm.mean, dm.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert not (tmp_path / ".zoo_stats").exists()  # no statistics pass
    x, _ = next(iter(dm.test))
    files = sorted((tmp_path / "val").glob("*/*.png"))
    for resize, close in ((round(20 * 232 / 224), True), (round(20 / 0.875), False)):  # the weights' ratio, zoo's default
        tv = ResNet50_Weights.IMAGENET1K_V2.transforms(crop_size=20, resize_size=resize)  # torchvision's own pipeline
        expected = torch.stack([tv(Image.open(f).convert("RGB")) for f in files])
        assert ((x - expected).abs().max() < 0.05) == close


def test_interpolation_of_image_folders(tmp_path: Path) -> None:
    from tests.data_fixtures import make_image_folder
    from zoo.data import build_datamodule

    make_image_folder(tmp_path, {"train": 2, "val": 1}, ["cat", "dog"])
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16, "batch_size": 4, "num_workers": 0,
           "val_dir": "val", "in_memory": False, "normalize": "none"}
    bilinear, bicubic = (next(iter(build_datamodule({**cfg, "interpolation": mode}).test))[0] for mode in ("bilinear", "bicubic"))
    assert torch.equal(bilinear, next(iter(build_datamodule(cfg).test))[0]) and not torch.equal(bilinear, bicubic)
    with pytest.raises(ConfigError, match=r"^unknown data.interpolation 'cubic'; use one of: nearest, .*bicubic"):
        build_datamodule({**cfg, "interpolation": "cubic"})


def test_training_from_torchvision_weights_uses_their_preprocessing(
        tmp_path: Path, torch_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Through zoo.pipeline.train: the run's data takes the weights' mean/std, resize and crop, with
    no statistics pass, and says so in one line."""
    from torchvision.models import SqueezeNet1_1_Weights

    import zoo.pipeline as pipeline
    from tests.data_fixtures import make_image_folder

    _cache_torchvision_squeezenet(torch_home)
    make_image_folder(tmp_path / "images", {"train": 4, "val": 1}, ["cat", "dog", "fox"])
    cfg = make_cfg(tmp_path / "run", *FAST, "trainer.max_epochs=1", "model=squeezenet1_1",
                   "model.pretrained=torchvision:squeezenet1_1", "data=imagefolder", f"data.root={tmp_path / 'images'}",
                   "data.image_size=32", "data.num_workers=0", "data.val_dir=val", "data.batch_size=6")
    with caplog.at_level(logging.INFO, logger="zoo"):
        pipeline.train(cfg)
    reference = SqueezeNet1_1_Weights.IMAGENET1K_V1.transforms()
    stored = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["data_info"]
    assert (stored["mean"], stored["std"]) == (reference.mean, reference.std)
    assert not (tmp_path / "images" / ".zoo_stats").exists()
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("preprocessing of")] == [
        "preprocessing of torchvision:squeezenet1_1.IMAGENET1K_V1: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), "
        "resize 37, crop 32, bilinear; override with data.mean/data.std (data.normalize, data.resize_size, data.interpolation)"]
