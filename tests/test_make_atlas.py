"""The synthetic atlas generator (``benchmarks/make_atlas.py``): its counts model.

The generator samples each cell's multinomial picks as sorted uniforms and a
merge walk (compiled); the expectation here is the model written the plain way,
cell by cell with NumPy (uniform picks, ``searchsorted``, ``np.unique``, NumPy's
negative binomial). Same model means: per-gene means, variances and detection
rates, and the nonzeros per cell, agree within sampling error; a model with one
parameter changed does not.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "make_atlas.py"


@pytest.fixture(scope="module")
def ma():
    if not _PATH.is_file():
        pytest.skip(f"{_PATH} not found (benchmarks/ is not shipped with the package)")
    spec = importlib.util.spec_from_file_location("make_atlas", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_atlas"] = mod  # numba's cache finds the module of its functions
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("make_atlas", None)


def reference_cells(m, group, cums, rng, count_scale=1.5):
    """Dense counts of the model, one cell at a time (``count_scale`` 1.5 is the model's)."""
    n_genes = cums.shape[1]
    X = np.zeros((m.size, n_genes))
    for i in range(m.size):
        genes = np.searchsorted(cums[group[i]], rng.random(m[i]), side="right")
        genes, mult = np.unique(np.minimum(genes, n_genes - 1), return_counts=True)
        mu = count_scale * mult
        X[i, genes] = 1 + rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
    return X


def z_scores(A, B):
    """Two-sample z of per-gene mean, variance and detection rate; and of nonzeros per cell."""
    n = A.shape[0]

    def stats(X):
        mean, var = X.mean(0), X.var(0)
        m4 = ((X - mean) ** 4).mean(0)
        det = (X > 0).mean(0)
        nnz = (X > 0).sum(1)
        return (
            (mean, var / n),
            (var, np.maximum(m4 - var**2, 1e-12) / n),
            (det, np.maximum(det * (1 - det), 1e-12) / n),
            (nnz.mean(), nnz.var() / n),
        )

    with np.errstate(invalid="ignore"):  # genes never picked: 0 / 0
        return [
            (a - b) / np.sqrt(va + vb) for (a, va), (b, vb) in zip(stats(A), stats(B), strict=True)
        ]


@pytest.mark.slow  # numba compile of the sampler (fast-suite budget): slow CI step
def test_block_matches_the_plain_model(ma):
    ids, prof, lib_fc = ma.gene_table(300, 3, 2, seed=5)
    rng = np.random.default_rng(0)
    n = 3000
    group = rng.integers(0, 6, n)
    m = np.maximum((120 * lib_fc[group % 2] * rng.lognormal(0, 0.25, n)).astype(np.int64), 50)
    cums = np.cumsum(prof, axis=2).reshape(6, -1)
    data, indices, indptr = ma._sample_cells(m, group, cums, np.random.default_rng(11))
    assert np.all(np.diff(indptr) <= m) and np.all(data >= 1)
    new = np.zeros((n, 300))
    new[np.repeat(np.arange(n), np.diff(indptr)), indices] = data
    assert (new > 0).sum() == data.size  # distinct genes per cell
    for g in range(6):  # per (type, batch) group: the model's distribution
        cells = group == g
        ref = reference_cells(m[cells], group[cells], cums, np.random.default_rng(g))
        zs = z_scores(new[cells], ref)
        for z in zs[:3]:
            ok = np.isfinite(z)
            assert np.abs(z[ok]).max() < 5.0
            assert 0.6 < np.mean(z[ok] ** 2) < 1.5
        assert abs(zs[3]) < 5.0
    # one parameter changed (counts 1.0x the picks instead of 1.5x): the means disagree
    cells = group == 0
    off = reference_cells(m[cells], group[cells], cums, np.random.default_rng(9), 1.0)
    z_mean = z_scores(new[cells], off)[0]
    assert np.mean(z_mean[np.isfinite(z_mean)] ** 2) > 3.0


@pytest.mark.parametrize("mu", [0.5, 6.0, 39.0, 41.0, 300.0])
def test_negative_binomial_draws(ma, mu):
    """``1 + NB(2, mean mu)`` by inversion (mu <= 40) and by gamma-Poisson: mean and variance."""
    import numba

    draw = ma._one_plus_nb2

    @numba.njit
    def many(mu, n, rng):
        out = np.empty(n)
        for i in range(n):
            out[i] = draw(mu, rng)
        return out

    n = 40_000
    x = many(mu, n, np.random.default_rng(3))
    mean, var = 1 + mu, mu + mu**2 / 2  # NB(r=2): variance mu + mu^2 / r
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / n)
    ref = 1 + np.random.default_rng(4).negative_binomial(2.0, 2.0 / (2.0 + mu), n)
    z = (x.var() - ref.var()) / np.sqrt(
        (((x - x.mean()) ** 4).mean() + ((ref - ref.mean()) ** 4).mean()) / n
    )
    assert abs(z) < 5.0
    assert x.min() >= 1 and np.all(x == np.round(x))


def test_written_atlas_h5ad_and_zarr(ma, tmp_path):
    """A small atlas written to .h5ad and zarr reads back as the generated blocks."""
    import anndata as ad

    out = ma.write_atlas(
        str(tmp_path / "a.h5ad"),
        str(tmp_path / "a.zarr"),
        n_cells=ma.BLOCK + 300,
        n_genes=400,
        nnz=40,
        n_types=3,
        n_batches=2,
        seed=1,
        verbose=False,
    )
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    z = ad.read_zarr(tmp_path / "a.zarr")
    assert a.shape == z.shape == (ma.BLOCK + 300, 400) and out["nnz"] == a.X.nnz
    assert (a.X != z.X).nnz == 0 and a.X.has_canonical_format
    _, prof, lib_fc = ma.gene_table(400, 3, 2, 1)
    picks = ma.picks_for(prof, 40, 1)
    X1, ct, bt = ma.make_block(1, 300, prof, lib_fc, picks, 1)  # the second block
    assert (a.X[ma.BLOCK :] != X1).nnz == 0
    assert list(a.obs["cell_type"].cat.codes[ma.BLOCK :]) == list(ct)
    assert list(z.obs["batch"].cat.codes[ma.BLOCK :]) == list(bt)
