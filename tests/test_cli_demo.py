"""The README's main job (`dfm demo`) runs end to end and writes what it says (slow)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_writes_results(tmp_path, capsys):
    from diffbio_sc._cli import main

    out = tmp_path / "results"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    rc = main(["demo", "--out", str(out), "--n-cells", "400", "--epochs", "2", "--no-progress",
               "--force"])  # fmt: skip
    assert rc == 0
    assert not (out / "stale.txt").exists()  # --force replaces the folder whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporary folder
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


def test_demo_refuses_an_existing_output_without_force(tmp_path, capsys):
    from diffbio_sc._cli import main

    target = tmp_path / "results"
    target.write_text("keep me")
    rc = main(["demo", "--out", str(target), "--n-cells", "50", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("dfm demo: error: ") and "is a file" in err, err
    assert target.read_text() == "keep me"
    # an existing folder is not overwritten silently either (issue 24)
    folder = tmp_path / "old_results"
    folder.mkdir()
    (folder / "scores.csv").write_text("previous")
    rc = main(["demo", "--out", str(folder), "--n-cells", "50", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists" in err and "--force" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == ["scores.csv"]
    assert (folder / "scores.csv").read_text() == "previous"
