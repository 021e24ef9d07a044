"""Benchmark: tokenization through the tokenizer plans, before vs after (same run).

Compares two source trees of the package (``--before`` and ``--after``, each a
``src`` directory; e.g. ``git archive <commit> src | tar -x -C /tmp/base``) on
the same data, in fresh subprocesses that alternate sides over ``--rounds``
rounds, and reports the CPU seconds (process time, all threads) of each case:
min and median over rounds (each round: best of ``--repeats`` calls).

Cases (synthetic counts, generated once with a fixed seed):

* ``pp.tokenize``: ``geneformer_v1`` (2,048 tokens), in memory.
* ``pp.bin_expression``: 51 bins, seeded.
* ``embed_checkpoint`` Geneformer / scGPT inputs: the token streams
  ``geneformer_chunks`` / ``scgpt_chunks`` of ``tl/_checkpoint_inputs`` with the
  tiny test checkpoints (``tests/checkpoints/fixtures``), chunks of 2,048 cells:
  the model is not run, only the tokens it would get.
* ``tl.embed`` inputs: ``iter_token_chunks`` of ``tl/_model_data`` (the native
  model's tokens), 256 tokens.

Usage::

    git archive a79df4a src | tar -x -C /tmp/base
    python benchmarks/bench_plan.py --before /tmp/base/src --after src --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "checkpoints" / "fixtures"
CASES = ("tokenize", "bin_expression", "geneformer_inputs", "scgpt_inputs", "native_inputs")


def _data(n_cells: int, n_genes: int, nnz: int, seed: int = 0):
    """Counts with the fixture checkpoints' 48 genes first, then ``n_genes`` others."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    cells = np.load(FIX / "cells.npz")
    rng = np.random.default_rng(seed)
    width = 48 + n_genes
    per = rng.poisson(nnz, n_cells).clip(1, width)
    indptr = np.concatenate([[0], np.cumsum(per)])
    indices = np.concatenate([np.sort(rng.choice(width, k, replace=False)) for k in per])
    data = rng.geometric(0.4, indices.size).astype(np.float32)
    X = sp.csr_matrix((data, indices.astype(np.int32), indptr), shape=(n_cells, width))
    var = pd.DataFrame(
        {"symbol": list(cells["symbols"]) + [f"S{i}" for i in range(n_genes)]},
        index=list(cells["ensembl"]) + [f"ENSG9{i:010d}" for i in range(n_genes)],
    )
    return ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=var)


def _cpu(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def run_worker(spec: dict) -> dict:
    import diffbio_sc as dfm
    from diffbio_sc.tl import _checkpoint_inputs as ci
    from diffbio_sc.tl import _model_data as md

    if spec.get("n_jobs"):
        dfm.settings.n_jobs = spec["n_jobs"]
    adata = _data(spec["cells"], spec["genes"], spec["nnz"])
    case, reps = spec["case"], spec["repeats"]
    if case == "tokenize":
        dfm.pp.gene_medians(adata)
        fn = lambda: dfm.pp.tokenize(adata, copy=True)  # noqa: E731
    elif case == "bin_expression":
        fn = lambda: dfm.pp.bin_expression(adata, seed=0, copy=True)  # noqa: E731
    elif case in ("geneformer_inputs", "scgpt_inputs"):
        if case == "geneformer_inputs":
            model = dfm.models.load_checkpoint(FIX / "geneformer_v2")
            ids = np.asarray(adata.var_names)

            def fn():
                for _ in ci.geneformer_chunks(adata, model, ids, None, 2048, 64):
                    pass
        else:
            model = dfm.models.load_checkpoint(FIX / "scgpt")
            ids = np.asarray(adata.var["symbol"])
            found = ci.in_vocab(ids, set(model.vocab) - {"<pad>", "<cls>", "<eoc>"})

            def fn():
                for _ in ci.scgpt_chunks(adata, model, ids, found, None, 2048, 0, 64):
                    pass
    elif case == "native_inputs":
        genes = list(adata.var_names[::2])
        med = np.random.default_rng(1).uniform(0.5, 3.0, len(genes))
        scale, tok, _ = md.gene_mapping(genes, med, adata.var_names, min_gene_coverage=0.1)

        def fn():
            for _ in md.iter_token_chunks(
                adata, None, scale, tok, target_sum=1e4, max_tokens=256, chunk_size=2048
            ):
                pass
    else:
        raise SystemExit(f"unknown case {case}")
    fn()  # warm-up (imports, first-touch)
    return {"cpu_s": _cpu(fn, reps), "dfm": dfm.__file__}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=False, help="src directory of the baseline")
    p.add_argument("--after", default=str(REPO / "src"), help="src directory to compare")
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes", type=int, default=5_000)
    p.add_argument("--nnz", type=int, default=500, help="expressed genes per cell (mean)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="5k cells x 5k genes, 500 nnz/cell")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--n-jobs", type=int, default=None, help="dfm.settings.n_jobs (default: all)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.before is None:
        p.error("--before is required")
    if args.quick:
        args.cells = 5_000
    sides = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    cases = [c for c in args.cases.split(",") if c]
    times: dict = {(c, s): [] for c in cases for s in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]  # alternate who goes first
        for case in cases:
            for side in order:
                spec = dict(
                    case=case,
                    cells=args.cells,
                    genes=args.genes,
                    nnz=args.nnz,
                    repeats=args.repeats,
                    n_jobs=args.n_jobs,
                )
                env = dict(os.environ, PYTHONPATH=sides[side])
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout + proc.stderr)
                    raise SystemExit(f"worker {case}/{side} failed")
                res = json.loads(proc.stdout.split("RESULT ", 1)[1])
                if not res["dfm"].startswith(sides[side]):
                    raise SystemExit(f"{side} imported {res['dfm']}, not {sides[side]}")
                times[(case, side)].append(res["cpu_s"])
                print(f"  round {r + 1} {case} {side}: {res['cpu_s']:.3f} CPU s", file=sys.stderr)
    print(
        f"### Tokenization before vs after: {args.cells:,} cells x {args.genes + 48:,} genes, "
        f"~{args.nnz} nonzeros per cell, threads: {args.n_jobs or 'all'}\n"
    )
    print(f"before: `{sides['before']}`; after: `{sides['after']}`\n")
    print(
        "| case | before CPU s (min / median) | after CPU s (min / median) "
        "| after / before (min / median) |"
    )
    print("|---|---|---|---|")
    for case in cases:
        b, a = times[(case, "before")], times[(case, "after")]
        print(
            f"| {case} | {min(b):.3f} / {statistics.median(b):.3f} | "
            f"{min(a):.3f} / {statistics.median(a):.3f} | {min(a) / min(b):.2f} / "
            f"{statistics.median(a) / statistics.median(b):.2f} |"
        )
    print(
        f"\n{args.rounds} rounds, sides alternating; each number the best of {args.repeats} "
        f"calls after a warm-up, CPU seconds of the process (all threads). Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"NumPy {np.__version__}."
    )


if __name__ == "__main__":
    main()
