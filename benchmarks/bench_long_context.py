"""Long-context cost: tokens per CPU-second and peak RSS against sequence length.

For each family of ``FAMILIES`` (module interface: ``_long_context/README.md``),
random weights at a published configuration are written once by the upstream
torch code (``write_checkpoint``, in the torch interpreter), then, at every
length, each side runs in its own fresh process (clean peak RSS):

* ``dfm``: ``dfm.models.load_checkpoint`` + ``nnx.jit`` of hidden states -> pooled;
* ``torch``: the upstream modelling code, ``torch.inference_mode()``,
  ``torch.set_num_threads(--threads)``;
* ``attention`` (lengths up to ``--attention-max``): diffbio_sc's own
  ``SequenceEncoder`` (full softmax attention) at the same width / depth
  (d 256, 8 layers, 4 heads, MLP 1024), one-hot input, mean pooling;

each with one untimed warm-up call (compilation, allocator), then ``--reps``
timed calls (``time.process_time``: CPU seconds of all threads, and wall
seconds). Batch sizes: every size of ``--batches`` whose batch x length is at
most ``--max-batch-tokens``, the best tokens/CPU-s kept per side (a sweep).
Sides alternate over ``--rounds`` rounds (dfm first in odd rounds); min and
median over rounds are reported, with the largest |dfm - torch| of the pooled
vectors (same checkpoint, same ids) and the log-log slope of CPU seconds per
sequence from 8k to the longest length measured.

    python benchmarks/bench_long_context.py [--family hyenadna] [--lengths 1024 8192 32768 131072]

Torch runs where ``--torch-python`` (default ``/work/venv-torch/bin/python`` or
``$DFM_TORCH_PYTHON``) has torch; torch is never a dependency of diffbio_sc.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: name -> module (under benchmarks/) implementing the interface of _long_context/README.md
FAMILIES = {
    "hyenadna": "_long_context.hyenadna",
    "caduceus": "_long_context.caduceus",
}
ATTENTION = dict(hidden_dim=256, num_layers=8, num_heads=4, intermediate_dim=1024)


def family_module(name: str):
    """Import the family module ``name`` (benchmarks/ on the path)."""
    sys.path.insert(0, str(HERE))
    return importlib.import_module(FAMILIES[name])


def token_ids(fam, length: int, batch: int, seed: int) -> np.ndarray:
    """Random ids over the family's nucleotide ids, ``(batch, length)`` int64."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.asarray(fam.NUCLEOTIDE_IDS, np.int64), size=(batch, length))


def _attention_runner(length: int, seed: int):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from diffbio_sc.models._sequence import SequenceEncoder, SequenceEncoderConfig

    cfg = SequenceEncoderConfig(max_length=length, dropout=0.0, **ATTENTION)
    model = SequenceEncoder(cfg, rngs=nnx.Rngs(seed))
    model.eval()
    step = nnx.jit(lambda m, x, v: m.embed(x, v, reverse_complement=None))

    def run(ids):
        x = jax.nn.one_hot(jnp.asarray(ids) % 4, 4, dtype=jnp.float32)
        valid = jnp.ones(ids.shape, bool)
        return np.asarray(jax.block_until_ready(step(model, x, valid)), np.float32)

    return run


def worker(args) -> None:
    """One side at one length, in this fresh process; prints one JSON line."""
    fam = family_module(args.family)
    if args.side == "dfm":
        run = fam.build_dfm(Path(args.ckpt))
    elif args.side == "torch":
        run = fam.build_torch(Path(args.ckpt), args.threads)
    else:
        run = _attention_runner(args.length, args.seed)
    best = None
    for batch in args.batch_list:
        ids = token_ids(fam, args.length, batch, args.seed)
        t0 = time.process_time()
        # warm-up (compilation / allocator), untimed; torch compiles nothing, so its
        # warm-up may be a prefix (--torch-warmup-length): a full pass at 131k costs
        # Caduceus' Python-loop reference scan half an hour
        warm = ids if args.side != "torch" else ids[:, : args.torch_warmup_length]
        out = run(warm)
        warm_cpu = time.process_time() - t0
        cpu, wall = [], []
        for _ in range(args.reps):
            c0, w0 = time.process_time(), time.perf_counter()
            out = run(ids)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        rec = {
            "batch": batch,
            "cpu_s": min(cpu),
            "wall_s": min(wall),
            "warmup_cpu_s": warm_cpu,
            "tok_per_cpu_s": batch * args.length / min(cpu),
        }
        if best is None or rec["tok_per_cpu_s"] > best["tok_per_cpu_s"]:
            best = rec
            if args.out:
                np.save(args.out, out[:1])
    best["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(best))


def _launch(python: str, args, side: str, length: int, batches, ckpt: Path, out: Path):
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        "--family",
        args.family,
        "--side",
        side,
        "--length",
        str(length),
        "--ckpt",
        str(ckpt),
        "--threads",
        str(args.threads),
        "--reps",
        str(args.reps if length < 32768 else 1),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
        "--torch-warmup-length",
        str(args.torch_warmup_length),
        "--batch-list",
        *map(str, batches),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(HERE)]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"rc {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(lengths, cpu):
    """Least-squares slope of log(cpu per sequence) on log(length)."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(cpu, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="hyenadna", choices=sorted(FAMILIES))
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768, 131072])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="timed calls per process (1 from 32k)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--attention-max", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument(
        "--torch-warmup-length",
        type=int,
        default=1 << 30,
        help="torch's untimed warm-up call on the first N tokens only (default: the whole input)",
    )
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    ap.add_argument("--json", type=Path, default=None, help="write all records here")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="reuse this checkpoint (written by the family's write_checkpoint) instead of a new one",
    )
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=["dfm", "torch", "attention"], help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batch-list", type=int, nargs="+", help=argparse.SUPPRESS)
    ap.add_argument(
        "--from-log",
        type=Path,
        nargs="+",
        help="print the table from the JSON lines of earlier runs' saved output",
    )
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.from_log:
        report(records_from_logs(args.from_log))
        return

    fam = family_module(args.family)
    lengths = [n for n in args.lengths if n <= fam.MAX_LENGTH]
    tmp = Path(tempfile.mkdtemp(prefix="bench_long_"))
    ckpt = args.checkpoint or tmp / "ckpt"
    make = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import importlib; "
        f"importlib.import_module({FAMILIES[args.family]!r}).write_checkpoint("
        f"__import__('pathlib').Path({str(ckpt)!r}), {args.seed})"
    )
    if args.checkpoint is None:
        subprocess.run([args.torch_python, "-c", make], check=True)
    print(f"# {fam.NAME}")
    print(f"# reference: {fam.REFERENCE}")
    print(f"# config: {json.dumps(fam.CONFIG)}")
    print(
        f"# machine: {platform.machine()}, {os.cpu_count()} CPUs (shared); torch threads "
        f"{args.threads}, torch.inference_mode; dfm: JAX CPU, nnx.jit; batches {args.batches} "
        f"with batch x length <= {args.max_batch_tokens}; warm-up 1 call; rounds {args.rounds}"
    )
    records = []
    for length in lengths:
        batches = [b for b in args.batches if b * length <= args.max_batch_tokens] or [1]
        sides = ["dfm", "torch"] + (["attention"] if length <= args.attention_max else [])
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            for side in order:
                out = tmp / f"{side}_{length}.npy"
                python = args.torch_python if side == "torch" else sys.executable
                rec = _launch(python, args, side, length, batches, ckpt, out)
                rec.update(side=side, length=length, round=rnd)
                records.append(rec)
                print(json.dumps(rec), flush=True)
            a, b = tmp / f"dfm_{length}.npy", tmp / f"torch_{length}.npy"
            if a.exists() and b.exists():  # same checkpoint, same ids: the pooled vectors
                diff = float(np.max(np.abs(np.load(a) - np.load(b))))
                rec = {"side": "diff", "length": length, "round": rnd, "max_abs_diff": diff}
                records.append(rec)
                print(json.dumps(rec), flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    report(records)


def report(records: list[dict]) -> None:
    """Print the markdown table and the log-log slopes of ``records``."""
    lengths = sorted({r["length"] for r in records})
    print()
    print(
        "| length | side | batch | tokens / CPU-s (median) | min CPU-s / seq | median CPU-s / seq "
        "| wall s / seq (min) | peak RSS MiB (max) | rounds | max abs diff vs torch |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_seq = {}
    for length in lengths:
        diffs = [
            r["max_abs_diff"] for r in records if r["side"] == "diff" and r["length"] == length
        ]
        diff = f"{max(diffs):.2e}" if diffs else ""
        for side in ("dfm", "torch", "attention"):
            recs = [r for r in records if r["side"] == side and r["length"] == length]
            if not recs:
                continue
            ok = [r for r in recs if "error" not in r]
            if not ok:
                print(
                    f"| {length:,} | {side} | | {recs[0]['error'][:80]} | | | | | {len(recs)} | |"
                )
                continue
            cps = [r["cpu_s"] / r["batch"] for r in ok]
            tps = statistics.median(r["tok_per_cpu_s"] for r in ok)
            per_seq[(side, length)] = min(cps)
            print(
                f"| {length:,} | {side} | {ok[0]['batch']} | {tps:,.0f} | {min(cps):.3f} | "
                f"{statistics.median(cps):.3f} | {min(r['wall_s'] / r['batch'] for r in ok):.3f} | "
                f"{max(r['peak_rss_mib'] for r in ok):,.0f} | {len(ok)} of {len(recs)} | "
                f"{diff if side == 'dfm' else ''} |"
            )
    print()
    for side in ("dfm", "torch", "attention"):
        pts = [(n, per_seq[(side, n)]) for n in lengths if n >= 8192 and (side, n) in per_seq]
        if len(pts) >= 2:
            s = slope([p[0] for p in pts], [p[1] for p in pts])
            print(
                f"log-log slope of CPU-s per sequence, {side}, {pts[0][0]:,} -> {pts[-1][0]:,}: {s:.3f}"
            )


def records_from_logs(paths) -> list[dict]:
    """The JSON records printed by earlier runs (their stdout saved to ``paths``)."""
    out = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


if __name__ == "__main__":
    main()
