"""The fully connected CRF's permutohedral-lattice message passing: against Krähenbühl's densecrf
(pydensecrf, optional), against the exact all-pairs kernel, gradients, batches and settings."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import ConfigError
from zoo.models.crf import DenseCRF, reference_marginals, resolve_method
from zoo.models.permutohedral import PermutohedralLattice

#: DeepLab v2's CRF (configs/data/voc_seg.yaml) and a wider colour kernel
SETTINGS = [dict(w1=4.0, w2=3.0, theta_alpha=67.0, theta_beta=3.0, theta_gamma=1.0),
            dict(w1=5.0, w2=3.0, theta_alpha=30.0, theta_beta=13.0, theta_gamma=3.0)]


def _blocks(height: int, width: int, labels: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit RGB images of random 16-pixel colour blocks with pixel noise (0 and 255 both present, so that the
    CRF's per-image colour rescaling is the identity) and noisy unaries ``(B, labels, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(batch, 3, height // 16 + 1, width // 16 + 1, generator=g) * 255
    image = blocks.repeat_interleave(16, 2).repeat_interleave(16, 3)[..., :height, :width]
    image = (image + 20 * torch.randn(image.shape, generator=g)).clamp(0, 255).round()
    image[:, :, 0, 0], image[:, :, -1, -1] = 0, 255
    return image, 2 * torch.randn(batch, labels, height, width, generator=g)


@pytest.mark.parametrize("settings", SETTINGS, ids=["deeplab", "wide"])
@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_lattice_agrees_with_densecrf(settings: dict[str, float], size: tuple[int, int]) -> None:
    pytest.importorskip("pydensecrf")
    image, logits = _blocks(*size, labels=5, batch=2)
    crf = DenseCRF(5, **settings, iterations=10, method="lattice")
    with torch.no_grad():
        q, reference = crf(logits, image).exp(), reference_marginals(crf, logits, image)
    assert (q.argmax(1) == reference.argmax(1)).float().mean() >= 0.98
    assert (q - reference).abs().mean() <= 0.02
    assert (q - reference).abs().max() < 1e-3  # the same lattice: equal up to float rounding


def test_lattice_approximates_the_exact_kernel() -> None:
    """Measured at 48 x 48: 98.4% equal labels, mean marginal difference 0.007 (the window of radius 5:
    88.4% and 0.054, the unaries alone 86.6% and 0.050; at 96 x 96: 98.2% and 0.006)."""
    image, logits = _blocks(48, 48, labels=5, seed=1)
    kwargs = dict(SETTINGS[1], iterations=5)
    with torch.no_grad():
        exact = DenseCRF(5, method="exact", **kwargs)(logits, image).exp()
        q = {m: DenseCRF(5, method=m, **kwargs)(logits, image).exp() for m in ("lattice", "window")}
    for method, bound in (("lattice", True), ("window", False)):
        same = float((q[method].argmax(1) == exact.argmax(1)).float().mean())
        close = float((q[method] - exact).abs().mean())
        assert (same >= 0.97 and close <= 0.012) == bound, (method, same, close)


def test_lattice_filter_gradient_is_its_transpose() -> None:
    g = torch.Generator().manual_seed(0)
    lattice = PermutohedralLattice(torch.randn(2, 12, 3, generator=g) * 2)
    lattice.normalise_symmetric()
    values = torch.randn(24, 2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lattice.filter, (values,))


@pytest.mark.parametrize("method", ["lattice", "window", "exact"])
def test_a_batch_gives_what_its_images_give_one_at_a_time(method: str) -> None:
    image, logits = _blocks(20, 28, labels=3, batch=3)
    crf = DenseCRF(3, **SETTINGS[1], iterations=4, method=method)
    with torch.no_grad():
        batched = crf(logits, image)
        single = torch.cat([crf(logits[i : i + 1], image[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_method_names_and_the_former_window_spelling() -> None:
    assert DenseCRF(3).method == "lattice"
    assert DenseCRF(3, window=None).method == "exact"  # window: null used to mean all pairs
    assert resolve_method("window", 3) == "window"
    with pytest.raises(ConfigError, match="did you mean: lattice"):
        DenseCRF(3, method="latice")
    with pytest.raises(ConfigError, match="window >= 1"):
        DenseCRF(3, method="window", window=None)


def test_lattice_refuses_keys_beyond_int64() -> None:
    with pytest.raises(ConfigError, match="overflow"):
        DenseCRF(3, theta_alpha=1e-4, theta_beta=1e-4)(torch.zeros(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_fixed_crf_gives_the_same_marginals_with_and_without_autograd() -> None:
    """Without gradients the lattice adds its slices into the potentials in place; with them, out of place."""
    image, logits = _blocks(20, 24, labels=4)
    crf = DenseCRF(4, **SETTINGS[0], iterations=3)
    with torch.no_grad():
        fused = crf(logits, image)
    logits.requires_grad_(True)
    tracked = crf(logits, image)
    tracked.exp()[:, 0].sum().backward()
    assert torch.allclose(fused, tracked, atol=1e-5) and logits.grad.abs().sum() > 0


def test_pixel_order_and_smooth_numbering_leave_the_filter_unchanged() -> None:
    """The products run over reordered pixels (or renumbered vertices): the filter is the same matrix."""
    g = torch.Generator().manual_seed(2)
    features = torch.randn(1, 300, 4, generator=g) * 1.5
    values = torch.randn(300, 3, generator=g)
    results = []
    for kwargs in ({}, {"reorder": False}, {"smooth": True}, {"smooth": True, "reorder": True}):
        lattice = PermutohedralLattice(features, **kwargs)
        lattice.normalise_symmetric()
        out = torch.full_like(values, 2.0)
        lattice.accumulate(values, out, 0.5)
        results += [lattice.filter(values), (out - 2.0) / 0.5]
    assert PermutohedralLattice(features).order is not None and PermutohedralLattice(features, smooth=True).order is None
    for result in results[1:]:
        assert torch.allclose(result, results[0], atol=1e-6)


def test_crfs_in_threads_at_once_give_what_they_give_alone() -> None:
    """Work buffers are per thread: two threads filtering different images at once do not mix them."""
    from concurrent.futures import ThreadPoolExecutor

    inputs = [_blocks(40, 56, labels=4, seed=s) for s in range(4)]
    crf = DenseCRF(4, **SETTINGS[0], iterations=5)
    with torch.no_grad():
        alone = [crf(logits, image) for image, logits in inputs]
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda pair: crf(pair[1], pair[0]), inputs * 3))
    for i, result in enumerate(together):
        assert torch.equal(result, alone[i % 4])
