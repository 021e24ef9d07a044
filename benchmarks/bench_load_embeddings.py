"""Benchmark dfm.tl.load_embeddings: load N x D embeddings with shuffled ids per format.

Writes one artifact per format (rows in a random order relative to the AnnData), then
loads each in a fresh subprocess and reports wall time and peak memory (peak RSS of the
loading process minus its RSS just before the call). Prints a markdown table.

    python benchmarks/bench_load_embeddings.py --n-cells 100000 --n-dims 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc (Linux).

    VmHWM belongs to the process image, so unlike ru_maxrss it does not carry the
    parent's peak over fork + exec.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(path: str, n_cells: int, seed: int) -> None:
    import anndata as ad
    import pandas as pd

    import diffbio_sc as dfm

    ids = np.array([f"cell_{i:07d}" for i in range(n_cells)])
    adata = ad.AnnData(obs=pd.DataFrame(index=ids))
    dfm.tl.load_embeddings  # noqa: B018 - import the module before measuring
    import h5py  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import safetensors  # noqa: F401

    from diffbio_sc.io import _embeddings  # noqa: F401

    base = _status_mib("VmRSS")
    start = time.perf_counter()
    dfm.tl.load_embeddings(adata, path, key_added="X_bench")
    elapsed = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    expected = np.random.default_rng(seed).standard_normal((n_cells, 4), dtype=np.float32)
    assert np.array_equal(adata.obsm["X_bench"][:, :4], expected), "misaligned rows"
    print(json.dumps({"seconds": elapsed, "peak_mib": peak - base}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-cells", type=int, default=100_000)
    parser.add_argument("--n-dims", type=int, default=512)
    parser.add_argument("--n-cells-csv", type=int, default=20_000)
    parser.add_argument("--formats", default="npz,parquet,h5ad,safetensors,csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "N_CELLS"))
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.seed)
        return

    import diffbio_sc as dfm

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            n = args.n_cells_csv if fmt in ("csv", "tsv") else args.n_cells
            rng = np.random.default_rng(args.seed)
            # The first 4 dims are a checkable signature of each cell (same seed in the child).
            emb = np.empty((n, args.n_dims), dtype=np.float32)
            emb[:, :4] = rng.standard_normal((n, 4), dtype=np.float32)
            emb[:, 4:] = rng.standard_normal((n, args.n_dims - 4), dtype=np.float32)
            ids = np.array([f"cell_{i:07d}" for i in range(n)])
            perm = np.random.default_rng(args.seed + 1).permutation(n)
            path = Path(tmp) / f"emb.{fmt}"
            start = time.perf_counter()
            dfm.io.write_embeddings(path, emb[perm], ids[perm])
            write_s = time.perf_counter() - start
            size = path.stat().st_size / 2**20
            del emb
            out = subprocess.run(
                [sys.executable, __file__, "--seed", str(args.seed), "--child", str(path), str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((fmt, n, args.n_dims, size, write_s, res["seconds"], res["peak_mib"]))
            path.unlink()
    print("| format | cells | dims | file MiB | write s | load s | peak extra MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for fmt, n, d, size, ws, ls, peak in rows:
        print(f"| {fmt} | {n:,} | {d} | {size:.0f} | {ws:.2f} | {ls:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
