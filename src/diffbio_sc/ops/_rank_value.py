"""Rank-value encoding of a CSR chunk of cells (Geneformer's encoding).

A pure array function: the AnnData-facing :func:`diffbio_sc.pp.tokenize` and
the native model's data preparation stream chunks through it.

* Rows with sorted column indices (the usual CSR): a compiled kernel
  (:mod:`._rank_value_nb`) does each row in one pass: normalise, build
  ``quantised value << 32 | position`` keys, radix-sort them (only the part
  that can reach the top ``max_tokens``), repair the rare buckets that merged
  different values, and write the ids straight into the output. Ties by
  ascending position are ties by ascending gene. Row ranges of about equal
  nonzeros run on a thread pool (the kernel releases the GIL).
* With ``check=`` (what ``dfm.pp.tokenize`` uses), the same kernel also checks
  each row in its pass (finite, non-negative, whole-number values; strictly
  increasing column indices; a positive total that float64 sums exactly) and
  flags the rows it cannot encode, so the caller needs no separate validation
  pass over the values, no scipy canonical-format check and no row totals.
* Otherwise (unsorted indices, or rows wider than ``2**_MAX_POS_BITS``): a
  positive float32's bit pattern, read as an unsigned integer, orders like the
  float itself, so ``(~bits(value)) << 32 | gene_index`` packed in one uint64
  turns "descending value, ties by ascending gene index" into one ascending
  integer sort, done with NumPy's row sort in blocks of ``_BLOCK_ROWS`` cells.
* Without ``check=``, a process's first :data:`NUMPY_FIRST_NNZ` nonzeros also take the
  NumPy path (then the kernel): loading the compiled kernel (numba and its cached
  machine code) costs a fresh process more than the NumPy path does on a small job.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from ._csr import as_csr, row_totals

_LOW32 = np.uint64(0xFFFFFFFF)
# Rows per sorted block: the padded block (rows x max nonzeros in the block, 8
# bytes each) stays near the per-core L2 cache; blocks are sorted on all cores.
_BLOCK_ROWS = 192
# Widest row (as bits of a position) for the compiled kernel (positions fill the key's low
# 32 bits); wider rows use the NumPy 64-bit path.
_MAX_POS_BITS = 31
# Compiled kernel: rows per thread at least, and tasks per thread (for balance under load).
_MIN_TASK_ROWS = 64
_TASKS_PER_THREAD = 8
#: Nonzeros a process encodes with the NumPy path before it loads the compiled kernel,
#: for calls without ``check=`` (``tl.embed_checkpoint``, the native model's data): a
#: "rent before you buy" rule. Loading numba and the kernel's cached machine code cost a
#: fresh process about 0.45 CPU-s, where the NumPy path cost about 15 ns per nonzero
#: more than the kernel (21 vs 7 ns, 1,500-gene rows; ``docs/benchmarks.md``), so the
#: kernel pays off after about 30 million nonzeros. Renting up to that point costs a
#: job at most twice the better choice made in hindsight, and a small job (1,000 PBMC
#: cells: 0.2 million nonzeros, 0.02 CPU-s) never loads the kernel. Once the kernel ran
#: in the process (``check=`` calls always use it), every call uses it.
NUMPY_FIRST_NNZ = 30_000_000
_rented = {"nnz": 0, "kernel": False}


def _kernel_now(nnz: int) -> bool:
    """Whether a call of ``nnz`` nonzeros without ``check=`` uses the compiled kernel."""
    if _rented["kernel"] or _rented["nnz"] >= NUMPY_FIRST_NNZ:
        return True
    _rented["nnz"] += int(nnz)
    return False


def n_threads(n_jobs: int | None = None) -> int:
    import os

    if n_jobs is None:
        from .._settings import settings

        n_jobs = settings.n_jobs
    if n_jobs is None or n_jobs <= 0:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return int(n_jobs)


def checkable_dtype(dtype) -> bool:
    """Whether the kernel can check values of ``dtype``: NumPy integers, float32, float64."""
    dtype = np.dtype(dtype)
    return dtype.kind in "iu" or dtype in (np.float32, np.float64)


def checkable(X: sp.csr_matrix) -> bool:
    """Whether :func:`rank_value_encode` can check ``X`` in its kernel pass (``check=``).

    CSR with values of a NumPy integer or float32/float64 type, rows of at
    most ``2**31`` entries.
    """
    if not (sp.issparse(X) and X.format == "csr"):
        return False
    if not checkable_dtype(X.data.dtype):
        return False
    n = X.shape[0]
    return n == 0 or int(np.diff(X.indptr).max()) <= 2**_MAX_POS_BITS


def rank_value_encode(
    X: sp.csr_matrix,
    gene_scale: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    totals: np.ndarray | None = None,
    lut: np.ndarray | None = None,
    pad_value: int = -1,
    out: np.ndarray | None = None,
    with_values: bool = True,
    n_jobs: int | None = None,
    check: np.ndarray | None = None,
    require_integer: bool = False,
    totals_out: np.ndarray | None = None,
    vocab_mask: np.ndarray | None = None,
    vocab_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Rank-value encode a CSR chunk of cells (Geneformer's encoding).

    Per cell: counts are divided by the cell's total over all genes and
    multiplied by ``target_sum`` and ``gene_scale`` (``1 / median``; 0 removes a
    gene). Genes with a positive result are ranked by it, descending; equal
    values keep gene order (lower column index first). The first ``max_tokens``
    are kept.

    Values are computed in float64 and compared as float32; rounding is
    monotone, so it never swaps two genes, but two values that differ by less
    than float32 resolution (about 1e-7 relative) tie and then follow gene
    order. The same rule in a per-cell loop reads
    ``np.argsort(-v.astype(np.float32), kind="stable")``.

    Parameters
    ----------
    X
        Cells x genes, CSR, non-negative, without duplicate entries.
    gene_scale
        Per-gene multiplier, shape ``(n_genes,)``; 0 (or non-finite) excludes a gene.
    target_sum
        Total each cell is normalised to.
    max_tokens
        Number of ranked genes kept per cell.
    totals
        Per-cell totals if already known (default: summed from ``X``).
    lut
        Optional map from column index to the output id (e.g. token ids), shape
        ``(n_genes,)``; default: the column index itself.
    pad_value
        Output value after a cell's last ranked gene.
    out
        Optional int32 array ``(n_cells, max_tokens)`` (a view is fine) to write
        the ranked ids into instead of allocating one.
    with_values
        Also return the ranked values (skip to save time and memory).
    n_jobs
        Threads for the row sorts (default: ``dfm.settings.n_jobs``, all cores).
    check
        Optional uint8 array ``(n_cells,)``: check every row in the same
        parallel pass and record its problems there as bit flags
        (:func:`checkable` says which inputs can be checked so): non-finite,
        negative or (with ``require_integer``) fractional values, column
        indices not strictly increasing (unsorted or duplicated), a total that
        is not positive, or one too large to be summed exactly in any order
        (``>= 2**53``). 0: the row is fine and encoded. A flagged row is not
        encoded: its output row is unspecified and its ``n_tokens`` 0; the
        caller validates and re-encodes it (or refuses the input).
    require_integer
        With ``check``: flag fractional values too.
    totals_out
        Optional float64 array ``(n_cells,)`` to receive each row's total
        (with ``check``; the total of a flagged row may be unset).
    vocab_mask, vocab_out
        With ``check``: a boolean per column and a float64 array ``(n_cells,)``
        that receives each unflagged row's sum over the columns in the mask
        (what ``X @ vocab_mask.astype(float)`` gives, bit for bit).

    Returns
    -------
    gene_idx
        int32 ``(n_cells, max_tokens)``: ``lut`` of the column indices in rank
        order (the indices themselves without ``lut``), ``pad_value`` padded.
    values
        float32 ``(n_cells, max_tokens)``: the ranked values (0 at padding), or
        ``None`` when ``with_values=False``.
    n_tokens
        int32 ``(n_cells,)``: genes kept per cell.
    """
    X = as_csr(X)
    n, n_genes = X.shape
    gene_scale = np.asarray(gene_scale, dtype=np.float64)
    if gene_scale.shape != (n_genes,):
        raise ValueError(f"gene_scale has shape {gene_scale.shape}, expected ({n_genes},)")
    if n_genes >= 0xFFFFFFFF:
        raise ValueError("at most 2**32 - 2 genes are supported")
    gene_scale = np.where(np.isfinite(gene_scale) & (gene_scale > 0), gene_scale, 0.0)
    widths = np.diff(X.indptr)
    kind = X.data.dtype.kind
    if check is not None:
        if not checkable(X):
            raise ValueError("check= needs CSR data of a NumPy integer or float32/64 type")
        if check.shape != (n,) or check.dtype != np.uint8:
            raise ValueError(f"check must be uint8 of shape ({n},)")
        # the kernel flags rows whose indices are not sorted: no scipy check needed
        compiled = True
        # Whole numbers sum exactly in float64 in any order while the total stays below
        # 2**53 (the kernel flags larger totals), so the kernel sums each row itself.
        kernel_totals = totals is None and (kind in "iu" or require_integer)
    else:
        compiled = X.has_sorted_indices and (n == 0 or int(widths.max()) <= 2**_MAX_POS_BITS)
        compiled = compiled and _kernel_now(X.nnz)
        # Integer counts of at most 32 bits in rows of < 2**21 entries sum exactly in
        # float64 (< 2**53) in any order, so the compiled kernel can sum each row itself
        # (on its thread) and match row_totals bit for bit.
        kernel_totals = totals is None and compiled and kind in "iu"
        kernel_totals = kernel_totals and X.data.dtype.itemsize <= 4
        kernel_totals = kernel_totals and (n == 0 or int(widths.max()) < 2**21)
    if totals_out is not None and totals_out.shape != (n,):
        raise ValueError(f"totals_out must have shape ({n},)")
    if kernel_totals:
        factor = np.empty(0, dtype=np.float64)
    else:
        if totals is None:
            totals = row_totals(X)
        totals = np.asarray(totals, dtype=np.float64)
        factor = np.divide(float(target_sum), totals, out=np.zeros(n), where=totals > 0)
        if totals_out is not None:
            totals_out[:] = totals
    if lut is None:
        affine, shift = True, 0
    else:
        lut = np.asarray(lut, dtype=np.int64)
        if lut.shape != (n_genes,):
            raise ValueError(f"lut has shape {lut.shape}, expected ({n_genes},)")
        shift = int(lut[0]) if n_genes else 0
        affine = bool(np.array_equal(lut, shift + np.arange(n_genes)))
    lut_ext = None if affine else lut.astype(np.int32)  # ids: column + shift, or a gather
    shift32 = np.uint32(shift & 0xFFFFFFFF)
    # Excluded entries and the padding sort after every real key (a positive
    # float32 never has bits 0); the ids written there are replaced by pad_value.
    pad_key64 = np.uint64(0xFFFFFFFFFFFFFFFF)
    if out is None:
        out = np.empty((n, max_tokens), dtype=np.int32)
    elif out.shape != (n, max_tokens) or out.dtype != np.int32:
        raise ValueError(f"out must be int32 of shape ({n}, {max_tokens})")
    values = np.zeros((n, max_tokens), dtype=np.float32) if with_values else None
    n_tokens = np.zeros(n, dtype=np.int32)
    indptr = X.indptr.astype(np.int64)
    data, indices = X.data, X.indices
    little = np.little_endian

    if compiled:
        from . import _rank_value_nb as nb

        _rented["kernel"] = True

        lut32 = (np.arange(n_genes) + shift if lut_ext is None else lut_ext).astype(np.int32)
        vals = values if values is not None else np.empty((0, 0), dtype=np.float32)
        checking = check is not None
        flags = check if checking else np.empty(0, dtype=np.uint8)
        if checking:
            flags[:] = 0
        own_totals = np.empty(0, dtype=np.float64)
        if kernel_totals:
            own_totals = totals_out if totals_out is not None else np.empty(n, np.float64)
        vmask = np.empty(0, dtype=np.uint8)
        vout = np.empty(0, dtype=np.float64)
        if checking and vocab_mask is not None:
            vmask = np.asarray(vocab_mask, dtype=bool).astype(np.uint8)
            if vmask.shape != (n_genes,) or vocab_out is None or vocab_out.shape != (n,):
                raise ValueError("vocab_mask must have shape (n_genes,), vocab_out (n_cells,)")
            vout = vocab_out
        threads = min(n_threads(n_jobs), max(1, n // _MIN_TASK_ROWS))
        # Tasks of about equal nonzeros, several per thread (balance on a busy machine).
        n_tasks = 1 if threads == 1 else threads * _TASKS_PER_THREAD
        cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], n_tasks + 1)[1:-1])
        bounds = np.unique(np.concatenate([[0], cuts, [n]]))

        def task(i: int) -> None:
            nb.encode_rows(
                indptr,
                int(bounds[i]),
                int(bounds[i + 1]),
                indices,
                data,
                gene_scale,
                factor,
                kernel_totals,
                float(target_sum),
                max_tokens,
                lut32,
                np.int32(pad_value),
                out,
                vals,
                values is not None,
                n_tokens,
                checking,
                kind == "f",
                bool(require_integer),
                kind in "iu" and X.data.dtype.itemsize <= 4,
                flags,
                own_totals,
                vmask,
                vout,
            )

        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(task, range(len(bounds) - 1)))
        else:
            for i in range(len(bounds) - 1):
                task(i)
        if checking and not kernel_totals:  # totals given or summed above
            flags[~(totals > 0)] |= nb.EMPTY
            flags[np.isinf(totals)] |= nb.INEXACT_TOTAL
        return out, values, n_tokens

    def work(s: int) -> None:
        e = min(s + _BLOCK_ROWS, n)
        a, b = int(indptr[s]), int(indptr[e])
        ip = indptr[s : e + 1] - a
        counts = np.diff(ip)
        width = int(counts.max()) if e > s else 0
        k = min(max_tokens, width)
        out[s:e, k:] = pad_value
        if k == 0:
            return
        idx = indices[a:b]
        val = np.take(gene_scale, idx)
        val *= data[a:b]
        val *= np.repeat(factor[s:e], counts)
        bits = val.astype(np.float32).view(np.uint32)
        del val
        _block_64(s, e, k, ip, counts, width, idx, bits)

    def _finish(s, e, k, nv, low, bits_top) -> None:
        """Write ids (``low``: column indices in rank order), values and lengths of rows ``s:e``."""
        n_tokens[s:e] = np.minimum(nv, max_tokens)
        dest = out[s:e, :k]
        if lut_ext is None:
            np.add(low, shift32, out=dest.view(np.uint32), casting="unsafe")  # wraps mod 2**32
        else:
            np.take(lut_ext, low, out=dest)
        short = nv < k
        tail = None
        if short.any():
            tail = np.arange(k)[None, :] >= nv[:, None]
            np.copyto(dest, np.int32(pad_value), where=tail)
        if values is not None:
            v = values[s:e, :k]
            v[...] = bits_top.view(np.float32)
            if tail is not None:
                v[tail] = 0.0

    def _block_64(s, e, k, ip, counts, width, idx, bits) -> None:
        keys = np.empty(bits.size, dtype=np.uint64)
        if little:  # write both 32-bit halves in place
            halves = keys.view(np.uint32).reshape(-1, 2)
            halves[:, 0] = idx
            np.invert(bits, out=halves[:, 1])
        else:  # pragma: no cover - big-endian hosts
            keys[:] = np.invert(bits).astype(np.uint64) << np.uint64(32)
            keys |= idx.astype(np.uint64)
        nv = counts
        if not bits.all():  # a value that is 0 in float32 (excluded gene): padding
            bad_pos = np.flatnonzero(bits == 0)
            keys[bad_pos] = pad_key64
            bad_rows = np.searchsorted(ip, bad_pos, side="right") - 1
            nv = counts - np.bincount(bad_rows, minlength=e - s)
        if (counts == width).all():
            padded = keys.reshape(e - s, width)
        else:
            padded = np.full((e - s, width), pad_key64, dtype=np.uint64)
            padded[np.arange(width)[None, :] < counts[:, None]] = keys
        padded.sort(axis=1)
        top = padded[:, :k]
        if little:
            halves = top.view(np.uint32)
            low, high = halves[:, 0::2], halves[:, 1::2]
        else:  # pragma: no cover - big-endian hosts
            low = (top & _LOW32).astype(np.uint32)
            high = (top >> np.uint64(32)).astype(np.uint32)
        low = np.minimum(low, np.uint32(max(n_genes - 1, 0)))  # the padding's low bits
        _finish(s, e, k, nv, low, np.invert(high))

    starts = list(range(0, n, _BLOCK_ROWS))
    threads = min(n_threads(n_jobs), len(starts))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, starts))
    else:
        for s in starts:
            work(s)
    return out, values, n_tokens
