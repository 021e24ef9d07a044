"""The README's main job (`dfm demo`) runs end to end and writes what it says (slow)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_writes_results(tmp_path, capsys):
    from diffbio_sc._cli import main

    out = tmp_path / "results"
    rc = main(["demo", "--out", str(out), "--n-cells", "400", "--epochs", "2", "--no-progress"])
    assert rc == 0
    for name in ("demo.h5ad", "scores.csv", "scores.png", "summary.json", "model/config.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cells"] == 400
    assert set(summary["scores"]) == {"X_dfm", "X_pca_baseline"}
    for scores in summary["scores"].values():
        assert 0.0 <= scores["knn_macro_f1"] <= 1.0
    printed = capsys.readouterr().out
    assert "Best on total" in printed and "PCA" in printed  # the verdict leads
    assert "kNN macro F1" in printed and "Bio conservation" in printed

    import anndata as ad

    adata = ad.read_h5ad(out / "demo.h5ad")
    assert adata.obsm["X_dfm"].shape == (400, 128)
    assert {"tokenizer", "embeddings", "benchmarks"} <= set(adata.uns["dfm"])


def test_demo_refuses_a_file_as_output_folder(tmp_path):
    from diffbio_sc._cli import main

    target = tmp_path / "results"
    target.write_text("keep me")
    with pytest.raises(SystemExit, match="is a file; pass a folder"):
        main(["demo", "--out", str(target), "--n-cells", "50", "--epochs", "1"])
    assert target.read_text() == "keep me"
