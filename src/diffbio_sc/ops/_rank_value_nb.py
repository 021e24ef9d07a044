"""Compiled (numba) rank-value kernel: one pass per row, no intermediate full-size arrays.

Imported on the first call of :func:`diffbio_sc.ops._rank_value.rank_value_encode`,
so importing the package does not import numba.

:func:`encode_rows` handles rows ``r0:r1`` of a CSR matrix whose rows have
sorted column indices; the caller runs disjoint row ranges on threads (the
function releases the GIL). Per row, in scratch buffers sized by the widest row
of the range:

0. **Check** (``check=True``): count, per row, values that are not finite,
   negative or (``whole``) fractional and column indices that do not increase,
   in branch-free loops; sum the row (:func:`_row_total`); a row with a problem
   is flagged and skipped.
1. **Normalise**: ``(scale[gene] * count) * factor[cell]`` in float64, rounded
   to float32 (exactly as the per-cell rule); entries that are 0 in float32
   (excluded genes) are dropped.
2. **Key**: ``bucket << 32 | position``, uint64 (unsigned throughout, so that
   indexing needs no negative-index wraparound). ``position`` is the entry's
   place in its CSR row (ascending position is ascending gene) and ``bucket``
   is the row's float32 bit pattern, descending, relative to the row's largest
   value and shifted right just enough to fit ``2 * d`` bits, where ``d``
   (6 to 11) is the smallest with ``2**d >= n_valid / 2`` (10 for a row of
   1,500 genes: two 1,024-entry histograms, in L1). Quantisation is monotone,
   so it never swaps two genes, but it can merge different values into one
   bucket.
3. **Sort**: a stable LSD radix sort on the bucket, one or two ``d``-bit
   digits. Entries enter in position order, so equal buckets stay in gene
   order without the position in the sorted digits. When the row has more
   entries than ``k`` tokens, only the entries whose high digit can reach the
   top ``k`` are sorted. Rows of at most ``_SMALL`` entries are
   insertion-sorted on exact keys instead.
4. **Repair**: runs of one bucket that hold different values (possible only
   when the bucket was shifted) are re-sorted on the exact key
   ``(0x7FFFFFFF - bits) << 32 | position``: value descending, position
   ascending. Blocks of 64 sorted keys without an equal pair are skipped after
   a vectorised check; runs are short (a few entries) except on adversarial
   rows.

Measured per phase on 20,000 rows of 1,500 entries (one thread, CPU-s):
normalise 0.036, keys and histograms 0.042, sort 0.052, repair 0.011, write
0.033 (the normalise and write passes stream the CSR arrays and the output).
5. **Write**: ``lut[column]`` of the first ``k`` entries, then ``pad_value``,
   straight into the caller's output row (and the float32 values, if asked).
"""

from __future__ import annotations

import numba
import numpy as np

_SMALL = 32  # rows with at most this many valid entries: insertion sort on exact keys
_MAX_DIGIT = 11  # bits of one radix digit (a 2,048-entry histogram: 8 KiB, in L1)
_MIN_DIGIT = 6
_DIGIT_SLACK = 1  # digit bits: the smallest with 2**bits >= n_valid >> _DIGIT_SLACK
_U32 = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)
_ONE32 = np.uint64(1 << 32)
_FMAX = np.finfo(np.float64).max
_EXACT = 2.0**53  # float64 sums of whole numbers below this are exact in any order

# Problems found by ``encode_rows(check=True)``, one bit each in ``flags``.
NONFINITE = np.uint8(1)
NEGATIVE = np.uint8(2)
NOT_WHOLE = np.uint8(4)
NOT_CANONICAL = np.uint8(8)
INEXACT_TOTAL = np.uint8(16)
EMPTY = np.uint8(32)


@numba.njit(cache=True, nogil=True)
def _sort_keys(keys, lo, hi):  # pragma: no cover - compiled
    """Sort ``keys[lo:hi]`` (unique) ascending: insertion sort, or NumPy's sort when long."""
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
    """One stable counting-sort pass of ``src[:n]`` into ``dst`` on digit ``(key >> shift) & mask``.

    ``src``, ``dst``: uint64 keys; ``hist``: uint32 counts of each digit (overwritten).
    """
    total = np.uint32(0)
    for d in range(n_buckets):
        c = hist[d]
        hist[d] = total
        total += c
    for i in range(n):
        key = src[i]
        d = (key >> shift) & mask
        h = hist[d]
        dst[h] = key
        hist[d] = h + np.uint32(1)


@numba.njit(cache=True, nogil=True)
def _repair(keys, lim, n, ubits, tmp):  # pragma: no cover - compiled
    """Re-sort each run of equal buckets ``keys[s:t]`` (``q << 32 | position``) with ``s < lim - 1``.

    Within a run, entries are ordered by the exact value (``ubits[position]``,
    descending), then position; the run keeps its bucket ``q``.
    """
    done = 1  # pairs (j - 1, j) with j < done are inside runs already re-sorted
    b0 = 1
    while b0 < lim:  # blocks without an equal pair are skipped after a SIMD check
        b1 = min(b0 + 64, lim)
        s0 = max(b0, done)
        b0 = b1
        if s0 >= b1:
            continue
        # Any equal pair? (A fixed trip count and indices that cannot be negative: SIMD.)
        win = keys[s0 - 1 : b1]
        n_same = 0
        if b1 - s0 == 64:
            for j in range(64):
                n_same += np.int64((win[j + 1] ^ win[j]) < _ONE32)
        else:
            for j in range(b1 - s0):
                n_same += np.int64((win[j + 1] ^ win[j]) < _ONE32)
        if n_same == 0:
            continue
        j = s0
        while j < b1:
            q = keys[j] >> _U32
            if q != keys[j - 1] >> _U32:
                j += 1
                continue
            s = j - 1  # the run's start: a pair before it would have consumed it
            t = j + 1
            while t < n and (keys[t] >> _U32) == q:
                t += 1
            for x in range(s, t):
                p = keys[x] & _LOW
                tmp[x - s] = (np.uint64(0x7FFFFFFF - np.int64(ubits[p])) << _U32) | p
            _sort_keys(tmp, 0, t - s)
            for x in range(s, t):
                keys[x] = (q << _U32) | (tmp[x - s] & _LOW)
            done = t + 1
            j = t + 1


@numba.njit(cache=True, nogil=True)
def _sum4(x):  # pragma: no cover - compiled
    """``sum(x)`` in float64 over four chains (each addition need not wait on the last).

    For whole numbers below ``2**53`` every partial sum is exact, so the result
    is the exact sum, whatever the order.
    """
    w = x.size
    t0 = 0.0
    t1 = 0.0
    t2 = 0.0
    t3 = 0.0
    j = 0
    while j + 4 <= w:
        t0 += np.float64(x[j])
        t1 += np.float64(x[j + 1])
        t2 += np.float64(x[j + 2])
        t3 += np.float64(x[j + 3])
        j += 4
    while j < w:
        t0 += np.float64(x[j])
        j += 1
    return (t0 + t1) + (t2 + t3)


@numba.njit(cache=True, nogil=True)
def _row_total(dat, small_ints):  # pragma: no cover - compiled
    """Sum of whole numbers ``dat`` in float64, exact while below ``2**53``.

    ``small_ints`` (integers of at most 32 bits, fewer than ``2**31`` of them):
    an int64 sum, which vectorises and cannot overflow; otherwise :func:`_sum4`.
    """
    if small_ints:
        s = np.int64(0)
        for j in range(dat.size):
            s += np.int64(dat[j])
        return np.float64(s)
    return _sum4(dat)


@numba.njit(cache=True, nogil=True)
def _row_masked_sum(dat, ind, mask, small_ints, serial, tmp):  # pragma: no cover - compiled
    """``sum(dat[j] * mask[ind[j]])`` in float64 (``mask``: uint8 0/1 per column).

    ``small_ints``: exact int64 sum; ``serial``: one chain in entry order, the
    order (and so the rounding) of scipy's ``csr @ vector``; otherwise whole
    numbers, :func:`_sum4`. ``tmp``: float64 scratch of at least ``dat.size``.
    """
    w = dat.size
    if small_ints:
        s = np.int64(0)
        for j in range(w):
            s += np.int64(dat[j]) * np.int64(mask[ind[j]])
        return np.float64(s)
    for j in range(w):
        tmp[j] = np.float64(dat[j]) * np.float64(mask[ind[j]])
    if serial:
        t = 0.0
        for j in range(w):
            t += tmp[j]
        return t
    return _sum4(tmp[:w])


@numba.njit(cache=True, nogil=True)
def encode_rows(
    indptr,
    r0,
    r1,
    indices,
    data,
    scale,
    factor,
    own_totals,
    target_sum,
    k,
    lut,
    pad_value,
    out,
    values,
    with_values,
    n_tokens,
    check,
    floats,
    whole,
    small_ints,
    flags,
    totals_out,
    vmask,
    vocab_out,
):  # pragma: no cover - compiled
    """Rank-value encode rows ``r0:r1`` into ``out[r]`` (ids), ``values[r]`` and ``n_tokens[r]``.

    ``out`` is int32 ``(n, k)`` (a view is fine), ``values`` float32 ``(n, k)``
    (ignored unless ``with_values``), ``n_tokens`` int32 ``(n,)``; ``lut`` maps a
    column to its output id. ``factor[r]`` is ``target_sum / total`` of row ``r``
    (0 for an empty row); with ``own_totals`` (whole-number counts, whose float64
    sum is exact in any order while it stays below ``2**53``) the row total is
    summed here instead (:func:`_row_total`; ``small_ints``: integers of at most
    32 bits), written to ``totals_out[r]`` with ``check``, and ``factor`` is unused.

    With ``check``, each row is first checked (``floats``: ``data`` is a float
    type, so also for non-finite and fractional values) and ``flags[r]`` (uint8) gets the
    bits of what is wrong with it (:data:`NONFINITE`, :data:`NEGATIVE`,
    :data:`NOT_WHOLE` (only with ``whole``), :data:`NOT_CANONICAL` (column
    indices not strictly increasing: unsorted or duplicated), :data:`INEXACT_TOTAL`
    (own total at or above ``2**53``, where the order of summation matters),
    :data:`EMPTY` (own total not positive)); a flagged row is not encoded (its
    output row is left as it was, ``n_tokens[r] = 0``). With ``check`` and a
    non-empty ``vmask`` (uint8 0/1 per column), ``vocab_out[r]`` gets the row's
    sum over the columns in the mask (:func:`_row_masked_sum`).
    """
    width = 1
    for r in range(r0, r1):
        width = max(width, indptr[r + 1] - indptr[r])
    fbits = np.empty(width, dtype=np.float32)
    vtmp = np.empty(width if vmask.size else 0, dtype=np.float64)
    ubits = fbits.view(np.uint32)
    ka = np.empty(width, dtype=np.uint64)
    kb = np.empty(width, dtype=np.uint64)
    kc = np.empty(width, dtype=np.uint64)
    h_lo = np.empty(1 << _MAX_DIGIT, dtype=np.uint32)
    h_hi = np.empty(1 << _MAX_DIGIT, dtype=np.uint32)
    low32 = np.int64(0xFFFFFFFF)
    for r in range(r0, r1):
        a = indptr[r]
        w = indptr[r + 1] - a
        ind = indices[a : a + w]
        dat = data[a : a + w]
        if check:  # branch-free counts, so that each loop vectorises
            bad = np.uint8(0)
            n_unsorted = 0
            for j in range(1, w):
                n_unsorted += np.int64(ind[j] <= ind[j - 1])
            if n_unsorted:
                bad |= NOT_CANONICAL
            n_neg = 0
            n_nonfinite = 0
            n_frac = 0
            if floats:
                for j in range(w):
                    v = np.float64(dat[j])
                    n_nonfinite += np.int64(not (np.abs(v) <= _FMAX))
                    n_neg += np.int64(v < 0.0)
                    n_frac += np.int64(v != np.floor(v))
            else:
                for j in range(w):
                    n_neg += np.int64(dat[j] < 0)
            if n_nonfinite:
                bad |= NONFINITE
            if n_neg:
                bad |= NEGATIVE
            if whole and n_frac:
                bad |= NOT_WHOLE
        if own_totals:
            total = _row_total(dat, small_ints)
            f = target_sum / total if total > 0 else 0.0
            if check:
                totals_out[r] = total
                if not total > 0.0:
                    bad |= EMPTY
                if not total < _EXACT:
                    bad |= INEXACT_TOTAL
        else:
            f = factor[r]
        if check:
            flags[r] = bad
            if bad:
                n_tokens[r] = 0
                continue
            if vmask.size:
                vocab_out[r] = _row_masked_sum(dat, ind, vmask, small_ints, not own_totals, vtmp)
        for j in range(w):  # 1. normalise
            fbits[j] = np.float32(scale[ind[j]] * np.float64(dat[j]) * f)
        nv = 0
        hi = np.int64(0)
        lo = low32
        for j in range(w):  # branch-free, so that it vectorises
            u = np.int64(ubits[j])
            nz = u != 0
            nv += nz
            hi = max(hi, u)
            lo = min(lo, u if nz else low32)
        m = min(nv, k)
        src = ka
        n_sort = nv
        if nv <= _SMALL:  # exact keys, insertion sort
            c = 0
            for j in range(w):
                u = np.int64(ubits[j])
                if u != 0:
                    ka[c] = (np.uint64(0x7FFFFFFF - u) << _U32) | np.uint64(j)
                    c += 1
            _sort_keys(ka, 0, nv)
        else:
            dbits = _MIN_DIGIT
            while dbits < _MAX_DIGIT and (1 << dbits) < (nv >> _DIGIT_SLACK):
                dbits += 1
            nb = 1 << dbits
            span = hi - lo
            sh = 0
            while (span >> sh) >= (np.int64(1) << (2 * dbits)):
                sh += 1
            qmax = span >> sh
            two = qmax >= nb
            n_lo = nb if two else qmax + 1
            n_hi = (qmax >> dbits) + 1
            d_bits = np.uint64(dbits)
            d_mask = np.uint64(nb - 1)
            shift = np.uint64(sh)
            top = np.uint64(hi)
            h_lo[:n_lo] = 0
            c = 0
            if two:  # 2. keys and both digits' histograms in one pass
                h_hi[:n_hi] = 0
                for j in range(w):
                    u = ubits[j]
                    if u != 0:
                        q = (top - np.uint64(u)) >> shift
                        ka[c] = (q << _U32) | np.uint64(j)
                        h_lo[q & d_mask] += np.uint32(1)
                        h_hi[q >> d_bits] += np.uint32(1)
                        c += 1
                if m < nv:  # only the high digits that can reach the top m
                    cut = 0
                    cum = np.int64(h_hi[0])
                    while cum < m:
                        cut += 1
                        cum += np.int64(h_hi[cut])
                    if cum < nv:
                        h_lo[:n_lo] = 0
                        c = 0
                        cut_u = np.uint64(cut)
                        for i in range(nv):
                            key = ka[i]
                            if (key >> (_U32 + d_bits)) <= cut_u:
                                ka[c] = key
                                h_lo[(key >> _U32) & d_mask] += np.uint32(1)
                                c += 1
                        n_sort = c
                        n_hi = cut + 1
                # 3. stable LSD radix sort
                _scatter(ka, kb, n_sort, h_lo, n_lo, _U32, d_mask)
                _scatter(kb, ka, n_sort, h_hi, n_hi, _U32 + d_bits, d_mask)
            else:
                for j in range(w):
                    u = ubits[j]
                    if u != 0:
                        q = (top - np.uint64(u)) >> shift
                        ka[c] = (q << _U32) | np.uint64(j)
                        h_lo[q] += np.uint32(1)
                        c += 1
                _scatter(ka, kb, n_sort, h_lo, n_lo, _U32, d_mask)
                src = kb
            if sh > 0:  # 4. repair the runs of one bucket that reach the top m
                _repair(src, min(n_sort, m + 1), n_sort, ubits, kc)
        orow = out[r]  # 5. write
        for j in range(m):
            orow[j] = lut[ind[src[j] & _LOW]]
        for j in range(m, k):
            orow[j] = pad_value
        if with_values:
            vrow = values[r]
            for j in range(m):
                vrow[j] = fbits[src[j] & _LOW]
            for j in range(m, k):
                vrow[j] = 0.0
        n_tokens[r] = m
