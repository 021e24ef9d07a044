"""The transfer benchmark's helpers: gene keys, training sets, the pooled join, the table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_transfer.py"


@pytest.fixture(scope="module")
def bt():
    """The benchmark module (it puts benchmarks/ on sys.path itself, for bench_quality)."""
    if not _PATH.is_file():
        pytest.skip(f"{_PATH} not found (benchmarks/ is not shipped with the package)")
    sys.path.insert(0, str(_PATH.parent))
    try:
        return importlib.import_module(_PATH.stem)
    finally:
        sys.path.remove(str(_PATH.parent))


def _adata(genes, X, cells):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"batch": ["b"] * len(cells), "cell_type": ["t"] * len(cells)}, index=cells)
    a = ad.AnnData(X=sp.csr_matrix(np.asarray(X, dtype=np.int32)), obs=obs)
    a.var_names = genes
    return a


def test_map_genes_symbols_versions_and_duplicates(bt):
    gene_map = {"CD3E": "ENSG0003", "LYZ": "ENSG0001", "LYZ-AS": "ENSG0001"}
    sym = _adata(["LYZ", "CD3E", "NEWGENE", "LYZ-AS"], [[1, 2, 3, 4]], ["c1"])
    out, stats = bt.map_genes(sym, gene_map)
    # unmapped symbols keep their name; the second column keyed ENSG0001 is dropped
    assert list(out.var_names) == ["ENSG0001", "ENSG0003", "NEWGENE"]
    assert out.X.toarray().tolist() == [[1, 2, 3]]
    assert stats == {"genes": 4, "genes_as_ensembl": 3, "duplicate_keys_dropped": 1}
    assert list(sym.var_names) == ["LYZ", "CD3E", "NEWGENE", "LYZ-AS"]  # input unchanged
    ens = _adata(["ENSG0001.5", "ENSG0002.1"], [[5, 6]], ["c1"])
    out, stats = bt.map_genes(ens, gene_map)
    assert list(out.var_names) == ["ENSG0001", "ENSG0002"]
    assert stats["genes_as_ensembl"] == 2


def test_training_plan_leaves_out_sets_sharing_cells(bt):
    pbmc, cl, kang, demo = bt.bq.DATASETS
    cells = {pbmc: {"p1", "p2"}, cl: {"c1", "c2"}, kang: {"k1"}, demo: {"c1", "c2"}}
    n_genes = {pbmc: 1767, cl: 28517, kang: 6998, demo: 2000}
    # the demo shares every cell with the cell lines: never trained on for each other,
    # and the PBMC targets get the cell-line set (more genes), not both copies
    assert bt.training_plan(demo, cells, n_genes) == [pbmc, kang]
    assert bt.training_plan(cl, cells, n_genes) == [pbmc, kang]
    assert bt.training_plan(pbmc, cells, n_genes) == [cl, kang]
    assert bt.training_plan(kang, cells, n_genes) == [pbmc, cl]


def test_pool_outer_and_inner_join(bt):
    a = _adata(["g1", "g2"], [[1, 2]], ["a1"])
    b = _adata(["g2", "g3"], [[3, 4]], ["b1"])
    outer = bt.pool({"A": a, "B": b}, ["A", "B"], "outer")
    dense = outer[:, ["g1", "g2", "g3"]].X.toarray()
    assert dense.tolist() == [[1, 2, 0], [0, 3, 4]]  # a gene a set lacks: not expressed
    assert list(outer.obs["source"]) == ["A", "B"]
    inner = bt.pool({"A": a, "B": b}, ["A", "B"], "inner")
    assert list(inner.var_names) == ["g2"] and inner.X.toarray().ravel().tolist() == [2, 3]


def test_table_rows_beside_the_quality_cache(bt, tmp_path):
    mine, quality = tmp_path / "transfer", tmp_path / "quality"
    mine.mkdir()
    quality.mkdir()
    base = {"dataset": "demo", "seed": 0, "cpu_s": 100.0, "wall_s": 1.0, "batch": 0.4}
    (mine / "demo__transfer__seed0.json").write_text(
        json.dumps(
            {
                **base,
                "method": "transfer",
                "f1": 0.5,
                "bio": 0.6,
                "total": 0.5,
                "train_sets": ["pbmc_3batch_symphony", "pbmc_ifnb_kang"],
                "train_cells": 3175,
                "train_shared_genes": 8043,
                "model_genes_in_target": 729,
                "model_genes": 8000,
                "cells": 1408,
            }
        )
    )
    for method, f1, seed in (("pca", 0.98, 0), ("dfm", 0.97, 0), ("dfm", 0.1, 1)):
        rec = {**base, "method": method, "seed": seed, "f1": f1, "bio": 0.8, "total": 0.7}
        (quality / f"demo__{method}__seed{seed}.json").write_text(json.dumps(rec))
    table = bt.markdown_table(mine, quality).splitlines()
    assert len(table) == 5
    assert "| demo | transfer | 1 |" in table[2] and "729 / 8,000" in table[2]
    assert "| 0.500 |" in table[2]
    assert "| demo | pca | 1 |" in table[3] and "| 0.980 |" in table[3]
    # only the seeds the transfer rows have: the seed-1 dfm record is left out
    assert "| demo | dfm | 1 |" in table[4] and "| 0.970 |" in table[4]
