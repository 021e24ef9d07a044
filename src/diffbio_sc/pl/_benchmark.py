"""Figures of benchmark results: the scib-style table, dot and bar charts."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .._schema import AGGREGATE_FORMULAS, GROUPS, metric_label, report_of, results_frame
from .._validate import DfmInputError, check_choice, check_float, check_int
from ._common import check_ax, check_show, finish

_GROUP_ORDER = GROUPS
_GROUP_TITLES = {
    "annotation": "Annotation",
    "bio": "Bio conservation",
    "batch": "Batch correction",
    "aggregate": "Aggregate score",
}
_KINDS = ("table", "dots", "bars")
#: ``<task>_<score>`` metrics of dfm.tl.genomics_tasks (classification on a test set).
_TASK_METRIC = re.compile(
    r"^(?P<task>.+?)_(?P<score>accuracy|balanced_accuracy|macro_f1|mcc|auroc)$"
)
_SCORE_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "mcc": "MCC",
    "auroc": "AUROC",
}
_TASK = "task:"  # group of a genomics task's scores: one column group per task


def _group_title(group: str) -> str:
    if group.startswith(_TASK):
        return f"Task: {group[len(_TASK) :]} (test set)"
    return _GROUP_TITLES.get(group, group)


def _label(group: str, metric: str) -> str:
    """Column label: the score alone under a task's group title, else the metric's name."""
    if group.startswith(_TASK):
        match = _TASK_METRIC.match(metric)
        return _SCORE_LABELS[match["score"]] if match else metric
    return metric_label(metric)


def _column_label(group: str, metric: str) -> str:
    """Return the table's column label on at most two short lines (no overlap)."""
    label = _label(group, metric)
    if " " not in label and "_" in label:
        label = label.replace("_", " ")
    lines = textwrap.wrap(label, 11, break_long_words=False) or [label]
    return "\n".join([lines[0], " ".join(lines[1:])]) if len(lines) > 1 else lines[0]


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
    # genomics_tasks scores (<task>_<score>, not the kNN / LogReg annotation probes):
    # one column group per task, titled by the task, the columns by the score
    probe = df["metric"].str.startswith(("knn_", "logreg_"))
    tasks = df["metric"].str.extract(_TASK_METRIC)["task"]
    is_task = (df["group"] == "annotation") & ~probe & tasks.notna()
    if is_task.any():
        df = df.copy()
        df["task"] = np.where(is_task, _TASK + tasks.fillna(""), "")
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
    if "task" in df.columns:
        df = df.assign(group=np.where(df["task"] != "", df["task"], df["group"]))
        df = df.drop(columns="task")
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


#: Aggregates drawn as the first column of the group they average (table kind).
_LEADING = {"bio_conservation": "bio", "batch_correction": "batch"}


def _aggregates_lead_their_groups(cols: list) -> list:
    """Move Bio conservation / Batch correction to the head of their own group's columns.

    The metrics then sit under their aggregate; Total and scIB's avg_bio / avg_batch stay
    in the aggregate group (a footnote says how they differ).
    """
    cols = list(cols)
    for metric, group in _LEADING.items():
        if ("aggregate", metric) in cols and any(g == group for g, _ in cols):
            cols.remove(("aggregate", metric))
            first = next(i for i, (g, _) in enumerate(cols) if g == group)
            cols.insert(first, (group, metric))
    return cols


def _chunks(cols: list, per_row: int) -> list[list]:
    """Split the columns into rows of at most ``per_row``, preferring group boundaries."""
    out, cur = [], []
    for i, c in enumerate(cols):
        cur.append(c)
        rest_of_group = sum(1 for g, _ in cols[i + 1 :] if g == c[0])
        full = len(cur) == per_row
        # break early at a group end when the next group would not fit in this row
        next_group = [gm for gm in cols[i + 1 :] if gm[0] != c[0]]
        boundary = rest_of_group == 0 and next_group
        if full or (
            boundary
            and len(cur) + sum(1 for gm in next_group if gm[0] == next_group[0][0]) > per_row
        ):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _draw_panel(ax, val, cols, emb, *, cmap, name_w):
    """Draw one row of the table: circles for metrics, bars for aggregates, one colour scale."""
    from matplotlib.colors import Normalize

    norm = Normalize(0.0, 1.0)  # every score lies in [0, 1]: colours compare across columns
    n_rows = len(emb)
    xs = [name_w + 0.95 * (i + 0.5) for i in range(len(cols))]
    right = xs[-1] + 0.5
    for r, e in enumerate(emb):
        ax.text(0.1, r, e, ha="left", va="center", fontsize=9, fontweight="bold")
        if r < n_rows - 1:
            ax.plot([0.05, right], [r + 0.5, r + 0.5], ls=(0, (1, 4)), lw=0.6, color="0.5")
    for x, (g, m) in zip(xs, cols, strict=True):
        col = val[m] if m in val.columns else pd.Series(dtype=float)
        for r, e in enumerate(emb):
            v = float(col.get(e, np.nan))
            if not np.isfinite(v):
                ax.text(x, r, "n/a", ha="center", va="center", fontsize=8, color="0.4")
                continue
            c = cmap(norm(np.clip(v, 0.0, 1.0)))
            lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
            if g == "aggregate" or m in _LEADING:
                w = 0.85 * float(np.clip(v, 0, 1))
                ax.barh(r, w, left=x - 0.425, height=0.62, color=c, edgecolor="0.3", lw=0.4)
                ax.text(
                    x - 0.40,
                    r,
                    _fmt(v),
                    ha="left",
                    va="center",
                    fontsize=8,
                    fontweight="bold",
                    color="white" if lum < 0.5 and w > 0.3 else "black",
                )
            else:
                ax.scatter([x], [r], s=620, color=c, edgecolors="0.3", linewidths=0.4, zorder=2)
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
        ax.text(x, -0.8, _column_label(g, m), ha="center", va="bottom", fontsize=8)
    start = 0
    for i in range(1, len(cols) + 1):
        if i == len(cols) or cols[i][0] != cols[start][0]:
            g = cols[start][0]
            left, rgt = xs[start] - 0.42, xs[i - 1] + 0.42
            ax.plot([left, rgt], [-1.55, -1.55], color="k", lw=1)
            ax.text(
                (left + rgt) / 2,
                -1.65,
                _group_title(g),
                ha="center",
                va="bottom",
                fontsize=9,
                fontweight="bold",
            )
            if start > 0:
                ax.plot([left - 0.055] * 2, [-1.5, n_rows - 0.5], color="0.3", lw=0.8)
            start = i
    ax.plot([0.05, right], [-0.5, -0.5], color="k", lw=1)
    ax.set_xlim(0, right + 0.05)
    ax.set_ylim(n_rows - 0.45, -2.35)
    ax.axis("off")
    return xs  # noqa: RET504


def _table(df, cols, emb, *, cmap, figsize, title, subtitle, max_width_in, leads=(), notes=()):
    """Draw the scib-style results table, wrapped into rows no wider than ``max_width_in``."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    val = df.pivot_table(index="embedding", columns="metric", values="value", aggfunc="first")
    cols = _aggregates_lead_their_groups(cols)
    cm = colormaps[cmap]
    name_w = max(1.6, 0.1 * max(len(e) for e in emb) + 0.3)
    per_row = max(1, int((max_width_in - name_w - 0.35) // 0.95))
    rows = _chunks(cols, per_row)
    widest = max(len(r) for r in rows)
    panel_h = 1.3 + 0.5 * len(emb)
    aggs = [m for _, m in cols if m in AGGREGATE_FORMULAS]
    width = figsize[0] if figsize is not None else name_w + 0.95 * widest + 0.35
    # footnote: what each aggregate is, then the notes of the verdict, wrapped to the width
    foot = [f"{metric_label(m)} = {AGGREGATE_FORMULAS[m]}" for m in aggs]
    for note in notes:
        foot += textwrap.wrap(note, max(40, int(width / 0.062)))
    foot_h = 0.25 + 0.13 * len(foot)
    head_h = 0.35 + (0.2 if subtitle else 0.0) + 0.18 * len(leads)
    if figsize is None:
        figsize = (width, head_h + panel_h * len(rows) + foot_h + 0.45)
    fig = plt.figure(figsize=figsize)
    H = figsize[1]
    top = 1.0 - head_h / H
    bottom = (foot_h + 0.45) / H
    step = (top - bottom) / len(rows)
    for i, chunk in enumerate(rows):
        frac = (name_w + 0.95 * len(chunk) + 0.35) / figsize[0]
        ax = fig.add_axes((0.0, top - (i + 1) * step, min(1.0, frac), step))
        _draw_panel(ax, val, chunk, emb, cmap=cm, name_w=name_w)
    # colour legend: one scale for every cell, as the values themselves
    cax = fig.add_axes((0.25, (foot_h + 0.2) / H, 0.5, 0.12 / H))
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cm), cax=cax, orientation="horizontal")
    bar.set_label("score (colour = value; 0 worst, 1 best)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if foot:
        fig.text(0.01, 0.08 / H, "\n".join(foot), ha="left", va="bottom", fontsize=7, color="0.25")
    fig.suptitle(title, x=0.01, ha="left", y=1.0 - 0.08 / H, va="top", fontsize=11)
    y = 0.32
    if subtitle:
        fig.text(0.01, 1.0 - y / H, subtitle, ha="left", va="top", fontsize=8.5, color="0.3")
        y += 0.2
    if leads:  # the verdict: which embedding is best, and by how much over PCA
        fig.text(0.01, 1.0 - y / H, "\n".join(leads), ha="left", va="top", fontsize=8.5,
                 fontweight="bold", linespacing=1.35)  # fmt: skip
    return fig


def _chart(df, cols, emb, *, kind, figsize, title, leads=(), notes=(), into=None):
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(g for g, _ in cols))
    widths = [sum(1 for g2, _ in cols if g2 == g) for g in groups]
    if figsize is None:
        figsize = (max(5.0, 0.3 * len(cols) * max(1, len(emb)) ** 0.5 + 2.5), 4.2)
    if into is not None:  # one group, drawn into the caller's Axes
        fig, axes = into.figure, [into]
    else:
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
        ax.set_xticklabels([_label(g, m) for m in mets], rotation=45, ha="right", fontsize=8)
        ax.set_title(_group_title(g), fontsize=10)
        ax.set_ylim(min(0.0, np.nanmin(val.to_numpy()) - 0.05), 1.05)
        ax.grid(axis="y", lw=0.4, alpha=0.6)
        ax.set_xlim(-0.6, len(mets) - 0.4)
    axes[0].set_ylabel("score (higher is better)")
    if into is not None:  # the caller owns the figure: legend and title on the Axes only
        into.legend(fontsize=8, frameon=False)
        if title:
            into.set_title(f"{title}: {into.get_title()}", fontsize=10)
        return fig
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
    head = "\n".join([title, *leads]) if title else "\n".join(leads)
    if head:
        fig.suptitle(head, y=1.06 + 0.045 * len(leads), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    shown = {m for _, m in cols}
    aggs = [m for m in AGGREGATE_FORMULAS if m in shown]
    foot = [f"{metric_label(m)} = {AGGREGATE_FORMULAS[m]}" for m in aggs]
    for note in notes:  # below the axes: saved and shown with bbox_inches='tight'
        foot += textwrap.wrap(note, max(40, int(fig.get_figwidth() / 0.062)))
    if foot:
        fig.text(0.01, -0.02, "\n".join(foot), ha="left", va="top", fontsize=7, color="0.25")
    return fig


def _default_title(results, name: str) -> str:
    """Return a title that names the data: the dataset, else the tasks, else the cells."""
    from anndata import AnnData

    info: Mapping = {}
    if isinstance(results, AnnData):
        info = report_of(results, name).get("inputs", {})
    elif isinstance(results, Mapping):
        info = results.get("inputs", {})
        if not info and isinstance(results.get("tasks"), Mapping):  # a genomics_tasks report
            info = {"tasks": list(results["tasks"])}
    elif isinstance(results, pd.DataFrame):
        info = dict(results.attrs)
        report = info.get("report")
        if isinstance(report, Mapping) and isinstance(report.get("tasks"), Mapping):
            info["tasks"] = list(report["tasks"])
    dataset = info.get("dataset")
    if isinstance(dataset, str) and dataset.strip():
        return f"{dataset}: scores of each embedding"
    if info.get("tasks"):
        return "Sequence tasks: " + ", ".join(map(str, info["tasks"]))
    if info.get("n_cells"):
        return f"Scores of each embedding on {int(info['n_cells']):,} cells"
    return "Scores of each embedding"


def _describe(results, name: str) -> tuple[str | None, str | None]:
    """Return ``(report name, 'labels: ... | batches: ... | n cells')`` where the input tells."""
    from anndata import AnnData

    info: Mapping = {}
    report_name = None
    if isinstance(results, AnnData):
        rep = report_of(results, name)
        info, report_name = rep.get("inputs", {}), name
    elif isinstance(results, Mapping):
        info = results.get("inputs", {})
    elif isinstance(results, pd.DataFrame):
        info, report_name = results.attrs, results.attrs.get("name")
    parts = []  # the dataset is in the title
    if info.get("label_key"):
        parts.append(f"labels: {info['label_key']}")
    if info.get("batch_key"):
        parts.append(f"batches: {info['batch_key']}")
    if info.get("n_cells"):
        parts.append(f"{int(info['n_cells']):,} cells")
    return report_name, " | ".join(parts) or None


def benchmark(
    results,
    *,
    kind: str = "table",
    name: str = "default",
    metrics: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    embeddings: Sequence[str] | None = None,
    cmap: str = "viridis",
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
    save: str | os.PathLike | None = None,
    dpi: int = 150,
    max_width: int = 1600,
    ax=None,
    show: bool | None = None,
):
    """Plot benchmark scores from :func:`diffbio_sc.tl.benchmark`.

    ``kind='table'`` draws the scib-style results table: one row per embedding
    (best ``total`` first), one column per metric grouped into annotation, bio
    conservation, batch correction and aggregate scores (the scores of
    :func:`~diffbio_sc.tl.genomics_tasks` are grouped by task); the Bio conservation
    and Batch correction aggregates lead their own groups, so each metric sits
    under its aggregate, and Total, ``avg_bio`` and ``avg_batch`` close the table; metric values are
    circles, aggregate scores are bars, and every cell is coloured by its value
    on one 0-1 scale shown in a colour legend (so equal numbers have equal
    colours). Columns wrap into several rows so that the figure is at most
    ``max_width`` pixels wide at ``dpi``. The title names the data, the subtitle
    the label and batch keys, and the verdict follows: the best embedding on bio
    conservation, on batch correction and in total, with its margin over the PCA
    baseline (or, without integration metrics, the best on the classification
    scores). A footnote says what each aggregate is, how the Benchmarker's
    aggregates differ from scIB's ``avg_bio`` / ``avg_batch``, and why a metric
    that has the same value for every embedding (e.g. ``pcr_comparison`` at 0)
    ranks nothing.
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
        Colormap of the table (values 0 .. 1).
    figsize
        Figure size in inches; chosen from the table size when ``None``.
    title
        Figure title; by default it names the data: the ``dataset`` given to
        :func:`~diffbio_sc.tl.benchmark`, else the tasks or the number of cells.
    save
        Path of an image to write (format from the suffix, e.g. ``.png``); written
        atomically.
    dpi
        Resolution of the saved image.
    max_width
        Largest width of the table figure in pixels at ``dpi`` (columns wrap).
    ax
        Axes to draw into: ``kind='dots'`` or ``'bars'`` with one group only
        (the table and several groups lay out their own figure; an error says
        so). ``None``: a new figure.
    show
        Call ``matplotlib.pyplot.show()``. Otherwise (``None``, ``False``) the
        figure is detached from pyplot, so a notebook displays it once, as the
        cell's returned value.

    Returns
    -------
    matplotlib.figure.Figure
        Nothing is written into ``results``.
    """
    check_choice("kind", kind, _KINDS)
    dpi = check_int("dpi", dpi, minimum=10)
    max_width = check_int("max_width", max_width, minimum=200)
    show = check_show(show)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string or None, got {title!r}.")
    if figsize is not None:
        if not isinstance(figsize, (tuple, list)) or len(figsize) != 2:
            raise DfmInputError(f"figsize must be (width, height) in inches, got {figsize!r}.")
        figsize = tuple(check_float("figsize", v, minimum=0.0, strict_min=True) for v in figsize)
    from matplotlib import colormaps

    if cmap not in colormaps:
        raise DfmInputError(f"Unknown colormap {cmap!r}; use a matplotlib name such as 'viridis'.")
    df, cols, emb = _prepare(
        results, name=name, metrics=metrics, groups=groups, embeddings=embeddings
    )
    n_panels = "several" if kind == "table" else len(dict.fromkeys(g for g, _ in cols))
    ax = check_ax(ax, n_panels=1 if n_panels == 1 else 2, what=f"pl.benchmark(kind={kind!r})")
    from ..tl._scoring._verdict import verdict

    _, subtitle = _describe(results, name)
    if title is None:
        title = _default_title(results, name)
    full = results_frame(results, name=name)
    said = verdict(full[full["embedding"].isin(emb)])
    leads = said.short_lines()
    notes = said.lines()[len(said.leads) :]  # constant metrics, the two kinds of aggregate
    if kind == "table":
        fig = _table(
            df, cols, emb, cmap=cmap, figsize=figsize, title=title, subtitle=subtitle,
            max_width_in=max_width / dpi, leads=leads, notes=notes,
        )  # fmt: skip
    else:
        fig = _chart(
            df, cols, emb, kind=kind, figsize=figsize, title=title, leads=leads, notes=notes,
            into=ax,
        )  # fmt: skip
    # the table is laid out to its size; the charts' legends sit above the axes
    tight = None if kind == "table" else "tight"
    return finish(fig, save=save, dpi=dpi, show=show, owned=ax is None, bbox=tight)
