"""Where the time of one checkpoint layer goes on CPU: attention vs dense, JAX vs torch.

For one batch of ``--cells`` cells at ``--tokens`` tokens (``--heads`` x 64,
as Geneformer's V1 size 4 x 64 at 2,048 tokens or V2 size 8 x 64 at 4,096),
prints the CPU time (``time.process_time``, best of ``--reps``) of

* the attention diffbio_sc runs (:func:`diffbio_sc.models._bert.masked_attention`:
  tiles of one cell, one head and <= 256 queries against all keys);
* the plain formulation ``einsum -> softmax -> einsum`` (the whole
  ``(cells, heads, L, L)`` scores in memory; what dfm ran before);
* ``jax.nn.dot_product_attention`` (on CPU the XLA reference path);
* the dense part of a layer (query/key/value/output projections and the
  feed-forward block, ``4H x H + 2 x H x 2H``);
* torch's ``scaled_dot_product_attention`` (its fused CPU kernel) and the same
  dense products in torch, in a separate environment (``--torch-python``).

The attention outputs are compared with the plain formulation (max abs diff).
Wall times on a shared machine are upper bounds; CPU time is the figure to compare.

    python benchmarks/bench_attention.py [--cells 8] [--tokens 2048] [--heads 4] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np

TORCH = textwrap.dedent(
    """
    import json, sys, time, torch
    b, t, h, d, reps = map(int, sys.argv[1:6])
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    mask = torch.ones(b, 1, 1, t, dtype=torch.bool)
    H = h * d
    x = torch.randn(b, t, H)
    w = [torch.randn(H, H) for _ in range(4)] + [torch.randn(H, 2 * H), torch.randn(2 * H, H)]
    def dense():
        y = x
        for m in w[:4]:
            y = y @ m
        return torch.relu(y @ w[4]) @ w[5]
    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = {}
    with torch.no_grad():
        for name, f in (("sdpa", sdpa), ("dense", dense)):
            f()
            best = float("inf")
            for _ in range(reps):
                c = time.process_time()
                f()
                best = min(best, time.process_time() - c)
            out[name] = best
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))
    """
)


def _cpu(f, *args, reps: int) -> tuple[float, np.ndarray]:
    out = f(*args)
    out.block_until_ready()
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        f(*args).block_until_ready()
        best = min(best, time.process_time() - c)
    return best, np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from diffbio_sc.models._bert import HIGHEST, MASK_BIAS, masked_attention

    b, t, h, d = args.cells, args.tokens, args.heads, 64
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((b, t, h, d), dtype=np.float32)) for _ in range(3))
    mask = jnp.ones((b, t), bool)

    def plain(q, k, v, m):
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=HIGHEST) / np.sqrt(d)
        p = jax.nn.softmax(s + jnp.where(m, 0.0, MASK_BIAS)[:, None, None, :], axis=-1)
        return jnp.einsum("bhqk,bkhd->bqhd", p, v, precision=HIGHEST)

    def library(q, k, v, m):
        return jax.nn.dot_product_attention(q, k, v, mask=m[:, None, None, :])

    hidden = h * d
    x = jnp.asarray(rng.standard_normal((b, t, hidden), dtype=np.float32))
    shapes = [(hidden, hidden)] * 4 + [(hidden, 2 * hidden), (2 * hidden, hidden)]
    w = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.05) for s in shapes]

    def dense(x):
        y = x
        for m in w[:4]:
            y = jnp.dot(y, m, precision=HIGHEST)
        return jnp.dot(jax.nn.relu(jnp.dot(y, w[4], precision=HIGHEST)), w[5], precision=HIGHEST)

    rows = []
    t_plain, ref = _cpu(jax.jit(plain), q, k, v, mask, reps=args.reps)
    for name, f in (
        ("dfm masked_attention (tiled)", masked_attention),
        ("jax.nn.dot_product_attention", library),
    ):
        sec, out = _cpu(jax.jit(f), q, k, v, mask, reps=args.reps)
        rows.append((name, sec, f"{np.abs(out - ref).max():.1e}"))
    rows.append(("plain einsum -> softmax -> einsum", t_plain, "-"))
    sec, _ = _cpu(jax.jit(dense), x, reps=args.reps)
    rows.append(("JAX dense part of a layer", sec, "-"))
    if Path(args.torch_python).exists():
        proc = subprocess.run(
            [args.torch_python, "-c", TORCH, *map(str, (b, t, h, d, args.reps))],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(
            (f"torch scaled_dot_product_attention ({r['threads']} threads)", r["sdpa"], "-")
        )
        rows.append(("torch dense part of a layer", r["dense"], "-"))
    print(
        f"\nCommand: python benchmarks/bench_attention.py --cells {b} --tokens {t} "
        f"--heads {h} --reps {args.reps}; scores tensor {b * h * t * t * 4 / 2**20:.0f} MiB\n"
    )
    print("| computation | CPU s (best) | max diff vs plain |")
    print("|---|---:|---|")
    for name, sec, diff in rows:
        print(f"| {name} | {sec:.3f} | {diff} |")


if __name__ == "__main__":
    main()
