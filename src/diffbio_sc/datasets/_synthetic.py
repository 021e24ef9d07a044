"""Synthetic count matrices for tests, examples and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def synthetic_counts(
    n_cells: int = 500,
    n_genes: int = 1000,
    *,
    nnz_per_cell: int | None = None,
    n_cell_types: int = 3,
    n_batches: int = 2,
    seed: int = 0,
    sparse: bool = True,
):
    """Simulate raw counts with cell-type programmes and a batch shift.

    Each cell type up-regulates its own block of genes; each batch scales a
    random half of the genes. Counts are Poisson with a log-normal library size.

    Parameters
    ----------
    n_cells, n_genes
        Matrix shape.
    nnz_per_cell
        If given, each cell keeps exactly this many (distinct) expressed genes,
        chosen by its expression weights; used by the benchmarks to match the
        sparsity of real data.
    n_cell_types, n_batches
        Number of labels written to ``.obs['cell_type']`` and ``.obs['batch']``.
    seed
        Random seed.
    sparse
        Return CSR (default) or a dense array in ``.X``.

    Returns
    -------
    AnnData with integer counts in ``.X`` (int32), ``.obs['cell_type']``,
    ``.obs['batch']`` (categoricals), ``var_names`` ``gene_0 ...`` and
    ``obs_names`` ``cell_0 ...``.
    """
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    cell_type = rng.integers(0, n_cell_types, n_cells)
    batch = rng.integers(0, n_batches, n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    programme = np.ones((n_cell_types, n_genes))
    block = max(1, n_genes // (4 * max(n_cell_types, 1)))
    for t in range(n_cell_types):
        idx = rng.choice(n_genes, block, replace=False)
        programme[t, idx] *= rng.uniform(4, 12, block)
    batch_scale = np.ones((n_batches, n_genes))
    for b in range(1, n_batches):
        idx = rng.choice(n_genes, n_genes // 2, replace=False)
        batch_scale[b, idx] = rng.uniform(0.5, 2.0, idx.size)
    if nnz_per_cell is None:
        lib = rng.lognormal(np.log(2000), 0.4, n_cells)
        w = base[None, :] * programme[cell_type] * batch_scale[batch]
        w /= w.sum(axis=1, keepdims=True)
        X = rng.poisson(w * lib[:, None]).astype(np.int32)
        Xs = sp.csr_matrix(X)
    else:
        k = int(min(nnz_per_cell, n_genes))
        rows = np.repeat(np.arange(n_cells), k)
        cols = np.empty(n_cells * k, dtype=np.int64)
        logw_all = np.log(base)[None, :]
        for i in range(n_cells):
            logw = logw_all[0] + np.log(programme[cell_type[i]] * batch_scale[batch[i]])
            g = rng.gumbel(size=n_genes) + logw
            cols[i * k : (i + 1) * k] = np.argpartition(-g, k - 1)[:k]
        vals = 1 + rng.negative_binomial(1, 0.35, n_cells * k)
        Xs = sp.csr_matrix((vals.astype(np.int32), (rows, cols)), shape=(n_cells, n_genes))
        Xs.sort_indices()
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t}" for t in cell_type]),
            "batch": pd.Categorical([f"batch_{b}" for b in batch]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
    return AnnData(X=Xs if sparse else Xs.toarray(), obs=obs, var=var)
