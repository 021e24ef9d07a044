"""Write a realistic synthetic single-cell atlas chunk by chunk (backed ``.h5ad`` and zarr).

Default: 1,000,000 cells x 20,000 genes, about 2,000 nonzeros per cell. Memory
is bounded by one chunk of cells (plus the ``obs`` table, a few bytes per cell).

Counts model (seeded, reproducible, independent of ``--chunk``):

* 20,000 genes with Ensembl-like ids (``ENSG00000000001`` ...) and a heavy-tailed
  (log-normal) base expression profile;
* ``--n-types`` cell types: each changes about 10% of the genes by a
  log-normal fold change (cell-type structure);
* ``--n-batches`` batches: each scales every gene by ``exp(N(0, 0.3))`` and the
  library size by its own factor (batch effects);
* each cell draws its set of expressed genes from its type x batch profile
  (multinomial picks, about ``--nnz`` distinct genes), and every expressed gene
  gets ``1 + NB(r=2, mean=mu)`` counts with ``mu`` proportional to the
  profile (negative-binomial counts; no stored zeros).

Cells are generated in blocks of ``--chunk`` whose random stream is seeded by
``(seed, block index)``, so a prefix of a 1M-cell atlas (the first 100k cells)
is the 100k-cell atlas with the same seed.

Usage::

    python benchmarks/make_atlas.py --n-cells 100000 --out /tmp/atlas_100k.h5ad [--zarr /tmp/atlas_100k.zarr]
    # 1M cells generated: about 3 CPU-minutes, 0.7 GiB peak, 14.4 GB of .h5ad
    python benchmarks/make_atlas.py --n-cells 1000000 --out /tmp/atlas_1m.h5ad
    # or the 100k atlas repeated 10 times (HDF5 virtual datasets, no copy)
    python benchmarks/make_atlas.py --tile /tmp/atlas_100k.h5ad --times 10 --out /tmp/atlas_1m.h5ad
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

BLOCK = 10_000  # cells per random block (fixed: the data do not depend on --chunk)


def gene_table(n_genes: int, n_types: int, n_batches: int, seed: int):
    """Return gene ids and the (type x batch) expression profiles, rows summing to 1."""
    rng = np.random.default_rng([seed, 0])
    base = rng.lognormal(0.0, 1.6, n_genes)
    prof = np.empty((n_types, n_batches, n_genes))
    type_fc = np.ones((n_types, n_genes))
    for t in range(n_types):
        genes = rng.choice(n_genes, n_genes // 10, replace=False)
        type_fc[t, genes] = rng.lognormal(0.0, 1.5, genes.size)
    batch_fc = rng.lognormal(0.0, 0.3, (n_batches, n_genes))
    for t in range(n_types):
        for b in range(n_batches):
            p = base * type_fc[t] * batch_fc[b]
            prof[t, b] = p / p.sum()
    ids = np.array([f"ENSG{i + 1:011d}" for i in range(n_genes)])
    lib_fc = rng.lognormal(0.0, 0.2, n_batches)
    return ids, prof, lib_fc


def picks_for(prof: np.ndarray, nnz: int, seed: int) -> float:
    """Multinomial picks per cell giving about ``nnz`` distinct genes (calibrated once)."""
    rng = np.random.default_rng([seed, 1])
    cum = np.cumsum(prof[0, 0])
    lo, hi = float(nnz), float(nnz) * 50
    for _ in range(25):
        m = 0.5 * (lo + hi)
        u = rng.random((20, int(m)))
        got = np.mean([np.unique(np.searchsorted(cum, r, side="right")).size for r in u])
        lo, hi = (m, hi) if got < nnz else (lo, m)
    return 0.5 * (lo + hi)


@numba.njit(cache=True, nogil=True)
def _one_plus_nb2(mu: float, rng) -> float:
    """``1 + NB(r=2, p=2/(2+mu))``: inversion for small means, gamma-Poisson above."""
    if mu > 40.0:  # NB(2, p) = Poisson(Gamma(2, mu/2)); Gamma(2, s) = s * (E1 + E2)
        lam = 0.5 * mu * (rng.standard_exponential() + rng.standard_exponential())
        return 1.0 + rng.poisson(lam)
    p = 2.0 / (2.0 + mu)
    q = 1.0 - p
    pk = p * p  # P(k = 0); P(k + 1) = P(k) * q * (k + 2) / (k + 1)
    c = pk
    u = rng.random()
    k = 0
    while u > c and k < 100_000:
        pk *= q * (k + 2) / (k + 1)
        k += 1
        c += pk
    return 1.0 + k


@numba.njit(cache=True, nogil=True)
def _sample_cells(m, group, cums, rng):
    """CSR arrays of cells with ``m[i]`` multinomial picks from profile ``cums[group[i]]``.

    A cell's ``m`` picks are i.i.d. categorical draws from its (type, batch)
    profile (``cums`` holds the cumulative profiles); they are drawn as sorted
    uniforms (normalised partial sums of ``m + 1`` exponentials, the order
    statistics of ``m`` uniforms in distribution) and mapped to genes by one merge
    walk along the cumulative profile, so distinct genes and their multiplicities
    come out in gene order. Each distinct gene gets ``1 + NB(2, mean 1.5 x
    multiplicity)`` counts. Work per cell is ``O(m + n_genes)``, memory one
    block's nonzeros.
    """
    n = m.size
    n_genes = cums.shape[1]
    cap = 0
    m_max = 0
    for i in range(n):
        cap += min(m[i], n_genes)
        m_max = max(m_max, m[i])
    data = np.empty(cap, np.float32)
    indices = np.empty(cap, np.int32)
    indptr = np.zeros(n + 1, np.int64)
    spacings = np.empty(m_max + 1)
    k = 0
    for i in range(n):
        cum = cums[group[i]]
        mi = m[i]
        s = 0.0
        for j in range(mi + 1):
            s += rng.standard_exponential()
            spacings[j] = s
        g = 0
        last = -1
        mult = 0
        for j in range(mi):
            x = spacings[j] / s
            # searchsorted(cum, x, side="right"), clipped to the last gene
            while g < n_genes - 1 and cum[g] <= x:
                g += 1
            if g == last:
                mult += 1
                continue
            if last >= 0:
                data[k] = _one_plus_nb2(1.5 * mult, rng)  # more picks: higher expected count
                indices[k] = last
                k += 1
            last = g
            mult = 1
        if last >= 0:
            data[k] = _one_plus_nb2(1.5 * mult, rng)
            indices[k] = last
            k += 1
        indptr[i + 1] = k
    return data[:k].copy(), indices[:k].copy(), indptr


def make_block(block: int, n: int, prof, lib_fc, picks: float, seed: int):
    """Cells of one block: CSR counts (float32), cell types and batches.

    Per cell: a type and a batch (uniform), ``m = max(int(picks x library factor
    of the batch x LogNormal(0, 0.25)), 50)`` multinomial picks from the (type,
    batch) profile, and ``1 + NB(r=2, mean=1.5 x multiplicity)`` counts for every
    picked gene (:func:`_sample_cells`). About 1.5 CPU-s per block of 10,000 cells
    (20,000 genes, 3,300 picks per cell), 0.45 GiB peak.
    """
    rng = np.random.default_rng([seed, 2, block])
    n_types, n_batches, n_genes = prof.shape
    ctype = rng.integers(0, n_types, n)
    batch = rng.integers(0, n_batches, n)
    m = np.maximum((picks * lib_fc[batch] * rng.lognormal(0.0, 0.25, n)).astype(np.int64), 50)
    cums = np.cumsum(prof, axis=2).reshape(n_types * n_batches, n_genes)
    group = (ctype * n_batches + batch).astype(np.int64)
    data, indices, indptr = _sample_cells(m, group, cums, rng)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, n_genes))
    return X, ctype, batch


def _write_frames(store, obs: pd.DataFrame, var: pd.DataFrame) -> None:
    import anndata as ad

    ad.io.write_elem(store, "obs", obs)
    ad.io.write_elem(store, "var", var)
    for k in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
        ad.io.write_elem(store, k, {})


def write_atlas(
    out: str,
    zarr_out: str | None,
    *,
    n_cells: int,
    n_genes: int,
    nnz: int,
    n_types: int,
    n_batches: int,
    seed: int,
    verbose: bool = True,
) -> dict:
    """Write the atlas; return a summary (cells, nonzeros, seconds)."""
    import anndata as ad
    import h5py

    t0 = time.perf_counter()
    ids, prof, lib_fc = gene_table(n_genes, n_types, n_batches, seed)
    picks = picks_for(prof, nnz, seed)
    tmp = out + ".tmp"
    ztmp = None if zarr_out is None else zarr_out + ".tmp"
    f = h5py.File(tmp, "w")
    z = None
    if ztmp is not None:
        import zarr

        shutil.rmtree(ztmp, ignore_errors=True)
        z = zarr.open_group(ztmp, mode="w", zarr_format=2)
    ctypes, batches = [], []
    total_nnz = 0
    kw = {"chunks": (1 << 18,)}
    for block, start in enumerate(range(0, n_cells, BLOCK)):
        n = min(BLOCK, n_cells - start)
        X, ct, bt = make_block(block, n, prof, lib_fc, picks, seed)
        ctypes.append(ct.astype(np.int8))
        batches.append(bt.astype(np.int8))
        total_nnz += X.nnz
        if start == 0:
            ad.io.write_elem(f, "X", X, dataset_kwargs=kw)
            if z is not None:
                ad.io.write_elem(z, "X", X, dataset_kwargs={"chunks": (1 << 18,)})
        else:
            ad.io.sparse_dataset(f["X"]).append(X)
            if z is not None:
                ad.io.sparse_dataset(z["X"]).append(X)
        if verbose and block % 10 == 0:
            print(
                f"  {start + n:,} cells, {total_nnz:,} nonzeros, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    ct = np.concatenate(ctypes)
    bt = np.concatenate(batches)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(ct, [f"type_{i}" for i in range(n_types)]),
            "batch": pd.Categorical.from_codes(bt, [f"batch_{i}" for i in range(n_batches)]),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    var = pd.DataFrame(index=pd.Index(ids))
    _write_frames(f, obs, var)
    f.attrs["encoding-type"] = "anndata"
    f.attrs["encoding-version"] = "0.1.0"
    f.close()
    os.replace(tmp, out)
    if z is not None:
        _write_frames(z, obs, var)
        z.attrs["encoding-type"] = "anndata"
        z.attrs["encoding-version"] = "0.1.0"
        shutil.rmtree(zarr_out, ignore_errors=True)
        os.replace(ztmp, zarr_out)
    return {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "nnz": int(total_nnz),
        "nnz_per_cell": total_nnz / n_cells,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def tile_atlas(src: str, out: str, times: int) -> dict:
    """Write ``out``: the atlas ``src`` repeated ``times`` times, as HDF5 virtual datasets.

    ``X.data`` and ``X.indices`` of ``out`` are virtual datasets that map onto
    ``src``'s ``times`` times over (no copy); ``indptr`` and ``obs`` (cell names
    ``cell_<i>``, cell types and batches repeated) are written. Reading it reads
    ``src`` again for every copy. For scaling measurements where generating a
    fresh atlas of that size would take too long; every cell appears ``times``
    times, so medians equal those of ``src``. The cell names are distinct
    (``cell_0`` ... ``cell_<n*times-1>``) and so are the batches (copy ``k``'s
    batch ``batch_b`` is ``tile<k>_batch_b``); cell types are shared.
    """
    import anndata as ad
    import h5py

    t0 = time.perf_counter()
    with h5py.File(src, "r") as f:
        nnz = f["X/data"].shape[0]
        n, n_genes = (int(x) for x in f["X"].attrs["shape"])
        indptr = f["X/indptr"][:]
        data_dtype, idx_dtype = f["X/data"].dtype, f["X/indices"].dtype
        obs = ad.io.read_elem(f["obs"])
        var = ad.io.read_elem(f["var"])
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as g:
        x = g.create_group("X")
        x.attrs["encoding-type"] = "csr_matrix"
        x.attrs["encoding-version"] = "0.1.0"
        x.attrs["shape"] = (n * times, n_genes)
        for name, dtype in (("data", data_dtype), ("indices", idx_dtype)):
            layout = h5py.VirtualLayout(shape=(nnz * times,), dtype=dtype)
            source = h5py.VirtualSource(os.path.abspath(src), f"X/{name}", shape=(nnz,))
            for k in range(times):
                layout[k * nnz : (k + 1) * nnz] = source
            x.create_virtual_dataset(name, layout)
        ptr = np.concatenate([indptr[:1]] + [indptr[1:] + k * nnz for k in range(times)]).astype(
            np.int64
        )
        x.create_dataset("indptr", data=ptr)
        big = pd.concat([obs] * times)
        big.index = pd.Index([f"cell_{i}" for i in range(n * times)])
        if "batch" in big.columns:  # every copy is its own set of batches
            codes = np.asarray(obs["batch"].cat.codes, np.int32)
            cats = [str(c) for c in obs["batch"].cat.categories]
            big["batch"] = pd.Categorical.from_codes(
                np.concatenate([codes + k * len(cats) for k in range(times)]),
                [f"tile{k}_{c}" for k in range(times) for c in cats],
            )
        _write_frames(g, big, var)
        g.attrs["encoding-type"] = "anndata"
        g.attrs["encoding-version"] = "0.1.0"
    os.replace(tmp, out)
    return {
        "n_cells": n * times,
        "n_genes": n_genes,
        "nnz": int(nnz * times),
        "tiled_from": src,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=1_000_000)
    ap.add_argument("--n-genes", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=2_000, help="distinct genes per cell (about)")
    ap.add_argument("--n-types", type=int, default=20)
    ap.add_argument("--n-batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="backed .h5ad to write")
    ap.add_argument("--zarr", default=None, help="also write this zarr store")
    ap.add_argument(
        "--tile",
        default=None,
        metavar="SRC.h5ad",
        help="instead: repeat this atlas --times times (HDF5 virtual datasets)",
    )
    ap.add_argument("--times", type=int, default=10)
    a = ap.parse_args(argv)
    if a.tile:
        print(tile_atlas(a.tile, a.out, a.times))
        return
    need = a.n_cells * a.nnz * 8 * (2 if a.zarr else 1)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(a.out))).free
    if need > 0.8 * free:
        raise SystemExit(f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    print(
        write_atlas(
            a.out,
            a.zarr,
            n_cells=a.n_cells,
            n_genes=a.n_genes,
            nnz=a.nnz,
            n_types=a.n_types,
            n_batches=a.n_batches,
            seed=a.seed,
        )
    )


if __name__ == "__main__":
    main()
