"""Benchmark: rank-value tokenization (``dfm.pp.tokenize``) against per-cell loops.

Cases, each run in a fresh subprocess so that peak memory is its own:

* ``dfm``: ``dfm.pp.tokenize`` (recipe ``geneformer_v1``: 2,048 tokens) on
  (a) an in-memory CSR matrix and (b) a backed ``.h5ad`` (``backed='r'``),
  streamed with two chunk sizes to show that memory follows the chunk.
* ``loop (Geneformer-style)``: what Geneformer's own tokenizer does: per chunk of
  512 cells, normalise the sparse chunk (counts / cell total * target_sum /
  gene median), then for each cell take its row of the normalised matrix,
  ``np.argsort(-values)`` and keep the top k.
* ``loop (lean)``: the same per-cell work on the raw CSR arrays (indptr slices,
  no sparse row extraction): a lower bound for any per-cell loop in NumPy.

Memory: the worker loads its inputs, then resets the kernel's peak-RSS counter
(``echo 5 > /proc/self/clear_refs``) and reports ``VmHWM - VmRSS-before`` for
the first run: the peak resident memory added by the call, including the
output token array (``n_cells x max_tokens`` int32, reported separately). Where
``clear_refs`` is not available it falls back to ``ru_maxrss`` minus the
baseline (which under-reports if loading peaked higher). Time: best of
``--repeats`` runs (wall clock), plus the CPU time of that run.

Correctness: the fast path's tokens are compared with a stable per-cell loop
(ties by gene order, values compared in float32, as documented) on a sample of
cells, and with the timed loops' tokens (which use NumPy's default, unstable
argsort: they must agree up to the order of exactly tied genes).

Usage::

    python benchmarks/bench_tokenize.py                  # 20k cells x 20k genes, 1.5k nnz/cell
    python benchmarks/bench_tokenize.py --quick          # 2k cells x 5k genes, 500 nnz/cell
    python benchmarks/bench_tokenize.py --cells 5000 --chunk-sizes 2048,512
    python benchmarks/bench_tokenize.py --medians-memory # dfm.pp.gene_medians peak memory
    python benchmarks/bench_tokenize.py --alternate --rounds 5  # whole call vs lean loop

``--alternate`` times the whole ``dfm.pp.tokenize`` call (1 and 2 threads)
against the lean loop in one process, sides alternating over ``--rounds``
rounds after a warm-up each (the fairness rule), wall and CPU min / median;
about 40 s on a quiet 2-core machine.

``--medians-memory`` measures the peak memory that ``dfm.pp.gene_medians``
allocates (tracemalloc, in bytes per nonzero) and its time, for CSR, dense and
backed input, against what a user would otherwise write: scanpy's
``normalize_total`` on a copy, then per-gene ``np.median`` over the nonzeros of
a CSC matrix. Medians are checked equal.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 10_000.0
N_SPECIAL = 4  # default vocabulary: <pad> <mask> <cls> <eos>, then var_names
GENEFORMER_CHUNK = 512  # Geneformer's tokenizer processes cells in chunks of 512


# --------------------------------------------------------------------------- data


def make_counts(n_cells: int, n_genes: int, nnz_per_cell: int, seed: int) -> sp.csr_matrix:
    """Random counts with about ``nnz_per_cell`` expressed genes per cell, built directly as CSR.

    Gene ``j`` is expressed in a cell with probability ``p_j`` (log-normal gene
    weights scaled so that ``sum(p) = nnz_per_cell``); expressed counts are
    geometric with a higher mean for highly expressed genes.
    """
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 1.0, n_genes)
    p = w / w.sum() * nnz_per_cell
    for _ in range(30):  # proportional to w, capped at 1, summing to about nnz_per_cell
        p = np.minimum(1.0, p * nnz_per_cell / p.sum())
    thresh = np.minimum(p * 2.0**32, 2.0**32 - 1).astype(np.uint32)
    cols, counts = [], []
    block = max(1, 2**24 // n_genes)
    for s in range(0, n_cells, block):
        e = min(s + block, n_cells)
        hit = rng.integers(0, 2**32, size=(e - s, n_genes), dtype=np.uint32) < thresh
        r, c = np.nonzero(hit)
        cols.append(c.astype(np.int32))
        counts.append(np.bincount(r, minlength=e - s))
    indices = np.concatenate(cols)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    p_geom = np.clip(0.6 / (1.0 + w / w.mean()), 0.05, 0.9)
    data = rng.geometric(p_geom[indices]).astype(np.int32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    X.has_sorted_indices = True
    return X


def build_dataset(args, workdir: Path) -> tuple[Path, dict]:
    import anndata as ad
    import pandas as pd

    import diffbio_sc as dfm

    info = {}
    t = time.perf_counter()
    X = make_counts(args.cells, args.genes, args.nnz, args.seed)
    info["generate_s"] = time.perf_counter() - t
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"cell_{i}" for i in range(args.cells)]),
        var=pd.DataFrame(index=[f"gene_{j}" for j in range(args.genes)]),
    )
    t = time.perf_counter()
    dfm.pp.gene_medians(adata)
    info["gene_medians_s"] = time.perf_counter() - t
    path = workdir / "counts.h5ad"
    t = time.perf_counter()
    adata.write_h5ad(path)
    info["write_s"] = time.perf_counter() - t
    info["nnz_per_cell"] = X.nnz / args.cells
    info["file_mib"] = path.stat().st_size / 2**20
    return path, info


# --------------------------------------------------------------------------- loops


def gene_scale(medians: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(medians) & (medians > 0), 1.0 / medians, 0.0)


def row_chunks(X, n: int, size: int):
    """Chunks of rows as CSR, from an in-memory matrix or a backed dataset."""
    for start in range(0, n, size):
        stop = min(start + size, n)
        yield start, stop, sp.csr_matrix(X[start:stop])


def loop_geneformer(X, n: int, medians: np.ndarray, max_tokens: int) -> np.ndarray:
    """Geneformer's way: normalise each chunk as a sparse matrix, then argsort each cell's row."""
    scale = gene_scale(medians)
    token_of = np.arange(medians.size) + N_SPECIAL
    tokens = np.zeros((n, max_tokens), dtype=np.int32)
    for start, _, chunk in row_chunks(X, n, GENEFORMER_CHUNK):
        n_counts = np.asarray(chunk.sum(axis=1)).ravel()
        norm = sp.diags(TARGET_SUM / n_counts) @ chunk @ sp.diags(scale)
        norm = sp.csr_matrix(norm)
        norm.eliminate_zeros()
        for i in range(norm.shape[0]):
            row = norm[i]
            order = np.argsort(-row.data)[:max_tokens]
            tokens[start + i, : order.size] = token_of[row.indices[order]]
    return tokens


def _lean_rows(chunk, start, tokens, scale, token_of, max_tokens, exact: bool):
    indptr, indices, data = chunk.indptr, chunk.indices, chunk.data
    for i in range(chunk.shape[0]):
        a, b = indptr[i], indptr[i + 1]
        d = data[a:b]
        g = indices[a:b]
        v = (scale[g] * d) * (TARGET_SUM / d.sum())
        keep = v > 0
        if not keep.all():
            g, v = g[keep], v[keep]
        if exact:  # the documented rule: float32 values, ties by gene order
            order = np.argsort(-v.astype(np.float32), kind="stable")[:max_tokens]
        else:
            order = np.argsort(-v)[:max_tokens]
        tokens[start + i, : order.size] = token_of[g[order]]


def loop_lean(
    X, n: int, medians: np.ndarray, max_tokens: int, *, exact: bool = False
) -> np.ndarray:
    """Per cell on the CSR arrays: normalise, argsort the nonzeros, keep the top k."""
    scale = gene_scale(medians)
    token_of = np.arange(medians.size) + N_SPECIAL
    tokens = np.zeros((n, max_tokens), dtype=np.int32)
    if sp.issparse(X) and X.format == "csr":
        _lean_rows(X, 0, tokens, scale, token_of, max_tokens, exact)
    else:
        for start, _, chunk in row_chunks(X, n, GENEFORMER_CHUNK):
            _lean_rows(chunk, start, tokens, scale, token_of, max_tokens, exact)
    return tokens


# --------------------------------------------------------------------------- worker


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak resident memory added by a block: VmHWM after resetting it, minus VmRSS before."""

    def __enter__(self):
        gc.collect()
        try:
            self.base_kib = _status_kib("VmRSS")
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM-reset"
        except OSError:
            self.base_kib = _status_kib("VmRSS") if os.path.exists("/proc/self/status") else 0
            self.method = "ru_maxrss"
        return self

    def __exit__(self, *exc):
        if self.method == "VmHWM-reset":
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.added_mib = max(0, peak - self.base_kib) / 1024
        return False


def run_worker(spec: dict) -> dict:
    import anndata as ad

    import diffbio_sc as dfm

    dfm.settings.progress_bar = False
    if spec.get("n_jobs"):
        dfm.settings.n_jobs = spec["n_jobs"]
    backed = spec["input"] == "backed"
    adata = ad.read_h5ad(spec["path"], backed="r" if backed else None)
    n = adata.n_obs
    medians = adata.var["dfm_median"].to_numpy()
    max_tokens = spec["max_tokens"]
    X = adata.X  # a backed dataset, or the in-memory CSR matrix

    if spec["method"] == "dfm":

        def call():
            dfm.pp.tokenize(adata, max_tokens=max_tokens, chunk_size=spec["chunk_size"])
            return adata.obsm["dfm_tokens"]

    elif spec["method"] == "loop_geneformer":

        def call():
            return loop_geneformer(X, n, medians, max_tokens)

    else:

        def call():
            return loop_lean(X, n, medians, max_tokens)

    with PeakMemory() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = call()
        walls = [time.perf_counter() - t0]
        cpus = [time.process_time() - c0]
    np.save(spec["tokens_out"], tokens)
    del tokens
    for _ in range(spec["repeats"] - 1):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    best = int(np.argmin(walls))
    # A separate run under tracemalloc (NumPy registers its buffers there): the
    # peak of memory allocated during the call, without allocator slack.
    gc.collect()
    tracemalloc.start()
    call()
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if backed:
        adata.file.close()
    return {
        "traced_peak_mib": traced_peak,
        "wall_s": walls[best],
        "cpu_s": cpus[best],
        "walls": walls,
        "peak_added_mib": mem.added_mib,
        "mem_method": mem.method,
        "output_mib": n * max_tokens * 4 / 2**20,
    }


# --------------------------------------------------------------------------- checks


def check_tokens(
    path: Path, token_files: dict, max_tokens: int, n_check: int, seed: int
) -> list[str]:
    import anndata as ad

    adata = ad.read_h5ad(path)
    X = adata.X.tocsr()
    medians = adata.var["dfm_median"].to_numpy()
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(adata.n_obs, min(n_check, adata.n_obs), replace=False))
    sub = X[sample]
    exact = loop_lean(sub, sub.shape[0], medians, max_tokens, exact=True)
    lines = []
    dfm_keys = [k for k in token_files if k.startswith("dfm")]
    reference = np.load(token_files[dfm_keys[0]])
    for key in dfm_keys:
        tok = np.load(token_files[key])
        same = np.array_equal(tok, reference)
        lines.append(
            f"- `{key}` tokens identical to `{dfm_keys[0]}` on all {adata.n_obs:,} cells: {same}"
        )
        if not same:
            raise SystemExit(f"{key} differs from {dfm_keys[0]}")
    n_same = int((reference[sample] == exact).all(axis=1).sum())
    lines.append(
        f"- dfm tokens identical to the stable per-cell loop (float32 values, ties by gene order) "
        f"on {n_same:,} of {sample.size:,} sampled cells"
    )
    if n_same != sample.size:
        raise SystemExit("fast path and stable loop disagree")
    # timed loops use np.argsort(-v) (unstable): equal up to the order of exactly tied genes
    scale = gene_scale(medians)
    totals = np.asarray(sub.sum(axis=1)).ravel()
    dense_vals = sub.multiply(scale[None, :]).multiply((TARGET_SUM / totals)[:, None]).tocsr()
    for key in [k for k in token_files if k.startswith("loop")]:
        tok = np.load(token_files[key])[sample]
        ok = 0
        for i in range(sample.size):
            row = dense_vals[i]
            val_of = dict(zip(row.indices + N_SPECIAL, row.data.astype(np.float32), strict=True))
            a, b = tok[i], reference[sample[i]]
            if np.array_equal(a, b):
                ok += 1
                continue
            va = np.array([val_of.get(t, 0.0) for t in a])
            vb = np.array([val_of.get(t, 0.0) for t in b])
            same_set = sorted(a.tolist()) == sorted(b.tolist())
            ok += bool(same_set and np.array_equal(va, vb))
        lines.append(
            f"- `{key}` agrees with dfm on {ok:,} of {sample.size:,} sampled cells "
            "(identical, or differing only in the order of genes with equal values)"
        )
        if ok != sample.size:
            raise SystemExit(f"{key} disagrees with dfm beyond tie order")
    return lines


# --------------------------------------------------------------------------- medians memory


def _traced(fn):
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, peak, wall


def medians_memory(args) -> None:
    import anndata as ad
    import scanpy as sc

    import diffbio_sc as dfm

    X = make_counts(args.cells, args.genes, args.nnz, args.seed)
    nnz = X.nnz

    def scanpy_csc(adata):
        norm = sc.pp.normalize_total(adata, target_sum=TARGET_SUM, inplace=False)["X"]
        csc = sp.csc_matrix(norm)
        med = np.full(adata.n_vars, np.nan)
        for j in range(adata.n_vars):
            col = csc.data[csc.indptr[j] : csc.indptr[j + 1]]
            col = col[col > 0]
            if col.size:
                med[j] = np.median(col)
        return med

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_medians_") as tmp:
        path = Path(tmp) / "counts.h5ad"
        ad.AnnData(X).write_h5ad(path)
        cases = [
            ("dfm.pp.gene_medians", "CSR", lambda: ad.AnnData(X)),
            ("dfm.pp.gene_medians", "backed CSR", lambda: ad.read_h5ad(path, backed="r")),
            ("scanpy normalize_total + CSC np.median", "CSR", lambda: ad.AnnData(X)),
        ]
        if args.cells * args.genes * X.dtype.itemsize <= 2**29:  # dense only up to 512 MiB
            cases.insert(1, ("dfm.pp.gene_medians", "dense", lambda: ad.AnnData(X.toarray())))
        ref = None
        for method, kind, make in cases:
            adata = make()
            if method.startswith("dfm"):
                dfm.pp.gene_medians(make(), chunk_size=args.chunk_sizes_list[0])  # warm-up
                _, peak, wall = _traced(
                    lambda a=adata: dfm.pp.gene_medians(a, chunk_size=args.chunk_sizes_list[0])
                )
                med = np.asarray(adata.var["dfm_median"], dtype=np.float64)
            else:
                med, peak, wall = _traced(lambda a=adata: scanpy_csc(a))
            if getattr(adata, "isbacked", False):
                adata.file.close()
            if ref is None:
                ref = med
            # float32 normalised values in both: medians agree to float32 rounding
            np.testing.assert_allclose(med, ref, rtol=1e-6, equal_nan=True)
            rows.append((method, kind, peak / nnz, peak / 2**20, wall))
    print(
        f"gene medians, {args.cells:,} cells x {args.genes:,} genes, {nnz:,} nonzeros, "
        f"chunk_size={args.chunk_sizes_list[0]}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print("| method | input | peak bytes / nonzero | peak MiB | time (s) |")
    print("|---|---|---|---|---|")
    for method, kind, per, mib, wall in rows:
        print(f"| {method} | {kind} | {per:.1f} | {mib:.0f} | {wall:.2f} |")


# --------------------------------------------------------------------------- alternate


def run_alternating(sides: dict, rounds: int) -> tuple[dict, tuple]:
    """Time each side ``rounds`` times, the order reversed every other round.

    Returns ``{side: [(wall s, CPU s), ...]}`` and the load averages before and after.
    """
    load0 = os.getloadavg()
    res: dict[str, list] = {s: [] for s in sides}
    for rnd in range(rounds):
        for name in list(sides) if rnd % 2 == 0 else list(sides)[::-1]:
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            sides[name]()
            res[name].append((time.perf_counter() - t, time.process_time() - c))
    return res, (load0, os.getloadavg())


def print_alternating(res: dict, loop: str) -> float:
    """Print the min / median table with ratios to side ``loop``; return the loop's median CPU."""
    print(
        "| side | wall s min / median | CPU s min / median "
        "| loop / side, wall (median) | loop / side, CPU (median) |"
    )
    print("|---|---|---|---|---|")
    loop_w, loop_c = (np.median(x) for x in np.array(res[loop]).T)
    for name, r in res.items():
        w, c = np.array(r).T
        print(
            f"| {name} | {w.min():.3f} / {np.median(w):.3f} | {c.min():.3f} / {np.median(c):.3f} "
            f"| {loop_w / np.median(w):.2f}x | {loop_c / np.median(c):.2f}x |"
        )
    return float(loop_c)


def alternate(args) -> None:
    """The whole ``dfm.pp.tokenize`` call vs the lean loop, one process, sides alternating.

    Fairness rule: the loop is the peer's best form (raw CSR slices, NumPy's
    default argsort on float64, one thread); each side gets one untimed warm-up
    (numba loads or compiles its kernel); the order of the sides is reversed
    every other round; wall and CPU (process time, all threads) min and median.
    ``pp.tokenize`` is the user's call on an in-memory AnnData (fixed medians in
    ``.var``, default vocabulary): gene-id normalisation, every input check, the
    kernel and the ``.obsm``/``.obs``/``.uns`` writes are all timed.
    """
    import anndata as ad
    import numba
    import pandas as pd

    import diffbio_sc as dfm

    dfm.settings.progress_bar = False
    X = make_counts(args.cells, args.genes, args.nnz, args.seed)
    med = np.random.default_rng(args.seed + 1).gamma(2.0, 1.0, args.genes)
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"cell_{i}" for i in range(args.cells)]),
        var=pd.DataFrame(index=[f"gene_{j}" for j in range(args.genes)]),
    )
    adata.var["dfm_median"] = med
    chunk = args.chunk_sizes_list[0]

    def tokenize(n_jobs):
        def call():
            dfm.settings.n_jobs = n_jobs
            dfm.pp.tokenize(adata, max_tokens=args.max_tokens, chunk_size=chunk)
            return adata.obsm["dfm_tokens"]

        return call

    loop = "lean loop (1 thread)"
    sides = {
        loop: lambda: loop_lean(X, args.cells, med, args.max_tokens),
        "`dfm.pp.tokenize`, 2 threads": tokenize(2),
        "`dfm.pp.tokenize`, 1 thread": tokenize(1),
    }
    exact = loop_lean(X, args.cells, med, args.max_tokens, exact=True)
    for name, f in sides.items():  # warm-up and check
        tok = f()
        if name != loop:
            assert np.array_equal(tok, exact), f"{name}: tokens differ from the per-cell rule"
    del tok
    res, (load0, load1) = run_alternating(sides, args.rounds)
    print(
        f"{args.cells:,} cells x {args.genes:,} genes, {X.nnz / args.cells:,.0f} nonzeros per "
        f"cell ({X.dtype}), max_tokens {args.max_tokens}; {args.rounds} rounds alternating in "
        "one process (order reversed every other round), one untimed warm-up per side"
    )
    print(
        f"lean loop: NumPy {np.__version__} argsort (default kind) of float64 values per CSR "
        f"row, 1 thread; dfm.pp.tokenize: in-memory CSR AnnData, fixed medians in .var, "
        f"chunk_size {chunk}, dfm.settings.n_jobs as named, numba {numba.__version__}, "
        f"diffbio_sc {dfm.__version__}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load0[0]:.1f} before / {load1[0]:.1f} after"
    )
    print("tokens: every pp.tokenize side equal to the stable float32 per-cell rule on all cells")
    print()
    loop_c = print_alternating(res, loop)
    c2 = np.median(np.array(res["`dfm.pp.tokenize`, 2 threads"])[:, 1])
    print()
    print(
        "estimate (not a measurement) of the quiet-machine wall ratio, 2 threads: "
        f"loop CPU / (pp.tokenize CPU / 2) = {loop_c / (c2 / 2):.1f}x"
    )


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=1_500, help="expressed genes per cell (mean)")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument(
        "--chunk-sizes",
        default="4096,1024,256",
        help="dfm chunk sizes for the backed runs (first: in memory too)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-cells", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", default=None, help="where to write the .h5ad (default: a temp dir)"
    )
    parser.add_argument("--quick", action="store_true", help="2k cells x 5k genes x 500 nnz/cell")
    parser.add_argument(
        "--medians-memory", action="store_true", help="peak memory of dfm.pp.gene_medians"
    )
    parser.add_argument(
        "--alternate",
        action="store_true",
        help="the whole pp.tokenize call vs the lean loop, alternating in one process",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --alternate")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.quick:
        args.cells, args.genes, args.nnz = 2_000, 5_000, 500
    chunk_sizes = [int(c) for c in args.chunk_sizes.split(",")]
    args.chunk_sizes_list = chunk_sizes
    if args.medians_memory:
        medians_memory(args)
        return
    if args.alternate:
        alternate(args)
        return
    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_tokenize_") if own_dir else args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        path, info = build_dataset(args, workdir)
        cases = [
            ("dfm", "memory", chunk_sizes[0], None),
            ("dfm", "memory", chunk_sizes[0], 1),
            ("loop_geneformer", "memory", None, None),
            ("loop_lean", "memory", None, None),
            *[("dfm", "backed", c, None) for c in chunk_sizes],
            ("loop_geneformer", "backed", None, None),
            ("loop_lean", "backed", None, None),
        ]
        results, token_files = [], {}
        for method, inp, chunk, n_jobs in cases:
            key = (
                f"{method}-{inp}"
                + (f"-c{chunk}" if method == "dfm" else "")
                + ("-1thread" if n_jobs else "")
            )
            spec = {
                "method": method,
                "input": inp,
                "chunk_size": chunk,
                "n_jobs": n_jobs,
                "path": str(path),
                "max_tokens": args.max_tokens,
                "repeats": args.repeats,
                "tokens_out": str(workdir / f"{key}.npy"),
            }
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"worker {key} failed")
            res = json.loads(proc.stdout.split("RESULT ", 1)[1])
            res.update(key=key, method=method, input=inp, chunk=chunk, n_jobs=n_jobs)
            results.append(res)
            token_files[key] = spec["tokens_out"]
            print(
                f"  {key}: {res['wall_s']:.2f} s, +{res['peak_added_mib']:.0f} MiB", file=sys.stderr
            )
        checks = check_tokens(path, token_files, args.max_tokens, args.check_cells, args.seed)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(args, info, results, checks, chunk_sizes)


def print_report(args, info, results, checks, chunk_sizes) -> None:
    import diffbio_sc as dfm
    from diffbio_sc.ops._rank_value import n_threads

    loops = {
        (r["method"], r["input"]): r["wall_s"] for r in results if r["method"].startswith("loop")
    }
    label = {
        "dfm": "`dfm.pp.tokenize`",
        "loop_geneformer": "per-cell loop, Geneformer-style",
        "loop_lean": "per-cell loop, lean (CSR slices)",
    }
    print(
        f"### Tokenization: {args.cells:,} cells x {args.genes:,} genes, "
        f"{info['nnz_per_cell']:,.0f} nonzeros per cell, max_tokens={args.max_tokens}\n"
    )
    print(
        "| case | input | chunk | threads | wall s (best of "
        f"{args.repeats}) | cells/s | CPU s | peak RSS added, MiB | of which output | "
        "tracemalloc peak, MiB | x vs Geneformer-style loop | x vs lean loop |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        threads = 1 if (r["method"] != "dfm" or r["n_jobs"] == 1) else n_threads()
        gf = loops.get(("loop_geneformer", r["input"]))
        lean = loops.get(("loop_lean", r["input"]))
        if r["method"] == "dfm":
            chunk = r["chunk"]
        elif r["method"] == "loop_geneformer" or r["input"] == "backed":
            chunk = GENEFORMER_CHUNK
        else:
            chunk = "-"
        print(
            f"| {label[r['method']]} | {r['input']} | {chunk} "
            f"| {threads} | {r['wall_s']:.2f} | {args.cells / r['wall_s']:,.0f} | {r['cpu_s']:.2f} "
            f"| {r['peak_added_mib']:.0f} | {r['output_mib']:.0f} | {r['traced_peak_mib']:.0f} "
            f"| {gf / r['wall_s']:.1f} | {lean / r['wall_s']:.1f} |"
        )
    mem_methods = sorted({r["mem_method"] for r in results})
    print()
    print(
        f"Data: generated in {info['generate_s']:.1f} s; `dfm.pp.gene_medians` (once, in memory, "
        f"not in the table) took {info['gene_medians_s']:.1f} s; the `.h5ad` is "
        f"{info['file_mib']:.0f} MiB (read from the page cache: it was just written)."
    )
    print(
        f"Memory: 'peak RSS added' is {', '.join(mem_methods)}: the peak resident memory added by "
        "the first call over the memory held after loading the inputs (allocator slack "
        "included); 'tracemalloc peak' is the peak of memory allocated during a separate call "
        "(NumPy buffers included). Both include the output token array."
    )
    backed = [r for r in results if r["method"] == "dfm" and r["input"] == "backed"]
    if len(backed) > 1:
        parts = ", ".join(
            f"chunk {r['chunk']}: {r['peak_added_mib'] - r['output_mib']:.0f} MiB RSS / "
            f"{r['traced_peak_mib'] - r['output_mib']:.0f} MiB traced"
            for r in backed
        )
        print(f"Working memory of the backed dfm runs beyond the output: {parts}.")
    print("\nChecks:")
    for line in checks:
        print(line)
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, diffbio_sc {dfm.__version__}."
    )


if __name__ == "__main__":
    main()
