"""Compiled (numba) passes of the rank-value kernel, around NumPy's SIMD row sort.

Imported on the first call of :func:`diffbio_sc.ops._rank_value.rank_value_encode`,
so importing the package does not import numba.

The sort key is 32 bits: ``bucket << pos_bits | position``, where ``position``
is the entry's place in its CSR row (rows have sorted column indices, so
ascending position is ascending gene) and ``bucket`` is the cell's float32
value, descending, quantised to the ``32 - pos_bits`` bits left (per row: the
row's span of float32 bit patterns shifted right just enough). Quantisation is
monotone, so it never swaps two genes, but it can merge different values into
one bucket; :func:`decode_rows` re-sorts such runs by the exact value (they are
short: a few entries). Excluded entries (value 0 in float32) and the padding
get the largest bucket and sort last.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def encode_rows(
    indptr, s, e, indices, data, scale, factor, pos_bits, keys, fbits, n_valid
):  # pragma: no cover - compiled
    """Rows ``s:e``: float32 values (into ``fbits``, by block entry) and 32-bit keys.

    ``keys`` is ``(e - s, width)`` uint32; ``fbits`` is a float32 buffer of the
    block's entries; ``n_valid`` receives the count of positive values per row.
    Values are ``(scale[gene] * count) * factor[cell]`` in float64, rounded to
    float32, exactly as the NumPy path computes them.
    """
    a0 = indptr[s]
    ubits = fbits.view(np.uint32)
    width = keys.shape[1]
    pad_q = (1 << (32 - pos_bits)) - 1
    pad_key = np.uint32(pad_q << pos_bits)
    for r in range(e - s):
        a = indptr[s + r]
        b = indptr[s + r + 1]
        f = factor[s + r]
        hi = np.uint32(0)
        lo = np.uint32(0xFFFFFFFF)
        nv = 0
        for j in range(a, b):
            v = scale[indices[j]] * np.float64(data[j])
            v = v * f
            fbits[j - a0] = np.float32(v)
            u = ubits[j - a0]
            if u != 0:
                nv += 1
                if u > hi:
                    hi = u
                if u < lo:
                    lo = u
        n_valid[r] = nv
        sh = 0
        if nv > 0:
            while ((hi - lo) >> sh) > pad_q - 1:
                sh += 1
        row = keys[r]
        for j in range(a, b):
            u = ubits[j - a0]
            p = np.uint32(j - a)
            if u == 0:
                row[j - a] = pad_key | p
            else:
                row[j - a] = (np.uint32((hi - u) >> sh) << pos_bits) | p
        for j in range(b - a, width):
            row[j] = pad_key | np.uint32(j)


@numba.njit(cache=True, nogil=True)
def decode_rows(
    keys, k, pos_bits, indptr, s, indices, fbits, n_valid, lut, pad_value, out, values, with_values
):  # pragma: no cover - compiled
    """Sorted keys of rows ``s:s + len(keys)`` -> ids (``lut`` of the column) and values.

    Runs of equal buckets are re-sorted by (value descending, position
    ascending) with an insertion sort before decoding.
    """
    a0 = indptr[s]
    ubits = fbits.view(np.uint32)
    mask = np.uint32((1 << pos_bits) - 1)
    n_rows = keys.shape[0]
    pos = np.empty(k, dtype=np.int64)
    for r in range(n_rows):
        row = keys[r]
        base = indptr[s + r] - a0
        m = min(n_valid[r], k)
        # Entries past m might belong to a run that straddles m: extend the
        # decoded window to the end of that run, then keep the first m.
        stop = m
        if m > 0 and m < keys.shape[1]:
            q_last = row[m - 1] >> pos_bits
            while stop < keys.shape[1] and (row[stop] >> pos_bits) == q_last and stop < n_valid[r]:
                stop += 1
        if stop > pos.shape[0]:
            pos = np.empty(stop, dtype=np.int64)
        for j in range(stop):
            pos[j] = row[j] & mask
        j = 0
        while j < stop:
            q = row[j] >> pos_bits
            t = j + 1
            while t < stop and (row[t] >> pos_bits) == q:
                t += 1
            if t - j > 1:  # insertion sort of the run: value desc, position asc
                for x in range(j + 1, t):
                    p = pos[x]
                    u = ubits[base + p]
                    y = x - 1
                    while y >= j:
                        uy = ubits[base + pos[y]]
                        if uy > u or (uy == u and pos[y] < p):
                            break
                        pos[y + 1] = pos[y]
                        y -= 1
                    pos[y + 1] = p
            j = t
        orow = out[r]
        for j in range(m):
            orow[j] = lut[indices[indptr[s + r] + pos[j]]]
        for j in range(m, k):
            orow[j] = pad_value
        if with_values:
            vrow = values[r]
            for j in range(m):
                vrow[j] = fbits[base + pos[j]]
            for j in range(m, k):
                vrow[j] = 0.0
