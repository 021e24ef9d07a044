"""Before/after timings of the one batched runner (``models/_runner.py``).

Runs the same three embedding workloads with two versions of the package, each
side in its own process (``PYTHONPATH=<tree>/src``), alternating sides over
``--rounds`` rounds, and prints process CPU seconds (the ratio to report on a
shared machine) and wall seconds, min and median per side:

* ``tl.embed``: a small native masked-expression model (hidden 64, 2 layers,
  ``max_tokens`` 256, trained 1 epoch on the cells, saved once and loaded by
  both sides) on 1,000 synthetic cells expressing 20 to 250 of 600 genes;
  ``batch_size=256``.
* ``tl.embed_sequences``: a ``SequenceEncoder`` (char tokens, hidden 64, 2
  layers, ``max_length`` 512) on 192 random sequences of 40 to 400 bases,
  ``batch_size=64``, ``reverse_complement='average'``.
* gene encoder: the same encoder as ``embed_genes`` adapts it (``as_encoder``),
  embedding the same 192 sequences 64 at a time, as ``embed_genes`` calls it.

Each workload is timed twice in a side's process: the first call (compilation
included) and a second, warm call (``first`` and ``warm`` columns).

    python benchmarks/bench_runner.py --before /work/main --after . [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np
import anndata as ad
import scipy.sparse as sp
import diffbio_sc as dfm
from diffbio_sc.tl._genetics._encoders import as_encoder

work = sys.argv[1]
out = {}

def clock(f):
    c, w = time.process_time(), time.perf_counter()
    f()
    return time.process_time() - c, time.perf_counter() - w

cells = ad.read_h5ad(f"{work}/cells.h5ad")
model = dfm.models.load(f"{work}/model")
for tag in ("first", "warm"):
    out[f"embed_{tag}"] = clock(lambda: dfm.tl.embed(cells, model, batch_size=256, copy=True))

seqs = json.load(open(f"{work}/seqs.json"))
enc = dfm.models.load(f"{work}/encoder")
sq = dfm.io.sequences_to_adata(seqs)
for tag in ("first", "warm"):
    out[f"embed_sequences_{tag}"] = clock(
        lambda: dfm.tl.embed_sequences(
            sq, encoder=enc, batch_size=64, reverse_complement="average", copy=True
        )
    )

def genes():
    ge = as_encoder(enc, batch_size=64)
    for i in range(0, len(seqs), 64):
        ge.embed(seqs[i : i + 64])

for tag in ("first", "warm"):
    out[f"gene_encoder_{tag}"] = clock(genes)
print("RESULT " + json.dumps(out))
"""


def _setup(work: Path, src: Path) -> None:
    code = r"""
import json, sys
import numpy as np, anndata as ad, scipy.sparse as sp, pandas as pd
from flax import nnx
import diffbio_sc as dfm
work = sys.argv[1]
rng = np.random.default_rng(0)
n, g = 1000, 600
rows, cols, vals = [], [], []
for i in range(n):
    k = int(rng.integers(20, 251))
    c = rng.choice(g, k, replace=False)
    rows += [i] * k; cols += c.tolist(); vals += rng.integers(1, 30, k).tolist()
X = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(n, g))
cells = ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"G{j}" for j in range(g)]))
cells.write_h5ad(f"{work}/cells.h5ad")
cfg = dfm.models.MaskedExpressionConfig(hidden_dim=64, n_layers=2, n_heads=4, max_tokens=256)
m = dfm.tl.pretrain(cells, config=cfg, epochs=1, seed=0, progress_bar=False)
m.save(f"{work}/model")
letters = np.frombuffer(b"ACGT", np.uint8)
seqs = [letters[rng.integers(0, 4, int(rng.integers(40, 401)))].tobytes().decode()
        for _ in range(192)]
json.dump(seqs, open(f"{work}/seqs.json", "w"))
scfg = dfm.models.SequenceEncoderConfig(hidden_dim=64, num_layers=2, num_heads=4,
                                        intermediate_dim=128, max_length=512, dropout=0.0)
dfm.models.SequenceEncoder(scfg, rngs=nnx.Rngs(params=0)).save(f"{work}/encoder")
"""
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run([sys.executable, "-c", code, str(work)], env=env, check=True)


def _side(src: Path, work: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(work)], env=env, capture_output=True, text=True
    )
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="repository root of the old version")
    ap.add_argument("--after", default=".", help="repository root of the new version")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sides = {"before": Path(args.before) / "src", "after": Path(args.after) / "src"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _setup(work, sides["after"])
        runs: dict = {"before": [], "after": []}
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for side in order:
                t = time.perf_counter()
                runs[side].append(_side(sides[side], work))
                print(f"round {r + 1} {side}: {time.perf_counter() - t:.1f} s", flush=True)
    keys = list(runs["after"][0])
    print(
        "\n| workload | before CPU s min / median | after CPU s min / median | "
        "after/before (median CPU) | before wall s median | after wall s median |"
    )
    print("|---|---|---|---|---|---|")
    table = {}
    for k in keys:
        b = np.asarray([x[k] for x in runs["before"]])
        a = np.asarray([x[k] for x in runs["after"]])
        bm, am = np.median(b, axis=0), np.median(a, axis=0)
        table[k] = {"before": b.tolist(), "after": a.tolist()}
        print(
            f"| {k} | {b[:, 0].min():.2f} / {bm[0]:.2f} | {a[:, 0].min():.2f} / {am[0]:.2f} "
            f"| {am[0] / bm[0]:.2f} | {bm[1]:.2f} | {am[1]:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
