"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun, "Efficient inference in fully
connected CRFs with Gaussian edge potentials", NIPS 2011), as a differentiable PyTorch module.

The energy of a labelling ``x`` is ``E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)`` with
unary ``U = -logits``, the Potts compatibility ``mu(l, l') = [l != l']`` and the kernel

    k(f_i, f_j) = w1 k1(f_i, f_j) + w2 k2(f_i, f_j),
    k1 = exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)   (appearance)
    k2 = exp(-|p_i - p_j|^2 / 2 theta_gamma^2)                                    (smoothness)

of positions ``p`` (pixels) and colours ``I``, each Gaussian normalised symmetrically,
``D^-1/2 k D^-1/2`` with ``D_i = sum_j k(f_i, f_j)`` (self included), as ``NORMALIZE_SYMMETRIC``, the
default of Krähenbühl's densecrf and of pydensecrf. Mean-field inference updates all pixels in parallel,
``Q_i(l) ∝ exp(-U_i(l) - sum_l' mu(l, l') sum_j k(f_i, f_j) Q_j(l'))`` (the paper's Algorithm 1; the sum
includes ``j = i``, as densecrf's filtering does).

Message passing (``sum_j k_ij Q_j``) is one of three ``method``\\s:

- ``lattice`` (default): Gaussian filtering on the permutohedral lattice (Adams et al. 2010,
  :mod:`zoo.models.permutohedral`) as in the paper: linear in the pixels whatever the kernel widths, the
  lattice built once per image and forward, all labels filtered at once; agrees with densecrf
  (tested against pydensecrf).
- ``window``: the exact kernel truncated to a ``(2 window + 1)^2`` neighbourhood of every pixel (a
  convolution whose per-pixel weights depend on the image, as in ConvCRF, Teichmann & Cipolla 2018).
- ``exact``: the dense ``N x N`` kernel matrix (quadratic memory: up to about 96 x 96 pixels).

Configs from before ``method`` (:func:`resolve_method`): ``window=None`` meant all pairs (``exact``); any
other window now gets the lattice, the fully connected CRF it approximated.

All three run on any device and are differentiable. Colours are each image's intensities rescaled to
0..255 (min to max over the image), so ``theta_beta`` is in 8-bit colour units whatever the input
normalisation; grey images use their single channel. With ``trainable=True`` the kernel weights (and,
with ``learn_compatibility``, the label compatibility matrix, initialised to Potts) are parameters
learned through the unrolled iterations, as in CRF-as-RNN (Zheng et al., ICCV 2015).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.models.permutohedral import PermutohedralLattice
from zoo.registry import close_names

METHODS = ("lattice", "window", "exact")



class Filter:
    """A normalised Gaussian filter over one image batch's ``P = B H W`` pixels: values ``(P, C)`` ->
    ``sum_j k_ij v_j`` alike."""

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def accumulate(self, values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
        """``out += weight * self(values)`` (outside autograd)."""
        out.add_(self(values), alpha=weight)


def colour_features(image: torch.Tensor) -> torch.Tensor:
    """``image`` ``(B, C, H, W)`` rescaled per image to 0..255 (the CRF's colour features)."""
    flat = image.detach().float().flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (image.detach().float() - low) * (255.0 / (high - low).clamp_min(1e-6))


def potts(num_classes: int) -> torch.Tensor:
    """The Potts compatibility ``mu(l, l') = [l != l']``."""
    return 1.0 - torch.eye(num_classes)


def resolve_method(method: str | None, window: int | None) -> str:
    """``method``, or for configs that predate it (``method`` unset) ``exact`` where ``window`` is None
    (its former spelling of all pairs) and the lattice otherwise."""
    if method is None:
        return "exact" if window is None else "lattice"
    if method not in METHODS:
        close = close_names(str(method), list(METHODS))
        hint = f"did you mean: {', '.join(close)}?" if close else f"use one of {', '.join(METHODS)}"
        raise ConfigError(f"unknown crf method {method!r}; {hint}")
    return method


def _symmetric(filt: Filter, features: torch.Tensor) -> torch.Tensor:
    """``D^-1/2`` (``(P, 1)``) of densecrf's NORMALIZE_SYMMETRIC, ``D_i = sum_j k_ij`` (self included)."""
    return (filt(features.new_ones(features.shape[:-1].numel(), 1)) + 1e-20).rsqrt()


class LatticeFilter(Filter):
    """Permutohedral-lattice filtering over ``features`` ``(B, H, W, D)``, normalised symmetrically
    (``smooth``: see :class:`~zoo.models.permutohedral.PermutohedralLattice`)."""

    def __init__(self, features: torch.Tensor, smooth: bool = False) -> None:
        self.lattice = PermutohedralLattice(features.flatten(1, 2), smooth)
        self.lattice.normalise_symmetric()

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return self.lattice.filter(values)

    def accumulate(self, values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
        self.lattice.accumulate(values, out, weight)


@functools.lru_cache(maxsize=4)
def position_lattice(batch: int, height: int, width: int, theta: float, device: torch.device) -> LatticeFilter:
    """The lattice of the smoothness kernel, whose features are the positions only: one per image size
    (the last few kept)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return LatticeFilter(torch.stack([xs, ys], -1).float().expand(batch, height, width, 2) / theta, smooth=True)


class ExactFilter(Filter):
    """Filtering with the dense ``(B, N, N)`` Gaussian kernel matrix of ``features`` ``(B, H, W, D)``,
    normalised symmetrically."""

    def __init__(self, features: torch.Tensor) -> None:
        flat = features.flatten(1, 2)
        self.kernel = torch.exp(-0.5 * torch.cdist(flat, flat).pow(2))
        norm = _symmetric(self, features).view(flat.shape[:2])
        self.kernel = norm[:, :, None] * self.kernel * norm[:, None, :]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        b, n = self.kernel.shape[:2]
        return torch.bmm(self.kernel, values.view(b, n, -1)).view(b * n, -1)


class WindowFilter(Filter):
    """The Gaussian kernel of ``features`` ``(B, H, W, D)`` truncated to a ``radius``-pixel window,
    normalised symmetrically within the window."""

    def __init__(self, features: torch.Tensor, radius: int) -> None:
        b, h, w, _ = self.shape = features.shape
        self.ry, self.rx = min(radius, h - 1), min(radius, w - 1)  # farther offsets never reach a pixel
        self.offsets = [(dy, dx) for dy in range(-self.ry, self.ry + 1) for dx in range(-self.rx, self.rx + 1)]
        padded, inside = self._pad(features), self._pad(features.new_ones(1, h, w, 1))
        self.weights = [torch.exp(-0.5 * (self._shift(padded, dy, dx) - features).pow(2).sum(-1, keepdim=True))
                        * self._shift(inside, dy, dx) for dy, dx in self.offsets]
        norm = _symmetric(self, features).view(b, h, w, 1)
        padded_norm = self._pad(norm)
        self.weights = [norm * weight * self._shift(padded_norm, dy, dx)
                        for weight, (dy, dx) in zip(self.weights, self.offsets)]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, self.rx, self.rx, self.ry, self.ry))

    def _shift(self, padded: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        h, w = self.shape[1:3]
        return padded[:, self.ry + dy : self.ry + dy + h, self.rx + dx : self.rx + dx + w]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        values = values.view(*self.shape[:3], -1)
        padded, out = self._pad(values), torch.zeros_like(values)
        for weight, (dy, dx) in zip(self.weights, self.offsets):
            out = torch.addcmul(out, weight, self._shift(padded, dy, dx))
        return out.view(-1, values.shape[-1])


class DenseCRF(nn.Module):
    """Mean-field inference in a dense CRF over ``num_classes`` labels.

    ``forward(logits, image)`` returns the log of the final marginals ``Q`` (``(B, L, H, W)``), usable
    wherever logits are (argmax, cross-entropy). ``method`` passes the messages (``lattice``, ``window``
    with radius ``window``, ``exact``; unset: see :func:`resolve_method`). The defaults are the setting
    chosen on the digit scenes' validation split (``scripts/segmentation_digits.py``).
    """

    def __init__(
        self,
        num_classes: int,
        w1: float = 20.0,
        w2: float = 3.0,
        theta_alpha: float = 8.0,
        theta_beta: float = 10.0,
        theta_gamma: float = 1.0,
        iterations: int = 5,
        method: str | None = None,
        window: int | None = 5,
        trainable: bool = False,
        learn_compatibility: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"crf needs at least 2 classes, got num_classes={num_classes}")
        if min(theta_alpha, theta_beta, theta_gamma) <= 0:
            raise ConfigError(f"crf theta_alpha, theta_beta and theta_gamma must be > 0, got {theta_alpha}, {theta_beta}, {theta_gamma}")
        if w1 < 0 or w2 < 0:
            raise ConfigError(f"crf weights w1 and w2 must be >= 0, got {w1} and {w2}")
        self.method = resolve_method(method, window)
        if iterations < 0 or (self.method == "window" and (window is None or window < 1)):
            raise ConfigError(f"crf needs iterations >= 0 and, with method=window, window >= 1, got {iterations} and {window}")
        self.num_classes, self.iterations, self.window = num_classes, int(iterations), window
        self.theta_alpha, self.theta_beta, self.theta_gamma = float(theta_alpha), float(theta_beta), float(theta_gamma)
        weights = torch.tensor([float(w1), float(w2)])
        # weights in log space when learned (they stay positive); a zero weight stays zero
        self.trainable = trainable
        if trainable:
            self.log_weights = nn.Parameter(weights.clamp_min(1e-8).log())
        else:
            self.register_buffer("fixed_weights", weights)
        compat = potts(num_classes)
        self.compatibility = nn.Parameter(compat) if learn_compatibility else None
        if self.compatibility is None:
            self.register_buffer("potts", compat)

    @property
    def weights(self) -> torch.Tensor:
        """``(w1, w2)``: appearance and smoothness kernel weights."""
        return self.log_weights.exp() if self.trainable else self.fixed_weights

    def _compat(self) -> torch.Tensor:
        return self.compatibility if self.compatibility is not None else self.potts

    def extra_repr(self) -> str:
        w1, w2 = (float(w) for w in self.weights.detach())
        window = f", window={self.window}" if self.method == "window" else ""
        return (f"num_classes={self.num_classes}, w1={w1:.3g}, w2={w2:.3g}, theta_alpha={self.theta_alpha:g}, "
                f"theta_beta={self.theta_beta:g}, theta_gamma={self.theta_gamma:g}, iterations={self.iterations}, "
                f"method={self.method}{window}, trainable={self.trainable}")

    # ---- kernels and messages --------------------------------------------------------------------------------------

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H, W, 2 + C)`` appearance features ``(x / theta_alpha, y / theta_alpha, I / theta_beta)`` and
        ``(B, H, W, 2)`` smoothness features ``(x, y) / theta_gamma``, in densecrf's order."""
        colours = colour_features(image).permute(0, 2, 3, 1)
        b, h, w, _ = colours.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=colours.device), torch.arange(w, device=colours.device), indexing="ij")
        pos = torch.stack([xs, ys], -1).to(colours.dtype).expand(b, h, w, 2)
        return torch.cat([pos / self.theta_alpha, colours / self.theta_beta], -1), pos / self.theta_gamma

    def filters(self, image: torch.Tensor) -> list[tuple[int, Filter]]:
        """For each kernel with a weight: its index in :attr:`weights` and its normalised filter, built once
        per image batch and forward."""
        out: list[tuple[int, Filter]] = []
        for k, features in enumerate(self.features(image)):
            if self.trainable or float(self.fixed_weights[k]) > 0:
                if self.method == "lattice":
                    out.append((k, LatticeFilter(features) if k == 0 else
                                position_lattice(*features.shape[:3], self.theta_gamma, features.device)))
                elif self.method == "window":
                    out.append((k, WindowFilter(features, self.window)))  # type: ignore[arg-type]
                else:
                    out.append((k, ExactFilter(features)))
        return out

    def message(self, q: torch.Tensor, filters: list[tuple[int, Filter]], start: torch.Tensor | None = None) -> torch.Tensor:
        """``start + sum_j k_ij Q_j(l)`` for ``q`` ``(P, L)``, the kernels weighted (``start``: zero)."""
        out = torch.zeros_like(q) if start is None else start.clone()
        if self.trainable:
            weights = self.weights.to(q.dtype)
            return sum((weights[k] * filt(q) for k, filt in filters), out)
        if torch.is_grad_enabled() and (q.requires_grad or out.requires_grad):
            for k, filt in filters:
                out = out + float(self.fixed_weights[k]) * filt(q)
            return out
        for k, filt in filters:  # in place: the lattice adds its slices into out
            filt.accumulate(q, out, float(self.fixed_weights[k]))
        return out

    def pairwise(self, q: torch.Tensor, filters: list[tuple[int, Filter]]) -> torch.Tensor:
        """``sum_l' mu(l, l') sum_j k_ij Q_j(l')`` for ``q`` ``(P, L)``: the pairwise energy of label ``l``."""
        return self.message(q, filters) @ self._compat().to(q.dtype).T

    def _potentials(self, unary: torch.Tensor, q: torch.Tensor, filters: list[tuple[int, Filter]]) -> torch.Tensor:
        """``-U - pairwise``, up to a constant per pixel (Potts: ``sum(message) - message``, so ``+ message``)."""
        if self.compatibility is None:
            return self.message(q, filters, start=unary)
        return unary - self.pairwise(q, filters)

    # ---- inference -------------------------------------------------------------------------------------------------

    def forward(self, logits: torch.Tensor, image: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        """Log-marginals after ``iterations`` (default ``self.iterations``) mean-field updates."""
        unary = self._pixels(logits, image)
        filters = self.filters(image)
        steps = self.iterations if iterations is None else iterations
        q = F.softmax(unary, -1)
        for _ in range(steps - 1):
            q = F.softmax(self._potentials(unary, q, filters), -1)
        log_q = F.log_softmax(self._potentials(unary, q, filters) if steps else unary, -1)
        b, labels, h, w = logits.shape
        return log_q.view(b, h, w, labels).permute(0, 3, 1, 2).contiguous()

    def free_energy(self, logits: torch.Tensor, image: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """Per image, the mean-field objective ``KL(Q || P) - log Z``: expected energy minus entropy,
        ``sum_i Q_i . U_i + 1/2 sum_i Q_i . pairwise_i + sum_i Q_i . log Q_i``."""
        unary, log_q = self._pixels(logits, image), self._pixels(log_q, image)
        q = log_q.exp()
        per_pixel = -(q * unary).sum(1) + 0.5 * (q * self.pairwise(q, self.filters(image))).sum(1) + (q * log_q).sum(1)
        return per_pixel.view(len(logits), -1).sum(1)

    def _pixels(self, scores: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``(B, L, H, W)`` scores as ``(B H W, L)`` rows, labels last."""
        if scores.shape[-2:] != image.shape[-2:] or scores.shape[0] != image.shape[0]:
            raise ConfigError(f"crf: logits {tuple(scores.shape)} and images {tuple(image.shape)} differ in batch or size")
        return scores.float().permute(0, 2, 3, 1).reshape(-1, scores.shape[1])


def reference_marginals(crf: DenseCRF, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The marginals ``(B, L, H, W)`` of Krähenbühl's own densecrf (the ``pydensecrf`` package, e.g.
    ``pip install pydensecrf2``) with ``crf``'s Potts weights, kernel widths and iterations, on the same
    unaries and colour features (rounded to 8 bits, as densecrf takes them); RGB images only."""
    import numpy as np
    import pydensecrf.densecrf as dcrf

    if image.shape[1] != 3:
        raise ConfigError(f"crf: densecrf's bilateral kernel takes RGB images, got {image.shape[1]} channel(s)")
    colours = colour_features(image).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    unary = -logits.detach().float().cpu().numpy()
    w1, w2 = (float(w) for w in crf.weights.detach())
    out = []
    for u, rgb in zip(unary, colours):
        labels, h, w = u.shape
        model = dcrf.DenseCRF2D(w, h, labels)
        model.setUnaryEnergy(np.ascontiguousarray(u.reshape(labels, -1)))
        model.addPairwiseGaussian(sxy=crf.theta_gamma, compat=w2)
        model.addPairwiseBilateral(sxy=crf.theta_alpha, srgb=crf.theta_beta, rgbim=np.ascontiguousarray(rgb), compat=w1)
        out.append(torch.from_numpy(np.array(model.inference(crf.iterations))).view(labels, h, w))
    return torch.stack(out).to(logits.device)
