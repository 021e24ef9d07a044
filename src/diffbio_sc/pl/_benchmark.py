"""Figures of benchmark results: the scib-style table, dot and bar charts."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._schema import GROUPS, metric_label, results_frame
from .._validate import DfmInputError

_GROUP_ORDER = GROUPS
_GROUP_TITLES = {
    "annotation": "Annotation",
    "bio": "Bio conservation",
    "batch": "Batch correction",
    "aggregate": "Aggregate score",
}
_KINDS = ("table", "dots", "bars")


def _fmt(v: float) -> str:
    return f"{0.0 if abs(v) < 0.005 else v:.2f}"


def _select(df: pd.DataFrame, column: str, wanted, what: str) -> pd.DataFrame:
    """Keep the rows whose ``column`` is in ``wanted`` (a name or a list); None keeps all."""
    if wanted is None:
        return df
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    available = set(df[column])
    bad = [w for w in wanted if w not in available]
    if bad:
        raise DfmInputError(f"{what} {bad} not in the results; available: {sorted(available)}.")
    return df[df[column].isin(wanted)]


def _prepare(results, *, name, metrics, groups, embeddings) -> tuple[pd.DataFrame, list, list]:
    """Return ``(tidy table, column order as (group, metric), embedding order)``."""
    df = results_frame(results, name=name)
    if groups is not None:
        groups = [groups] if isinstance(groups, str) else list(groups)
        bad = [g for g in groups if g not in _GROUP_ORDER]
        if bad:
            raise DfmInputError(f"Unknown group(s) {bad}; choose from {list(_GROUP_ORDER)}.")
        df = df[df["group"].isin(groups)]
    df = _select(df, "metric", metrics, "Metric(s)")
    df = _select(df, "embedding", embeddings, "Embedding(s)")
    if df.empty:
        raise DfmInputError("Nothing to plot: no scores left after the selection.")
    order = {g: i for i, g in enumerate(_GROUP_ORDER)}
    first = {}
    for i, (g, m) in enumerate(zip(df["group"], df["metric"], strict=True)):
        first.setdefault((g, m), i)
    cols = sorted(first, key=lambda gm: (order.get(gm[0], len(order)), first[gm]))
    # Rows: best first by the most aggregate score available.
    emb = list(dict.fromkeys(df["embedding"]))
    if embeddings is None:
        for key in ("total", "bio_conservation", "batch_correction", "avg_bio"):
            sub = df[df["metric"] == key]
            if not sub.empty:
                rank = sub.set_index("embedding")["value"]
                emb = sorted(emb, key=lambda e: -rank.get(e, -np.inf))
                break
    else:
        emb = embeddings
    return df, cols, emb


def _table(df, cols, emb, *, cmap, figsize, title):
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    val = df.pivot_table(index="embedding", columns="metric", values="value", aggfunc="first")
    n_rows, n_cols = len(emb), len(cols)
    name_w = max(2.0, 0.11 * max(len(e) for e in emb) + 0.4)
    if figsize is None:
        figsize = (name_w + 0.95 * n_cols + 0.3, 1.5 + 0.5 * n_rows)
    fig, ax = plt.subplots(figsize=figsize)
    circle_cmap = colormaps[cmap]
    bar_cmap = colormaps["YlGnBu"]
    x0 = name_w  # data units = inches-ish: one column = 0.95
    xs = [x0 + 0.95 * (i + 0.5) for i in range(n_cols)]
    for r, e in enumerate(emb):
        y = r
        ax.text(0.1, y, e, ha="left", va="center", fontsize=9, fontweight="bold")
        if r < n_rows - 1:
            ax.plot([0.05, xs[-1] + 0.5], [y + 0.5, y + 0.5], ls=(0, (1, 4)), lw=0.6, color="0.5")
    for x, (g, m) in zip(xs, cols, strict=True):
        col = val[m] if m in val.columns else pd.Series(dtype=float)
        vals = np.array([col.get(e, np.nan) for e in emb], dtype=float)
        finite = vals[np.isfinite(vals)]
        if g == "aggregate":
            norm = Normalize(0.0, 1.0)
            for r, v in enumerate(vals):
                if not np.isfinite(v):
                    ax.text(x, r, "n/a", ha="center", va="center", fontsize=8, color="0.4")
                    continue
                w = 0.85 * float(np.clip(v, 0, 1))
                ax.barh(r, w, left=x - 0.425, height=0.62, color=bar_cmap(norm(0.25 + 0.75 * v)))
                ax.text(
                    x - 0.40,
                    r,
                    _fmt(v),
                    ha="left",
                    va="center",
                    fontsize=8,
                    color="white" if v > 0.55 else "black",
                    fontweight="bold",
                )
        else:
            lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5
            norm = Normalize(lo, hi)
            for r, v in enumerate(vals):
                if not np.isfinite(v):
                    ax.text(x, r, "n/a", ha="center", va="center", fontsize=8, color="0.4")
                    continue
                c = circle_cmap(0.15 + 0.7 * norm(v))
                ax.scatter([x], [r], s=620, color=c, edgecolors="0.3", linewidths=0.4, zorder=2)
                lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
                ax.text(
                    x,
                    r,
                    _fmt(v),
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    zorder=3,
                    color="white" if lum < 0.5 else "black",
                )
        ax.text(
            x,
            -0.8,
            metric_label(m).replace(" ", "\n", 1),
            ha="center",
            va="bottom",
            fontsize=8,
            rotation=0,
        )
    # Group headers with a rule underneath.
    start = 0
    for i in range(1, n_cols + 1):
        if i == n_cols or cols[i][0] != cols[start][0]:
            g = cols[start][0]
            left, right = xs[start] - 0.42, xs[i - 1] + 0.42
            ax.plot([left, right], [-1.55, -1.55], color="k", lw=1)
            ax.text(
                (left + right) / 2,
                -1.65,
                _GROUP_TITLES.get(g, g),
                ha="center",
                va="bottom",
                fontsize=9,
                fontweight="bold",
            )
            if start > 0:
                ax.plot([left - 0.055] * 2, [-1.5, n_rows - 0.5], color="0.3", lw=0.8)
            start = i
    ax.plot([0.05, xs[-1] + 0.5], [-0.5, -0.5], color="k", lw=1)
    ax.set_xlim(0, xs[-1] + 0.55)
    ax.set_ylim(n_rows - 0.45, -2.35)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11, pad=4)
    fig.tight_layout()
    return fig


def _chart(df, cols, emb, *, kind, figsize, title):
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(g for g, _ in cols))
    widths = [sum(1 for g2, _ in cols if g2 == g) for g in groups]
    if figsize is None:
        figsize = (max(5.0, 0.3 * len(cols) * max(1, len(emb)) ** 0.5 + 2.5), 4.2)
    fig, axes = plt.subplots(
        1,
        len(groups),
        figsize=figsize,
        sharey=True,
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    axes = axes[0]
    palette = plt.get_cmap("tab10")
    val = df.pivot_table(index="embedding", columns="metric", values="value", aggfunc="first")
    sd = df.pivot_table(index="embedding", columns="metric", values="sd", aggfunc="first")
    n = len(emb)
    for ax, g in zip(axes, groups, strict=True):
        mets = [m for g2, m in cols if g2 == g]
        x = np.arange(len(mets))
        for j, e in enumerate(emb):
            v = np.array([val.at[e, m] if m in val.columns else np.nan for m in mets], float)
            s = np.array([sd.at[e, m] if m in sd.columns else np.nan for m in mets], float)
            s = np.where(np.isfinite(s), s, 0.0)
            color = palette(j % 10)
            if kind == "bars":
                w = 0.8 / n
                ax.bar(
                    x - 0.4 + w * (j + 0.5),
                    v,
                    width=w,
                    yerr=s,
                    color=color,
                    label=e,
                    capsize=2,
                    error_kw={"lw": 0.8},
                )
            else:
                off = (j - (n - 1) / 2) * min(0.12, 0.6 / n)
                ax.errorbar(
                    x + off, v, yerr=s, fmt="o", color=color, label=e, ms=6, capsize=2, lw=0.8
                )
        ax.set_xticks(x)
        ax.set_xticklabels([metric_label(m) for m in mets], rotation=45, ha="right", fontsize=8)
        ax.set_title(_GROUP_TITLES.get(g, g), fontsize=10)
        ax.set_ylim(min(0.0, np.nanmin(val.to_numpy()) - 0.05), 1.05)
        ax.grid(axis="y", lw=0.4, alpha=0.6)
        ax.set_xlim(-0.6, len(mets) - 0.4)
    axes[0].set_ylabel("score (higher is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(emb), 5),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    if title:
        fig.suptitle(title, y=1.06, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def benchmark(
    results,
    *,
    kind: str = "table",
    name: str = "default",
    metrics: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    embeddings: Sequence[str] | None = None,
    cmap: str = "PRGn",
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    dpi: int = 150,
):
    """Plot benchmark scores from :func:`diffbio_sc.tl.benchmark`.

    ``kind='table'`` draws the scib-style results table: one row per embedding
    (best ``total`` first), one column per metric grouped into annotation, bio
    conservation, batch correction and aggregate scores; metric values are
    circles coloured within their column, aggregate scores are bars.
    ``kind='dots'`` and ``kind='bars'`` draw one panel per group with the metrics
    on the x axis, one colour per embedding and the fold standard deviation as
    error bars (annotation scores).

    Parameters
    ----------
    results
        The DataFrame returned by :func:`~diffbio_sc.tl.benchmark`, a report from
        ``.uns['dfm']['benchmarks']``, or an AnnData holding the report ``name``.
    kind
        ``'table'``, ``'dots'`` or ``'bars'``.
    name
        Report name when ``results`` is an AnnData.
    metrics, groups, embeddings
        Subsets to show (metric names, groups among ``'annotation'``, ``'bio'``,
        ``'batch'``, ``'aggregate'``, and embedding names, in the order given).
    cmap
        Colormap of the table's circles.
    figsize
        Figure size in inches; chosen from the table size when ``None``.
    title
        Figure title.
    save
        Path of an image to write (format from the suffix, e.g. ``.png``).
    dpi
        Resolution of the saved image.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if kind not in _KINDS:
        raise DfmInputError(f"Unknown kind {kind!r}; use one of {list(_KINDS)}.")
    df, cols, emb = _prepare(
        results, name=name, metrics=metrics, groups=groups, embeddings=embeddings
    )
    if kind == "table":
        fig = _table(df, cols, emb, cmap=cmap, figsize=figsize, title=title)
    else:
        fig = _chart(df, cols, emb, kind=kind, figsize=figsize, title=title)
    if save is not None:
        fig.savefig(save, dpi=dpi, bbox_inches="tight", facecolor="white")
    return fig
