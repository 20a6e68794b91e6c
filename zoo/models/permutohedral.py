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
import threading
import warnings

import numpy as np
import torch

from zoo.errors import ConfigError


_POOL = threading.local()  # CPU work buffers (see PermutohedralLattice._buffers), one set per thread


class PermutohedralLattice:
    """The lattice of a batch of feature sets ``(B, N, d)``, built once (without gradients) and then
    applied to any number of value tensors ``(B N, C)`` with :meth:`filter`. Images of a batch share one
    lattice whose keys carry the image index, so they never mix. ``smooth`` (for features that vary
    smoothly along the pixels, as the positions alone) numbers the vertices in the order the pixels
    reach them; ``reorder`` (default: unless ``smooth``) runs the products over the pixels sorted by their
    first vertex."""

    def __init__(self, features: torch.Tensor, smooth: bool = False, reorder: bool | None = None) -> None:
        with torch.no_grad():
            self._build(features.detach().float(), smooth, not smooth if reorder is None else reorder)

    def _build(self, features: torch.Tensor, smooth: bool, reorder: bool) -> None:
        b, n, d = features.shape
        device, p = features.device, b * n
        self.alpha = 1.0 / (1.0 + 2.0**-d)  # densecrf's "magic scaling constant"
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
        # rank: the position of each coordinate of elevated - rem0 in descending order, ties to the later
        # coordinate, counted pair by pair as densecrf does (cheaper than a sort of d + 1 values per pixel)
        excess = elevated - rem0
        rank = total[:, None].repeat(1, d + 1)
        for one in range(d + 1):
            for other in range(one + 1, d + 1):
                smaller = (excess[:, one] < excess[:, other]).long()
                rank[:, one] += smaller
                rank[:, other] += 1 - smaller
        rem0 = rem0.long() + (d + 1) * ((rank < 0).long() - (rank > d).long())
        rank = rank.remainder(d + 1)
        # barycentric weights (p. 10)
        w = (elevated - rem0) * down
        bary = torch.zeros(p, d + 2, device=device).scatter_add_(1, d - rank, w).scatter_add_(1, d - rank + 1, -w)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        # the d + 1 vertices: key_r = rem0 + canonical[r, rank] over the first d coordinates, canonical[r, k] =
        # r, less d + 1 where k > d - r; so key_r lies within rem0 -+ d. One int64 code per key: mixed radix,
        # the image index most significant, a margin of d + 1 per digit so that a neighbour's code never
        # aliases another key
        low = rem0[:, :d].amin(0) - (2 * d + 1)
        spans = (rem0[:, :d].amax(0) + 2 * d + 2 - low).tolist()
        strides = [math.prod(spans[k + 1 :]) for k in range(d)]
        if math.prod(spans) * b >= 2**62:
            raise ConfigError("crf: the lattice's keys overflow int64 (kernel widths theta too small for this image); "
                              "use larger theta values or method=window")
        stride = torch.tensor(strides, device=device)
        image = (torch.arange(b, device=device) * math.prod(spans)).repeat_interleave(n)
        base = ((rem0[:, :d] - low) * stride).sum(1) + image
        # sum_k stride_k [rank_k > d - r] for r = 0..d: a cumulative sum over r of the strides placed at d + 1 - rank_k
        wrapped = torch.zeros(p, d + 2, dtype=torch.long, device=device)
        wrapped.scatter_add_(1, d + 1 - rank[:, :d], stride.expand(p, d))
        r = torch.arange(d + 1, device=device)
        codes = base[:, None] + r * sum(strides) - (d + 1) * wrapped.cumsum(1)[:, : d + 1]
        # the lattice: the unique codes (sorted, for the neighbour look-ups) from one stable sort
        sorted_codes, by_code = codes.flatten().sort(stable=True)
        first = torch.ones_like(sorted_codes, dtype=torch.bool)
        first[1:] = sorted_codes[1:] != sorted_codes[:-1]
        lattice = sorted_codes[first]
        m = lattice.numel()
        # vertices numbered by code, or (smooth) in the order the pixels first reach them, as densecrf's hash table
        # does: faster products where the features vary smoothly along the pixels (the positions alone), slower
        # blurs otherwise. ids[code rank]: the vertex number; rank_of: its inverse
        ids = rank_of = torch.arange(m, device=device)
        if smooth:
            first_touch = by_code[first]  # the stable sort puts a vertex's earliest entry first
            ids = torch.empty_like(first_touch).scatter_(0, first_touch.argsort(), ids)
            rank_of = ids.argsort()
        vertex = first.long().cumsum(0) - 1  # of each sorted entry, by code rank
        vertex_of = torch.empty_like(by_code).scatter_(0, by_code, ids[vertex] if smooth else vertex).view(p, d + 1)
        # the products run over the pixels in the order of their first vertex (``order``; ``None``: as given),
        # so that the pixels a vertex gathers lie together in memory, and so do the vertices a pixel reads;
        # ``restore``: each pixel's place in that order
        self.order = self.restore = None
        place = torch.arange(p, device=device)
        if reorder:
            self.order = vertex_of.min(1).values.argsort(stable=True)  # (amin is slower)
            self.restore = place = torch.empty_like(self.order).scatter_(0, self.order, place)
        # slice (P x M): each pixel's d + 1 vertices; splat (M x P): each vertex's pixels, from the entries
        # grouped by vertex (the code sort's own order, when vertices are numbered by code)
        weights = bary[:, : d + 1].contiguous()
        by_pixel = [vertex_of, weights] if self.order is None else [t.index_select(0, self.order) for t in (vertex_of, weights)]
        self.slice = _sparse(torch.arange(0, p * (d + 1) + 1, d + 1, device=device), by_pixel[0].flatten(),
                             self.alpha * by_pixel[1].flatten(), (p, m))
        entries = vertex_of.flatten().argsort(stable=True) if smooth else by_code
        self.splat = _sparse(_row_starts(torch.bincount(vertex_of.flatten(), minlength=m)),
                             place.index_select(0, entries.div(d + 1, rounding_mode="floor")),
                             weights.flatten().index_select(0, entries), (m, p))
        # the blur along direction j: 1 at the vertex, 1/2 at its two neighbours (every coordinate - 1 and
        # coordinate j + d, or the reverse; j = d: the implicit last coordinate), where they exist.
        # tables[j][v] = (below, v, above), m where there is none (and tables[j][m] = m: none of none)
        steps = [-sum(strides) + (d + 1) * strides[j] for j in range(d)] + [-sum(strides)]
        number = torch.arange(m, device=device)
        tables = []
        for above in _find(lattice, lattice + torch.tensor(steps, device=device).abs()[:, None]):  # by code rank
            above = torch.where(above >= 0, above, m)
            below = torch.full((m + 1,), m, device=device).scatter_(0, above, number)[:m]
            if smooth:  # rows by vertex number, columns renumbered
                below, above = (torch.where(n < m, ids[n.clamp(max=m - 1)], m)[rank_of] for n in (below, above))
            tables.append(torch.cat([torch.stack([below, number, above], 1), torch.full((1, 3), m, device=device)]))
        self.blurs = _blurs(tables)
        self._reverse_blurs: list[torch.Tensor] | None = None
        self.size = m

    @property
    def reverse_blurs(self) -> list[torch.Tensor]:
        """The transposes of :attr:`blurs`, last first (for gradients; built on first use: a product of two
        blurs is not symmetric where the lattice has holes)."""
        if self._reverse_blurs is None:
            self._reverse_blurs = [blur.t().to_sparse_csr() for blur in reversed(self.blurs)]
        return self._reverse_blurs

    def _product(self, values: torch.Tensor, reverse: bool = False, out: torch.Tensor | None = None,
                 weight: float | None = None) -> torch.Tensor:
        """``slice B_d .. B_0 splat values`` over the pixels in :attr:`order` (``reverse``: the blurs'
        transposes in the reverse order, :attr:`reverse_blurs`), written into ``out`` if given (``weight``: ``out + weight`` times it). On the CPU the
        products go into buffers kept between calls (``addmm`` with ``beta=0``: no zero fill, no fresh pages)."""
        dtype = values.dtype
        blurs = [blur.to(dtype) for blur in (self.reverse_blurs if reverse else self.blurs)]
        if values.device.type != "cpu":
            grid = self.splat.to(dtype) @ values
            for blur in blurs:
                grid = blur @ grid
            result = self.slice.to(dtype) @ grid
            if out is None:
                return result
            return out.copy_(result) if weight is None else out.add_(result, alpha=weight)
        grid, spare = self._buffers(values, "grid", "spare")
        torch.addmm(grid, self.splat.to(dtype), values, beta=0, out=grid)
        for blur in blurs:
            torch.addmm(spare, blur, grid, beta=0, out=spare)
            grid, spare = spare, grid
        out = values.new_empty(values.shape) if out is None else out
        if weight is None:
            return torch.addmm(out, self.slice.to(dtype), grid, beta=0, out=out)
        return torch.addmm(out, self.slice.to(dtype), grid, alpha=weight, out=out)

    def _buffers(self, values: torch.Tensor, *names: str) -> list[torch.Tensor]:
        """Work buffers shaped for ``values`` (``grid``, ``spare``: the lattice's rows; others: the pixels'),
        views of this thread's :data:`_POOL`, which keeps the largest of each seen so far: products of later
        lattices reuse the memory instead of faulting in fresh pages."""
        pool = _POOL.__dict__
        out = []
        for name in names:
            rows = self.size if name in ("grid", "spare") else values.shape[0]
            need, key = rows * values.shape[1], (name, values.dtype)
            if key not in pool or pool[key].numel() < need:
                pool[key] = values.new_empty(need)
            out.append(pool[key][:need].view(rows, values.shape[1]))
        return out

    def _apply(self, values: torch.Tensor, reverse: bool = False, out: torch.Tensor | None = None,
               weight: float = 1.0) -> torch.Tensor:
        """The filter of ``values`` in their own pixel order; with ``out``, ``out + weight`` times it,
        written into ``out``. Reordered pixels go in by one gather and come back by another."""
        if self.order is None:
            return self._product(values, reverse, out, None if out is None else weight)
        cpu = values.device.type == "cpu"
        moved, result = self._buffers(values, "moved", "result") if cpu else (None, None)
        result = self._product(torch.index_select(values, 0, self.order, out=moved), reverse, result)
        if out is None:
            return result.index_select(0, self.restore)
        return out.add_(torch.index_select(result, 0, self.restore, out=moved), alpha=weight)

    def normalise_symmetric(self) -> None:
        """Turn the filter ``K`` into ``D^-1/2 K D^-1/2`` with ``D = diag(K 1)`` (densecrf's NORMALIZE_SYMMETRIC)."""
        norm = (self._product(torch.ones(self.slice.shape[0], 1, device=self.slice.device)) + 1e-20).rsqrt().flatten()
        self.slice = _scale(self.slice, rows=norm)
        self.splat = _scale(self.splat, cols=norm)

    def accumulate(self, values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
        """``out += weight * filter(values)`` in place, outside autograd (the slice product adds into ``out``)."""
        self._apply(values, out=out, weight=weight)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat, blur, slice: ``values`` ``(B N, C)`` -> the Gaussian-filtered ``(B N, C)``."""
        return _Filter.apply(values, self)


class _Filter(torch.autograd.Function):
    """The lattice filter as one autograd node: its transpose applies the transposed blurs in the reverse order."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, values: torch.Tensor,
                lattice: PermutohedralLattice) -> torch.Tensor:
        ctx.lattice = lattice  # type: ignore[attr-defined]
        return lattice._apply(values.contiguous())

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # (slice B_d .. B_0 splat)^T = splat^T B_0 .. B_d slice^T, and splat^T = slice / alpha, slice^T = alpha splat
        return ctx.lattice._apply(grad.contiguous(), reverse=True), None  # type: ignore[attr-defined]


def _find(sorted_codes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The index of each of ``codes`` (rows of ascending codes) in ``sorted_codes``, -1 where it is missing.
    On the CPU numpy's binary search, which starts each search where the previous one ended when the
    codes ascend (about twice as fast as torch's here)."""
    if codes.device.type == "cpu":
        at = torch.from_numpy(np.searchsorted(sorted_codes.numpy(), codes.numpy())).clamp_(max=sorted_codes.numel() - 1)
    else:
        at = torch.searchsorted(sorted_codes, codes).clamp(max=sorted_codes.numel() - 1)
    return torch.where(sorted_codes[at] == codes, at, -1)


def _blurs(tables: list[torch.Tensor]) -> list[torch.Tensor]:
    """The blurs of ``tables`` (one per direction, in the order they apply) as CSR matrices, two directions
    to a matrix: ``B_k B_j`` has up to 9 entries a row (the 9 neighbours are distinct lattice points), so a
    grid passes through memory half as often for about the same arithmetic."""
    return [_blur_matrix(tables[i : i + 2][::-1]) for i in range(0, len(tables), 2)]


def _blur_matrix(tables: list[torch.Tensor]) -> torch.Tensor:
    """The CSR product of the blurs of ``tables``, the first applied last: row ``i`` reaches ``i``'s
    neighbours by the first, then theirs by the next, weights ``[1/2, 1, 1/2]`` each step; a row's columns
    in that order (the products do not need them sorted)."""
    m, device = tables[0].shape[0] - 1, tables[0].device
    narrow = m < 2**27  # int32 columns with the weight's slot (< 16) in the high bits
    tables = [t.int() for t in tables] if narrow else tables
    half = torch.tensor([0.5, 1.0, 0.5], device=device)
    cols, weights = tables[0][:m], half
    for table in tables[1:]:
        cols = table.index_select(0, cols.flatten()).view(m, -1)
        weights = torch.outer(weights, half).flatten()
    present = cols < m
    # one compaction for columns and weights: the weight's slot rides in the column's high bits
    shift = 27 if narrow else 40
    packed = (cols + (torch.arange(cols.shape[1], device=device, dtype=cols.dtype) << shift)).masked_select(present)
    return _sparse(_row_starts(present.sum(1)), packed & ((1 << shift) - 1), weights[(packed >> shift).long()], (m, m))


def _row_starts(counts: torch.Tensor) -> torch.Tensor:
    """CSR row pointers from the number of entries of each row."""
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _scale(matrix: torch.Tensor, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``diag(rows) matrix diag(cols)`` of a CSR matrix."""
    crow, col, values = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    if rows is not None:
        values = values * rows.repeat_interleave(crow.diff().long())
    if cols is not None:
        values = values * cols[col]
    return _sparse(crow, col, values, matrix.shape)


def _sparse(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": products with dense matrices are all we use
        warnings.simplefilter("ignore", UserWarning)
        index = torch.int32 if max(shape + (values.numel(),)) < 2**31 else torch.int64  # int32: half the index bytes
        return torch.sparse_csr_tensor(crow.to(index), cols.to(index), values, shape, check_invariants=False)
