"""Bundled demo dataset."""

from __future__ import annotations

from importlib.resources import files


def celllines_demo():
    """Five lung-cancer cell lines profiled by five protocols (bundled, ~2 MB).

    1,408 cells x 2,000 highly variable genes (Ensembl IDs) from the
    sc_mixology benchmark (Tian et al. 2019, Nat Methods; GEO GSE118767; MIT
    licence). See ``datasets/data/README.md`` in the package for the derivation.

    Returns
    -------
    AnnData with raw UMI counts in ``.X`` (CSR, int32), ``.obs['batch']``
    (5 protocols/plates) and ``.obs['cell_type']`` (5 cell lines).
    """
    import anndata as ad

    path = files("diffbio_sc.datasets") / "data" / "celllines_demo.h5ad"
    with path.open("rb") as fh:  # works from wheels and zip installs too
        adata = ad.read_h5ad(fh)
    return adata
