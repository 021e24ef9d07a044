"""The verdict of a benchmark: which embedding is best, by how much, and what to read with care.

Pure functions of the tidy results table (no AnnData, no figures): :func:`verdict`
finds the best embedding on bio conservation, on batch correction and in total (or on
the classification scores of a results table without integration metrics), with its
margin over the unintegrated PCA baseline and over the runner-up; it also names the
metrics that are the same for every embedding (e.g. ``pcr_comparison`` at 0), which
rank nothing. :func:`format_results` writes the text report that ``dfm demo`` and
``dfm benchmark`` print: the verdict first, then the metrics grouped under their
aggregate. ``dfm.pl.benchmark`` draws the same verdict under its title.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..._schema import (
    AGGREGATE_FORMULAS,
    BATCH_METRICS,
    BIO_METRICS,
    metric_label,
    results_frame,
)

#: The embedding the margins are measured from, where the results have it.
REFERENCE = "X_pca_baseline"
#: Readable names of the computed baselines.
BASELINE_NAMES = {"X_pca_baseline": "PCA", "X_harmony_baseline": "Harmony"}
#: The categories of the verdict: (aggregate metric, words).
CATEGORIES = (
    ("bio_conservation", "bio conservation"),
    ("batch_correction", "batch correction"),
    ("total", "total"),
)
#: Why a metric can be the same for every embedding.
CONSTANT_REASONS = {
    "pcr_comparison": (
        "it measures how much less of the variance is explained by the batch than in the "
        "unintegrated PCA (its reference, 0 by construction), clipped at 0; 0 for every "
        "embedding means none explains less of it by batch than that PCA, so it ranks "
        "nothing here"
    ),
}
#: How the two families of aggregates differ (shown whenever both are present).
AGGREGATE_FAMILIES = (
    "Bio conservation, Batch correction and Total follow the scib-metrics Benchmarker "
    "(means over all its metrics of each group); avg_bio and avg_batch are the scIB-paper "
    "averages of a few fixed metrics (avg_batch: silhouette batch and graph connectivity "
    "only), so they are on another scale and are not comparable with the first three."
)
_EPS = 0.005  # differences below this are shown as ties (the figures round to 2 decimals)


def display_name(embedding: str) -> str:
    """Readable name of an embedding (``'X_pca_baseline'`` -> ``'PCA'``)."""
    return BASELINE_NAMES.get(embedding, embedding)


@dataclass(frozen=True)
class Lead:
    """The best embedding of one category and its margins."""

    category: str  #: the aggregate (or ``'classification'``)
    label: str  #: the category in words
    best: str  #: the embedding with the highest value
    value: float
    runner_up: str | None = None
    runner_up_value: float | None = None
    reference: str | None = None  #: the PCA baseline, when present and not the best
    reference_value: float | None = None
    tied: tuple[str, ...] = ()  #: embeddings within 0.005 of the best

    @property
    def over_reference(self) -> float | None:
        """Margin over the reference (PCA), or None."""
        return None if self.reference_value is None else self.value - self.reference_value

    @property
    def over_runner_up(self) -> float | None:
        """Margin over the second best, or None."""
        return None if self.runner_up_value is None else self.value - self.runner_up_value

    def sentence(self) -> str:
        """One line: ``'Best on total: X (0.62), +0.07 over PCA (0.55); next: ...'``."""
        best = display_name(self.best)
        if self.tied:
            others = ", ".join(display_name(t) for t in self.tied)
            text = f"Best on {self.label}: {best} ({self.value:.2f}), tied with {others}"
        else:
            text = f"Best on {self.label}: {best} ({self.value:.2f})"
        parts = []
        if self.reference is not None and self.reference_value is not None:
            parts.append(
                f"{self.over_reference:+.2f} over {display_name(self.reference)} "
                f"({self.reference_value:.2f})"
            )
        if (
            self.runner_up is not None
            and self.runner_up_value is not None
            and self.runner_up != self.reference
            and not self.tied
        ):
            parts.append(
                f"{self.over_runner_up:+.2f} over the next, {display_name(self.runner_up)} "
                f"({self.runner_up_value:.2f})"
            )
        return text + (": " + "; ".join(parts) if parts else "")


@dataclass(frozen=True)
class Verdict:
    """What a results table says, in a form both the text report and the figure use."""

    leads: list[Lead] = field(default_factory=list)
    #: metric -> (the value every embedding has, why)
    constant: dict[str, tuple[float, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Return the verdict as text lines: the leads, then the notes."""
        out = [lead.sentence() for lead in self.leads]
        for m, (v, why) in self.constant.items():
            out.append(f"{metric_label(m)} is {v:.2f} for every embedding: {why}.")
        return out + list(self.notes)

    def short_lines(self) -> list[str]:
        """One short line per lead (a figure's header): ``'Best on total: X 0.62 (+0.07 vs PCA)'``."""
        out = []
        for lead in self.leads:
            bit = f"Best on {lead.label}: {display_name(lead.best)} {lead.value:.2f}"
            if lead.tied:
                bit += " (tied with " + ", ".join(display_name(t) for t in lead.tied) + ")"
            elif lead.over_reference is not None:
                bit += f" ({lead.over_reference:+.2f} vs {display_name(lead.reference)})"
            elif lead.over_runner_up is not None:
                bit += f" ({lead.over_runner_up:+.2f} vs {display_name(lead.runner_up)})"
            out.append(bit)
        return out


def _values(df: pd.DataFrame, metric: str) -> pd.Series:
    """Finite values of ``metric`` by embedding, highest first (ties in table order)."""
    sub = df[df["metric"] == metric]
    s = sub.groupby("embedding", sort=False)["value"].first()
    s = s[np.isfinite(s.to_numpy(dtype=float))]
    order = np.argsort(-s.to_numpy(dtype=float), kind="stable")
    return s.iloc[order]


def _lead(values: pd.Series, category: str, label: str, reference: str) -> Lead | None:
    if values.empty:
        return None
    best, value = str(values.index[0]), float(values.iloc[0])
    tied = tuple(str(e) for e, v in values.iloc[1:].items() if value - float(v) < _EPS)
    runner = (str(values.index[1]), float(values.iloc[1])) if len(values) > 1 else (None, None)
    ref = (reference, float(values[reference])) if reference in values.index else (None, None)
    if ref[0] == best:
        ref = (None, None)
    return Lead(category, label, best, value, *runner, *ref, tied=tied)


def _classification_scores(df: pd.DataFrame) -> pd.Series:
    """Mean macro-F1 (or, without it, mean of every annotation score) per embedding."""
    ann = df[df["group"] == "annotation"]
    f1 = ann[ann["metric"].str.endswith("macro_f1")]
    use = f1 if not f1.empty else ann
    s = use.groupby("embedding", sort=False)["value"].mean()
    s = s[np.isfinite(s.to_numpy(dtype=float))]
    return s.iloc[np.argsort(-s.to_numpy(dtype=float), kind="stable")]


def verdict(results, *, name: str = "default", reference: str = REFERENCE) -> Verdict:
    """Which embedding is best on bio conservation, batch correction and in total.

    Parameters
    ----------
    results
        The tidy table of :func:`diffbio_sc.tl.benchmark` (or of
        :func:`~diffbio_sc.tl.genomics_tasks`), a report dict or an AnnData holding
        the report ``name``.
    name
        Report name when ``results`` is an AnnData.
    reference
        The embedding the margins are measured from (the unintegrated PCA baseline).

    Returns
    -------
    Verdict
        ``leads``: one :class:`Lead` per aggregate present (``bio_conservation``,
        ``batch_correction``, ``total``), or, for a table without them, one for the
        classification scores (mean macro-F1); ``constant``: the metrics with one
        value for every embedding (with at least two embeddings) and why;
        ``notes``: how the two kinds of aggregate differ, when both are present.
    """
    df = results_frame(results, name=name)
    leads = []
    for metric, label in CATEGORIES:
        lead = _lead(_values(df, metric), metric, label, reference)
        if lead is not None:
            leads.append(lead)
    if not leads:
        ann = df[df["group"] == "annotation"]
        what = "mean macro F1" if ann["metric"].str.endswith("macro_f1").any() else "mean score"
        label = f"classification ({what})"
        lead = _lead(_classification_scores(df), "classification", label, reference)
        if lead is not None:
            leads.append(lead)
    constant: dict[str, tuple[float, str]] = {}
    if df["embedding"].nunique() > 1:
        for metric in [*BIO_METRICS, *BATCH_METRICS]:
            v = df.loc[df["metric"] == metric, "value"].to_numpy(dtype=float)
            if v.size > 1 and np.isfinite(v).all() and np.ptp(v) < 1e-9:
                why = CONSTANT_REASONS.get(metric, "it does not separate the embeddings here")
                constant[metric] = (float(v[0]), why)
    notes = []
    present = set(df["metric"])
    if {"avg_bio", "avg_batch"} & present and {"bio_conservation", "batch_correction"} & present:
        notes.append(AGGREGATE_FAMILIES)
    return Verdict(leads, constant, notes)


def _groups(df: pd.DataFrame) -> list[tuple[str, list[tuple[str, str]]]]:
    """Rows of the text table: ``(heading, [(metric, label), ...])`` in display order.

    A heading that is an aggregate is shown with its values; its members are the
    metrics it averages (silhouette batch sits under avg_batch: the Benchmarker's
    Batch correction leaves it out).
    """
    present = list(dict.fromkeys(df["metric"]))

    def rows(metrics) -> list[tuple[str, str]]:
        return [(m, "    " + metric_label(m)) for m in metrics if m in present]

    out = []
    bio = rows(BIO_METRICS)
    batch = rows(m for m in BATCH_METRICS if m != "silhouette_batch")
    if "bio_conservation" in present or bio:
        out.append(("bio_conservation", bio))
    if "batch_correction" in present or batch:
        out.append(("batch_correction", batch))
    if "total" in present:
        out.append(("total", []))
    scib = rows(["avg_bio", "avg_batch"])
    if "silhouette_batch" in present:
        scib.append(("silhouette_batch", "    Silhouette batch (in avg_batch only)"))
    if scib:
        out.append(("scIB-paper averages (see the notes)", scib))
    known = {m for _, ms in out for m, _ in ms} | {a for a, _ in out}
    rest = [m for m in present if m not in known]
    ann = set(df.loc[df["group"] == "annotation", "metric"])
    ann_rows = rows(m for m in rest if m in ann)
    if ann_rows:
        probes = all(m.startswith(("knn_", "logreg_")) for m, _ in ann_rows)
        title = "Annotation probes (cross-validated)" if probes else "Classification (test set)"
        out.append((title, ann_rows))
    other = rows(m for m in rest if m not in ann)
    if other:
        out.append(("Other", other))
    return out


def format_results(results, *, name: str = "default", title: str | None = None) -> str:
    """Write the text report: the verdict, then the scores grouped under their aggregate.

    Parameters
    ----------
    results
        As for :func:`verdict`.
    name
        Report name when ``results`` is an AnnData.
    title
        First line (e.g. the data set); none when ``None``.

    Returns
    -------
    str
        Lines of text, ending without a newline.
    """
    df = results_frame(results, name=name)
    v = verdict(df)
    table = df.pivot_table(index="metric", columns="embedding", values="value", aggfunc="first")
    order = list(dict.fromkeys(df["embedding"]))
    if v.leads:  # columns: best first by the last category (total where present)
        last = v.leads[-1].category
        rank = _classification_scores(df) if last == "classification" else _values(df, last)
        order = sorted(order, key=lambda e: -float(rank.get(e, -np.inf)))
    names = [display_name(e) for e in order]
    lines = [title] if title else []
    lines.append("Verdict (higher is better for every score; 0 worst, 1 best):")
    for line in v.lines()[: len(v.leads)] or ["(no scores)"]:
        lines += textwrap.wrap(line, 92, initial_indent="  ", subsequent_indent="    ")
    groups = _groups(df)
    width = max([len(label) for _, ms in groups for _, label in ms] + [24]) + 2
    col = max([len(n) for n in names] + [6]) + 2
    lines.append("")
    lines.append("Scores".ljust(width) + "".join(n.rjust(col) for n in names))

    def row(label: str, metric: str) -> str:
        cells = []
        for e in order:
            x = table.at[metric, e] if metric in table.index and e in table.columns else np.nan
            cells.append(("n/a" if not np.isfinite(x) else f"{x:.3f}").rjust(col))
        return label.ljust(width) + "".join(cells)

    for head, members in groups:
        lines.append(row(metric_label(head), head) if head in table.index else head)
        lines += [row(label, m) for m, label in members]
    notes = v.lines()[len(v.leads) :]
    aggs = [m for m in AGGREGATE_FORMULAS if m in table.index]
    if notes or aggs:
        lines.append("")
        lines.append("Notes:")
        lines += [f"  {metric_label(m)} = {AGGREGATE_FORMULAS[m]}" for m in aggs]
        for note in notes:
            lines += textwrap.wrap(note, 92, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)
