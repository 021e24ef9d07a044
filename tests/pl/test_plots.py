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


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


@pytest.mark.parametrize("kind", ["table", "dots", "bars"])
def test_benchmark_plot_kinds_return_figure_and_save_png(results, kind, tmp_path):
    from matplotlib.figure import Figure

    path = tmp_path / f"{kind}.png"
    fig = dfm.pl.benchmark(results, kind=kind, save=path)
    assert isinstance(fig, Figure)
    assert _is_png(path)


def test_benchmark_table_rows_sorted_by_total(results):
    fig = dfm.pl.benchmark(results, kind="table")
    texts = [t for t in fig.axes[0].texts if t.get_text() in {"X_a", "X_b", "X_c"}]
    # rows run top to bottom along increasing y (the axis is inverted)
    order = [t.get_text() for t in sorted(texts, key=lambda t: t.get_position()[1])]
    total = results[results.metric == "total"].set_index("embedding")["value"]
    assert order == list(total.sort_values(ascending=False).index)
    # group headers present
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"Annotation", "Bio conservation", "Batch correction", "Aggregate score"} <= labels


def test_benchmark_bars_one_panel_per_group_with_bar_heights(results):
    fig = dfm.pl.benchmark(results, kind="bars", groups=["bio", "aggregate"])
    assert [ax.get_title() for ax in fig.axes] == ["Bio conservation", "Aggregate score"]
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    expected = sorted(round(v, 6) for v in results[results.group == "bio"]["value"])
    assert heights == expected


def test_benchmark_plot_from_report_and_anndata(results, tmp_path):
    from anndata import AnnData

    from diffbio_sc import _uns

    ad = AnnData(np.zeros((2, 1), dtype=np.float32))
    report = {"scores": {c: results[c].to_numpy() for c in results.columns}}
    _uns.set_entry(ad, "benchmarks", "default", report)
    ad.write_h5ad(tmp_path / "r.h5ad")
    import anndata

    back = anndata.read_h5ad(tmp_path / "r.h5ad")
    fig = dfm.pl.benchmark(back, kind="dots", save=tmp_path / "d.png")
    assert fig.axes and _is_png(tmp_path / "d.png")
    fig2 = dfm.pl.benchmark(back.uns["dfm"]["benchmarks"]["default"], embeddings=["X_b"])
    assert "X_a" not in {t.get_text() for t in fig2.axes[0].texts}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "pie"}, "pie"),
        ({"metrics": ["nope"]}, "nope"),
        ({"groups": ["cats"]}, "cats"),
        ({"embeddings": ["X_z"]}, "X_z"),
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


def test_embedding_umap_leaves_user_graph_alone(adata, tmp_path):
    from matplotlib.figure import Figure

    ad = adata.copy()
    path = tmp_path / "umap.png"
    fig = dfm.pl.embedding(ad, "X_emb", color=("batch", "cell_type"), save=path)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert "batch" in titles and "cell_type" in titles
    assert _is_png(path)
    np.testing.assert_array_equal(ad.obsm["X_umap"], adata.obsm["X_umap"])
    assert len(ad.obsp) == 0 and "neighbors" not in ad.uns and "umap" not in ad.uns
    assert set(ad.obsm.keys()) == set(adata.obsm.keys())


def test_embedding_key_added_and_2d_basis(adata):
    ad = adata.copy()
    dfm.pl.embedding(ad, "X_emb", color="cell_type", key_added="X_umap_emb")
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
