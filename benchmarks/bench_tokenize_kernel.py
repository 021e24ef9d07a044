"""Rank-value kernel vs the lean per-cell loop, in one process, alternating (fairness rule).

The kernel (``ops._rank_value.rank_value_encode``, what ``dfm.pp.tokenize`` calls
per chunk) and the lean loop of ``bench_tokenize.py`` (NumPy argsort over raw
CSR slices, one thread: the peer's best form; it uses NumPy's default
unstable argsort on float64, which is faster than the stable float32 sort that
the documented rule needs) run on the same in-memory CSR matrix, alternating
over ``--rounds`` rounds (the order reversed every other round) after one
untimed warm-up each (the kernel's first call loads or compiles its numba
code). Reported: wall and CPU seconds (process time, all threads), min and
median, and the ratios loop / side for both. The kernel's tokens are checked
equal to the exact (stable, float32) loop on every cell.

On a shared machine the wall-time ratio is not meaningful; the script also
prints an *estimate* of the quiet-machine wall ratio of the 2-thread kernel,
``loop CPU / (kernel CPU / threads)``, which assumes the threads scale
perfectly. Only a quiet run's measured wall ratio is a result.

    python benchmarks/bench_tokenize_kernel.py [--cells 20000 --genes 20000 --nnz 1500]
    python benchmarks/bench_tokenize_kernel.py --baseline /other/src/diffbio_sc/ops/_rank_value.py
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tokenize import (  # noqa: E402
    N_SPECIAL,
    gene_scale,
    loop_lean,
    make_counts,
    print_alternating,
    run_alternating,
)

LOOP = "lean loop (1 thread)"


def load_baseline(path: str, tmp: Path):
    """Import another tree's ``_rank_value.py`` (with its ``_rank_value_nb.py`` and
    ``_csr.py``) as a separate package, so that it cannot pick up this tree's modules."""
    src = Path(path).resolve().parent
    pkg = tmp / "dfm_baseline_ops"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for f in src.glob("_rank_value*.py"):
        shutil.copy(f, pkg / f.name)
    shutil.copy(src / "_csr.py", pkg / "_csr.py")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("dfm_baseline_ops._rank_value")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=20_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=1_500)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default=None, help="another tree's ops/_rank_value.py")
    args = ap.parse_args()
    import numba

    from diffbio_sc.ops import _rank_value
    from diffbio_sc.ops._rank_value import rank_value_encode

    # the kernel is what is measured: no NumPy path for the process's first calls
    _rank_value.NUMPY_FIRST_NNZ = 0
    X = make_counts(args.cells, args.genes, args.nnz, args.seed)
    med = np.random.default_rng(args.seed + 1).gamma(2.0, 1.0, args.genes)
    scale, lut = gene_scale(med), np.arange(args.genes) + N_SPECIAL
    kw = dict(target_sum=1e4, max_tokens=args.max_tokens, lut=lut, pad_value=0, with_values=False)
    sides = {
        LOOP: lambda: loop_lean(X, args.cells, med, args.max_tokens),
        "kernel, 1 thread": lambda: rank_value_encode(X, scale, n_jobs=1, **kw)[0],
        "kernel, 2 threads": lambda: rank_value_encode(X, scale, n_jobs=2, **kw)[0],
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_kernel_"))
    try:
        if args.baseline:
            base = load_baseline(args.baseline, tmp)
            sides["baseline kernel, 2 threads"] = lambda: base.rank_value_encode(
                X, scale, n_jobs=2, **kw
            )[0]
        exact = loop_lean(X, args.cells, med, args.max_tokens, exact=True)
        for name, f in sides.items():  # warm-up (compilation) and check
            if name != LOOP:
                assert np.array_equal(f(), exact), f"{name}: tokens differ from the per-cell rule"
            else:
                f()
        res, (load0, load1) = run_alternating(sides, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{args.cells} x {args.genes}, {X.nnz / args.cells:.0f} nnz/cell, "
        f"max_tokens {args.max_tokens}, {args.rounds} rounds alternating (one process), "
        f"one untimed warm-up per side"
    )
    print(
        f"lean loop: NumPy {np.__version__} argsort (default kind) of float64 values per CSR row, "
        f"1 thread; kernel: numba {numba.__version__}, n_jobs as named; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load0[0]:.1f} before / {load1[0]:.1f} after"
    )
    print("tokens: every kernel side equal to the stable float32 per-cell rule on all cells")
    print()
    loop_c = print_alternating(res, LOOP)
    loop_w = np.median(np.array(res[LOOP])[:, 0])
    c2 = np.median(np.array(res["kernel, 2 threads"])[:, 1])
    print()
    print(
        f"estimate (not a measurement) of the quiet-machine wall ratio, 2 threads: "
        f"loop CPU / (kernel CPU / 2) = {loop_c / (c2 / 2):.1f}x; "
        f"measured wall ratio here: {loop_w / np.median(np.array(res['kernel, 2 threads'])[:, 0]):.1f}x"
    )


if __name__ == "__main__":
    main()
