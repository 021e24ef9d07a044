"""Speed and memory of the native masked-expression model on this machine.

1. Per context length (default config otherwise: hidden 128, 2 layers, 4 heads):
   training steps/s (batch 64) and embedding cells/s (batch 256), jit-compiled,
   after one warm-up call.
2. dfm.tl.embed scaling on synthetic cells (1k, 10k, 100k; 2,000 genes, 300
   expressed genes per cell) with a model pre-trained once on 2,000 cells:
   each size runs in its own process on a backed .h5ad (streamed in chunks),
   reporting embed wall time, cells/s and the peak RSS growth during embed.

    python benchmarks/bench_model.py [--sizes 1000 10000 100000] [--contexts 64 128 256]
                                     [--pretrain 2000]

3. (``--pretrain``) ``dfm.tl.pretrain`` end to end, 3 epochs, best of 3 calls.
4. (``--fit-steps N``) the shared trainer's loop (``dfm.models.fit``) on a small
   masked-expression model (hidden 32, 1 layer, 16 tokens, batch 32, validation
   on 10% of 1,000 synthetic cells) for about ``N`` steps: steps/s of the whole
   loop (data, steps, validation, metrics) after a compiling call, plus the
   history and a weight checksum, to compare two versions of the package
   (``PYTHONPATH=<old or new>/src``) on the same seed.

Prints markdown tables. Uses whatever JAX sees (CPU here; a GPU if present).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_context(max_tokens: int, n_repeat: int = 5) -> dict:
    import jax
    from flax import nnx

    from diffbio_sc.models import MaskedExpressionConfig
    from diffbio_sc.models._masked import create_model
    from diffbio_sc.models._train import _steps, _tx
    from diffbio_sc.tl._embed import _forward
    from diffbio_sc.tl._pretrain import _masked_loss

    n_genes, n_prof = 2000, 2000
    cfg = MaskedExpressionConfig(
        vocab_size=n_genes + 4, max_tokens=max_tokens, n_profile_genes=n_prof
    )
    model = create_model(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)

    def tokens(b):
        ids = np.stack([rng.permutation(n_genes)[:max_tokens] + 4 for _ in range(b)]).astype(
            np.int32
        )
        vals = np.sort(rng.gamma(1.0, 2.0, (b, max_tokens)).astype(np.float32), axis=1)[:, ::-1]
        return ids, np.ascontiguousarray(vals)

    # The shared trainer's compiled step (models/_train.py), as dfm.tl.pretrain runs it.
    model.train()
    opt = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    step = nnx.cached_partial(_steps(_masked_loss)[0], model, opt)
    ids, vals = tokens(64)
    prof = rng.normal(size=(64, n_prof)).astype(np.float32)
    batch = {
        "ids": ids,
        "vals": vals,
        "profile": prof,
        "batch_codes": None,
        "weight": np.ones(64, np.float32),
    }
    args = (np.float32(1e-3), batch, jax.random.key(1))
    loss, _ = step(*args)
    loss.block_until_ready()
    t = time.perf_counter()
    for _ in range(n_repeat):
        loss, _ = step(*args)
    loss.block_until_ready()
    steps_s = n_repeat / (time.perf_counter() - t)

    model.eval()
    gdef, state = nnx.split(model)
    ids, vals = tokens(256)
    fwd = _forward()
    fwd(gdef, state, ids, vals).block_until_ready()
    t = time.perf_counter()
    for _ in range(n_repeat):
        out = fwd(gdef, state, ids, vals)
    out.block_until_ready()
    cells_s = 256 * n_repeat / (time.perf_counter() - t)
    return {
        "max_tokens": max_tokens,
        "train_steps_s": steps_s,
        "train_cells_s": 64 * steps_s,
        "embed_cells_s": cells_s,
    }


def bench_pretrain(n_cells: int, epochs: int, repeats: int) -> dict:
    """Wall time of ``dfm.tl.pretrain`` end to end (tokenize, targets, training loop).

    Uses only the public API, so the same function times older versions of the
    package (run this script with another ``PYTHONPATH``). The first call
    compiles; the best of ``repeats`` further calls is reported.
    """
    import diffbio_sc as dfm

    data = dfm.datasets.synthetic_counts(n_cells, 2000, nnz_per_cell=300, seed=0)
    kw = dict(epochs=epochs, progress_bar=False, seed=0)
    model = dfm.tl.pretrain(data, **kw)  # compile
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        model = dfm.tl.pretrain(data, **kw)
        walls.append(time.perf_counter() - t)
    steps = model.metadata["training"]["steps"]
    return {"n_cells": n_cells, "steps": steps, "best_wall_s": min(walls), "walls": walls}


def bench_fit(steps: int, repeats: int = 3) -> dict:
    """Steps/s of ``fit`` on a small model, where per-step overhead dominates.

    Uses only ``dfm.models.fit``/``TrainConfig``, the masked model and its loss,
    all present in older versions too. Returns the best and median steps/s over
    ``repeats`` timed calls (after one compiling call), the history and a
    weight checksum of the last call.
    """
    import jax
    from flax import nnx

    from diffbio_sc.models import MaskedExpressionConfig, TrainConfig, fit
    from diffbio_sc.models._masked import create_model
    from diffbio_sc.tl._pretrain import _masked_loss

    n_cells, n_genes, max_tokens, bs = 1000, 200, 16, 32
    rng = np.random.default_rng(0)
    ids = np.stack([rng.permutation(n_genes)[:max_tokens] + 4 for _ in range(n_cells)])
    ids = ids.astype(np.int32)
    vals = np.sort(rng.gamma(1.0, 2.0, (n_cells, max_tokens)).astype(np.float32), axis=1)
    vals = np.ascontiguousarray(vals[:, ::-1])
    data = {"ids": ids, "vals": vals, "profile": None, "batch_codes": None}
    train_idx, val_idx = np.arange(900), np.arange(900, 1000)
    epochs = max(1, -(-steps // (train_idx.size // bs)))
    cfg = MaskedExpressionConfig(
        vocab_size=n_genes + 4, max_tokens=max_tokens, hidden_dim=32, n_layers=1, n_heads=2
    )

    def run(n_epochs):
        model = create_model(cfg, jax.random.key(0))
        tc = TrainConfig(
            epochs=n_epochs,
            batch_size=bs,
            learning_rate=1e-3,
            patience=None,
            seed=0,
            progress_bar=False,
        )
        t = time.perf_counter()
        res = fit(model, _masked_loss, data, train_idx=train_idx, val_idx=val_idx, config=tc)
        return time.perf_counter() - t, res, model

    run(1)  # compile
    rates = []
    for _ in range(repeats):
        wall, res, model = run(epochs)
        rates.append(res.summary["steps"] / wall)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    checksum = float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in leaves))
    return {
        "steps": res.summary["steps"],
        "best_steps_s": max(rates),
        "median_steps_s": float(np.median(rates)),
        "rates": rates,
        "history": res.history,
        "weight_checksum": checksum,
    }


_CHILD = r"""
import json, sys, threading, time
import anndata as ad
import diffbio_sc as dfm
path, model_dir = sys.argv[1], sys.argv[2]
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
a = ad.read_h5ad(path, backed='r')
model = dfm.models.load(model_dir)
# warm up the compiled forward pass so timing excludes compilation
dfm.tl.embed(a[:8].to_memory(), model, progress_bar=False)
base = rss()
peak = [base]
done = threading.Event()
def poll():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.05)
th = threading.Thread(target=poll, daemon=True)
th.start()
w, c = time.perf_counter(), time.process_time()
dfm.tl.embed(a, model, progress_bar=False)
wall, cpu = time.perf_counter() - w, time.process_time() - c
done.set(); th.join()
print(json.dumps({"n": a.n_obs, "wall_s": wall, "cpu_s": cpu, "rss_before_mb": base,
                  "peak_rss_mb": peak[0], "peak_growth_mb": peak[0] - base,
                  "output_mb": a.obsm['X_dfm'].nbytes / 2**20}))
"""


def bench_scaling(sizes, tmp: Path) -> list[dict]:
    import diffbio_sc as dfm

    train = dfm.datasets.synthetic_counts(2000, 2000, nnz_per_cell=300, seed=0)
    model = dfm.tl.pretrain(train, epochs=2, progress_bar=False)
    model_dir = model.save(tmp / "model")
    rows = []
    for n in sizes:
        path = tmp / f"syn_{n}.h5ad"
        dfm.datasets.synthetic_counts(n, 2000, nnz_per_cell=300, seed=1).write_h5ad(path)
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), str(model_dir)],
            capture_output=True,
            text=True,
        )
        if res.returncode:
            raise RuntimeError(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        path.unlink()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="*", type=int, default=[1000, 10000, 100000])
    p.add_argument("--contexts", nargs="*", type=int, default=[64, 128, 256])
    p.add_argument(
        "--pretrain",
        nargs="*",
        type=int,
        default=[],
        help="cell counts for end-to-end dfm.tl.pretrain timing (3 epochs, best of 3)",
    )
    p.add_argument(
        "--fit-steps",
        type=int,
        default=0,
        help="time dfm.models.fit on a small model for about this many steps (3 timed calls)",
    )
    p.add_argument("--json", default=None, help="with --fit-steps: write its result here")
    args = p.parse_args()
    import jax

    print(f"JAX devices: {jax.devices()}; CPU cores visible: {os.cpu_count()}\n")
    if args.contexts:
        print(
            "| context (tokens) | train steps/s (batch 64) | train cells/s | embed cells/s (batch 256) |"
        )
        print("|---|---|---|---|")
        for L in args.contexts:
            r = bench_context(L)
            print(
                f"| {L} | {r['train_steps_s']:.2f} | {r['train_cells_s']:.0f} | {r['embed_cells_s']:.0f} |"
            )
        print(f"\npeak RSS of this process so far: {_peak_mb():.0f} MB\n")
    if args.pretrain:
        print("| cells | pretrain steps | best wall s (of 3) | steps/s | all walls s |")
        print("|---|---|---|---|---|")
        for n in args.pretrain:
            r = bench_pretrain(n, epochs=3, repeats=3)
            walls = ", ".join(f"{w:.2f}" for w in r["walls"])
            print(
                f"| {n} | {r['steps']} | {r['best_wall_s']:.2f} | "
                f"{r['steps'] / r['best_wall_s']:.1f} | {walls} |"
            )
        print()
    if args.fit_steps:
        r = bench_fit(args.fit_steps)
        rates = ", ".join(f"{x:.1f}" for x in r["rates"])
        print("| fit steps | best steps/s | median steps/s | all steps/s | weight checksum |")
        print("|---|---|---|---|---|")
        print(
            f"| {r['steps']} | {r['best_steps_s']:.1f} | {r['median_steps_s']:.1f} | {rates} | "
            f"{r['weight_checksum']:.6f} |\n"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(r))
    if args.sizes:
        with tempfile.TemporaryDirectory() as d:
            rows = bench_scaling(args.sizes, Path(d))
        print(
            "| cells | embed wall s | embed CPU s | cells/s | RSS before MB | peak RSS MB | peak growth MB | output MB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['n']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['n'] / r['wall_s']:.0f} | "
                f"{r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_growth_mb']:.0f} | "
                f"{r['output_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
