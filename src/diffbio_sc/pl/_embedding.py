"""UMAP of an embedding coloured by batch and label."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .._logging import timed
from .._validate import (
    DfmInputError,
    check_adata,
    check_bool,
    check_float,
    check_int,
    check_key,
    check_obsm_rep,
    check_seed,
)


def embedding(
    adata,
    basis: str,
    *,
    color: str | Sequence[str],
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    seed: int = 0,
    key_added: str | None = None,
    ncols: int = 2,
    title: str | Sequence[str] | None = None,
    save: str | os.PathLike | None = None,
    dpi: int = 150,
    show: bool = False,
    **kwargs,
):
    """UMAP of ``adata.obsm[basis]`` through scanpy, coloured by ``.obs`` columns.

    The neighbour graph and UMAP are computed on a private, light AnnData
    (``sc.pp.neighbors(use_rep=...)`` then ``sc.tl.umap``, both seeded), so the
    user's ``.obsm['X_umap']``, ``.obsp['distances']`` / ``['connectivities']``
    and ``.uns['neighbors']`` are never touched; palettes stored in
    ``.uns['<column>_colors']`` are used. A two-column ``basis`` (e.g. an existing
    UMAP) is plotted as it is.

    Parameters
    ----------
    adata
        AnnData with the embedding in ``.obsm[basis]``.
    basis
        ``.obsm`` key of the embedding (any number of dimensions).
    color
        ``.obs`` column(s) to colour by, typically ``(batch_key, label_key)``.
    n_neighbors, min_dist
        Neighbours of the graph and UMAP's minimum distance.
    seed
        Random state of the neighbour search and the UMAP layout.
    key_added
        If given, the 2-D coordinates are written to ``adata.obsm[key_added]``
        (e.g. ``'X_umap_dfm'``; ``'X_umap'`` only if you ask for it). By default
        nothing is written.
    ncols
        Panels per row.
    title
        Panel title(s); default: the column names.
    save
        Path of an image to write (format from the suffix, e.g. ``.png``).
    dpi
        Resolution of the saved image.
    show
        Call ``matplotlib.pyplot.show()``. Otherwise the figure is detached from
        pyplot, so a notebook displays it once, as the cell's returned value.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (e.g. ``palette``, ``size``,
        ``legend_loc``).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per ``color`` column. With ``key_added``, writes
        ``adata.obsm[key_added]`` (float32, ``(n_cells, 2)``).
    """
    import scanpy as sc
    from anndata import AnnData

    check_adata(adata, check_var_names=False, need_vars=False)  # sequences have no genes
    X = check_obsm_rep(adata, basis)
    colors = [color] if isinstance(color, str) else list(color)
    if not colors:
        raise DfmInputError("color is empty; pass the .obs columns to colour by.")
    missing = [c for c in colors if c not in adata.obs.columns]
    if missing:
        raise DfmInputError(
            f"color column(s) {missing} not in adata.obs; available: {list(adata.obs.columns)}."
        )
    check_key("key_added", key_added, allow_none=True)
    n_neighbors = check_int("n_neighbors", n_neighbors, minimum=2)
    min_dist = check_float("min_dist", min_dist, minimum=0.0)
    seed = check_seed(seed)
    dpi = check_int("dpi", dpi, minimum=10)
    ncols = check_int("ncols", ncols, minimum=1)
    show = check_bool("show", show)
    if X.shape[1] < 2:
        raise DfmInputError(f"{basis!r} has {X.shape[1]} dimension; need at least 2.")
    if X.shape[1] > 2 and adata.n_obs <= n_neighbors:
        raise DfmInputError(
            f"n_neighbors={n_neighbors} needs more than {n_neighbors} cells, got {adata.n_obs}."
        )

    tmp = AnnData(obs=adata.obs[colors].copy())
    # Keep the user's palettes (scanpy stores them as .uns['<column>_colors']).
    for c in colors:
        if f"{c}_colors" in adata.uns:
            tmp.uns[f"{c}_colors"] = np.array(adata.uns[f"{c}_colors"], copy=True)
    if X.shape[1] == 2:
        coords = np.array(X, dtype=np.float32, copy=True)
    else:
        with timed(f"computing a UMAP of {basis!r}"):
            tmp.obsm["rep"] = np.asarray(X, dtype=np.float32)
            sc.pp.neighbors(tmp, use_rep="rep", n_neighbors=n_neighbors, random_state=seed)
            sc.tl.umap(tmp, min_dist=min_dist, random_state=seed)
            coords = np.asarray(tmp.obsm["X_umap"], dtype=np.float32)
    tmp.obsm["X_plot"] = coords
    kwargs.setdefault("wspace", 0.45)
    fig = sc.pl.embedding(
        tmp,
        basis="X_plot",
        color=colors,
        ncols=ncols,
        title=title,
        show=False,
        return_fig=True,
        **kwargs,
    )
    for ax in fig.axes:
        if ax.get_xlabel().startswith("X_plot") or ax.get_xlabel().startswith("Plot"):
            ax.set_xlabel("UMAP1" if X.shape[1] > 2 else f"{basis}1")
            ax.set_ylabel("UMAP2" if X.shape[1] > 2 else f"{basis}2")
    if save is not None:
        from ..io._atomic import atomic_path

        with atomic_path(save, what="figure") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", facecolor="white")
    import matplotlib.pyplot as plt

    if show:
        plt.show()
    else:
        plt.close(fig)  # detach from pyplot: shown once, as the returned value
    if key_added is not None:
        adata.obsm[key_added] = coords
    return fig
