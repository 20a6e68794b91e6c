"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun, "Efficient inference in fully
connected CRFs with Gaussian edge potentials", NIPS 2011), as a differentiable PyTorch module.

The energy of a labelling ``x`` is ``E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)`` with
unary ``U = -logits``, the Potts compatibility ``mu(l, l') = [l != l']`` and the kernel

    k(f_i, f_j) = w1 exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)   (appearance)
                + w2 exp(-|p_i - p_j|^2 / 2 theta_gamma^2)                                    (smoothness)

of positions ``p`` (pixels) and colours ``I``. Mean-field inference updates all pixels in parallel,
``Q_i(l) ∝ exp(-U_i(l) - sum_l' mu(l, l') sum_{j != i} k(f_i, f_j) Q_j(l'))`` (the paper's Algorithm 1).

Message passing (``sum_j k_ij Q_j``) is either *local*, over a ``(2 window + 1)^2`` neighbourhood of
every pixel (a convolution whose per-pixel weights depend on the image, as in ConvCRF, Teichmann &
Cipolla 2018): linear in the pixels, runs on any device, exact once the window covers the image; or
*all pairs* (``window=None``): the dense ``N x N`` kernel matrix, the naive reference. The paper's
permutohedral-lattice filtering is not used.

Colours are each image's intensities rescaled to 0..255 (min to max over the image), so ``theta_beta``
is in 8-bit colour units whatever the input normalisation; grey images use their single channel.
With ``trainable=True`` the kernel weights (and, with ``learn_compatibility``, the label compatibility
matrix, initialised to Potts) are parameters learned through the unrolled iterations, as in CRF-as-RNN
(Zheng et al., ICCV 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError


def colour_features(image: torch.Tensor) -> torch.Tensor:
    """``image`` ``(B, C, H, W)`` rescaled per image to 0..255 (the CRF's colour features)."""
    flat = image.detach().float().flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (image.float() - low) * (255.0 / (high - low).clamp_min(1e-6))


def potts(num_classes: int) -> torch.Tensor:
    """The Potts compatibility ``mu(l, l') = [l != l']``."""
    return 1.0 - torch.eye(num_classes)


class DenseCRF(nn.Module):
    """Mean-field inference in a dense CRF over ``num_classes`` labels.

    ``forward(logits, image)`` returns the log of the final marginals ``Q`` (``(B, L, H, W)``), usable
    wherever logits are (argmax, cross-entropy). ``window`` is the radius of the local neighbourhood;
    ``None`` passes messages between all pairs of pixels (quadratic time and memory). The defaults
    are the setting chosen on the digit scenes' validation split (``scripts/segmentation_digits.py``).
    """

    def __init__(
        self,
        num_classes: int,
        w1: float = 1.0,
        w2: float = 0.5,
        theta_alpha: float = 8.0,
        theta_beta: float = 20.0,
        theta_gamma: float = 1.0,
        iterations: int = 5,
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
        if iterations < 0 or (window is not None and window < 1):
            raise ConfigError(f"crf needs iterations >= 0 and window >= 1 (or null for all pairs), got {iterations} and {window}")
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
        return (f"num_classes={self.num_classes}, w1={w1:.3g}, w2={w2:.3g}, theta_alpha={self.theta_alpha:g}, "
                f"theta_beta={self.theta_beta:g}, theta_gamma={self.theta_gamma:g}, iterations={self.iterations}, "
                f"window={self.window}, trainable={self.trainable}")

    # ---- kernels and messages --------------------------------------------------------------------------------------

    def _kernel(self, dist2: torch.Tensor, colour2: torch.Tensor) -> torch.Tensor:
        """``w1`` appearance + ``w2`` smoothness for squared position and colour distances."""
        w1, w2 = self.weights.to(colour2.dtype).unbind()
        appearance = torch.exp(-dist2 / (2 * self.theta_alpha**2) - colour2 / (2 * self.theta_beta**2))
        return w1 * appearance + w2 * torch.exp(-dist2 / (2 * self.theta_gamma**2))

    def _offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        r = self.window or 0
        ry, rx = min(r, height - 1), min(r, width - 1)  # farther offsets never reach a pixel
        return [(dy, dx) for dy in range(-ry, ry + 1) for dx in range(-rx, rx + 1) if (dy, dx) != (0, 0)]

    def local_kernel(self, colours: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)``: the kernel between each pixel and its neighbour at each of the ``K``
        offsets of the window (zero where the neighbour falls outside the image)."""
        b, _, h, w = colours.shape
        offsets = self._offsets(h, w)
        r = max([max(abs(dy), abs(dx)) for dy, dx in offsets] + [0])
        padded = F.pad(colours, (r, r, r, r))
        inside = F.pad(torch.ones(1, 1, h, w, device=colours.device, dtype=colours.dtype), (r, r, r, r))
        kernels = []
        for dy, dx in offsets:
            neighbour = padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            colour2 = (neighbour - colours).pow(2).sum(1)
            valid = inside[:, 0, r + dy : r + dy + h, r + dx : r + dx + w]
            kernels.append(self._kernel(torch.tensor(float(dy * dy + dx * dx)), colour2) * valid)
        return torch.stack(kernels, 1) if kernels else colours.new_zeros(b, 0, h, w)

    def local_message(self, q: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """``sum_{j in window(i)} k_ij Q_j`` for every pixel ``i``."""
        h, w = q.shape[-2:]
        offsets = self._offsets(h, w)
        r = max([max(abs(dy), abs(dx)) for dy, dx in offsets] + [0])
        padded = F.pad(q, (r, r, r, r))
        message = torch.zeros_like(q)
        for k, (dy, dx) in enumerate(offsets):
            message = torch.addcmul(message, kernel[:, k : k + 1], padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w])
        return message

    def dense_kernel(self, colours: torch.Tensor) -> torch.Tensor:
        """``(B, N, N)``: the kernel between all pairs of the ``N = H W`` pixels (zero diagonal)."""
        b, _, h, w = colours.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=colours.device), torch.arange(w, device=colours.device), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1).to(colours.dtype)
        dist2 = torch.cdist(pos, pos).pow(2)
        feats = colours.flatten(2).transpose(1, 2)
        kernel = self._kernel(dist2, torch.cdist(feats, feats).pow(2))
        return kernel * (1 - torch.eye(h * w, device=colours.device, dtype=colours.dtype))

    def pairwise(self, q: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """``sum_l' mu(l, l') sum_{j != i} k_ij Q_j(l')``: the pairwise energy of label ``l`` at each pixel."""
        if self.window is None:
            b, n_labels, h, w = q.shape
            message = torch.bmm(q.flatten(2), kernel).view(b, n_labels, h, w)  # the kernel is symmetric
        else:
            message = self.local_message(q, kernel)
        return torch.einsum("lk,bkhw->blhw", self._compat().to(q.dtype), message)

    def kernels(self, image: torch.Tensor) -> torch.Tensor:
        colours = colour_features(image)
        return self.dense_kernel(colours) if self.window is None else self.local_kernel(colours)

    # ---- inference -------------------------------------------------------------------------------------------------

    def forward(self, logits: torch.Tensor, image: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        """Log-marginals after ``iterations`` (default ``self.iterations``) mean-field updates."""
        if logits.shape[-2:] != image.shape[-2:] or logits.shape[0] != image.shape[0]:
            raise ConfigError(f"crf: logits {tuple(logits.shape)} and images {tuple(image.shape)} differ in batch or size")
        logits = logits.float()
        kernel = self.kernels(image)
        log_q = F.log_softmax(logits, 1)
        for _ in range(self.iterations if iterations is None else iterations):
            log_q = F.log_softmax(logits - self.pairwise(log_q.exp(), kernel), 1)
        return log_q

    def free_energy(self, logits: torch.Tensor, image: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """Per image, the mean-field objective ``KL(Q || P) - log Z``: expected energy minus entropy,
        ``sum_i Q_i . U_i + 1/2 sum_i Q_i . pairwise_i + sum_i Q_i . log Q_i``."""
        q = log_q.exp()
        unary = -(q * logits.float()).sum((1, 2, 3))
        pair = 0.5 * (q * self.pairwise(q, self.kernels(image))).sum((1, 2, 3))
        return unary + pair + (q * log_q).sum((1, 2, 3))

