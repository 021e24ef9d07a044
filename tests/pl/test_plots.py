"""Tests of dfm.pl.benchmark and dfm.pl.embedding (Agg backend, no display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import diffbio_sc as dfm  # noqa: E402
from diffbio_sc._validate import DfmInputError  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    """A hand-made tidy table in the layout dfm.tl.benchmark returns."""
    rows = []
    spec = {"X_a": 0.9, "X_b": 0.5, "X_c": 0.7}
    for emb, base in spec.items():
        for m in ("knn_accuracy", "logreg_macro_f1"):
            rows.append((emb, m, "annotation", base, 0.02))
        for m in ("isolated_labels", "kmeans_nmi", "silhouette_label"):
            rows.append((emb, m, "bio", base - 0.05, np.nan))
        for m in ("ilisi", "kbet", "graph_connectivity"):
            rows.append((emb, m, "batch", 1 - base, np.nan))
        rows.append((emb, "bio_conservation", "aggregate", base - 0.05, np.nan))
        rows.append((emb, "batch_correction", "aggregate", 1 - base, np.nan))
        rows.append((emb, "total", "aggregate", 0.6 * (base - 0.05) + 0.4 * (1 - base), np.nan))
    return pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as im:
        return im.size


def _table_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _circles(fig):
    """(axis, xy, facecolor) of every metric circle of a table figure."""
    from matplotlib.collections import PathCollection

    out = []
    for ax in fig.axes:
        for coll in ax.collections:
            if not isinstance(coll, PathCollection):  # the colour legend's mesh
                continue
            for xy, fc in zip(coll.get_offsets(), coll.get_facecolors(), strict=False):
                out.append((ax, tuple(xy), tuple(fc)))
    return out


def _full_results(n_emb: int = 4) -> pd.DataFrame:
    """Every column dfm.tl.benchmark writes by default, for n_emb embeddings."""
    from diffbio_sc._schema import AGGREGATES, DEFAULT_METRICS, group_of

    rng = np.random.default_rng(0)
    rows = []
    for e in range(n_emb):
        emb = f"X_embedding_{e}"
        for p in ("knn", "logreg"):
            for sc in ("accuracy", "balanced_accuracy", "macro_f1"):
                rows.append((emb, f"{p}_{sc}", "annotation", rng.uniform(0.5, 1), 0.02))
        for m in DEFAULT_METRICS:
            v = np.nan if m == "kbet" else rng.uniform(0, 1)
            rows.append((emb, m, group_of(m), v, np.nan))
        for m in AGGREGATES:
            rows.append((emb, m, "aggregate", rng.uniform(0.3, 0.9), np.nan))
    df = pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])
    df.attrs.update(
        name="full", dataset="PBMC 3 batches", label_key="cell_type", batch_key="sample",
        n_cells=500,
    )  # fmt: skip
    return df


def test_benchmark_table_content_matches_the_values(results):
    from matplotlib import colormaps

    fig = dfm.pl.benchmark(results, kind="table")
    texts = _table_texts(fig)
    non_agg = results[results.group != "aggregate"]
    agg = results[results.group == "aggregate"]
    circles = _circles(fig)
    assert len(circles) == len(non_agg)  # one circle per metric cell
    bars = [p for ax in fig.axes for p in ax.patches if p.get_width() > 0]
    assert len(bars) == len(agg)  # one bar per aggregate cell
    # every value is printed, rounded to 2 decimals
    for v in results["value"]:
        assert f"{v:.2f}" in texts
    # colours follow the values on one 0-1 scale: equal values, equal colours
    cmap = colormaps["viridis"]
    expected = {tuple(np.round(cmap(float(np.clip(v, 0, 1))), 4)) for v in non_agg["value"]}
    assert {tuple(np.round(fc, 4)) for _, _, fc in circles} == expected
    widths = sorted(round(b.get_width() / 0.85, 6) for b in bars)
    assert widths == sorted(round(float(np.clip(v, 0, 1)), 6) for v in agg["value"])
    # a colour legend
    assert any("colour = value" in ax.get_xlabel() for ax in fig.axes)


def test_benchmark_table_rows_sorted_by_total(results):
    fig = dfm.pl.benchmark(results, kind="table")
    ax = fig.axes[0]
    texts = [t for t in ax.texts if t.get_text() in {"X_a", "X_b", "X_c"}]
    # rows run top to bottom along increasing y (the axis is inverted)
    order = [t.get_text() for t in sorted(texts, key=lambda t: t.get_position()[1])]
    total = results[results.metric == "total"].set_index("embedding")["value"]
    assert order == list(total.sort_values(ascending=False).index)
    labels = set(_table_texts(fig))
    assert {"Annotation", "Bio conservation", "Batch correction", "Aggregate score"} <= labels, (
        labels
    )


def test_benchmark_full_table_is_readable_width_with_title_and_footnote(tmp_path):
    df = _full_results()
    path = tmp_path / "t.png"
    fig = dfm.pl.benchmark(df, save=path)
    width, _ = _png_size(path)
    assert width <= 1600
    assert fig.get_figwidth() * 150 <= 1600
    texts = _table_texts(fig) + [t.get_text() for t in fig.texts]
    assert fig._suptitle.get_text() == "PBMC 3 batches: scores of each embedding"  # the data
    assert any("labels: cell_type" in t and "batches: sample" in t for t in texts)
    assert any("Total = 0.6 * bio conservation + 0.4 * batch correction" in t for t in texts)
    # the columns wrap: every embedding appears once per row of panels
    assert sum(1 for t in texts if t == "X_embedding_0") >= 2
    assert len(_circles(fig)) == 4 * (6 + 11 - 1)  # kbet is n/a
    assert texts.count("n/a") == 4


def test_benchmark_table_leads_with_the_verdict_and_explains_constant_metrics():
    """The figure says which embedding is best and by how much over PCA (tl's verdict)."""
    df = _full_results(3)
    df["embedding"] = df["embedding"].replace(
        {"X_embedding_0": "X_pca_baseline", "X_embedding_1": "X_harmony_baseline"}
    )
    df.loc[df.metric == "pcr_comparison", "value"] = 0.0
    agg = df[df.group == "aggregate"].pivot_table(
        index="embedding", columns="metric", values="value"
    )
    fig = dfm.pl.benchmark(df)
    texts = [t.get_text() for t in fig.texts]
    head = next(t for t in texts if t.startswith("Best on bio conservation"))
    best = agg["total"].idxmax()
    name = {"X_pca_baseline": "PCA", "X_harmony_baseline": "Harmony"}.get(best, best)
    line = next(ln for ln in head.splitlines() if ln.startswith("Best on total"))
    assert line.startswith(f"Best on total: {name} {agg['total'].max():.2f}")
    if best != "X_pca_baseline":
        margin = agg["total"].max() - agg.at["X_pca_baseline", "total"]
        assert line.endswith(f"({margin:+.2f} vs PCA)")
    foot = next(t for t in texts if "Total = 0.6" in t)
    assert "PCR comparison is 0.00 for every embedding" in foot
    assert "avg_batch" in foot and "not comparable" in foot  # the two batch aggregates
    # each metric sits under its aggregate: the aggregate's bar leads its own group
    for title, first in (("Bio conservation", "Bio\nconservation"),
                         ("Batch correction", "Batch\ncorrection")):  # fmt: skip
        (ax,) = [a for a in fig.axes if any(t.get_text() == title for t in a.texts)]
        labels = sorted((t for t in ax.texts if t.get_position()[1] == -0.8),
                        key=lambda t: t.get_position()[0])  # fmt: skip
        assert labels[0].get_text() == first
        assert len([p for p in ax.patches if p.get_width() > 0]) == 3  # one bar per embedding
    # the footnote fits the figure: no line wider than the figure at ~0.062 in a character
    assert max(len(ln) for ln in foot.splitlines()) <= fig.get_figwidth() / 0.062 + 1


def test_benchmark_table_of_sequence_tasks_groups_by_task_with_short_labels():
    """genomics_tasks scores: a group per task (not 'Annotation'), columns named by score."""
    rows = [
        (e, f"promoters_ecoli_{sc}", "annotation", v, np.nan)
        for e, v in {"kmer_logreg": 0.9, "frozen_probe": 0.7}.items()
        for sc in ("accuracy", "macro_f1", "mcc", "auroc")
    ]
    df = pd.DataFrame(rows, columns=["embedding", "metric", "group", "value", "sd"])
    fig = dfm.pl.benchmark(df, title="E. coli promoters")
    texts = _table_texts(fig)
    assert "Task: promoters_ecoli (test set)" in texts and "Annotation" not in texts
    assert {"Accuracy", "Macro F1", "MCC", "AUROC"} <= set(texts)
    assert not any("promoters_ecoli_" in t for t in texts)  # no long, overlapping labels
    header = [t.get_text() for t in fig.texts]
    assert any(t.startswith("Best on classification (mean macro F1): kmer_logreg 0.90")
               for t in header)  # fmt: skip
    fig = dfm.pl.benchmark(df, kind="bars")
    assert fig.axes[0].get_title() == "Task: promoters_ecoli (test set)"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "Accuracy", "Macro F1", "MCC", "AUROC"]  # fmt: skip


def test_benchmark_figure_is_detached_from_pyplot(results):
    """Returned, not left open in pyplot: a notebook shows it once, as the cell's value."""
    plt.close("all")
    fig = dfm.pl.benchmark(results)
    assert plt.get_fignums() == []
    assert fig.axes  # still a complete figure


def test_benchmark_bars_one_panel_per_group_with_bar_heights(results):
    fig = dfm.pl.benchmark(results, kind="bars", groups=["bio", "aggregate"])
    assert [ax.get_title() for ax in fig.axes] == ["Bio conservation", "Aggregate score"]
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    expected = sorted(round(v, 6) for v in results[results.group == "bio"]["value"])
    assert heights == expected
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["Isolated labels", "KMeans NMI", "Silhouette label"]
    assert fig.axes[0].get_ylabel() == "score (higher is better)"


def test_benchmark_dots_points_and_error_bars(results):
    fig = dfm.pl.benchmark(results, kind="dots", groups="annotation")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["kNN accuracy", "LogReg macro F1"]
    lines = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_marker() == "o"]
    assert len(lines) == 3  # one series per embedding
    ys = sorted(round(float(y), 6) for ln in lines for y in ln.get_ydata())
    assert ys == sorted(round(v, 6) for v in results[results.group == "annotation"]["value"])


def test_benchmark_plot_from_report_and_anndata(results, tmp_path):
    import anndata
    from anndata import AnnData

    from diffbio_sc import _uns

    ad = AnnData(np.zeros((2, 1), dtype=np.float32))
    report = {
        "scores": {c: results[c].to_numpy() for c in results.columns},
        "inputs": {"label_key": "cell_type", "batch_key": "donor", "n_cells": 2},
    }
    _uns.set_entry(ad, "benchmarks", "default", report)
    ad.write_h5ad(tmp_path / "r.h5ad")
    back = anndata.read_h5ad(tmp_path / "r.h5ad")
    fig = dfm.pl.benchmark(back, kind="dots", save=tmp_path / "d.png")
    assert [ax.get_title() for ax in fig.axes] == [
        "Annotation",
        "Bio conservation",
        "Batch correction",
        "Aggregate score",
    ]
    assert _png_size(tmp_path / "d.png")[0] > 100
    assert list(back.uns["dfm"]["benchmarks"]) == ["default"]  # nothing written
    fig2 = dfm.pl.benchmark(back.uns["dfm"]["benchmarks"]["default"], embeddings=["X_b"])
    texts = _table_texts(fig2) + [t.get_text() for t in fig2.texts]
    assert "X_a" not in texts and "X_b" in texts
    assert any("batches: donor" in t for t in texts)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "pie"}, "pie"),
        ({"metrics": ["nope"]}, "nope"),
        ({"groups": ["cats"]}, "cats"),
        ({"embeddings": ["X_z"]}, "X_z"),
        ({"cmap": "no_such_map"}, "no_such_map"),
        ({"figsize": (3,)}, "figsize"),
        ({"max_width": 10}, "max_width"),
    ],
)
def test_benchmark_plot_errors(results, kwargs, match):
    with pytest.raises(DfmInputError, match=match):
        dfm.pl.benchmark(results, **kwargs)


@pytest.fixture(scope="module")
def adata():
    ad = dfm.datasets.synthetic_counts(150, 50, n_cell_types=3, n_batches=2, seed=0)
    rng = np.random.default_rng(0)
    lab = ad.obs["cell_type"].cat.codes.to_numpy()
    ad.obsm["X_emb"] = (np.eye(3)[lab] * 4 + rng.normal(size=(150, 3)) * 0.5).astype(np.float32)
    ad.obsm["X_umap"] = np.full((150, 2), 7.0, dtype=np.float32)  # the user's own UMAP
    return ad


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_embedding_umap_leaves_user_graph_alone(adata, tmp_path):
    from matplotlib.figure import Figure

    ad = adata.copy()
    path = tmp_path / "umap.png"
    fig = dfm.pl.embedding(ad, "X_emb", color=("batch", "cell_type"), save=path, compute_umap=True)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert "batch" in titles and "cell_type" in titles
    assert _png_size(path)[0] > 100
    np.testing.assert_array_equal(ad.obsm["X_umap"], adata.obsm["X_umap"])
    assert len(ad.obsp) == 0 and "neighbors" not in ad.uns and "umap" not in ad.uns
    assert set(ad.obsm.keys()) == set(adata.obsm.keys())


@pytest.mark.slow  # fast-suite budget (issue 14): runs in the slow CI step
def test_embedding_key_added_and_2d_basis(adata):
    ad = adata.copy()
    dfm.pl.embedding(ad, "X_emb", color="cell_type", key_added="X_umap_emb", compute_umap=True)
    coords = ad.obsm["X_umap_emb"]
    assert coords.shape == (150, 2) and np.isfinite(coords).all()
    # a 2-D basis is plotted as it is: the points are the stored coordinates
    fig = dfm.pl.embedding(ad, "X_umap_emb", color="cell_type")
    offsets = np.vstack([c.get_offsets() for c in fig.axes[0].collections])
    assert np.allclose(np.sort(offsets, axis=0), np.sort(coords, axis=0), atol=1e-4)


def test_embedding_uses_the_users_palette_and_small_2d_basis(adata):
    from matplotlib.colors import to_rgba

    ad = adata[:10].copy()  # fewer cells than n_neighbors: fine for a 2-D basis
    ad.obsm["X_2d"] = np.arange(20, dtype=np.float32).reshape(10, 2)
    palette = ["#ff0000", "#00ff00", "#0000ff"]
    ad.uns["cell_type_colors"] = np.array(palette[: ad.obs["cell_type"].nunique()])
    fig = dfm.pl.embedding(ad, "X_2d", color="cell_type")
    faces = np.vstack([c.get_facecolors() for c in fig.axes[0].collections])
    used = {tuple(np.round(f, 3)) for f in faces}
    expected = {tuple(np.round(to_rgba(c), 3)) for c in ad.uns["cell_type_colors"]}
    assert used == expected
    assert list(ad.obsm.keys()) == ["X_emb", "X_umap", "X_2d"]


def test_embedding_of_observations_without_variables():
    # sequences (dfm.io.read_fasta) have embeddings and .obs, but no genes
    import anndata as ad

    seqs = ad.AnnData(
        obs=pd.DataFrame({"label": ["a", "b"] * 3}, index=[f"s{i}" for i in range(6)])
    )
    seqs.obsm["X_2d"] = np.arange(12, dtype=np.float32).reshape(6, 2)
    fig = dfm.pl.embedding(seqs, "X_2d", color="label")
    offsets = np.vstack([c.get_offsets() for c in fig.axes[0].collections])
    assert np.allclose(np.sort(offsets, axis=0), seqs.obsm["X_2d"], atol=1e-5)
    with pytest.raises(DfmInputError, match="empty"):
        dfm.pl.embedding(seqs[:0], "X_2d", color="label")


@pytest.mark.parametrize(
    ("basis", "color", "match"),
    [
        ("X_missing", "batch", "X_missing"),
        ("X_emb", ["batch", "nope"], "nope"),
        ("X_emb", [], "empty"),
    ],
)
def test_embedding_errors(adata, basis, color, match):
    with pytest.raises(DfmInputError, match=match):
        dfm.pl.embedding(adata, basis, color=color)


def test_embedding_does_not_compute_unless_asked(adata):
    ad = adata.copy()
    with pytest.raises(DfmInputError, match=r"3 dimensions.*sc.tl.umap.*compute_umap=True"):
        dfm.pl.embedding(ad, "X_emb", color="cell_type")
    with pytest.raises(DfmInputError, match="already 2-D"):
        dfm.pl.embedding(ad, "X_umap", color="cell_type", key_added="X_again")
    assert set(ad.obsm) == {"X_emb", "X_umap"}


def test_every_plot_takes_ax_show_save_and_returns_the_figure(adata, tmp_path):
    """pl.* share one signature: ax=None, show=None, save=None; the figure comes back."""
    import inspect

    import matplotlib.pyplot as plt

    for name in dfm.pl.__all__:
        params = inspect.signature(getattr(dfm.pl, name)).parameters
        for arg in ("ax", "show", "save"):
            assert arg in params and params[arg].default is None, (name, arg)
    fig, (a1, a2) = plt.subplots(1, 2)
    got = dfm.pl.embedding(adata, "X_umap", color="cell_type", ax=a1)
    assert got is fig and a1.collections  # drawn into the caller's Axes, figure kept open
    assert plt.fignum_exists(fig.number)
    with pytest.raises(DfmInputError, match="2 panels"):
        dfm.pl.embedding(adata, "X_umap", color=["cell_type", "batch"], ax=a2)
    plt.close(fig)


def test_benchmark_draws_one_group_into_an_axes(results):
    fig, ax = plt.subplots()
    got = dfm.pl.benchmark(results, kind="bars", groups=["bio"], ax=ax)
    assert got is fig and len(fig.axes) == 1 and ax.patches
    assert plt.fignum_exists(fig.number)
    with pytest.raises(DfmInputError, match="cannot draw into one ax"):
        dfm.pl.benchmark(results, kind="table", ax=ax)
    with pytest.raises(DfmInputError, match="cannot draw into one ax"):
        dfm.pl.benchmark(results, kind="dots", ax=ax)  # several groups
