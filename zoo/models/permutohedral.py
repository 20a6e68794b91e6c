"""Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis, "Fast high-dimensional filtering
using the permutohedral lattice", Eurographics 2010), in pure torch ops so that it runs batched on any
device and autograd differentiates it with respect to the filtered values.

Each ``d``-dimensional feature vector is lifted onto the plane ``x . 1 = 0`` of ``R^(d+1)``, which the
lattice tiles with simplices; a value *splats* onto the ``d + 1`` vertices of its enclosing simplex with
its barycentric weights, the lattice is *blurred* with ``[1 2 1]`` along each of the ``d + 1`` lattice
directions, and each pixel *slices* its result back from the same vertices. The result approximates
``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` up to a constant gain (removed by the kernel normalisation of
:class:`~zoo.models.crf.DenseCRF`). The lattice is the one of Krähenbühl's densecrf
(``permutohedral.cpp``): the same elevation and scale ``sqrt(2/3) (d + 1)``, rounding, barycentric
weights, blur order and ``alpha`` constant, so that both filter alike.
"""

from __future__ import annotations

import math

import torch

from zoo.errors import ConfigError


class PermutohedralLattice:
    """The lattice of a batch of feature sets ``(B, N, d)``, built once (without gradients) and then
    applied to any number of value tensors ``(B, N, C)`` with :meth:`filter`. Images of a batch share one
    lattice whose keys carry the image index, so they never mix."""

    def __init__(self, features: torch.Tensor) -> None:
        with torch.no_grad():
            self._build(features.detach().float())

    def _build(self, features: torch.Tensor) -> None:
        b, n, d = features.shape
        device, p = features.device, b * n
        f = features.reshape(p, d)
        # elevate onto the plane x . 1 = 0 (Adams et al. 2010, p. 5), scaled for a unit-variance Gaussian (p. 6)
        i = torch.arange(d, device=device, dtype=torch.float32)
        scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt((i + 2) * (i + 1))
        cf = f * scale
        suffix = cf.flip(1).cumsum(1).flip(1)  # suffix[:, k] = sum_{m >= k} cf[:, m]
        elevated = torch.cat([suffix[:, :1], torch.cat([suffix[:, 1:], cf.new_zeros(p, 1)], 1) - (i + 1) * cf], 1)
        # the closest remainder-0 lattice point, then the simplex the point lies in (its coordinates' ranks)
        down = 1.0 / (d + 1)
        v = elevated * down
        up_pt, down_pt = torch.ceil(v) * (d + 1), torch.floor(v) * (d + 1)
        rem0 = torch.where(up_pt - elevated < elevated - down_pt, up_pt, down_pt)
        total = (rem0.sum(1) * down).round().long()
        diff = elevated - rem0
        less = diff[:, :, None] < diff[:, None, :]  # less[:, i, j]: diff_i < diff_j
        later = torch.ones(d + 1, d + 1, dtype=torch.bool, device=device).triu(1)  # j > i
        rank = (less & later).sum(2) + (~less.transpose(1, 2) & later.T).sum(2) + total[:, None]
        rem0 = rem0.long() + (d + 1) * ((rank < 0).long() - (rank > d).long())
        rank = rank.remainder(d + 1)
        # barycentric weights (p. 10)
        w = (elevated - rem0) * down
        bary = torch.zeros(p, d + 2, device=device).scatter_add_(1, d - rank, w).scatter_add_(1, d - rank + 1, -w)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        # the d + 1 vertices: key_r = rem0 + canonical[r, rank] over the first d coordinates
        r = torch.arange(d + 1, device=device)
        canonical = torch.where(r[None, :] <= d - r[:, None], r[:, None], r[:, None] - (d + 1))  # [remainder, rank]
        keys = rem0[:, None, :d] + canonical[r[None, :, None], rank[:, None, :d]]  # (P, d + 1, d)
        # one int64 code per key (mixed radix, the image index most significant, a margin of d + 1 per digit
        # so that a neighbour's code never aliases another key)
        low = keys.amin((0, 1)) - (d + 1)
        spans = (keys.amax((0, 1)) - low + d + 2).tolist()
        strides = [math.prod(spans[k + 1 :]) for k in range(d)]
        if math.prod(spans) * b >= 2**62:
            raise ConfigError("crf: the lattice's keys overflow int64 (kernel widths theta too small for this image); "
                              "use larger theta values or method=window")
        stride = torch.tensor(strides, device=device)
        image = torch.arange(b, device=device).repeat_interleave(n * (d + 1)).view(p, d + 1)
        codes = ((keys - low) * stride).sum(2) + image * math.prod(spans)
        lattice, offsets = torch.unique(codes.flatten(), sorted=True, return_inverse=True)
        m = lattice.numel()
        # neighbours along direction j: every coordinate - 1, coordinate j + d (j = d: the implicit last one)
        steps = [-sum(strides) + (d + 1) * strides[j] for j in range(d)] + [-sum(strides)]
        neighbours = []
        for step in steps:
            pair = []
            for code in (lattice + step, lattice - step):
                at = torch.searchsorted(lattice, code).clamp(max=m - 1)
                found = torch.where(lattice[at] == code, at, m)
                pair.append(torch.cat([found, found.new_full((1,), m)]))  # row m: the missing vertex, always 0
            neighbours.append(pair)
        self.batch, self.pixels, self.dim, self.size = b, n, d, m
        self.offsets, self.weights, self.neighbours = offsets.view(-1), bary[:, : d + 1].contiguous(), neighbours
        self.alpha = 1.0 / (1.0 + 2.0**-d)  # densecrf's "magic scaling constant"

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat, blur, slice: ``values`` ``(B, N, C)`` -> the Gaussian-filtered ``(B, N, C)``."""
        b, n, c = values.shape
        flat = values.reshape(b * n, c)
        weights = self.weights.to(flat.dtype)
        splat = (flat[:, None, :] * weights[:, :, None]).reshape(-1, c)
        grid = flat.new_zeros(self.size + 1, c).index_add(0, self.offsets, splat)
        for n1, n2 in self.neighbours:
            grid = grid + 0.5 * (grid.index_select(0, n1) + grid.index_select(0, n2))
        sliced = grid.index_select(0, self.offsets).view(b * n, self.dim + 1, c)
        return (self.alpha * torch.bmm(weights[:, None, :], sliced)).view(b, n, c)
