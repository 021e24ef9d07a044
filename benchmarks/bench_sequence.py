"""Speed, memory and quality of the sequence encoder on this machine.

1. Throughput at 512 bp with the default encoder (hidden 256, 4 layers, 4 heads,
   intermediate 1024): embedding sequences/s (jit, fixed batch, after a warm-up
   call) for single-nucleotide and Nucleotide-Transformer 6-mer tokens, and
   masked-language pretraining sequences/s (one jit-compiled AdamW step of the
   shared trainer's kind: forward + backward + update), with the analytic FLOPs
   per sequence and the fraction of this machine's matmul peak they reach (the
   peak measured in the same run with a large ``jnp.dot``). Peak RSS after each
   phase.
2. Quality: ``dfm.tl.genomics_tasks`` (fine-tuned encoder, frozen probe, k-mer and
   positional one-hot baselines) on the real tasks.

    python benchmarks/bench_sequence.py [--speed] [--tasks splice_junctions ...]
        [--n-seqs 64] [--finetune-epochs 30] [--pretrain-epochs 5] [--out results.json]
        [--tokenizer char|kmer|nt6] [--k 6] [--rc average|equivariant] [--lr 2e-3]
        [--finetune-seeds 3] [--seed 0]

``--finetune-seeds`` defaults to 3: a seed ensemble (row ``fine_tuned_ensemble``) beside
the single model (``fine_tuned``, seed 0); it had the lower validation loss on all three
tasks (docs/benchmarks.md, round 3). ``--finetune-seeds 1`` is a third of the cost.

Prints markdown tables. Uses whatever JAX sees (CPU here; a GPU if present).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoder_flops(cfg, n_tokens: int) -> float:
    """Analytic forward FLOPs of one sequence (multiply-add = 2 FLOPs; matmuls only)."""
    h, f, t = cfg.hidden_dim, cfg.intermediate_dim, n_tokens + int(cfg.use_cls)
    per_layer = 2 * t * h * 3 * h + 2 * 2 * t * t * h + 2 * t * h * h + 2 * 2 * t * h * f
    inp = 2 * t * 4 * h if cfg.tokenizer == "char" else 0
    return float(cfg.num_layers * per_layer + inp)


def matmul_peak(n: int = 4096, reps: int = 5) -> float:
    """FLOP/s of a float32 ``n x n`` ``jnp.dot`` (best of ``reps``)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _random_seqs(n: int, length: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", np.uint8)
    return [letters[rng.integers(0, 4, length)].tobytes().decode() for _ in range(n)]


def bench_embed(tokenizer: str, n_seqs: int, batch: int, peak: float) -> dict:
    import jax

    from diffbio_sc.models import create_dna_encoder
    from diffbio_sc.tl._sequence._common import sequence_embedder

    model = create_dna_encoder(tokenizer=tokenizer)
    seqs = _random_seqs(n_seqs, 512)
    runner = sequence_embedder(model, reverse_complement=None, batch_size=batch)
    counts = runner.counts(seqs)
    runner(seqs[:batch], counts[:batch])  # compile
    t = time.perf_counter()
    out = runner(seqs, counts)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t
    width = int(counts.max())
    flops = encoder_flops(model.config, width) * n_seqs
    return {
        "phase": f"embed ({tokenizer})",
        "tokens": width,
        "seqs_per_s": n_seqs / dt,
        "gflop_per_s": flops / dt / 1e9,
        "fraction_of_peak": flops / dt / peak,
        "peak_rss_mb": _peak_mb(),
    }


def bench_pretrain(tokenizer: str, batch: int, steps: int, peak: float) -> dict:
    import jax
    import optax
    from flax import nnx

    from diffbio_sc.models import create_dna_encoder

    model = create_dna_encoder(tokenizer=tokenizer)
    model.train()
    tok = model.config.get_tokenizer()
    ids, valid = tok.encode(_random_seqs(batch, 512, seed=1))
    opt = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, ids, valid, key):
        def loss_fn(m):
            return m.loss(ids, valid, key=key)[0]

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    key = jax.random.key(0)
    step(model, opt, ids, valid, key).block_until_ready()  # compile
    t = time.perf_counter()
    for i in range(steps):
        loss = step(model, opt, ids, valid, jax.random.fold_in(key, i))
    loss.block_until_ready()
    dt = time.perf_counter() - t
    flops = 3 * encoder_flops(model.config, ids.shape[1]) * batch * steps  # fwd + 2x bwd
    return {
        "phase": f"pretrain ({tokenizer})",
        "tokens": int(ids.shape[1]),
        "seqs_per_s": batch * steps / dt,
        "gflop_per_s": flops / dt / 1e9,
        "fraction_of_peak": flops / dt / peak,
        "peak_rss_mb": _peak_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speed", action="store_true", help="run the throughput part")
    ap.add_argument("--tasks", nargs="*", default=[], help="genomics tasks to score")
    ap.add_argument("--n-seqs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument(
        "--finetune-seeds",
        type=int,
        default=3,
        help="fine-tuned models; >1 also scores their seed ensemble (1: single model only)",
    )
    ap.add_argument("--max-per-class", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="split, training and probe seed")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--tokenizer", default="char", choices=("char", "kmer", "nt6"))
    ap.add_argument("--k", type=int, default=6, help="k-mer size with --tokenizer kmer")
    ap.add_argument(
        "--rc", default=None, choices=("average", "equivariant"), help="reverse-complement mode"
    )
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import jax

    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s), jax {jax.__version__}",
    }
    if args.speed:
        peak = matmul_peak()
        results["matmul_peak_gflop_per_s"] = peak / 1e9
        rows = []
        for tok in ("char", "nt6"):
            rows.append(bench_embed(tok, args.n_seqs, args.batch, peak))
            print(rows[-1], flush=True)
        for tok in ("char", "nt6"):
            rows.append(bench_pretrain(tok, args.batch, args.steps, peak))
            print(rows[-1], flush=True)
        results["speed"] = rows
        print(f"\nmatmul peak: {peak / 1e9:.1f} GFLOP/s\n")
        print("| phase | tokens | seqs/s | GFLOP/s | fraction of matmul peak | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['phase']} | {r['tokens']} | {r['seqs_per_s']:.1f} | "
                f"{r['gflop_per_s']:.1f} | {r['fraction_of_peak']:.2f} | {r['peak_rss_mb']:.0f} |"
            )
    if args.tasks:
        from diffbio_sc.models import SequenceEncoderConfig
        from diffbio_sc.tl import genomics_tasks

        config = SequenceEncoderConfig(
            hidden_dim=args.hidden,
            num_layers=args.layers,
            num_heads=4,
            intermediate_dim=4 * args.hidden,
            max_length=256,
            pooling=args.pooling,
            use_cls=args.pooling == "cls",
            tokenizer=args.tokenizer,
            k=args.k,
            reverse_complement=args.rc,
            dropout=args.dropout,
        )
        results["config"] = config.to_dict()
        t = time.perf_counter()
        cpu0 = time.process_time()
        df = genomics_tasks(
            args.tasks,
            config=config,
            learning_rate=args.lr,
            finetune_epochs=args.finetune_epochs,
            pretrain_epochs=args.pretrain_epochs,
            max_per_class=args.max_per_class,
            finetune_seeds=args.finetune_seeds,
            seed=args.seed,
            progress_bar=False,
        )
        results["tasks_wall_s"] = time.perf_counter() - t
        results["tasks_cpu_s"] = time.process_time() - cpu0
        results["scores"] = df.to_dict(orient="list")
        rep = df.attrs["report"]["tasks"]
        keys = ("n_train", "n_test", "n_identical_grouped", "timings_s", "fine_tuning")
        keys += ("fine_tuning_members", "fine_tuned_ensemble")
        results["task_info"] = {k: {kk: v.get(kk) for kk in keys} for k, v in rep.items()}
        flat = df.copy()
        flat.attrs = {}  # the report holds arrays, which pandas cannot compare when printing
        print(flat.pivot_table(index="metric", columns="embedding", values="value").round(3))
        print(json.dumps(results["task_info"], indent=1, default=float))
        for task, info in results["task_info"].items():  # the figures recipes are chosen by
            runs = info["fine_tuning_members"] or [info["fine_tuning"] or {}]
            for m in runs:
                if m:
                    print(f"{task} validation, seed {m['seed']}: {m['validation_scores']}")
            if info["fine_tuned_ensemble"]:
                ens = info["fine_tuned_ensemble"]["validation_scores"]
                print(f"{task} validation, ensemble: {ens}")
        print(f"wall {results['tasks_wall_s']:.0f} s, process CPU {results['tasks_cpu_s']:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
