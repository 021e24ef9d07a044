"""Time dfm.tl.benchmark against scib-metrics' Benchmarker on the same inputs.

Synthetic data: ``--n-cells`` cells, ``--n-embeddings`` embeddings of ``--n-dims``
dimensions with a mix of label signal, batch signal and noise (from well integrated
to random), plus an unintegrated reference (label + strong batch signal) used by
both tools for the PCR comparison. Both run the same metric set (the Benchmarker
0.5.10 defaults: isolated labels, KMeans NMI/ARI, silhouette label, cLISI, BRAS,
iLISI, kBET per label, graph connectivity, PCR comparison) in the same process.

A warm-up on one embedding compiles the JAX and numba kernels of both tools
first, so the timed runs compare steady-state cost. Prints a markdown table.

Fairness rule (``docs/benchmarks.md``): the Benchmarker's ``n_jobs`` (threads of
its pynndescent neighbour search, the only thread setting it has) is swept on
one embedding after the warm-up and the faster setting (wall time) is used;
``dfm.tl.benchmark`` runs twice, with the same pynndescent graph as the
Benchmarker (the same-computation row: every score agrees) and with its
default exact kNN. The sides alternate (order reversed every other round) over
``--rounds`` rounds in one process (a fresh process per side would repeat the
minute of JIT compilation that the warm-up removes); wall and CPU time (process
time, all threads), min and median.

Usage::

    python benchmarks/bench_scoring.py                  # 10k cells x 50 dims x 5
    python benchmarks/bench_scoring.py --n-cells 2000   # quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import pandas as pd

from diffbio_sc._schema import BENCHMARKER_METRICS, METRIC_NAMES


def make_data(n_cells: int, n_dims: int, n_embeddings: int, seed: int = 0):
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    n_labels, n_batches = 10, 3
    labels = rng.integers(0, n_labels, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    label_centres = rng.normal(size=(n_labels, n_dims)) * 3.0
    batch_centres = rng.normal(size=(n_batches, n_dims)) * 3.0
    obsm = {}
    # (label weight, batch weight): from well integrated to random.
    mixes = [(1.0, 0.0), (1.0, 0.5), (0.7, 1.0), (0.3, 1.0), (0.0, 0.0)]
    mixes = (mixes * (n_embeddings // len(mixes) + 1))[:n_embeddings]
    for i, (wl, wb) in enumerate(mixes):
        X = wl * label_centres[labels] + wb * batch_centres[batches]
        X = X + rng.normal(size=(n_cells, n_dims)) * 1.5
        obsm[f"X_emb{i}"] = X.astype(np.float32)
    obsm["X_pre"] = (
        label_centres[labels] + 2.0 * batch_centres[batches] + rng.normal(size=(n_cells, n_dims))
    ).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t}" for t in labels]),
            "batch": pd.Categorical([f"batch_{b}" for b in batches]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    return AnnData(X=np.zeros((n_cells, 1), dtype=np.float32), obs=obs, obsm=obsm)


def run_scib(adata, keys, n_jobs=1):
    from scib_metrics.benchmark import Benchmarker

    bm = Benchmarker(
        adata,
        batch_key="batch",
        label_key="cell_type",
        embedding_obsm_keys=list(keys),
        pre_integrated_embedding_obsm_key="X_pre",
        n_jobs=n_jobs,
        progress_bar=False,
    )
    bm.benchmark()
    return bm.get_results(min_max_scale=False)


LAST_REPORT: dict = {}


def run_dfm(adata, keys, knn_method):
    import diffbio_sc as dfm

    dfm.settings.progress_bar = False  # quiet: the tables below are the output
    df = dfm.tl.benchmark(
        adata,
        list(keys),
        "batch",
        "cell_type",
        baselines=(),
        annotation=False,
        metrics=BENCHMARKER_METRICS,
        pre_integrated="X_pre",
        knn_method=knn_method,
        name=f"bench_{knn_method}",
    )
    if knn_method == "exact":
        LAST_REPORT.clear()
        LAST_REPORT.update(adata.uns["dfm"]["benchmarks"][f"bench_{knn_method}"])
    return df


# Benchmarker column names of the metrics both tools compute (dfm's display names).
_SCIB_COLS = {
    m: METRIC_NAMES[m]
    for m in (*BENCHMARKER_METRICS, "bio_conservation", "batch_correction", "total")
}


def max_abs_diff(df_dfm: pd.DataFrame, res_scib: pd.DataFrame, keys) -> pd.Series:
    """Largest |dfm - scib| per metric over the embeddings."""
    out = {}
    for m, col in _SCIB_COLS.items():
        diffs = []
        for k in keys:
            a = df_dfm[(df_dfm.embedding == k) & (df_dfm.metric == m)]["value"].iloc[0]
            b = float(res_scib.loc[k, col])
            diffs.append(abs(a - b))
        out[m] = max(diffs)
    return pd.Series(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=10_000)
    ap.add_argument("--n-dims", type=int, default=50)
    ap.add_argument("--n-embeddings", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import scib_metrics

    adata = make_data(args.n_cells, args.n_dims, args.n_embeddings)
    keys = [k for k in adata.obsm if k != "X_pre"]

    # Warm-up: compile JAX / numba kernels of both tools at the full size.
    t = time.perf_counter()
    run_scib(adata.copy(), keys[:1])
    run_dfm(adata.copy(), keys[:1], "exact")
    run_dfm(adata.copy(), keys[:1], "pynndescent")
    warm = time.perf_counter() - t

    # The peer's best thread setting: its pynndescent n_jobs, swept on one embedding.
    sweep = {}
    for n_jobs in sorted({1, os.cpu_count() or 1}):
        t, c = time.perf_counter(), time.process_time()
        run_scib(adata.copy(), keys[:1], n_jobs)
        sweep[n_jobs] = (time.perf_counter() - t, time.process_time() - c)
    scib_jobs = min(sweep, key=lambda j: sweep[j][0])

    scib_name = f"scib-metrics Benchmarker (pynndescent, n_jobs={scib_jobs})"
    sides = {
        scib_name: lambda: run_scib(adata.copy(), keys, scib_jobs),
        "dfm.tl.benchmark (same pynndescent kNN)": lambda: run_dfm(
            adata.copy(), keys, "pynndescent"
        ),
        "dfm.tl.benchmark (exact kNN, default)": lambda: run_dfm(adata.copy(), keys, "exact"),
    }
    times: dict[str, list] = {k: [] for k in sides}
    results = {}
    load0 = os.getloadavg()[0]
    for rnd in range(args.rounds):
        for name in list(sides) if rnd % 2 == 0 else list(sides)[::-1]:
            t, c = time.perf_counter(), time.process_time()
            results[name] = sides[name]()
            times[name].append((time.perf_counter() - t, time.process_time() - c))
    load1 = os.getloadavg()[0]
    res_scib = results[scib_name]
    df_pynn = results["dfm.tl.benchmark (same pynndescent kNN)"]
    df_exact = results["dfm.tl.benchmark (exact kNN, default)"]

    import diffbio_sc as dfm

    ref_w, ref_c = (np.median(x) for x in np.array(times[scib_name]).T)
    print(
        f"\n{args.n_embeddings} embeddings x {args.n_cells} cells x {args.n_dims} dims, "
        f"10 labels, 3 batches; scib-metrics {scib_metrics.__version__}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"warm-up {warm:.1f} s; {args.rounds} rounds alternating in one process; "
        f"load average {load0:.1f} before / {load1:.1f} after\n"
        f"Benchmarker n_jobs sweep on one embedding (wall s / CPU s): "
        + "; ".join(f"{j}: {w:.1f} / {c:.1f}" for j, (w, c) in sweep.items())
        + f" -> n_jobs={scib_jobs}. dfm: metrics = the Benchmarker's defaults, baselines=(), "
        f"annotation=False, dfm.settings.n_jobs={dfm.settings.n_jobs}\n"
    )
    print(
        "| tool | wall s min / median | CPU s min / median "
        "| wall, relative to Benchmarker (median) | CPU, relative (median) |"
    )
    print("|---|---|---|---:|---:|")
    for name, ts in times.items():
        w, c = np.array(ts).T
        print(
            f"| {name} | {w.min():.1f} / {np.median(w):.1f} | {c.min():.1f} / {np.median(c):.1f} "
            f"| {np.median(w) / ref_w:.2f}x | {np.median(c) / ref_c:.2f}x |"
        )

    d_pynn = max_abs_diff(df_pynn, res_scib, keys)
    d_exact = max_abs_diff(df_exact, res_scib, keys)
    print("\nLargest |dfm - Benchmarker| over the embeddings, per metric:\n")
    print("| metric | same pynndescent kNN | exact kNN |")
    print("|---|---:|---:|")
    for m in d_pynn.index:
        print(f"| {m} | {d_pynn[m]:.2e} | {d_exact[m]:.2e} |")

    print("\nTime per step of dfm.tl.benchmark (exact kNN), summed over the embeddings:\n")
    print("| step | seconds |")
    print("|---|---:|")
    steps: dict[str, float] = {}
    for tms in LAST_REPORT["timings"].values():
        for k, v in tms.items():
            steps[k] = steps.get(k, 0.0) + float(v)
    for k, v in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.1f} |")

    tot = df_pynn[df_pynn.metric == "total"].set_index("embedding")["value"]
    print("\nTotal score per embedding (dfm, pynndescent kNN / Benchmarker):\n")
    print("| embedding | dfm total | Benchmarker total |")
    print("|---|---:|---:|")
    for k in keys:
        print(f"| {k} | {tot[k]:.4f} | {float(res_scib.loc[k, 'Total']):.4f} |")


if __name__ == "__main__":
    main()
