"""Peak resident memory of loading a DNA checkpoint (random NT-v1-layout weights).

Writes a random Nucleotide Transformer v1 checkpoint (ESM layout, float32
safetensors, the NT v1 test fixture's vocabulary) of the chosen size to a
temporary folder, then loads it with ``dfm.models.load_checkpoint`` in a fresh
process and prints the weights' size and that process's peak RSS
(``ru_maxrss``), before and after the load.

Usage::

    python benchmarks/bench_checkpoint_load_rss.py --layers 12 --hidden 1024
    # NT-v1-500M: --layers 24 --hidden 1280 (about 1.9 GiB of float32 weights)
    python benchmarks/bench_checkpoint_load_rss.py --layers 24 --hidden 1280 --forward 2
    python benchmarks/bench_checkpoint_load_rss.py --ckpt /tmp/dfm_genbench/generator_x1 --forward 2

The load is timed until the (asynchronous) host-to-device copies have finished.
``--forward N`` then embeds 8 random sequences N times with the loaded model's
``embed`` (compiled forward, batches of 4) and reports the peak over the whole
process; ``--ckpt`` measures an existing checkpoint of any DNA family.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FIX = Path(__file__).parents[1] / "tests" / "checkpoints" / "fixtures" / "nucleotide_transformer_v1"

_CHILD = """
import json, resource, sys, time
import numpy as np
import jax
from flax import nnx
import diffbio_sc as dfm

jax.numpy.zeros(1).block_until_ready()
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = peak()
t = time.process_time()
m = dfm.models.load_checkpoint(sys.argv[1])
jax.block_until_ready(jax.tree.leaves(nnx.state(m.module)))  # the copies are asynchronous
cpu = time.process_time() - t
loaded = peak()
rng = np.random.default_rng(0)
seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (300, 300, 240, 120, 60, 60, 300, 180)]
t = time.process_time()
for _ in range(int(sys.argv[2])):
    m.embed(seqs, batch_size=4)
fwd_cpu = time.process_time() - t
print(json.dumps({"base": base, "loaded": loaded, "forward": peak(), "cpu": cpu, "fwd_cpu": fwd_cpu}))
"""


def write_checkpoint(path: Path, layers: int, hidden: int, seed: int = 0) -> int:
    """Random NT v1 checkpoint at ``path``; returns the bytes of its weights."""
    import safetensors.numpy

    rng = np.random.default_rng(seed)
    cfg = json.loads((FIX / "config.json").read_text())
    inter, n_pos = 4 * hidden, 1002
    cfg.update(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=n_pos,
    )
    path.mkdir(parents=True)
    for f in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(FIX / f, path / f)
    (path / "config.json").write_text(json.dumps(cfg))
    v = cfg["vocab_size"]

    def r(*shape):
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    w = {
        "esm.embeddings.word_embeddings.weight": r(v, hidden),
        "esm.embeddings.position_embeddings.weight": r(n_pos, hidden),
        "esm.encoder.emb_layer_norm_after.weight": np.ones(hidden, np.float32),
        "esm.encoder.emb_layer_norm_after.bias": np.zeros(hidden, np.float32),
    }
    for i in range(layers):
        p = f"esm.encoder.layer.{i}."
        for ln in ("LayerNorm", "attention.LayerNorm"):
            w[p + ln + ".gamma"] = np.ones(hidden, np.float32)
            w[p + ln + ".beta"] = np.zeros(hidden, np.float32)
        for lin in ("attention.self.query", "attention.self.key", "attention.self.value",
                    "attention.output.dense"):  # fmt: skip
            w[p + lin + ".weight"], w[p + lin + ".bias"] = r(hidden, hidden), r(hidden)
        w[p + "intermediate.dense.weight"] = r(inter, hidden)
        w[p + "intermediate.dense.bias"] = r(inter)
        w[p + "output.dense.weight"] = r(hidden, inter)
        w[p + "output.dense.bias"] = r(hidden)
    safetensors.numpy.save_file(w, str(path / "model.safetensors"))
    return sum(a.nbytes for a in w.values())


def _weights_bytes(path: Path) -> int:
    """Bytes of the tensors in ``path``/model.safetensors (from its header)."""
    with open(path / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(
        e - s for k, v in header.items() if k != "__metadata__" for s, e in [v["data_offsets"]]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument(
        "--ckpt", type=Path, help="measure this existing checkpoint instead of a random NT v1 one"
    )
    ap.add_argument(
        "--forward",
        type=int,
        default=0,
        help="then embed 8 random sequences (60-300 bp, batches of 4) this many times",
    )
    ap.add_argument("--write-to", help=argparse.SUPPRESS)  # the writer's own process
    args = ap.parse_args()
    if args.write_to:
        print(write_checkpoint(Path(args.write_to), args.layers, args.hidden))
        return
    child = [sys.executable, "-c", _CHILD]
    with tempfile.TemporaryDirectory() as tmp:
        if args.ckpt is not None:
            ck, what = args.ckpt, str(args.ckpt)
            nbytes = _weights_bytes(ck)
        else:
            # the writer runs in its own process: a child inherits its parent's peak RSS
            ck, what = Path(tmp) / "nt_random", f"{args.layers} layers, hidden {args.hidden}"
            writer = [sys.executable, __file__, "--layers", str(args.layers)]
            writer += ["--hidden", str(args.hidden), "--write-to", str(ck)]
            done = subprocess.run(writer, capture_output=True, text=True, check=True)
            nbytes = int(done.stdout.split()[-1])
        proc = subprocess.run(
            child + [str(ck), str(args.forward)], capture_output=True, text=True, check=True
        )
    out = json.loads(proc.stdout.splitlines()[-1])
    base, loaded, fwd = (out[k] / 2**20 for k in ("base", "loaded", "forward"))  # KiB -> GiB
    w = nbytes / 2**30
    line = (
        f"weights {w:.2f} GiB ({what}); peak RSS before load {base:.2f} GiB, after {loaded:.2f} "
        f"GiB; load added {loaded - base:.2f} GiB = {(loaded - base) / w:.2f} x weights; "
        f"load CPU {out['cpu']:.1f} s"
    )
    if args.forward:
        line += (
            f"; after {args.forward} x embed: peak {fwd:.2f} GiB = {(fwd - base) / w:.2f} x weights "
            f"over the base (CPU {out['fwd_cpu']:.1f} s)"
        )
    print(line)


if __name__ == "__main__":
    main()
