"""The quality benchmark's harness: cache round trip, mean/sd over seeds, target checks, table."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"


@pytest.fixture(scope="module")
def bq():
    if not _PATH.is_file():
        pytest.skip(f"{_PATH} not found (benchmarks/ is not shipped with the package)")
    spec = importlib.util.spec_from_file_location("bench_quality", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rec(dataset, method, seed, f1, bio, batch, total, cpu=10.0, wall=20.0):
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "f1": f1,
        "bio": bio,
        "batch": batch,
        "total": total,
        "cpu_s": cpu,
        "wall_s": wall,
    }


def test_aggregate_mean_and_sample_sd_by_hand(bq):
    records = [
        rec("a", "pca", 0, 0.80, 0.6, 0.3, 0.48),
        rec("a", "pca", 1, 0.82, 0.7, 0.3, 0.54),
        rec("a", "pca", 2, 0.84, 0.8, 0.3, 0.60, cpu=40.0),
    ]
    agg = bq.aggregate(records)
    row = agg[("a", "pca")]
    assert row["seeds"] == [0, 1, 2]
    # mean 0.82; deviations -0.02, 0, 0.02 -> sample variance 0.0008/2 -> sd 0.02
    assert row["f1"] == pytest.approx((0.82, 0.02))
    assert row["bio"] == pytest.approx((0.7, 0.1))
    assert row["batch"] == pytest.approx((0.3, 0.0), abs=1e-12)
    assert row["cpu_s"] == pytest.approx((20.0, math.sqrt(300.0)))


def test_aggregate_single_seed_has_no_sd_and_skips_nan(bq):
    agg = bq.aggregate(
        [rec("a", "scvi", 0, 0.7, 0.5, 0.8, 0.62), rec("b", "scvi", 0, math.nan, 0.5, 0.8, 0.6)]
    )
    mean, sd = agg[("a", "scvi")]["f1"]
    assert mean == pytest.approx(0.7) and math.isnan(sd)
    assert all(math.isnan(x) for x in agg[("b", "scvi")]["f1"])


def test_aggregate_rejects_duplicate_seed(bq):
    with pytest.raises(ValueError, match="duplicate"):
        bq.aggregate([rec("a", "pca", 0, 1, 1, 1, 1), rec("a", "pca", 0, 1, 1, 1, 1)])


def _three_seeds(dataset, method, f1, bio, batch, total):
    # symmetric spread, so the means are exactly the given values
    return [
        rec(dataset, method, s, f1 + d, bio + d, batch + d, total + d)
        for s, d in enumerate((-0.01, 0.0, 0.01))
    ]


def test_check_targets_on_hand_made_means(bq):
    records = (
        _three_seeds("a", "pca", 0.80, 0.60, 0.30, 0.48)
        + _three_seeds("a", "scvi", 0.78, 0.55, 0.85, 0.67)
        # F1 0.83 >= 0.80 + 0.02, bio 0.59 < 0.60
        + _three_seeds("a", "dfm", 0.83, 0.59, 0.40, 0.51)
        # F1 0.815 < 0.82, total 0.70 >= 0.67
        + _three_seeds("a", "dfm_batch", 0.815, 0.62, 0.82, 0.70)
    )
    t = bq.check_targets(bq.aggregate(records), "a")
    assert t == {
        "dfm": {"f1>=PCA+0.02": True, "bio>=PCA": False},
        "dfm_batch": {"f1>=PCA+0.02": False, "total>=scVI": True},
    }


def test_check_targets_leaves_out_missing_references(bq):
    agg = bq.aggregate(_three_seeds("a", "dfm_batch", 0.9, 0.6, 0.5, 0.56))
    assert bq.check_targets(agg, "a") == {"dfm_batch": {}}
    assert bq.check_targets(agg, "other") == {}


def test_markdown_table_rows_and_target_column(bq):
    records = (
        _three_seeds("demo", "pca", 0.80, 0.60, 0.30, 0.48)
        + _three_seeds("demo", "dfm", 0.70, 0.65, 0.40, 0.55)
        + _three_seeds("pbmc_ifnb_kang", "scvi", 0.78, 0.55, 0.85, 0.67)
    )
    table = bq.markdown_table(records)
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    # datasets in the benchmark's order (kang before demo), methods in METHODS order
    assert lines[2].startswith("| pbmc_ifnb_kang | scvi | 3 | 0.780 ± 0.010 |")
    assert lines[3].startswith("| demo | dfm | 3 | 0.700 ± 0.010 | 0.650 ± 0.010 |")
    assert "met bio>=PCA; **missed** f1>=PCA+0.02" in lines[3]
    assert lines[4].startswith("| demo | pca |") and "reference" in lines[4]


def test_cache_round_trip_and_table_command(bq, tmp_path, capsys):
    records = _three_seeds("demo", "pca", 0.80, 0.60, 0.30, 0.48)
    for r in records:
        path = bq.write_record(r, tmp_path)
        assert path == bq.result_path("demo", "pca", r["seed"], tmp_path)
        assert json.loads(path.read_text()) == r
    assert not list(tmp_path.glob("*.tmp"))
    assert bq.load_records(tmp_path) == records
    bq.main(["--table", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| demo | pca | 3 | 0.800 ± 0.010 |" in out


def test_kmeans_n_init_records_are_cached_apart(bq, tmp_path, capsys):
    one = _three_seeds("demo", "pca", 0.80, 0.60, 0.30, 0.48)
    ten = [{**r, "bio": 0.70, "kmeans_n_init": 10} for r in one]
    for r in one + ten:
        bq.write_record(r, tmp_path)
    assert bq.result_path("demo", "pca", 0, tmp_path, 10).name == "demo__pca__seed0__kmeans10.json"
    assert bq.load_records(tmp_path) == one  # the n_init=1 table is unchanged
    assert bq.load_records(tmp_path, 10) == ten
    assert bq.load_records(tmp_path, 5) == []
    bq.main(["--table", "--results", str(tmp_path), "--kmeans-n-init", "10"])
    out = capsys.readouterr().out
    assert "KMeans starts: 10" in out and "| 0.700 ± 0.000 |" in out


def test_variant_methods_pass_their_option_to_embed(bq, monkeypatch):
    """``dfm_ema`` / ``dfm_ckpt`` run the default embedding with their one option added."""
    import numpy as np

    import diffbio_sc as dfm

    calls = []

    def fake_embed(adata, **kw):
        calls.append(kw)
        adata.obsm["X_dfm"] = np.zeros((adata.n_obs, 2), np.float32)

    monkeypatch.setattr(dfm.tl, "embed", fake_embed)
    adata = dfm.datasets.synthetic_counts(10, 5, n_cell_types=2, n_batches=2, seed=0)
    for method in ("dfm", "dfm_ema", "dfm_ckpt"):
        Z, _ = bq.RUNNERS[method](adata, 3)
        assert Z.shape == (10, 2)
    base = {"seed": 3, "progress_bar": False}
    assert calls == [
        base,
        {**base, "ema": bq.EMA_DECAY},
        {**base, "average_checkpoints": (0.75, 0.9, 1.0)},
    ]
    assert "dfm_ckpt" in bq.EXTRA_METHODS and "dfm_ckpt" not in bq.METHODS
