"""Figure of leave-one-gene-out attribution (``dfm.tl.logo_attribution``)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._validate import DfmInputError, check_int
from ._common import check_ax, check_show, finish

_NEEDED = ("gene", "delta_auc", "ci_low", "ci_high", "q")


def logo(
    results: pd.DataFrame,
    *,
    top: int | None = None,
    fdr: float | None = None,
    ax=None,
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    dpi: int = 150,
    show: bool | None = None,
):
    """Plot mean delta-AUC per gene with its confidence interval.

    One horizontal bar per gene, largest delta-AUC on top; the error bars are
    the table's ``ci_low``/``ci_high``; genes with ``q < fdr`` are drawn in a
    strong colour and their q-value is written beside the bar; a vertical line
    marks zero (no contribution).

    Parameters
    ----------
    results
        The table from :func:`diffbio_sc.tl.logo_attribution`.
    top
        Show only the ``top`` genes by delta-AUC.
    fdr
        Significance level for highlighting; ``None``: the level the table was
        made with (``results.attrs['fdr']``, else 0.05).
    ax
        Axes to draw into; a new figure is made when ``None``.
    figsize
        Size of a new figure (inches).
    title
        Axes title; ``None`` shows the all-genes AUC and the resampling scheme.
    save
        Image path to write (format from the suffix), written atomically.
    dpi
        Resolution of the saved image.
    show
        Call ``matplotlib.pyplot.show()``. Otherwise (``None``, ``False``) a new
        figure is detached from pyplot, so a notebook displays it once, as the
        cell's returned value.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (``ax.figure`` when ``ax`` is given; the Axes
        returned before 0.3 is ``fig.axes[0]``).
    """
    import matplotlib.pyplot as plt

    if not isinstance(results, pd.DataFrame):
        raise TypeError(
            f"results must be the DataFrame from dfm.tl.logo_attribution, got "
            f"{type(results).__name__}."
        )
    missing = [c for c in _NEEDED if c not in results.columns]
    if missing:
        raise DfmInputError(
            f"results lacks columns {missing}; pass the table from dfm.tl.logo_attribution."
        )
    if results.empty:
        raise DfmInputError("results is empty; nothing to plot.")
    top = check_int("top", top, minimum=1, allow_none=True)
    dpi = check_int("dpi", dpi, minimum=10)
    show = check_show(show)
    owned = check_ax(ax) is None
    level = float(fdr if fdr is not None else results.attrs.get("fdr", 0.05))
    df = results.sort_values("delta_auc", ascending=False, kind="stable")
    if top is not None:
        df = df.head(top)
    df = df.iloc[::-1]  # matplotlib draws the first bar at the bottom
    n = len(df)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (5.5, 0.35 * n + 1.2))
    y = np.arange(n)
    mean = df["delta_auc"].to_numpy(float)
    err = np.vstack([mean - df["ci_low"].to_numpy(float), df["ci_high"].to_numpy(float) - mean])
    sig = df["q"].to_numpy(float) < level
    colors = np.where(sig, "#b2182b", "#9e9e9e")
    ax.barh(y, mean, xerr=err, color=colors, ecolor="#424242", capsize=2, height=0.7)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(y, df["gene"].astype(str).tolist())
    ax.set_xlabel("delta-AUC (all genes minus leave-one-out)")
    for yi, (m, hi, q, s) in enumerate(zip(mean, df["ci_high"], df["q"], sig, strict=True)):
        if s:
            ax.text(max(m, hi), yi, f"  q={q:.2g}", va="center", fontsize=8)
    if title is None and "auc_all" in results.attrs:
        a = results.attrs
        title = (
            f"AUC all genes {a['auc_all']:.3f}; {a.get('n_repeats', '?')} x "
            f"{a.get('n_folds', '?')}-fold CV, {a.get('test', '')}"
        )
    if title:
        ax.set_title(title, fontsize=9)
    return finish(ax.figure, save=save, dpi=dpi, show=show, owned=owned)
