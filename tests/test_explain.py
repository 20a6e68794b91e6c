"""Attribution maps (``python -m zoo explain``, :mod:`zoo.explain`) of a LeNet-5 trained on digits here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import one_error
from zoo.__main__ import main
from zoo.explain import Options, attribute

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def digits(lenet5_digits: dict[str, Any]) -> dict[str, Any]:
    """The shared LeNet-5 checkpoint and six test digits (conftest), with the model, inputs, labels and ink masks."""
    from zoo.trained import load_image
    from zoo.trained import load_classifier

    ckpt, files, labels, tmp = (lenet5_digits[k] for k in ("ckpt", "files", "labels", "dir"))
    model, state = load_classifier(ckpt, "ckpt")
    xs = [load_image(p, state) for p in files]
    mean, std = state["data_info"]["mean"][0], state["data_info"]["std"][0]
    raw = [x * std + mean for x in xs]
    correct = [k for k, x in enumerate(xs) if int(model(x).argmax()) == labels[k]]
    assert len(correct) >= 4
    return {"ckpt": ckpt, "files": files, "model": model, "xs": xs, "labels": labels, "correct": correct,
            "ink": [r[0, 0] > 0.5 for r in raw], "background": [r[0, 0] < 0.02 for r in raw], "dir": tmp}


def _ink_over_background(digits: dict[str, Any], method: str, opts: Options | None = None) -> list[float]:
    """Per correctly classified digit: the mean attribution per ink pixel minus that per background pixel."""
    gaps = []
    for k in digits["correct"]:
        heat = attribute(digits["model"], digits["xs"][k], method, digits["labels"][k], opts).map[0].sum(0)
        gaps.append(float(heat[digits["ink"][k]].mean() - heat[digits["background"][k]].mean()))
    return gaps


def test_occluding_ink_drops_the_score_more_than_occluding_background(digits: dict[str, Any]) -> None:
    assert all(gap > 0 for gap in _ink_over_background(digits, "occlusion", Options(window=6, stride=3)))


def test_saliency_is_higher_on_ink_than_on_background(digits: dict[str, Any]) -> None:
    assert all(gap > 0 for gap in _ink_over_background(digits, "saliency"))


def test_guided_backprop_passes_only_positive_signals_through_relus(digits: dict[str, Any]) -> None:
    """Guided backprop's rule at a ReLU: what reaches its input is ReLU(grad) where the input is positive, else 0, so
    never negative (the map at the image, past the first convolution's signed weights, can be). Attributing from
    C1's pre-activation (the input of ReLU act1) shows it; the plain gradient there has both signs."""
    from torch import nn

    model = digits["model"]

    class AfterC1(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            m = self.m
            return m.forward_head(m.act5(m.c5(m.s4(m.act3(m.c3(m.s2(m.act1(z))))))))

    k = digits["correct"][0]
    z = model.c1(digits["xs"][k]).detach()
    guided = attribute(AfterC1(), z, "guided_backprop", digits["labels"][k]).map
    assert (guided >= 0).all() and (guided > 0).any() and (guided[z <= 0] == 0).all()
    z = z.clone().requires_grad_(True)  # a fresh tensor: Captum's hooks were on the one it saw
    AfterC1()(z)[0, digits["labels"][k]].backward()
    assert z.grad is not None and (z.grad < 0).any()  # the plain gradient has negative entries where guided backprop has none
    full = attribute(model, digits["xs"][k], "guided_backprop", digits["labels"][k]).map
    assert full.shape == digits["xs"][k].shape and (full < 0).any()  # ... and the image-level map is signed


def test_gradcam_has_the_feature_maps_shape_before_upsampling(digits: dict[str, Any]) -> None:
    x, target = digits["xs"][0], digits["labels"][0]
    cam = attribute(digits["model"], x, "gradcam", target)  # default: s4 (5x5); C5's map is 1x1
    assert cam.feature_map is not None and cam.feature_map.shape == (1, 1, 5, 5) and cam.map.shape == (1, 1, 32, 32)
    assert (cam.feature_map >= 0).all()
    s2 = attribute(digits["model"], x, "gradcam", target, Options(layer="s2"))
    assert s2.feature_map is not None and s2.feature_map.shape == (1, 1, 14, 14)


def test_integrated_gradients_sum_to_the_score_difference(digits: dict[str, Any]) -> None:
    """Completeness (Sundararajan et al. 2017): the attributions add up to F(x) - F(black)."""
    model, k = digits["model"], digits["correct"][0]
    x, target = digits["xs"][k], digits["labels"][k]
    black = torch.full_like(x, float(-model_mean_over_std(digits)))
    ig = attribute(model, x, "integrated_gradients", target, Options(black=black, steps=100)).map
    with torch.no_grad():
        gap = float(model(x)[0, target] - model(black)[0, target])
    assert float(ig.sum()) == pytest.approx(gap, rel=0.05, abs=0.05)


def model_mean_over_std(digits: dict[str, Any]) -> float:
    from zoo.engine.checkpoint import load_checkpoint

    info = load_checkpoint(digits["ckpt"])["data_info"]
    return info["mean"][0] / info["std"][0]


def test_cli_writes_a_png_per_image_and_method(digits: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    out = digits["dir"] / "out"
    files = [str(f) for f in digits["files"][:2]]
    assert main(["explain", str(digits["ckpt"]), *files, "--method", "saliency,gradcam,occlusion", "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"digit{i}_{m}.png" for i in range(2) for m in ("saliency", "gradcam", "occlusion"))
    with Image.open(out / "digit0_gradcam.png") as img:
        assert img.width > 2 * img.height  # three panels side by side
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{files[0]}\t") and lines[0].count("(") == 3  # the top 3 with probabilities
    assert lines[-1] == f"wrote 6 files to {out}"


def test_cli_refuses_bad_input_with_one_line(digits: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt, image = str(digits["ckpt"]), str(digits["files"][0])
    out = ["--out", str(tmp_path / "out")]
    one_error(capsys, ["explain", ckpt, str(tmp_path / "nope.png"), *out], "image file not found")
    one_error(capsys, ["explain", str(tmp_path / "nope.pt"), image, *out], "checkpoint not found")
    torch.save({"model": {}}, tmp_path / "other.pt")
    one_error(capsys, ["explain", str(tmp_path / "other.pt"), image, *out], "is not a zoo classifier checkpoint")
    one_error(capsys, ["explain", ckpt, image, "--method", "salency", *out], "did you mean: saliency?")
    one_error(capsys, ["explain", ckpt, image, "--target", "10", *out], "out of range")
    one_error(capsys, ["explain", ckpt, image, "--method", "gradcam", "--layer", "c9", *out], "is not a module")
    one_error(capsys, ["explain", ckpt, image, "--method", "occlusion", "--window", "40", *out], "--window must be in 1..32")
    one_error(capsys, ["explain", ckpt, image, "--method", "saliency", "--window", "4", *out],
              "--window is for --method occlusion, which is not asked for")
    one_error(capsys, ["explain", ckpt, image, "--steps", "10", *out], "--steps is for --method integrated_gradients")
    monkeypatch.setitem(sys.modules, "captum", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "captum.attr", raising=False)
    one_error(capsys, ["explain", ckpt, image, *out], "pip install -e '.[viz]'")
    assert not (tmp_path / "out").exists()
