"""Baseline embeddings that every foundation-model embedding is compared against.

* :func:`pca_baseline`: the unintegrated PCA of log-normalised highly variable
  genes, the usual "no model, no integration" reference of scib-style studies.
* :func:`harmony_baseline`: Harmony (harmonypy) run on that PCA, the usual
  "simple integration" reference; needs the optional ``harmony`` extra.

Both take the counts from ``adata.X`` or a layer, work on a private copy and
return a NumPy array; the AnnData passed in is never modified.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._validate import (
    DfmInputError,
    check_adata,
    check_bool,
    check_int,
    check_obs_key,
    check_seed,
    check_values,
    check_writable,
    get_matrix,
    is_backed,
    iter_row_chunks,
)

_HARMONY_HINT = "pip install diffbio_sc[harmony]"


def _check_totals_fit_float32(X, obs_names, where: str) -> None:
    """Raise if a cell's total does not fit float32, where scanpy normalises it.

    Values near 1e308 pass the finiteness check but overflow once summed or cast to
    float32, and scikit-learn then reports "Input contains NaN"; say what is wrong instead.
    """
    limit = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore", invalid="ignore"):
        totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    bad = np.flatnonzero(~(totals <= limit))
    if bad.size:
        names = [str(n) for n in obs_names[bad[:5]]]
        raise DfmInputError(
            f"The values of {bad.size} cells in {where} sum to more than float32 can hold "
            f"(about 3.4e38), e.g. {names}; the baseline normalises the counts in float32, "
            "where they overflow. These are not counts: pass the raw counts with layer= "
            "or rescale the values."
        )


def _log_normalised_hvg_copy(adata, *, layer: str | None, n_top_genes: int):
    """Return a new AnnData of log-normalised counts restricted to the HVGs."""
    import scanpy as sc
    import scipy.sparse as sp
    from anndata import AnnData

    X = get_matrix(adata, layer)
    if is_backed(adata) or not (sp.issparse(X) or isinstance(X, np.ndarray)):
        # backed (h5py / anndata sparse dataset): read it in chunks into a CSR copy
        X = sp.vstack([chunk for _, _, chunk in iter_row_chunks(adata, layer)], format="csr")
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    data = np.asarray(X.data if sp.issparse(X) else X)
    check_values(
        data,
        require_integer=False,
        where=where,
        fix="The PCA baseline expects raw counts (it normalises and log-transforms them).",
    )
    _check_totals_fit_float32(X, adata.obs_names, where)
    if data.dtype.kind == "f" and data.size and not np.all(data == np.round(data)):
        warnings.warn(
            f"{where} holds non-integer values, but the PCA baseline normalises and "
            "log-transforms what it is given and expects raw counts; pass the counts "
            "with layer= (e.g. layer='counts').",
            UserWarning,
            stacklevel=3,
        )
    X = X.astype(np.float32, copy=True) if sp.issparse(X) else np.array(X, dtype=np.float32)
    ad = AnnData(X=X)
    ad.obs_names = adata.obs_names.copy()
    ad.var_names = adata.var_names.copy()
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    if ad.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(ad, n_top_genes=n_top_genes, flavor="seurat")
        ad = ad[:, ad.var["highly_variable"].to_numpy()].copy()
    return ad


def pca_baseline(
    adata,
    *,
    layer: str | None = None,
    n_comps: int = 50,
    n_top_genes: int = 2000,
    scale: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Unintegrated PCA of log-normalised highly variable genes.

    On a copy of the counts: ``sc.pp.normalize_total(target_sum=1e4)``,
    ``sc.pp.log1p``, ``sc.pp.highly_variable_genes(flavor='seurat',
    n_top_genes=n_top_genes)`` (all genes are kept when there are no more than
    ``n_top_genes``), optionally ``sc.pp.scale(max_value=10)``, then
    ``sc.pp.pca`` (ARPACK, ``random_state=seed``).

    Scaling is off by default: the scib-metrics ``Benchmarker`` and the scIB
    study compute their unintegrated reference PCA on unscaled log-normalised
    data, and scaling up-weights rare, noisy genes. Pass ``scale=True`` for the
    Seurat-style scaled PCA.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X`` or ``layer``. Not modified.
    layer
        Layer holding the counts; ``None`` uses ``adata.X``.
    n_comps
        Number of principal components; capped at ``min(n_cells, n_genes) - 1``.
    n_top_genes
        Number of highly variable genes.
    scale
        Scale each gene to unit variance (clipped at 10) before the PCA.
    seed
        Random state of the ARPACK start vector.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_comps)`` float32 PCA coordinates, rows in ``adata.obs_names``
        order. Nothing is written to ``adata``.
    """
    import scanpy as sc

    check_adata(adata)
    check_writable(adata)
    n_comps = check_int("n_comps", n_comps, minimum=1)
    n_top_genes = check_int("n_top_genes", n_top_genes, minimum=2)
    seed = check_seed(seed)
    scale = check_bool("scale", scale)
    if adata.n_obs < 3:
        raise DfmInputError(
            f"A PCA baseline needs at least 3 cells, the AnnData has {adata.n_obs}."
        )
    ad = _log_normalised_hvg_copy(adata, layer=layer, n_top_genes=n_top_genes)
    if scale:
        sc.pp.scale(ad, max_value=10)
    n_comps = min(n_comps, ad.n_obs - 1, ad.n_vars - 1)
    if n_comps < 1:
        raise DfmInputError(f"Too few genes ({ad.n_vars}) for a PCA baseline; need at least 2.")
    sc.pp.pca(ad, n_comps=n_comps, svd_solver="arpack", random_state=seed)
    return np.asarray(ad.obsm["X_pca"], dtype=np.float32)


def harmony_baseline(
    adata,
    batch_key: str,
    *,
    layer: str | None = None,
    n_comps: int = 50,
    n_top_genes: int = 2000,
    scale: bool = False,
    seed: int = 0,
    pca: np.ndarray | None = None,
    max_iter_harmony: int = 10,
) -> np.ndarray:
    """Harmony-corrected PCA of log-normalised highly variable genes.

    Runs :func:`pca_baseline` (unless ``pca`` is given) and then
    ``harmonypy.run_harmony`` on it with ``random_state=seed``.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X`` or ``layer`` and the batch in
        ``adata.obs[batch_key]``. Not modified.
    batch_key
        Column of ``adata.obs`` with the batch of each cell.
    layer, n_comps, n_top_genes, scale, seed
        As for :func:`pca_baseline`.
    pca
        A precomputed ``(n_cells, n_comps)`` PCA (e.g. from :func:`pca_baseline`)
        to correct, so the PCA is not computed twice.
    max_iter_harmony
        Maximum number of Harmony iterations.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_comps)`` float32 corrected coordinates. Nothing is written to
        ``adata``.

    Raises
    ------
    ImportError
        If harmonypy is not installed (``pip install diffbio_sc[harmony]``).
    """
    try:
        import harmonypy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"harmony_baseline needs harmonypy, which is not installed: {_HARMONY_HINT}"
        ) from err
    import logging

    import pandas as pd

    check_adata(adata)
    check_writable(adata)
    batch = check_obs_key(adata, batch_key)
    max_iter_harmony = check_int("max_iter_harmony", max_iter_harmony, minimum=1)
    seed = check_seed(seed)
    if batch.nunique() < 2:
        raise DfmInputError(
            f"adata.obs[{batch_key!r}] has a single batch; Harmony needs at least two."
        )
    if pca is None:
        pca = pca_baseline(
            adata, layer=layer, n_comps=n_comps, n_top_genes=n_top_genes, scale=scale, seed=seed
        )
    pca = np.asarray(pca, dtype=np.float64)
    if pca.ndim != 2 or pca.shape[0] != adata.n_obs or not np.isfinite(pca).all():
        raise DfmInputError(
            f"pca must be a finite (n_cells={adata.n_obs}, n_comps) array, got shape {pca.shape}."
        )
    from ._scoring._checks import check_magnitude

    check_magnitude(pca, "pca", adata.obs_names)  # values near 1e308: our error, not NaN
    meta = pd.DataFrame({"batch": np.asarray(batch.astype(str))}, index=adata.obs_names)
    hp_logger = logging.getLogger("harmonypy")
    old_level = hp_logger.level
    hp_logger.setLevel(logging.WARNING)
    try:
        ho = harmonypy.run_harmony(
            pca,
            meta,
            "batch",
            max_iter_harmony=max_iter_harmony,
            random_state=seed,
            verbose=False,
        )
    finally:
        hp_logger.setLevel(old_level)
    Z = np.asarray(ho.Z_corr)
    # harmonypy < 0.1 returns (n_comps, n_cells); 2.x returns (n_cells, n_comps).
    if Z.shape[0] != adata.n_obs:
        Z = Z.T
    return np.ascontiguousarray(Z, dtype=np.float32)
