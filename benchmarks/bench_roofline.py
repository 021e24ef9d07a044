"""Roofline of Geneformer inference on this CPU: FMA peak, GEMM speeds, FLOPs per forward.

Answers one question of issue 25, item 2: can dfm run 1.3x tuned torch's cells per
CPU-second *at equal work* in float32 at all? At equal FLOPs that needs torch to run
below 1 / 1.3 = 77% of the CPU's float32 peak.

1. **Peak**: a C kernel (compiled here with ``gcc``; AVX-512 intrinsics) runs chains of
   independent ``vfmadd231ps`` (float32 FMA, 512-bit) and ``vdpbf16ps`` (bfloat16 pairs
   accumulated in float32, AVX512-BF16) on registers only, on 1 and 2 threads (Python
   threads; ctypes releases the GIL). FLOPs per CPU-second of the process (all threads)
   is the per-core peak; per wall second, the machine's.
2. **GEMM**: ``C = A @ B`` at a big square size and at the model's shapes (tokens x
   256 x 256/512 for V1, tokens x 768 x 768/3,072 for V2-104M), float32: NumPy
   (OpenBLAS), XLA (``jax.jit(jnp.dot)``, HIGHEST precision as dfm's layers use) and
   torch (MKL/oneDNN, in ``--torch-python``) with 1 and 2 threads; bfloat16 inputs with
   float32 accumulation for XLA (``preferred_element_type``) and torch (bfloat16 matmul).
3. **FLOPs of one forward pass** per cell (:func:`forward_flops`): per layer the dense
   products ``2 T (4 d^2 + 2 d i)`` and attention ``4 T^2 d`` (scores and weights x
   values, per cell, no padding: the *useful* work), at both sizes, PBMC lengths and
   2,048 tokens; layers counted up to the pooled (second-to-last) one.

Other scripts import :func:`forward_flops` (``bench_checkpoints.py`` prints achieved
GFLOP per CPU-s beside each side's rate).

    python benchmarks/bench_roofline.py [--seconds 1.0] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

#: Geneformer sizes (hidden, intermediate, layers computed = pooled layer index).
SIZES = {
    "V1 (6 x 256, inter 512)": dict(d=256, inter=512, layers=5),
    "V2-104M (12 x 768, inter 3,072)": dict(d=768, inter=3072, layers=11),
}


def forward_flops(lengths, *, d: int, inter: int, layers: int) -> dict:
    """Useful FLOPs of a forward pass over cells of ``lengths`` tokens (no padding).

    Per layer and cell of ``T`` tokens: dense ``2 T (4 d^2 + 2 d inter)`` (Q, K, V and
    output projections, the two feed-forward products) and attention ``4 T^2 d``
    (``Q K^T`` and ``P V`` over all heads). Softmax, layer norms and the activation are
    O(T d) or O(T^2 heads) element-wise work and are left out (a few percent).
    Returns totals over the cells and ``layers`` layers.
    """
    t = np.asarray(lengths, dtype=np.float64)
    dense = 2.0 * t * (4 * d * d + 2 * d * inter)
    attn = 4.0 * t * t * d
    return {
        "dense": float(dense.sum() * layers),
        "attention": float(attn.sum() * layers),
        "total": float((dense + attn).sum() * layers),
    }


PEAK_C = r"""
#include <immintrin.h>
#include <stdint.h>
/* n iterations of 12 independent FMA chains on zmm registers: 12 * 16 * 2 FLOP each. */
float fma_f32(int64_t n) {
    __m512 a[12];
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < 12; j++) a[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) a[j] = _mm512_fmadd_ps(a[j], x, y);
    }
    __m512 s = a[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s);
}
/* n iterations of 12 independent vdpbf16ps chains: each 16 lanes x 2 pairs x 2 FLOP. */
float dp_bf16(int64_t n) {
    __m512 a[12];
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int j = 0; j < 12; j++) a[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < n; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) a[j] = _mm512_dpbf16_ps(a[j], x, y);
    }
    __m512 s = a[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_ps(s, a[j]);
    return _mm512_reduce_add_ps(s);
}
"""


def _peak_lib(tmp: Path):
    src, lib = tmp / "peak.c", tmp / "peak.so"
    src.write_text(PEAK_C)
    subprocess.run(
        ["gcc", "-O2", "-march=native", "-mavx512f", "-mavx512bf16", "-shared", "-fPIC",
         str(src), "-o", str(lib)],
        check=True,
    )  # fmt: skip
    so = ctypes.CDLL(str(lib))
    for name in ("fma_f32", "dp_bf16"):
        getattr(so, name).restype = ctypes.c_float
        getattr(so, name).argtypes = [ctypes.c_int64]
    return so


def measure_peak(so, seconds: float) -> dict:
    """GFLOP per CPU-s and per wall-s of the register-only kernels, 1 and 2 threads."""
    flop_per_iter = {"fma_f32": 12 * 16 * 2, "dp_bf16": 12 * 16 * 4}
    out = {}
    for name, fpi in flop_per_iter.items():
        fn = getattr(so, name)
        fn(1000)
        n = 1000
        while True:  # calibrate to ~seconds on one thread
            t0 = time.perf_counter()
            fn(n)
            dt = time.perf_counter() - t0
            if dt > 0.2:
                break
            n *= 4
        n = int(n * seconds / dt)
        for threads in (1, 2):
            best = None
            for _ in range(3):
                ths = [threading.Thread(target=fn, args=(n,)) for _ in range(threads)]
                t0, c0 = time.perf_counter(), time.process_time()
                for th in ths:
                    th.start()
                for th in ths:
                    th.join()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                flop = fpi * n * threads
                r = {"per_cpu_s": flop / cpu / 1e9, "per_wall_s": flop / wall / 1e9}
                if best is None or r["per_cpu_s"] > best["per_cpu_s"]:
                    best = r
            out[f"{name}, {threads} thread{'s' * (threads > 1)}"] = best
    return out


#: GEMM shapes (m, k, n): a big square, then the models' products at one batch of tokens.
SHAPES = {
    "square 2,048": (2048, 2048, 2048),
    "V1 QKV/out: 16,384 x 256 x 256": (16384, 256, 256),
    "V1 FF in: 16,384 x 256 x 512": (16384, 256, 512),
    "V1 FF out: 16,384 x 512 x 256": (16384, 512, 256),
    "V2 QKV/out: 4,096 x 768 x 768": (4096, 768, 768),
    "V2 FF in: 4,096 x 768 x 3,072": (4096, 768, 3072),
    "V2 FF out: 4,096 x 3,072 x 768": (4096, 3072, 768),
    "V1 attn scores (tile): 256 x 64 x 2,048": (256, 64, 2048),
    "V1 attn P V (tile): 256 x 2,048 x 64": (256, 2048, 64),
}

GEMM_TIMER = textwrap.dedent(
    """
    import time
    def best_cpu(fn, reps, rounds=3):
        fn()
        best = float("inf")
        for _ in range(rounds):
            c0 = time.process_time()
            for _ in range(reps):
                fn()
            best = min(best, (time.process_time() - c0) / reps)
        return best
    def reps_for(m, k, n):
        return max(2, int(4e10 / (2 * m * k * n)))
    """
)

TORCH_GEMM = GEMM_TIMER + textwrap.dedent(
    """
    import json, sys, torch
    threads, shapes = int(sys.argv[1]), json.loads(sys.argv[2])
    torch.set_num_threads(threads)
    out = {}
    with torch.inference_mode():
        for name, (m, k, n) in shapes.items():
            a, b = torch.randn(m, k), torch.randn(k, n)
            ab, bb = a.bfloat16(), b.bfloat16()
            r = reps_for(m, k, n)
            out[name] = {"float32": best_cpu(lambda: a @ b, r),
                         "bfloat16": best_cpu(lambda: ab @ bb, r)}
    print(json.dumps({"torch": torch.__version__, "out": out}))
    """
)

XLA_GEMM = GEMM_TIMER + textwrap.dedent(
    """
    import json, sys, os
    threads, shapes = int(sys.argv[1]), json.loads(sys.argv[2])
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import jax, jax.numpy as jnp, numpy as np
    from jax.lax import Precision
    f32 = jax.jit(lambda a, b: jnp.dot(a, b, precision=Precision.HIGHEST))
    bf = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    out = {}
    for name, (m, k, n) in shapes.items():
        rng = np.random.default_rng(0)
        a = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32))
        b = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32))
        ab, bb = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
        r = reps_for(m, k, n)
        out[name] = {"float32": best_cpu(lambda: f32(a, b).block_until_ready(), r),
                     "bfloat16": best_cpu(lambda: bf(ab, bb).block_until_ready(), r)}
    print(json.dumps({"jax": jax.__version__, "out": out}))
    """
)

NUMPY_GEMM = GEMM_TIMER + textwrap.dedent(
    """
    import json, sys
    threads, shapes = int(sys.argv[1]), json.loads(sys.argv[2])
    from threadpoolctl import threadpool_limits
    import numpy as np
    out = {}
    with threadpool_limits(threads):
        for name, (m, k, n) in shapes.items():
            rng = np.random.default_rng(0)
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out[name] = {"float32": best_cpu(lambda: a @ b, reps_for(m, k, n))}
    print(json.dumps({"numpy": np.__version__, "out": out}))
    """
)


def _run(python: str, code: str, *args, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh ``python`` process; its last stdout line parsed as JSON.

    ``env``: variables set on top of this process's environment (e.g. ``PYTHONPATH``).
    """
    proc = subprocess.run(
        [python, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per peak-kernel run")
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--pbmc-median", type=int, default=194, help="tokens per PBMC cell")
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load average {os.getloadavg()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        peak = measure_peak(_peak_lib(Path(tmp)), args.seconds)
    print("\n| kernel (registers only, AVX-512) | GFLOP per CPU-s | GFLOP per wall-s |")
    print("|---|---:|---:|")
    for name, r in peak.items():
        print(f"| {name} | {r['per_cpu_s']:.1f} | {r['per_wall_s']:.1f} |")
    p32 = max(r["per_cpu_s"] for k, r in peak.items() if k.startswith("fma_f32"))
    pbf = max(r["per_cpu_s"] for k, r in peak.items() if k.startswith("dp_bf16"))
    print(f"\n# per-core peak: float32 FMA {p32:.1f}, bfloat16 dot {pbf:.1f} GFLOP per CPU-s")

    if not args.skip_gemm:
        shapes = json.dumps(SHAPES)
        res = {}
        for threads in (1, 2):
            res[("numpy (OpenBLAS)", threads)] = _run(sys.executable, NUMPY_GEMM, threads, shapes)
            res[("XLA (jax.jit dot)", threads)] = _run(sys.executable, XLA_GEMM, threads, shapes)
            if Path(args.torch_python).exists():
                res[("torch (MKL)", threads)] = _run(args.torch_python, TORCH_GEMM, threads, shapes)
        cols = [(lib, t, dt) for (lib, t), r in res.items() for dt in ("float32", "bfloat16")
                if dt in next(iter(r["out"].values()))]  # fmt: skip
        print(
            "\nGEMM, GFLOP per CPU-s (best of 3) and % of the per-core peak of its type "
            "(float32 FMA; bfloat16 dot for bfloat16 inputs)\n"
        )
        print(
            "| shape (m x k x n) | "
            + " | ".join(f"{lib}, {t} thr, {dt}" for lib, t, dt in cols)
            + " |"
        )
        print("|---|" + "---:|" * len(cols))
        for name, (m, k, n) in SHAPES.items():
            cells = []
            for lib, t, dt in cols:
                sec = res[(lib, t)]["out"][name][dt]
                g = 2 * m * k * n / sec / 1e9
                cells.append(f"{g:.0f} ({100 * g / (p32 if dt == 'float32' else pbf):.0f}%)")
            print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nUseful FLOPs of one forward pass per cell, up to the pooled layer (GFLOP)\n")
    print(
        "| size | tokens | dense per layer | attention per layer | layers | total | attention share |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size, cfg in SIZES.items():
        for t in (args.pbmc_median, 2048):
            f1 = forward_flops([t], d=cfg["d"], inter=cfg["inter"], layers=1)
            ft = forward_flops([t], **cfg)
            print(
                f"| {size} | {t} | {f1['dense'] / 1e9:.3f} | {f1['attention'] / 1e9:.3f} "
                f"| {cfg['layers']} | {ft['total'] / 1e9:.2f} | "
                f"{100 * ft['attention'] / ft['total']:.0f}% |"
            )


if __name__ == "__main__":
    main()
