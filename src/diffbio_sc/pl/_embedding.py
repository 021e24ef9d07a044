"""2-D view of an embedding coloured by ``.obs`` columns (a UMAP only when asked for)."""

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
from ._common import check_ax, check_show, finish


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
    ax=None,
    show: bool | None = None,
    compute_umap: bool = False,
    **kwargs,
):
    """Plot the 2-D coordinates ``adata.obsm[basis]`` through scanpy, coloured by ``.obs`` columns.

    Plots do not compute: ``basis`` is a two-column embedding (e.g. the
    ``.obsm['X_umap']`` of ``sc.pp.neighbors(adata, use_rep='X_dfm')`` then
    ``sc.tl.umap(adata)``), plotted as it is. A wider ``basis`` is refused with
    that recipe, unless ``compute_umap=True`` asks for a seeded UMAP here: the
    neighbour graph and UMAP are then computed on a private, light AnnData, so
    the user's ``.obsm['X_umap']``, ``.obsp['distances']`` /
    ``['connectivities']`` and ``.uns['neighbors']`` are never touched. Palettes
    stored in ``.uns['<column>_colors']`` are used.

    Parameters
    ----------
    adata
        AnnData with the embedding in ``.obsm[basis]``.
    basis
        ``.obsm`` key of 2-D coordinates (or of any embedding, with
        ``compute_umap=True``).
    color
        ``.obs`` column(s) to colour by, typically ``(batch_key, label_key)``.
    n_neighbors, min_dist
        Neighbours of the graph and UMAP's minimum distance (``compute_umap=True``).
    seed
        Random state of the neighbour search and the UMAP layout (``compute_umap=True``).
    key_added
        With ``compute_umap=True``: if given, the 2-D coordinates are written to
        ``adata.obsm[key_added]`` (e.g. ``'X_umap_dfm'``). By default nothing is
        written.
    ncols
        Panels per row.
    title
        Panel title(s); default: the column names.
    save
        Path of an image to write (format from the suffix, e.g. ``.png``).
    dpi
        Resolution of the saved image.
    ax
        Axes to draw into (one ``color`` column only); ``None``: a new figure.
    show
        Call ``matplotlib.pyplot.show()``. Otherwise (``None``, ``False``) a new
        figure is detached from pyplot, so a notebook displays it once, as the
        cell's returned value.
    compute_umap
        Compute a seeded UMAP of a ``basis`` wider than 2 columns (on a private
        copy). ``False`` (default): such a ``basis`` is refused with the
        scanpy recipe (0.2 computed it silently).
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
    show = check_show(show)
    compute_umap = check_bool("compute_umap", compute_umap)
    owned = check_ax(ax, n_panels=len(colors), what=f"pl.embedding(color={colors})") is None
    if X.shape[1] < 2:
        raise DfmInputError(f"{basis!r} has {X.shape[1]} dimension; need at least 2.")
    if X.shape[1] > 2 and not compute_umap:
        raise DfmInputError(
            f"{basis!r} has {X.shape[1]} dimensions; dfm.pl.embedding plots 2-D coordinates "
            f"and does not compute them. Run sc.pp.neighbors(adata, use_rep={basis!r}); "
            "sc.tl.umap(adata) and pass basis='X_umap', or pass compute_umap=True for a "
            "seeded UMAP on a private copy (your graph is not touched)."
        )
    if key_added is not None and X.shape[1] == 2:
        raise DfmInputError(
            f"key_added stores computed UMAP coordinates; {basis!r} is already 2-D."
        )
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
    if owned:
        kwargs.setdefault("wspace", 0.45)
        fig = sc.pl.embedding(
            tmp, basis="X_plot", color=colors, ncols=ncols, title=title, show=False,
            return_fig=True, **kwargs,
        )  # fmt: skip
    else:
        sc.pl.embedding(tmp, basis="X_plot", color=colors, title=title, ax=ax, show=False, **kwargs)
        fig = ax.figure
    for a in fig.axes:
        if a.get_xlabel().startswith("X_plot") or a.get_xlabel().startswith("Plot"):
            a.set_xlabel("UMAP1" if X.shape[1] > 2 else f"{basis}1")
            a.set_ylabel("UMAP2" if X.shape[1] > 2 else f"{basis}2")
    finish(fig, save=save, dpi=dpi, show=show, owned=owned)
    if key_added is not None:
        adata.obsm[key_added] = coords
    return fig
