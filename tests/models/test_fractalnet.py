"""FractalNet: fractal expansion, mean joins, local and global drop-path, inference modes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch import nn

from zoo.models import create_model
from zoo.models.base import count_parameters
from zoo.models.fractalnet import PAPER_DROPOUT, ConvUnit, DropPathPlan, FractalBlock, FractalNet

#: at 10 classes (the paper's table reports 38.6M for its 20-layer CIFAR network)
PARAM_COUNTS = {"fractalnet_cifar": 33_724_618, "fractalnet_c3b4": 4_306_538}


def _tiny(**kwargs: Any) -> FractalNet:
    """Three columns, two blocks, no dropout: randomness comes from drop-path alone."""
    kwargs = {"columns": 3, "channels": (8, 16), "dropout": (0.0, 0.0), **kwargs}
    return FractalNet(num_classes=5, in_chans=3, **kwargs)


def _record_units(model: nn.Module) -> list[ConvUnit]:
    """Hook every convolution unit; the returned list fills with the units that ran."""
    ran: list[ConvUnit] = []
    for unit in model.modules():
        if isinstance(unit, ConvUnit):
            unit.register_forward_hook(lambda m, *_: ran.append(m))
    return ran


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert count_parameters(model) == PARAM_COUNTS[name]


def test_fractal_expansion() -> None:
    with torch.device("meta"):
        model = create_model("fractalnet_cifar", dropout=PAPER_DROPOUT)
    assert len(model.blocks) == 5
    assert [b.path.conv.conv.out_channels for b in model.blocks] == [64, 128, 256, 512, 512]
    assert [b.path.conv.dropout.p for b in model.blocks] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert (model.local_drop_prob, model.global_drop_ratio, model.inference) == (0.15, 0.5, "all")
    for block in model.blocks:
        # columns of depth 1, 2, 4: 7 convolutions per block, 20 layers on the deepest path
        assert [len(block.path.column_units(c)) for c in range(3)] == [1, 2, 4]
        assert sum(isinstance(m, ConvUnit) for m in block.modules()) == 7


def test_join_is_the_mean_of_the_columns() -> None:
    block = FractalBlock(columns=2, in_channels=3, out_channels=4, drop_rate=0.0).eval()
    x = torch.randn(2, 3, 8, 8)
    shallow = block.path.conv(x)
    deep = block.path.second.conv(block.path.first.conv(x))
    with torch.no_grad():
        torch.testing.assert_close(block(x, DropPathPlan(2)), block.pool((shallow + deep) / 2))
    # the last join of f_3 merges its three columns at once: mean(c0, c1, c2), not mean(c0, mean(c1, c2))
    block = FractalBlock(columns=3, in_channels=3, out_channels=4, drop_rate=0.0).eval()
    path = block.path
    with torch.no_grad():
        inner = (path.first.conv(x) + path.first.second.conv(path.first.first.conv(x))) / 2  # join ending f_2
        c0, c1, c2 = path.conv(x), path.second.conv(inner), path.second.second.conv(path.second.first.conv(inner))
        torch.testing.assert_close(block(x, DropPathPlan(3)), block.pool((c0 + c1 + c2) / 3))


def test_eval_is_deterministic_and_uses_all_columns() -> None:
    model = _tiny().eval()
    ran = _record_units(model)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert len(ran) == 2 * 2 * 7


def test_drop_path_only_in_training() -> None:
    model = _tiny().train()
    ran = _record_units(model)
    x = torch.randn(4, 3, 16, 16)
    outputs, counts = [], []
    with torch.no_grad():
        for _ in range(20):
            ran.clear()
            outputs.append(model(x))
            counts.append(len(ran))
    assert min(counts) < 14 and max(counts) <= 14  # dropped paths are not computed
    assert any(not torch.equal(outputs[0], out) for out in outputs[1:])


def test_global_drop_path_follows_a_single_column() -> None:
    model = _tiny(global_drop_ratio=1.0).train()
    ran = _record_units(model)
    x = torch.randn(4, 3, 16, 16)
    seen = set()
    with torch.no_grad():
        for _ in range(30):
            ran.clear()
            out = model(x)
            column = next(c for c in range(3) if ran[0] in model.blocks[0].path.column_units(c))
            seen.add(column)
            expected_units = [u for b in model.blocks for u in b.path.column_units(column)]
            assert ran == expected_units  # exactly that column's layers ran, in order
            h = x
            for block in model.blocks:  # ... and the output is that column alone
                for unit in block.path.column_units(column):
                    h = unit(h)
                h = block.pool(h)
            torch.testing.assert_close(out, model.forward_head(h))
    assert seen == {0, 1, 2}


def test_half_of_the_batches_are_global() -> None:
    model = _tiny().train()
    plans = [model.sample_plan() for _ in range(2000)]
    share = sum(p.column is not None for p in plans) / len(plans)
    assert share == pytest.approx(0.5, abs=0.05)
    columns = Counter(p.column for p in plans if p.column is not None)
    assert set(columns) == {0, 1, 2}


def test_local_drop_path_keeps_at_least_one_input() -> None:
    plan = DropPathPlan(columns=3, local_prob=0.15)
    masks = torch.tensor([plan.join_mask(3) for _ in range(4000)])
    assert masks.any(1).all()
    drop_rate = 1 - masks.float().mean(0)
    torch.testing.assert_close(drop_rate, torch.full((3,), 0.15), atol=0.03, rtol=0)
    # a join inside the fractal (fewer inputs) never sees the shallow columns
    assert DropPathPlan(columns=3, column=1).join_mask(2) == [True, False]
    assert DropPathPlan(columns=3, column=0).join_mask(2) == [False, False]


def test_deepest_column_inference() -> None:
    model = _tiny(inference="deepest").eval()
    ran = _record_units(model)
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    assert ran == [u for b in model.blocks for u in b.path.column_units(2)]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="one entry per block"):
        _tiny(dropout=(0.0,))
    with pytest.raises(ValueError, match="inference"):
        _tiny(inference="widest")
    with pytest.raises(ValueError, match="column"):
        _tiny().blocks[0].path.column_units(3)
