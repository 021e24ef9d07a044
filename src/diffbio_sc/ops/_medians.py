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
