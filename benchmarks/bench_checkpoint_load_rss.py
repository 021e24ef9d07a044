"""Peak resident memory of loading a DNA checkpoint (random NT-v1-layout weights).

Writes a random Nucleotide Transformer v1 checkpoint (ESM layout, float32
safetensors, the NT v1 test fixture's vocabulary) of the chosen size to a
temporary folder, then loads it with ``dfm.models.load_checkpoint`` in a fresh
process and prints the weights' size and that process's peak RSS
(``ru_maxrss``), before and after the load.

Usage::

    python benchmarks/bench_checkpoint_load_rss.py --layers 12 --hidden 1024
    # NT-v1-500M: --layers 24 --hidden 1280 (about 1.9 GiB of float32 weights)
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
import resource, sys, time
import diffbio_sc as dfm
import jax
jax.numpy.zeros(1).block_until_ready()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.process_time()
m = dfm.models.load_checkpoint(sys.argv[1])
cpu = time.process_time() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak, cpu)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--write-to", help=argparse.SUPPRESS)  # the writer's own process
    args = ap.parse_args()
    if args.write_to:
        print(write_checkpoint(Path(args.write_to), args.layers, args.hidden))
        return
    # the writer runs in its own process: a child inherits its parent's peak RSS
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp) / "nt_random"
        nbytes = int(
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--layers",
                    str(args.layers),
                    "--hidden",
                    str(args.hidden),
                    "--write-to",
                    str(ck),
                ],  # fmt: skip
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ck)], capture_output=True, text=True, check=True
        ).stdout.split()
    base, peak, cpu = int(out[0]) / 2**20, int(out[1]) / 2**20, float(out[2])  # KiB -> GiB
    w = nbytes / 2**30
    print(
        f"weights {w:.2f} GiB ({args.layers} layers, hidden {args.hidden}); peak RSS before "
        f"load {base:.2f} GiB, after {peak:.2f} GiB; load added {peak - base:.2f} GiB "
        f"= {(peak - base) / w:.2f} x weights; load CPU {cpu:.1f} s"
    )


if __name__ == "__main__":
    main()
