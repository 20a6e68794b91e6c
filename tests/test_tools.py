"""``python -m zoo gradcheck`` and ``python -m zoo summary`` (zoo.tools), and the model graph in TensorBoard."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import REPO, make_cfg
from zoo.__main__ import main as zoo_main
from zoo.errors import ConfigError
from zoo.models import create_model, list_models
from zoo.tools.gradcheck import check_gradients, relative_error
from zoo.tools.summary import format_summary, summarize
from zoo.tools.target import build_target


class _Cube(torch.autograd.Function):
    """``x ** 3`` with a hand-written backward, ``scale`` times the true one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x**3

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2 * ctx.scale, None


class CubeLayer(nn.Module):
    """``(w * x) ** 3 + b`` through :class:`_Cube`; ``scale != 1`` makes its backward wrong."""

    def __init__(self, features: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Cube.apply(self.weight * x, self.scale) + self.bias


def zoo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m zoo ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "zoo", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def zoo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m zoo ARGS`` in this process (the same ``main``): exit status, stdout, stderr."""
    capsys.readouterr()
    code = zoo_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- gradcheck ----------------------------------------------------------------------------------

#: the small models whose check costs the most (MACs at their input times parameter tensors: over 1e9;
#: GoogLeNet's 187 tensors, the FCNs' 64x64 inputs): minutes on a shared CPU, so with ``-m slow``
HEAVY = {"fcn8s_small", "fcn16s_small", "fcn32s_small", "googlenet_small", "nin_small", "resnext29_small",
         "squeezenet1_0_small"}
#: LeNet-5 and the registry's small models (a GAN generator among them)
SMALL = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ["lenet5", *list_models("*_small")]]
#: GoogLeNet's initialisation (std 0.01) under batch norm has a gain of ~1e3 (conv1's gradients ~1e3): a step
#: small enough to cross no ReLU kink meets rounding noise: CS231n's 1e-4 for objectives with kinks
TOL = {"googlenet_small": 1e-4}


@pytest.mark.parametrize("name", SMALL)
def test_every_small_model_passes(name: str) -> None:
    target = build_target(name, batch_size=2)
    tol = TOL.get(name, 1e-5)
    report = check_gradients(target.module, target.example_input(torch.float64), coords=1, tol=tol)
    assert report.checks[0].name == "input" and len(report.checks) == 1 + sum(1 for _ in target.module.parameters())
    assert not report.failures(tol), report.format(tol)
    assert any(c.analytic != 0 for c in report.checks)  # not a vacuous pass on zero gradients


def test_a_wrong_backward_is_flagged_where_it_is() -> None:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    good = check_gradients(CubeLayer(), x, coords=None)
    assert good.max_error < 1e-6 and not good.retried, good.format(1e-6)
    bad = check_gradients(CubeLayer(scale=1.01), x, coords=None)  # the backward 1% off
    assert {c.name for c in bad.failures(1e-5)} == {"input", "weight"}  # the bias bypasses _Cube
    assert bad.max_error == pytest.approx(0.01 / 1.01, rel=1e-4)
    assert "FAIL" in bad.format(1e-5) and "2 of 3 tensors over tol 1e-05" in bad.format(1e-5)
    # torch's own check agrees
    assert not torch.autograd.gradcheck(lambda t: _Cube.apply(t, 1.01), x.clone().requires_grad_(), raise_exception=False)


def test_dropout_is_checked_with_its_draws_held_and_the_caller_untouched() -> None:
    model = create_model("lenet5", drop_rate=0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    rng = torch.get_rng_state()
    report = check_gradients(model, x, coords=3)
    assert report.train and not report.failures(1e-5), report.format(1e-5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_batch_norm_on_batch_statistics_and_in_eval_mode() -> None:
    block = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Dropout(0.3))
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    for kwargs in ({"batch_stats": True}, {"train": False}, {}):
        report = check_gradients(block, x, coords=20, **kwargs)
        assert report.max_error < 1e-5 and report.checks[2].name == "0.bias", (kwargs, report.format(1e-5))
        if kwargs.get("batch_stats"):  # a bias before batch norm has no effect: both gradients ~0, no false alarm
            assert abs(report.checks[2].analytic) < 1e-12 and abs(report.checks[2].numeric) < 1e-9
    assert block[1].num_batches_tracked == 0  # statistics gathered on the copy only


def test_relative_error() -> None:
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 1.01) == pytest.approx(0.01 / 1.01)
    assert relative_error(-1.0, 1.0) == 2.0


def test_gradcheck_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = zoo(capsys, "gradcheck", "lenet5", "--coords", "2", "--num-classes", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("lenet5: input 2x1x32x32")
    assert lines[1].split() == ["tensor", "shape", "checked", "analytic", "numeric", "rel", "error"]
    assert [line.split()[:3] for line in lines[2:4]] == [["input", "2x1x32x32", "2"], ["c1.weight", "6x1x5x5", "2"]]
    assert lines[-2].split()[:2] == ["fc.bias", "3"]
    assert lines[-1].startswith("max relative error ") and "all 11 tensors within tol 1e-05" in lines[-1]


def test_gradcheck_cli_flags_a_wrong_backward_of_a_users_class(capsys: pytest.CaptureFixture[str]) -> None:
    bad = zoo_cli("gradcheck", "tests.test_tools.CubeLayer", "features=5", "scale=1.01", "--input-shape", "3,5")
    assert bad.returncode == 1 and bad.stderr == "", bad.stderr
    rows = {line.split()[0]: line.split() for line in bad.stdout.splitlines()[2:-1]}
    assert rows["weight"][-1] == rows["input"][-1] == "FAIL" and rows["bias"][-1] != "FAIL"
    assert zoo(capsys, "gradcheck", "tests.test_tools.CubeLayer", "features=5", "--input-shape", "3,5", "--coords", "0")[0] == 0
    assert zoo(capsys, "gradcheck", "tests.test_tools.CubeLayer", "scale=1.01", "--input-shape", "3,4", "--tol", "0.1")[0] == 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["gradcheck", "lenet"], "unknown model 'lenet'; did you mean: lenet5"),
        (["summary", "lenet5", "drop=0.5"], "model 'lenet5': LeNet5.__init__() got an unexpected keyword argument 'drop'"),
        (["gradcheck", "lenet5", "drop_rate"], "option 'drop_rate' is not key=value"),
        (["gradcheck", "lenet5", "--input-size", "8"], "lenet5 cannot run on an input of shape (2, 1, 8, 8)"),
        (["summary", "lenet5", "--input-shape", "1,3,32,32"], "cannot run on an input of shape (1, 3, 32, 32)"),
        (["gradcheck", "nosuchpkg.Layer"], "cannot import 'nosuchpkg'"),
        (["gradcheck", "torch.nn.Linearr"], "module 'torch.nn' has no 'Linearr'"),
        (["gradcheck", "torch.nn.Linear", "in_features=4", "out_features=2"], "give --input-shape"),
        (["gradcheck", "torch.nn.Linear", "in_features=4", "--input-shape", "2,4"], "out_features"),
        (["gradcheck", "lenet5", "--tol", "0"], "--tol must be > 0"),
        (["summary", "lenet5", "--depth", "-1"], "--depth must be >= 0"),
    ],
)
def test_bad_input_is_one_error_line(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = zoo(capsys, *args)
    assert code == 2 and out == "", (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_bad_input_from_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        zoo_main(["summary", "resnet18", "--input-shape", "2,a"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("argument --input-shape: not a shape of integers: '2,a' "
                                                             "(e.g. 2,3,32,32)")
    proc = zoo_cli("gradcheck", "lenet5", "--in-chans", "3", "--input-shape", "2,1,32,32")
    assert (proc.returncode, proc.stdout) == (2, "") and proc.stderr.startswith("error: lenet5 cannot run on an input "
                                                                                "of shape (2, 1, 32, 32)"), proc.stderr


def test_a_users_layer_from_python() -> None:
    target = build_target("torch.nn.Linear", {"in_features": 4, "out_features": 2}, input_shape=(3, 4))
    assert isinstance(target.module, nn.Linear) and target.input_shape == (3, 4)
    report = check_gradients(target.module, target.example_input(), coords=None)
    assert [c.name for c in report.checks] == ["input", "weight", "bias"] and report.max_error < 1e-7
    with pytest.raises(ConfigError, match="--num-classes is for registered models"):
        build_target("torch.nn.Linear", {"in_features": 4, "out_features": 2}, num_classes=3, input_shape=(3, 4))


# --- summary ------------------------------------------------------------------------------------

def test_lenet5_summary_counts() -> None:
    stats = summarize(create_model("lenet5"), (1, 1, 32, 32))
    assert stats.total_params == 61_706  # tests/models/test_lenet.py, the module docstring of zoo.models.lenet
    # by hand, weights per output: c1 6*25*28*28 + c3 16*150*10*10 + c5 120*400 + f6 120*84 + fc 84*10 = 416,520;
    # torchinfo counts the bias additions too: 6*28*28 + 16*10*10 + 120 + 84 + 10 = 6,518
    assert stats.total_mult_adds == 416_520 + 6_518
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        create_model("lenet5")(torch.zeros(1, 1, 32, 32))
    assert counter.get_total_flops() == 2 * 416_520  # torch's own count, multiply and add


def test_resnet18_macs_match_torchvision() -> None:
    import torchvision

    ours = summarize(create_model("resnet18"), (1, 3, 224, 224), depth=1)
    theirs = summarize(torchvision.models.resnet18(), (1, 3, 224, 224), depth=1)
    assert (ours.total_params, ours.total_mult_adds) == (theirs.total_params, theirs.total_mult_adds)
    assert ours.total_params == 11_689_512 and 1.80e9 < ours.total_mult_adds < 1.83e9  # torchvision's 1.81 GFLOPS
    assert "Total mult-adds (G): 1.81" in format_summary(ours)


def test_summary_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = zoo(capsys, "summary", "resnet20", "--depth", "1", "--num-classes", "100")
    assert code == 0, err
    assert out.splitlines()[0] == "resnet20: input 1x3x32x32, 275,572 parameters, 40,558,276 MACs"
    assert "├─Sequential (layer3)" in out and "[1, 64, 8, 8]" in out and "├─Linear (fc)" in out
    assert "Total params: 275,572" in out and "Total mult-adds (M): 40.56" in out and "Units." not in out
    code, out, err = zoo(capsys, "summary", "dcgan_small", "--depth", "1")
    assert code == 0 and out.startswith("dcgan_small: input 1x64,"), err
    assert "[1, 1, 32, 32]" in out  # the generator's images


# --- the model graph in TensorBoard --------------------------------------------------------------

def _graph_nodes(run_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    if not acc.Tags()["graph"]:
        return []
    return [node.name for node in acc.Graph().node]


def test_a_run_logs_its_model_graph(tmp_path: Path) -> None:
    from zoo.pipeline import train

    train(make_cfg(tmp_path, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=tensorboard"))
    nodes = _graph_nodes(tmp_path)
    assert any("c1" in n for n in nodes) and any("fc" in n for n in nodes), nodes[:20]


def test_graph_opt_out_and_untraceable_models(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from zoo.engine.loggers import build_loggers

    (off,) = build_loggers(make_cfg(tmp_path, "logger.tensorboard.log_graph=false").logger, tmp_path / "off")
    off.log_graph(create_model("lenet5"), torch.zeros(1, 1, 32, 32))
    off.close()
    assert _graph_nodes(tmp_path / "off") == []

    (on,) = build_loggers(make_cfg(tmp_path).logger, tmp_path / "on")
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    two_inputs = nn.Bilinear(2, 2, 1)  # the tracer fails
    rng, stats = torch.get_rng_state(), model[1].running_mean.clone()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        on.log_graph(two_inputs, torch.zeros(1, 2))
        on.log_graph(model, torch.zeros(1, 1, 8, 8))
    on.close()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("tensorboard: no model graph, Bilinear cannot be traced on a (1, 2) input")
    assert warning.endswith("logger.tensorboard.log_graph=false skips it")
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(model[1].running_mean, stats) and model.training
    assert _graph_nodes(tmp_path / "on")
