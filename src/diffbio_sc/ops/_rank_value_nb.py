"""Compiled (numba) rank-value kernel: one pass per row, no intermediate full-size arrays.

Imported on the first call of :func:`diffbio_sc.ops._rank_value.rank_value_encode`,
so importing the package does not import numba.

:func:`encode_rows` handles rows ``r0:r1`` of a CSR matrix whose rows have
sorted column indices; the caller runs disjoint row ranges on threads (the
function releases the GIL). Per row, in scratch buffers sized by the widest row
of the range:

1. **Normalise**: ``(scale[gene] * count) * factor[cell]`` in float64, rounded
   to float32 (exactly as the per-cell rule); entries that are 0 in float32
   (excluded genes) are dropped.
2. **Key**: ``bucket << 32 | position``, int64. ``position`` is the entry's
   place in its CSR row (ascending position is ascending gene) and ``bucket``
   is the row's float32 bit pattern, descending, relative to the row's largest
   value and shifted right just enough to fit ``2 * d`` bits, where ``d``
   (6 to 11) follows the row's size. Quantisation is monotone, so it never
   swaps two genes, but it can merge different values into one bucket.
3. **Sort**: a stable LSD radix sort on the bucket, one or two ``d``-bit
   digits. Entries enter in position order, so equal buckets stay in gene
   order without the position in the sorted digits. When the row has more
   entries than ``k`` tokens, only the entries whose high digit can reach the
   top ``k`` are sorted. Rows of at most ``_SMALL`` entries are
   insertion-sorted on exact keys instead.
4. **Repair**: runs of one bucket that hold different values (possible only
   when the bucket was shifted) are re-sorted on the exact key
   ``(0x7FFFFFFF - bits) << 32 | position``: value descending, position
   ascending. Runs are short (a few entries) except on adversarial rows.
5. **Write**: ``lut[column]`` of the first ``k`` entries, then ``pad_value``,
   straight into the caller's output row (and the float32 values, if asked).
"""

from __future__ import annotations

import numba
import numpy as np

_SMALL = 32  # rows with at most this many valid entries: insertion sort on exact keys
_MAX_DIGIT = 11  # bits of one radix digit (a 2,048-entry histogram: 8 KiB, in L1)
_MIN_DIGIT = 6
_LOW32 = 0xFFFFFFFF


@numba.njit(cache=True, nogil=True)
def _sort_keys(keys, lo, hi):  # pragma: no cover - compiled
    """Sort ``keys[lo:hi]`` (unique int64) ascending: insertion sort, or NumPy's sort when long."""
    n = hi - lo
    if n > 48:
        keys[lo:hi] = np.sort(keys[lo:hi])
        return
    for x in range(lo + 1, hi):
        key = keys[x]
        y = x - 1
        while y >= lo and keys[y] > key:
            keys[y + 1] = keys[y]
            y -= 1
        keys[y + 1] = key


@numba.njit(cache=True, nogil=True)
def _scatter(src, dst, n, hist, n_buckets, shift, mask):  # pragma: no cover - compiled
    """One stable counting-sort pass of ``src[:n]`` into ``dst`` on digit ``(key >> shift) & mask``."""
    total = 0
    for d in range(n_buckets):
        c = hist[d]
        hist[d] = total
        total += c
    for i in range(n):
        key = src[i]
        d = (key >> shift) & mask
        dst[hist[d]] = key
        hist[d] += 1


@numba.njit(cache=True, nogil=True)
def encode_rows(
    indptr,
    r0,
    r1,
    indices,
    data,
    scale,
    factor,
    k,
    lut,
    pad_value,
    out,
    values,
    with_values,
    n_tokens,
):  # pragma: no cover - compiled
    """Rank-value encode rows ``r0:r1`` into ``out[r]`` (ids), ``values[r]`` and ``n_tokens[r]``.

    ``out`` is int32 ``(n, k)`` (a view is fine), ``values`` float32 ``(n, k)``
    (ignored unless ``with_values``), ``n_tokens`` int32 ``(n,)``; ``lut`` maps a
    column to its output id.
    """
    width = 1
    for r in range(r0, r1):
        width = max(width, indptr[r + 1] - indptr[r])
    fbits = np.empty(width, dtype=np.float32)
    ubits = fbits.view(np.uint32)
    ka = np.empty(width, dtype=np.int64)
    kb = np.empty(width, dtype=np.int64)
    h_lo = np.empty(1 << _MAX_DIGIT, dtype=np.int32)
    h_hi = np.empty(1 << _MAX_DIGIT, dtype=np.int32)
    low32 = np.int64(_LOW32)
    for r in range(r0, r1):
        a = indptr[r]
        w = indptr[r + 1] - a
        f = factor[r]
        hi = np.int64(0)
        lo = np.int64(_LOW32)
        nv = 0
        for j in range(w):
            v = scale[indices[a + j]] * np.float64(data[a + j])
            fbits[j] = np.float32(v * f)
            u = np.int64(ubits[j])
            if u != 0:
                nv += 1
                hi = max(hi, u)
                lo = min(lo, u)
        m = min(nv, k)
        src = ka
        if nv <= _SMALL:
            c = 0
            for j in range(w):
                u = np.int64(ubits[j])
                if u != 0:
                    ka[c] = ((0x7FFFFFFF - u) << 32) | j
                    c += 1
            _sort_keys(ka, 0, nv)
        else:
            dbits = _MIN_DIGIT
            while dbits < _MAX_DIGIT and (1 << dbits) < nv:
                dbits += 1
            nb = 1 << dbits
            dmask = np.int64(nb - 1)
            span = hi - lo
            sh = 0
            while (span >> sh) >= (np.int64(1) << (2 * dbits)):
                sh += 1
            qmax = span >> sh
            two = qmax >= nb
            n_lo = nb if two else qmax + 1
            n_hi = (qmax >> dbits) + 1
            h_lo[:n_lo] = 0
            c = 0
            for j in range(w):
                u = np.int64(ubits[j])
                if u != 0:
                    q = (hi - u) >> sh
                    ka[c] = (q << 32) | j
                    h_lo[q & dmask] += 1
                    c += 1
            n_sort = nv
            if two:
                h_hi[:n_hi] = 0
                for i in range(nv):
                    h_hi[ka[i] >> (32 + dbits)] += 1
                if m < nv:  # only the high digits that can reach the top m
                    cut = 0
                    cum = h_hi[0]
                    while cum < m:
                        cut += 1
                        cum += h_hi[cut]
                    if cum < nv:
                        h_lo[:n_lo] = 0
                        c = 0
                        for i in range(nv):
                            key = ka[i]
                            if (key >> (32 + dbits)) <= cut:
                                ka[c] = key
                                h_lo[(key >> 32) & dmask] += 1
                                c += 1
                        n_sort = c
                        n_hi = cut + 1
                _scatter(ka, kb, n_sort, h_lo, n_lo, 32, dmask)
                _scatter(kb, ka, n_sort, h_hi, n_hi, 32 + dbits, dmask)
            else:
                _scatter(ka, kb, n_sort, h_lo, n_lo, 32, dmask)
                src = kb
            if sh > 0:  # repair the runs of one bucket that reach the top m
                j = 0
                while j < m:
                    q = src[j] >> 32
                    t = j + 1
                    while t < n_sort and (src[t] >> 32) == q:
                        t += 1
                    if t - j > 1:
                        for x in range(j, t):
                            p = src[x] & low32
                            src[x] = ((0x7FFFFFFF - np.int64(ubits[p])) << 32) | p
                        _sort_keys(src, j, t)
                    j = t
        orow = out[r]
        for j in range(m):
            orow[j] = lut[indices[a + (src[j] & low32)]]
        for j in range(m, k):
            orow[j] = pad_value
        if with_values:
            vrow = values[r]
            for j in range(m):
                vrow[j] = fbits[src[j] & low32]
            for j in range(m, k):
                vrow[j] = 0.0
        n_tokens[r] = m
