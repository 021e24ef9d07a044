"""Benchmark: dfm.ops.soft_rank (permutahedron projection, PAV) against NeuralSort.

For each case (method x n genes) a fresh Python subprocess builds a batch of
cells, compiles the function once (warm-up, not timed), then times the forward
pass and the forward+backward pass (``jax.grad`` of a weighted sum of the soft
ranks), reporting the median over repeats in ms per cell.

Peak memory: each child reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
the peak resident set size of its whole process (interpreter, JAX, compilation,
inputs, forward and backward). JAX on CPU allocates its buffers in host memory
and the sorting kernel runs on the host, so RSS sees everything (tracemalloc
would not see XLA's buffers). Fixed costs (the interpreter, JAX, compiled code)
are the same whatever the batch, so each case runs twice, with a small and a
large batch, and the table reports the marginal peak memory per cell,
``(peak_large - peak_small) / (large - small)``, next to the raw peaks.

Comparison with NeuralSort (fairness rule, printed first): at n = 2,000, NeuralSort
(also ``jax.jit``-compiled, float32, the same soft ranks and gradient) gets the
batch size from a sweep (1 to 16 cells per call), then the two sides alternate
in fresh processes over ``--rounds`` rounds; wall and CPU time (process time of
all XLA threads) per cell, min and median over the rounds.

NeuralSort materialises an n x n matrix per cell; a case whose estimated
footprint exceeds half the machine's available memory is not run and is
reported with that estimate.

Usage::

    python benchmarks/bench_soft_rank.py            # full table (markdown)
    python benchmarks/bench_soft_rank.py --compare-only --rounds 3  # vs NeuralSort only
    python benchmarks/bench_soft_rank.py --quick    # n = 2,000 only
    python benchmarks/bench_soft_rank.py --pp-repeat 10   # repeated dfm.pp.soft_rank calls

``--pp-repeat N`` calls ``dfm.pp.soft_rank`` N times on the same 500 cells x
2,000 genes (100 expressed per cell) in one process and reports the first call
and the min and median of the others: a kernel that compiles once per shape
makes every call after the first cheaper.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

SIZES = (2_000, 20_000)
BATCH = 64
SMALL_BATCH = 16
NEURAL_BATCH = 8  # NeuralSort: 8 cells per call (64 x 2,000^2 x several buffers would not fit)
NEURAL_SMALL_BATCH = 2
TEMPERATURE = 0.1
PP_CASE = (2_000, 20_000, 2_000)  # cells, genes, expressed genes per cell


def _available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


def _neural_estimate(n: int, batch: int) -> int:
    # forward+backward keeps about five float32 n x n buffers per cell alive
    # (|x_i - x_j|, logits, softmax, and their cotangents)
    return 5 * 4 * n * n * batch


def run_case(method: str, n: int, batch: int, repeats: int, masked: bool) -> dict:
    """Run one case in this process and return its measurements."""
    import resource

    import jax
    import jax.numpy as jnp
    import numpy as np

    from diffbio_sc.ops import neural_sort, soft_rank

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((batch, n)).astype(np.float32))
    mask = None
    if masked:  # sparse cells: 10% of genes expressed
        mask = jnp.asarray(rng.random((batch, n)) < 0.1)

    if method == "soft_rank":

        def ranks(v):
            return soft_rank(v, temperature=TEMPERATURE, mask=mask)
    else:
        positions = jnp.arange(1, n + 1, dtype=jnp.float32)

        def ranks(v):
            p = neural_sort(v, temperature=TEMPERATURE)
            return jnp.einsum("...ij,i->...j", p, positions)

    fwd = jax.jit(ranks)
    fwd_bwd = jax.jit(jax.grad(lambda v: jnp.sum(w * ranks(v))))

    out = {}
    for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        fn(x).block_until_ready()  # compile + warm up
        times, cpus = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(x).block_until_ready()
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        out[f"{name}_ms_per_cell"] = 1e3 * float(np.median(times)) / batch
        out[f"{name}_cpu_ms_per_cell"] = 1e3 * float(np.median(cpus)) / batch
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["batch"] = batch
    return out


def run_pp(n_cells: int, n_genes: int, nnz: int) -> dict:
    """Time dfm.pp.soft_rank on synthetic sparse counts (in this process)."""
    import resource

    import diffbio_sc as dfm

    adata = dfm.datasets.synthetic_counts(n_cells, n_genes, nnz_per_cell=nnz, seed=0)
    dfm.pp.soft_rank(adata[:64].copy(), temperature=TEMPERATURE)  # warm up the kernel
    t0 = time.perf_counter()
    dfm.pp.soft_rank(adata, temperature=TEMPERATURE)
    dt = time.perf_counter() - t0
    return {
        "ms_per_cell": 1e3 * dt / n_cells,
        "seconds": dt,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_pp_repeat(calls: int, n_cells: int = 500, n_genes: int = 2000, nnz: int = 100) -> dict:
    """Wall time of ``calls`` calls of ``dfm.pp.soft_rank`` on the same AnnData."""
    import diffbio_sc as dfm

    adata = dfm.datasets.synthetic_counts(n_cells, n_genes, nnz_per_cell=nnz, seed=0)
    walls = []
    for _ in range(calls):
        t0 = time.perf_counter()
        dfm.pp.soft_rank(adata, temperature=TEMPERATURE)
        walls.append(time.perf_counter() - t0)
    return {"first_s": walls[0], "walls": walls[1:]}


def _child(method: str, n: int, batch: int, repeats: int, masked: bool) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        method,
        str(n),
        str(batch),
        str(repeats),
        str(int(masked)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"failed (exit {proc.returncode}): {tail[0][:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(n: int, rounds: int, sweep: tuple[int, ...]) -> None:
    """soft_rank vs NeuralSort under the fairness rule, printed as a markdown table.

    NeuralSort's batch size (cells per jit'd call) is swept first, one fresh
    process per size, and its fastest fwd+bwd per cell is used. Then the two
    sides alternate (order reversed every other round), each round in fresh
    processes, over ``rounds`` rounds; each process times the median of its
    repeats after one untimed compile + warm-up call.
    """
    import jax
    import numpy as np

    best, sweep_rows = None, []
    for b in sweep:
        if _neural_estimate(n, b) > _available_bytes() // 2:
            sweep_rows.append(f"{b}: not run (memory)")
            continue
        r = _child("neural_sort", n, b, 2, False)
        if "error" in r:
            sweep_rows.append(f"{b}: {r['error']}")
            continue
        sweep_rows.append(f"{b}: {r['fwd_bwd_ms_per_cell']:.1f}")
        if best is None or r["fwd_bwd_ms_per_cell"] < best[1]:
            best = (b, r["fwd_bwd_ms_per_cell"])
    if best is None:
        print("NeuralSort could not run at any batch size")
        return
    sides = {
        "soft_rank": ("soft_rank", BATCH, 20),
        "neural_sort": ("neural_sort", best[0], 3),
    }
    res: dict[str, list] = {k: [] for k in sides}
    load0 = os.getloadavg()[0]
    for rnd in range(rounds):
        for name in list(sides) if rnd % 2 == 0 else list(sides)[::-1]:
            method, batch, repeats = sides[name]
            r = _child(method, n, batch, repeats, False)
            if "error" in r:
                raise SystemExit(f"{name}: {r['error']}")
            res[name].append(r)
    load1 = os.getloadavg()[0]
    print(
        f"soft_rank vs NeuralSort, n = {n:,} genes, float32, temperature {TEMPERATURE}; "
        f"both jax.jit-compiled (fwd: soft ranks; fwd+bwd: jax.grad of a weighted sum of them), "
        f"vmap over cells, XLA's default CPU threads on {os.cpu_count()} cores, jax {jax.__version__}; "
        f"{rounds} rounds alternating, each side in a fresh process per round, one untimed "
        f"warm-up call per process; load average {load0:.1f} before / {load1:.1f} after.\n"
        f"NeuralSort batch sweep (cells per call: fwd+bwd ms per cell, 2 repeats): "
        f"{'; '.join(sweep_rows)} -> {best[0]}. soft_rank: {BATCH} cells per call.\n"
    )
    print(
        "| side | cells per call | fwd+bwd wall ms/cell min / median "
        "| fwd+bwd CPU ms/cell min / median | fwd wall ms/cell min / median |"
    )
    print("|---|---:|---|---|---|")
    med = {}
    for name, rs in res.items():
        w = np.array([r["fwd_bwd_ms_per_cell"] for r in rs])
        c = np.array([r["fwd_bwd_cpu_ms_per_cell"] for r in rs])
        f = np.array([r["fwd_ms_per_cell"] for r in rs])
        med[name] = (np.median(w), np.median(c), w.min(), c.min())
        print(
            f"| {name} | {rs[0]['batch']} | {w.min():.3f} / {np.median(w):.3f} "
            f"| {c.min():.3f} / {np.median(c):.3f} | {f.min():.3f} / {np.median(f):.3f} |"
        )
    s, ns = med["soft_rank"], med["neural_sort"]
    print(
        f"\nNeuralSort / soft_rank, fwd+bwd per cell: wall {ns[2] / s[2]:,.0f}x (min) / "
        f"{ns[0] / s[0]:,.0f}x (median); CPU {ns[3] / s[3]:,.0f}x (min) / {ns[1] / s[1]:,.0f}x "
        f"(median)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2,000 only")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of the NeuralSort comparison"
    )
    parser.add_argument(
        "--compare-only", action="store_true", help="only the NeuralSort comparison (n = 2,000)"
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pp-repeat", type=int, default=0, help="time this many dfm.pp.soft_rank calls only"
    )
    args = parser.parse_args()
    if args.pp_repeat:
        import numpy as np

        r = run_pp_repeat(max(args.pp_repeat, 2))
        w = np.asarray(r["walls"]) * 1e3
        print("| calls | first call ms | later calls: min ms | median ms |")
        print("|---:|---:|---:|---:|")
        print(f"| {len(w) + 1} | {1e3 * r['first_s']:.0f} | {w.min():.0f} | {np.median(w):.0f} |")
        return
    if args.child and args.child[0] == "pp":
        print(json.dumps(run_pp(*(int(a) for a in args.child[1:4]))))
        return
    if args.child:
        method, n, batch, repeats, masked = args.child
        res = run_case(method, int(n), int(batch), int(repeats), bool(int(masked)))
        print(json.dumps(res))
        return

    compare(SIZES[0], args.rounds, (1, 2, 4, 8, 16))
    if args.compare_only:
        return
    sizes = SIZES[:1] if args.quick else SIZES
    budget = _available_bytes() // 2
    rows = []

    def measured(method, n, masked, large, small, repeats):
        res = _child(method, n, large, repeats, masked)
        if "error" in res:
            return res
        low = _child(method, n, small, max(1, repeats // 3), masked)
        if "error" in low:
            return low
        res["peak_rss_small_mb"] = low["peak_rss_mb"]
        res["small_batch"] = small
        res["mb_per_cell"] = (res["peak_rss_mb"] - low["peak_rss_mb"]) / (large - small)
        return res

    for n in sizes:
        rows.append(
            ("soft_rank", n, False, measured("soft_rank", n, False, BATCH, SMALL_BATCH, 20))
        )
        rows.append(("soft_rank", n, True, measured("soft_rank", n, True, BATCH, SMALL_BATCH, 20)))
        need = _neural_estimate(n, NEURAL_BATCH)
        if need > budget:
            per_matrix = 4 * n * n / 2**30
            rows.append(
                (
                    "neural_sort",
                    n,
                    False,
                    {
                        "error": (
                            f"not run: out of memory (n x n float32 = {per_matrix:.2f} GiB per "
                            f"cell per matrix; about {need / 2**30:.0f} GiB for {NEURAL_BATCH} "
                            f"cells fwd+bwd > budget {budget / 2**30:.1f} GiB)"
                        )
                    },
                )
            )
        else:
            rows.append(
                (
                    "neural_sort",
                    n,
                    False,
                    measured("neural_sort", n, False, NEURAL_BATCH, NEURAL_SMALL_BATCH, 3),
                )
            )

    import jax
    import numpy as np

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, numpy {np.__version__}; temperature {TEMPERATURE}, float32\n"
    )
    print(
        "| method | n genes | cells per call | fwd ms/cell | fwd+bwd ms/cell "
        "| peak MB per extra cell | peak RSS (small / large batch) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for method, n, masked, r in rows:
        label = method + (" (mask: 10% expressed)" if masked else "")
        if "error" in r:
            print(f"| {label} | {n:,} | - | - | - | - | {r['error']} |")
            continue
        print(
            f"| {label} | {n:,} | {r['batch']} | {r['fwd_ms_per_cell']:.3f} "
            f"| {r['fwd_bwd_ms_per_cell']:.3f} | {r['mb_per_cell']:.2f} "
            f"| {r['peak_rss_small_mb']:.0f} MB ({r['small_batch']} cells) / "
            f"{r['peak_rss_mb']:.0f} MB ({r['batch']} cells) |"
        )
    soft = {n: r for m, n, k, r in rows if m == "soft_rank" and not k and "error" not in r}
    neural = {n: r for m, n, k, r in rows if m == "neural_sort" and "error" not in r}
    for n in sorted(set(soft) & set(neural)):
        ratio = neural[n]["fwd_bwd_ms_per_cell"] / soft[n]["fwd_bwd_ms_per_cell"]
        mem = neural[n]["mb_per_cell"] / max(soft[n]["mb_per_cell"], 1e-3)
        print(
            f"\nn = {n:,}: soft_rank fwd+bwd is {ratio:,.0f}x faster than NeuralSort "
            f"and needs {mem:,.0f}x less memory per cell."
        )
    pp_cells, pp_genes, pp_nnz = PP_CASE
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", "pp", *map(str, PP_CASE), "0"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"\ndfm.pp.soft_rank on {pp_cells:,} cells x {pp_genes:,} genes "
            f"({pp_nnz:,} expressed genes per cell, CSR): {r['seconds']:.2f} s, "
            f"{r['ms_per_cell']:.3f} ms per cell, peak RSS {r['peak_rss_mb']:.0f} MB."
        )
    else:
        print(f"\ndfm.pp.soft_rank case failed: {proc.stderr.strip().splitlines()[-1:]}")
    if len(soft) == 2:
        a, b = (soft[n] for n in sorted(soft))
        print(
            f"soft_rank, 20,000 vs 2,000 genes (10x): memory per cell "
            f"{b['mb_per_cell'] / max(a['mb_per_cell'], 1e-3):.1f}x, "
            f"fwd+bwd time {b['fwd_bwd_ms_per_cell'] / a['fwd_bwd_ms_per_cell']:.1f}x."
        )


if __name__ == "__main__":
    main()
