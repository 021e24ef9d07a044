"""Rank-value kernel vs the lean per-cell loop, in one process, alternating (fairness rule).

The kernel (``ops._rank_value.rank_value_encode``, what ``dfm.pp.tokenize`` calls
per chunk) and the lean loop of ``bench_tokenize.py`` (NumPy argsort over raw
CSR slices, one thread: the peer's best form) run on the same in-memory CSR
matrix, alternating over ``--rounds`` rounds after one untimed warm-up each
(the kernel's first call compiles its numba passes). Reported: wall and CPU
seconds, min and median, and the ratios loop / kernel. The tokens are checked
equal to the exact (stable, float32) loop.

    python benchmarks/bench_tokenize_kernel.py [--cells 20000 --genes 20000 --nnz 1500]
    python benchmarks/bench_tokenize_kernel.py --baseline /path/to/other/_rank_value.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenize import N_SPECIAL, gene_scale, loop_lean, make_counts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=20_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=1_500)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default=None, help="another _rank_value.py to time beside")
    args = ap.parse_args()
    from diffbio_sc.ops._rank_value import rank_value_encode

    X = make_counts(args.cells, args.genes, args.nnz, args.seed)
    med = np.random.default_rng(args.seed + 1).gamma(2.0, 1.0, args.genes)
    scale, lut = gene_scale(med), np.arange(args.genes) + N_SPECIAL
    kw = dict(target_sum=1e4, max_tokens=args.max_tokens, lut=lut, pad_value=0, with_values=False)
    sides = {
        "lean loop (1 thread)": lambda: loop_lean(X, args.cells, med, args.max_tokens),
        "kernel, 1 thread": lambda: rank_value_encode(X, scale, n_jobs=1, **kw)[0],
        "kernel, 2 threads": lambda: rank_value_encode(X, scale, n_jobs=2, **kw)[0],
    }
    if args.baseline:
        spec = importlib.util.spec_from_file_location(
            "diffbio_sc.ops._rank_value_base", args.baseline
        )
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)
        sides["baseline kernel, 2 threads"] = lambda: base.rank_value_encode(
            X, scale, n_jobs=2, **kw
        )[0]
    exact = loop_lean(X, args.cells, med, args.max_tokens, exact=True)
    for name, f in sides.items():  # warm-up (compilation) and check
        assert np.array_equal(f(), exact) or name.startswith("lean"), name
    res: dict[str, list] = {s: [] for s in sides}
    for rnd in range(args.rounds):
        for name in list(sides) if rnd % 2 == 0 else list(sides)[::-1]:
            t, c = time.perf_counter(), time.process_time()
            sides[name]()
            res[name].append((time.perf_counter() - t, time.process_time() - c))
    print(
        f"{args.cells} x {args.genes}, {X.nnz / args.cells:.0f} nnz/cell, max_tokens {args.max_tokens}"
    )
    print("| side | wall s min / median | CPU s min / median | loop / side, wall (median) |")
    print("|---|---|---|---|")
    loop_wall = np.median([w for w, _ in res["lean loop (1 thread)"]])
    for name, r in res.items():
        w, c = np.array(r).T
        print(
            f"| {name} | {w.min():.3f} / {np.median(w):.3f} | {c.min():.3f} / {np.median(c):.3f} "
            f"| {loop_wall / np.median(w):.2f}x |"
        )


if __name__ == "__main__":
    main()
