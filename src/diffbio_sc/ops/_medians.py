"""Per-gene nonzero medians of normalised counts (Geneformer's gene medians), as array kernels.

Exact medians need every nonzero value. Each one is kept as a single packed
uint64 key, ``gene_index << 32 | float32 bits``: positive float32 bit patterns
order like the floats, so one in-place sort of the keys groups the values by
gene and orders them within each gene, and a gene's median is read from the
middle of its run. :class:`MedianAccumulator` streams chunks of cells into a
key buffer that is allocated once when an upper bound on the number of
nonzeros is known (8 bytes per nonzero in all), or grown otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._csr import as_csr, row_ids, row_pieces, row_totals

_LOW32 = np.uint64(0xFFFFFFFF)
# Initial buffer (values) when no bound on the number of nonzeros is known.
_INITIAL_CAPACITY = 1 << 20
# Values normalised at a time in MedianAccumulator.add.
_PIECE = 1 << 18


def normalised_nonzeros(
    X: sp.csr_matrix, target_sum: float, totals: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(gene_index int32, value float32)`` of the nonzeros normalised to ``target_sum``.

    ``totals`` are the per-row totals if already known (default: summed from ``X``).
    """
    X = as_csr(X)
    totals = row_totals(X) if totals is None else np.asarray(totals, dtype=np.float64)
    factor = np.divide(float(target_sum), totals, out=np.zeros(X.shape[0]), where=totals > 0)
    val = X.data.astype(np.float64) * factor[row_ids(X.indptr)]
    keep = val > 0
    return X.indices[keep].astype(np.int32), val[keep].astype(np.float32)


def pack_keys(
    gene_idx: np.ndarray, values: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Pack gene indices and positive float32 values into uint64 keys (gene above, value below)."""
    gene_idx = np.asarray(gene_idx)
    keys = np.empty(gene_idx.size, dtype=np.uint64) if out is None else out
    if np.little_endian:  # write both 32-bit halves in place, no 64-bit temporaries
        halves = keys.view(np.uint32).reshape(-1, 2)
        halves[:, 0] = np.asarray(values, dtype=np.float32).view(np.uint32)
        halves[:, 1] = gene_idx
    else:  # pragma: no cover - big-endian hosts
        keys[:] = gene_idx.astype(np.uint64) << np.uint64(32)
        keys |= np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return keys


def medians_from_sorted_keys(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-gene medians from sorted packed keys and the number of values of each gene.

    Even counts average the two middle values, as ``np.median`` does; genes
    without values get NaN. Only two keys per gene are read.
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.full(counts.size, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2

    def value(pos: np.ndarray) -> np.ndarray:
        return (keys[pos] & _LOW32).astype(np.uint32).view(np.float32).astype(np.float64)

    med[has] = 0.5 * (value(lo) + value(hi))
    return med


def nonzero_medians(gene_idx: np.ndarray, values: np.ndarray, n_genes: int) -> np.ndarray:
    """Median of the (positive) values of each gene (NaN for genes with none)."""
    keys = pack_keys(gene_idx, values)
    keys.sort()
    counts = np.bincount(np.asarray(gene_idx, dtype=np.int64), minlength=n_genes)
    return medians_from_sorted_keys(keys, counts)


class MedianAccumulator:
    """Exact per-gene nonzero medians of normalised counts, fed chunk by chunk.

    Parameters
    ----------
    n_genes
        Number of genes (columns).
    target_sum
        Total each cell is normalised to before taking medians.
    capacity
        Upper bound on the number of nonzero values to come (e.g. the stored
        values of a sparse matrix). With it the key buffer is allocated once:
        8 bytes per value. Without it the buffer grows by half when full (up to
        about 20 bytes per value while it is copied).

    Examples
    --------
    >>> acc = MedianAccumulator(3, target_sum=10.0)
    >>> acc.add(sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [3.0, 0.0, 1.0]])))
    >>> acc.result().tolist()
    [6.25, 5.0, 2.5]
    """

    def __init__(self, n_genes: int, *, target_sum: float, capacity: int | None = None):
        self.n_genes = int(n_genes)
        self.target_sum = float(target_sum)
        self.counts = np.zeros(self.n_genes, dtype=np.int64)
        self._keys = np.empty(
            int(capacity) if capacity is not None else _INITIAL_CAPACITY, np.uint64
        )
        self._n = 0

    def add(self, chunk: sp.csr_matrix, totals: np.ndarray | None = None) -> None:
        """Add the cells of a canonical CSR chunk (``totals``: their totals, if known).

        The chunk is normalised in pieces of about ``2**18`` values, so the
        temporaries stay a few MiB whatever the chunk size.
        """
        chunk = as_csr(chunk)
        totals = row_totals(chunk) if totals is None else np.asarray(totals, dtype=np.float64)
        n = chunk.shape[0]
        factor = np.divide(self.target_sum, totals, out=np.zeros(n), where=totals > 0)
        indptr = np.asarray(chunk.indptr, dtype=np.int64)
        for s, e, a, b in row_pieces(indptr, _PIECE):
            vals = chunk.data[a:b].astype(np.float64)
            vals *= np.repeat(factor[s:e], np.diff(indptr[s : e + 1]))
            keep = vals > 0
            gene_idx = chunk.indices[a:b][keep]
            self._append(gene_idx, vals[keep])

    def _append(self, gene_idx: np.ndarray, values: np.ndarray) -> None:
        m = gene_idx.size
        if self._n + m > self._keys.size:
            grown = np.empty(max(self._n + m, self._keys.size + self._keys.size // 2), np.uint64)
            grown[: self._n] = self._keys[: self._n]
            self._keys = grown
        pack_keys(gene_idx, values, out=self._keys[self._n : self._n + m])
        self._n += m
        self.counts += np.bincount(gene_idx, minlength=self.n_genes)

    def result(self) -> np.ndarray:
        """Per-gene medians (float64; NaN for genes never expressed). Consumes the buffer."""
        keys = self._keys[: self._n]
        keys.sort()
        med = medians_from_sorted_keys(keys, self.counts)
        self._keys = np.empty(0, np.uint64)
        self._n = 0
        return med


# ------------------------------------------------------------ bounded-memory medians
#: Histogram resolution: bins per octave of ``value / target_sum`` ...
BINS_PER_OCTAVE = 32
#: ... over this many octaves below ``target_sum`` (smaller values share the first bin).
N_OCTAVES = 24
N_BINS = BINS_PER_OCTAVE * N_OCTAVES
# Flat (gene, bin) indices buffered before one ``np.bincount``.
_HIST_BUFFER = 1 << 23


def value_bins(values: np.ndarray, target_sum: float) -> np.ndarray:
    """Histogram bin (int64, ``0 .. N_BINS - 1``) of normalised values in ``(0, target_sum]``.

    Bin ``b`` holds ``target_sum * 2**((b - N_BINS) / BINS_PER_OCTAVE)`` up to the
    next edge; bins are computed from float32 values, the precision the exact
    medians use, so the two methods see the same numbers.
    """
    v = np.asarray(values, dtype=np.float32).astype(np.float64) / float(target_sum)
    b = np.floor(np.log2(v) * BINS_PER_OCTAVE).astype(np.int64) + N_BINS
    return np.clip(b, 0, N_BINS - 1)


def chunk_nonzeros(chunk: sp.csr_matrix, target_sum: float, totals: np.ndarray | None = None):
    """Yield ``(gene_index, float32 value)`` pieces of a chunk's positive normalised values."""
    chunk = as_csr(chunk)
    totals = row_totals(chunk) if totals is None else np.asarray(totals, dtype=np.float64)
    factor = np.divide(float(target_sum), totals, out=np.zeros(chunk.shape[0]), where=totals > 0)
    indptr = np.asarray(chunk.indptr, dtype=np.int64)
    for s, e, a, b in row_pieces(indptr, _PIECE):
        vals = chunk.data[a:b].astype(np.float64)
        vals *= np.repeat(factor[s:e], np.diff(indptr[s : e + 1]))
        keep = vals > 0
        yield chunk.indices[a:b][keep].astype(np.int64), vals[keep].astype(np.float32)


def chunk_histogram(
    chunk: sp.csr_matrix, n_genes: int, target_sum: float, totals: np.ndarray | None = None
) -> np.ndarray:
    """``(n_genes, N_BINS)`` int64 histogram of a chunk's normalised nonzero values.

    Histograms of disjoint chunks add up to the histogram of their union
    (integers: exactly, in any order), which is what lets Dask workers compute
    them independently.
    """
    hist = np.zeros(n_genes * N_BINS, np.int64)
    for g, v in chunk_nonzeros(chunk, target_sum, totals):
        hist += np.bincount(g * N_BINS + value_bins(v, target_sum), minlength=hist.size)
    return hist.reshape(n_genes, N_BINS)


def median_ranks(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks of the lower and upper middle value of each gene (as ``np.median``)."""
    counts = np.asarray(counts, dtype=np.int64)
    return (counts - 1) // 2, counts // 2


def histogram_medians(hist: np.ndarray, target_sum: float) -> np.ndarray:
    """Approximate medians from per-gene histograms (NaN for genes without values).

    The middle rank(s) are located in their bin and placed by linear
    interpolation in log space within the bin (values assumed spread evenly
    over it); the error is below one bin width, ``2**(1/32) - 1`` = 2.2% of
    the value, and is measured in ``benchmarks/bench_atlas.py --median-error``.
    """
    hist = np.asarray(hist, dtype=np.int64)
    counts = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    med = np.full(hist.shape[0], np.nan)
    has = np.flatnonzero(counts > 0)
    lo, hi = median_ranks(counts[has])

    def at(rank: np.ndarray) -> np.ndarray:
        c = cum[has]
        b = np.argmax(c > rank[:, None], axis=1)
        in_bin = hist[has, b]
        before = c[np.arange(has.size), b] - in_bin
        frac = (rank - before + 0.5) / in_bin
        return float(target_sum) * np.exp2((b + frac - N_BINS) / BINS_PER_OCTAVE)

    med[has] = 0.5 * (at(lo) + at(hi))
    return med


def median_bins(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For exact medians: each gene's lower/upper median bins and the values below each.

    Returns ``(bin_lo, bin_hi, below_lo)`` (int64, ``-1`` bins for genes without
    values); ``below_lo`` counts the gene's values in bins before ``bin_lo``.
    """
    hist = np.asarray(hist, dtype=np.int64)
    counts = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    lo, hi = median_ranks(counts)
    has = counts > 0
    bin_lo = np.where(has, np.argmax(cum > lo[:, None], axis=1), -1)
    bin_hi = np.where(has, np.argmax(cum > hi[:, None], axis=1), -1)
    rows = np.arange(hist.shape[0])
    below = np.where(has, cum[rows, np.maximum(bin_lo, 0)] - hist[rows, np.maximum(bin_lo, 0)], 0)
    return bin_lo, bin_hi, below


def chunk_median_candidates(
    chunk: sp.csr_matrix,
    bin_lo: np.ndarray,
    bin_hi: np.ndarray,
    target_sum: float,
    totals: np.ndarray | None = None,
) -> np.ndarray:
    """Packed keys (see :func:`pack_keys`) of a chunk's values in its gene's median bins."""
    out = []
    for g, v in chunk_nonzeros(chunk, target_sum, totals):
        b = value_bins(v, target_sum)
        keep = (b >= bin_lo[g]) & (b <= bin_hi[g])
        out.append(pack_keys(g[keep], v[keep]))
    return np.concatenate(out) if out else np.empty(0, np.uint64)


def medians_from_candidates(
    keys: np.ndarray, counts: np.ndarray, below_lo: np.ndarray
) -> np.ndarray:
    """Exact medians from the median-bin candidates of every gene (any order).

    ``counts`` is each gene's total number of values and ``below_lo`` the number
    below its candidates (:func:`median_bins`). Gives the same numbers as
    :func:`nonzero_medians` on all the values.
    """
    keys = np.sort(np.asarray(keys, dtype=np.uint64))
    n_genes = counts.size
    genes = (keys >> np.uint64(32)).astype(np.int64)
    n_cand = np.bincount(genes, minlength=n_genes)
    starts = np.concatenate([[0], np.cumsum(n_cand)[:-1]])
    counts = np.asarray(counts, dtype=np.int64)
    med = np.full(n_genes, np.nan)
    has = counts > 0
    lo, hi = median_ranks(counts[has])
    base = starts[has] - np.asarray(below_lo, dtype=np.int64)[has]

    def value(pos: np.ndarray) -> np.ndarray:
        return (keys[pos] & _LOW32).astype(np.uint32).view(np.float32).astype(np.float64)

    med[has] = 0.5 * (value(base + lo) + value(base + hi))
    return med


#: Sub-bins per median bin in the third pass of bounded-memory exact medians.
SUB_BINS = 256
#: Median-bin values the two-pass exact method may keep (8 bytes each); above this
#: number a third pass keeps only the values in each median's sub-bin.
CANDIDATE_BUDGET = 1 << 23
# Packed keys buffered in the third pass before duplicates are merged.
_SELECT_BUFFER = 1 << 22


def median_targets(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per gene and middle rank (lower, upper): the bin, the rank and the values below the bin.

    Returns ``(bins, ranks, below)``, each ``(n_genes, 2)`` int64 (bin ``-1``
    and rank ``0`` for genes without values).
    """
    hist = np.asarray(hist, dtype=np.int64)
    counts = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    ranks = np.stack(median_ranks(counts), axis=1)
    has = counts > 0
    rows = np.arange(hist.shape[0])
    bins = np.full(ranks.shape, -1, np.int64)
    below = np.zeros(ranks.shape, np.int64)
    for t in range(2):
        b = np.argmax(cum > ranks[:, t : t + 1], axis=1)
        bins[has, t] = b[has]
        below[has, t] = (cum[rows, b] - hist[rows, b])[has]
    return bins, np.where(has[:, None], ranks, 0), below


def bin_bit_ranges(bins: np.ndarray, target_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """For histogram bins: the float32 bit pattern the sub-bins start at, and their span.

    A value ``v`` of bin ``b`` falls in sub-bin ``clip((bits(v) - base) * SUB_BINS
    // span, 0, SUB_BINS - 1)``: a nondecreasing function of ``v`` (positive float32 bit
    patterns order like the floats), so the values of a sub-bin are a contiguous
    run of the bin's sorted values. ``base`` and the span come from the bin's
    edges with a margin of 64 units in the last place (bin 0 starts at zero).
    """
    b = np.maximum(np.asarray(bins, dtype=np.int64), 0)
    ts = float(target_sum)

    def edge_bits(k: np.ndarray) -> np.ndarray:
        e = np.float32(ts) * np.exp2((k - N_BINS) / BINS_PER_OCTAVE).astype(np.float32)
        return e.astype(np.float32).view(np.uint32).astype(np.int64)

    base = np.where(b == 0, 0, np.maximum(edge_bits(b) - 64, 0))
    top = np.where(
        b == N_BINS - 1, edge_bits(np.full_like(b, N_BINS + BINS_PER_OCTAVE)), edge_bits(b + 1)
    )
    return base, np.maximum(top + 64 - base, 1)


class HistogramMedianAccumulator:
    """Per-gene nonzero medians of normalised counts in memory that does not grow with cells.

    ``method='histogram'``: one pass fills ``(n_genes, N_BINS)`` int64
    histograms (about 6 KiB per gene: 123 MiB for 20,000 genes) and the medians
    are interpolated within their bin (relative error below 2.2%).
    ``method='exact'`` needs a second pass (:meth:`refine`) over the same chunks,
    keeping only the values that fall in each gene's median bin(s): exact
    medians (the numbers of :class:`MedianAccumulator`) for the histogram plus
    those candidates (a few percent of the values). When the candidates would
    exceed ``CANDIDATE_BUDGET``, the second pass fills ``SUB_BINS`` sub-bins
    per median bin instead (:func:`bin_bit_ranges`) and a third pass
    (:meth:`select`) keeps only each median's sub-bin values, duplicates merged:
    memory no longer grows with the cells (the float32 values of one sub-bin
    number at most about 1,450 per median between the first and last bins).
    """

    def __init__(self, n_genes: int, *, target_sum: float):
        self.n_genes = int(n_genes)
        self.target_sum = float(target_sum)
        self.hist = np.zeros((self.n_genes, N_BINS), np.int64)
        self._buf = np.empty(_HIST_BUFFER, np.int64)
        self._n = 0
        self._cand: list[np.ndarray] = []

    def add(self, chunk: sp.csr_matrix, totals: np.ndarray | None = None) -> None:
        """Add a chunk to the histograms (first pass)."""
        for g, v in chunk_nonzeros(chunk, self.target_sum, totals):
            flat = g * N_BINS + value_bins(v, self.target_sum)
            if self._n + flat.size > self._buf.size:
                self._flush()
            if flat.size > self._buf.size:
                self.hist += np.bincount(flat, minlength=self.hist.size).reshape(self.hist.shape)
                continue
            self._buf[self._n : self._n + flat.size] = flat
            self._n += flat.size

    def _flush(self) -> None:
        if self._n:
            flat = np.bincount(self._buf[: self._n], minlength=self.hist.size)
            self.hist += flat.reshape(self.hist.shape)
            self._n = 0

    def histogram(self) -> np.ndarray:
        """Return the per-gene histograms of everything added so far."""
        self._flush()
        return self.hist

    def approximate(self) -> np.ndarray:
        """Histogram medians (see :func:`histogram_medians`)."""
        return histogram_medians(self.histogram(), self.target_sum)

    def start_refine(self) -> None:
        """Fix the median bins from the histograms, before the second pass.

        When the median bins hold more than ``CANDIDATE_BUDGET`` values, the
        second pass fills per-gene sub-histograms of the two median bins
        instead of keeping their values, and a third pass (:meth:`select`)
        keeps only the values of the median sub-bins: memory then stays about
        flat in the number of cells (see :meth:`needs_select`).
        """
        hist = self.histogram()
        self._bins = median_bins(hist)
        self._buf = np.empty(0, np.int64)
        bins, ranks, below = median_targets(hist)
        rows = np.arange(self.n_genes)
        in_bins = hist[rows, np.maximum(bins[:, 0], 0)] + np.where(
            bins[:, 1] != bins[:, 0], hist[rows, np.maximum(bins[:, 1], 0)], 0
        )
        #: Values in the median bins: what the two-pass method keeps (8 bytes each).
        self.median_bin_values = int(in_bins[bins[:, 0] >= 0].sum())
        self._three = self.median_bin_values > CANDIDATE_BUDGET
        if self._three:
            base, span = bin_bit_ranges(bins, self.target_sum)
            self._targets = {
                "bins": bins,
                "ranks": ranks,
                "below": below,
                "base": base,
                "span": span,
            }
            self._sub = np.zeros(self.n_genes * 2 * SUB_BINS, np.int64)
            self._pending: list[np.ndarray] = []
            self._n_pending = 0

    def _sub_bins(self, g: np.ndarray, v: np.ndarray):
        """Yield ``(t, genes, values, sub-bins)`` of the values in median bin ``t`` (0, 1)."""
        tg = self._targets
        b = value_bins(v, self.target_sum)
        for t in range(2):
            keep = np.flatnonzero(b == tg["bins"][g, t])
            gk, vk = g[keep], v[keep]
            sub = (vk.view(np.uint32).astype(np.int64) - tg["base"][gk, t]) * SUB_BINS
            sub //= tg["span"][gk, t]
            np.clip(sub, 0, SUB_BINS - 1, out=sub)
            yield t, gk, vk, sub

    def needs_select(self) -> bool:
        """Whether :meth:`exact` needs the third pass (:meth:`select`) first."""
        return bool(getattr(self, "_three", False))

    def refine(self, chunk: sp.csr_matrix, totals: np.ndarray | None = None) -> None:
        """Second pass: keep a chunk's median-bin values, or count them in sub-bins."""
        if not self.needs_select():
            lo, hi, _ = self._bins
            self._cand.append(chunk_median_candidates(chunk, lo, hi, self.target_sum, totals))
            return
        for g, v in chunk_nonzeros(chunk, self.target_sum, totals):
            for t, gk, _, sub in self._sub_bins(g, v):
                flat = (gk * 2 + t) * SUB_BINS + sub
                self._pending.append(flat)
                self._n_pending += flat.size
                if self._n_pending > _HIST_BUFFER:
                    self._flush_sub()

    def _flush_sub(self) -> None:
        if self._pending:
            self._sub += np.bincount(np.concatenate(self._pending), minlength=self._sub.size)
            self._pending, self._n_pending = [], 0

    def start_select(self) -> None:
        """Fix each median's sub-bin from the sub-histograms, before the third pass."""
        self._flush_sub()
        tg = self._targets
        sub = self._sub.reshape(self.n_genes, 2, SUB_BINS)
        cum = np.cumsum(sub, axis=2)
        want = tg["ranks"] - tg["below"]  # rank within the median bin
        pick = np.argmax(cum > want[:, :, None], axis=2)
        before = np.take_along_axis(cum - sub, pick[:, :, None], axis=2)[:, :, 0]
        tg["sub"] = pick
        tg["rank_in_sub"] = want - before
        self._sub = np.empty(0, np.int64)
        self._keys = np.empty(0, np.uint64)
        self._key_counts = np.empty(0, np.int64)

    def select(self, chunk: sp.csr_matrix, totals: np.ndarray | None = None) -> None:
        """Third pass: keep a chunk's values in their median's sub-bin (duplicates merged)."""
        tg = self._targets
        for g, v in chunk_nonzeros(chunk, self.target_sum, totals):
            for t, gk, vk, sub in self._sub_bins(g, v):
                hit = sub == tg["sub"][gk, t]
                self._pending.append(pack_keys(gk[hit] * 2 + t, vk[hit]))
                self._n_pending += int(hit.sum())
                if self._n_pending > _SELECT_BUFFER:
                    self._merge_keys()

    def _merge_keys(self) -> None:
        """Merge the pending keys into the (sorted, distinct) keys and their counts."""
        if not self._pending:
            return
        new, cnt = np.unique(np.concatenate(self._pending), return_counts=True)
        self._pending, self._n_pending = [], 0
        keys = np.concatenate([self._keys, new])
        counts = np.concatenate([self._key_counts, cnt])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        first = np.concatenate([[True], keys[1:] != keys[:-1]]) if keys.size else np.empty(0, bool)
        self._keys = keys[first]
        self._key_counts = np.add.reduceat(counts, np.flatnonzero(first)) if keys.size else counts

    def _exact_from_select(self) -> np.ndarray:
        self._merge_keys()
        tg = self._targets
        keys, counts = self._keys, self._key_counts
        target = (keys >> np.uint64(32)).astype(np.int64)  # gene * 2 + t
        ends = np.cumsum(counts)  # values up to and including each key, all targets
        first = np.searchsorted(target, np.arange(self.n_genes * 2))
        start = np.concatenate([[0], ends])[first]  # values of earlier targets
        has = tg["bins"][:, 0] >= 0
        want = (start.reshape(self.n_genes, 2) + tg["rank_in_sub"])[has]
        pos = np.searchsorted(ends, want.ravel(), side="right")
        vals = (keys[pos] & _LOW32).astype(np.uint32).view(np.float32).astype(np.float64)
        med = np.full(self.n_genes, np.nan)
        med[has] = vals.reshape(-1, 2).mean(axis=1)
        self._keys = np.empty(0, np.uint64)
        self._key_counts = np.empty(0, np.int64)
        return med

    def exact(self) -> np.ndarray:
        """Exact medians after the second pass (and the third, if :meth:`needs_select`)."""
        if self.needs_select():
            return self._exact_from_select()
        keys = np.concatenate(self._cand) if self._cand else np.empty(0, np.uint64)
        self._cand = []
        return medians_from_candidates(keys, self.hist.sum(axis=1), self._bins[2])
