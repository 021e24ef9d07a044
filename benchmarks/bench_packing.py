"""Model-level Geneformer embedding, CPU: dfm packed rows vs dfm buckets vs tuned torch.

Follows the fairness rule at the top of ``docs/benchmarks.md``:

* the same random-weight ``BertForMaskedLM`` checkpoint (built with
  transformers, loaded by dfm), the same tokens (real cells tokenized once by
  ``dfm.pp.tokenize``), the same output: the mean over each cell's tokens of
  hidden state ``k = num_hidden_layers - 1`` (the extractor's second-to-last
  layer); torch's encoder is cut to its first ``k`` layers (it computes no
  extra layer), dfm runs ``k`` layers;
* torch gets its best batch size from a sweep (``--torch-batches``), cells
  sorted by length, batches padded to their longest cell,
  ``torch.inference_mode()``, its default thread count, one untimed warm-up
  batch; dfm gets one untimed warm-up pass (compilation);
* every side runs in a fresh process per round; the sides alternate over
  ``--rounds`` rounds; cells per CPU-second (process time: all threads) and peak
  RSS are reported as min and median, with both sides' settings.

dfm sides:

* ``packed``: :func:`diffbio_sc.models._packing.plan_packing` packs the cells into
  rows of ``width`` tokens (the longest cell rounded up to 64), several cells
  per row with a block-diagonal attention mask, ``rows`` rows per call (about
  ``--max-batch-tokens`` tokens, one compiled shape);
* ``bucketed``: the same model on cells sorted by length, in batches of about
  ``--max-batch-tokens`` tokens padded to their longest cell rounded up to 64
  (model level, like the runner's length buckets).

    python benchmarks/bench_packing.py --dataset pbmc_3batch_symphony --n-cells 64 --size V1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_checkpoints import CONFIGS, build_checkpoint, prepare  # noqa: E402

SIZES = {  # the checkpoints of bench_checkpoints, all on V1-style tokens (no <cls>/<eos>)
    "V1": {k: v for k, v in CONFIGS["V1-size (6x256, 2,048)"].items() if k != "v2"},
    "V2-104M": {
        k: v for k, v in CONFIGS["V2-104M size (12x768, 12 heads, 4,096)"].items() if k != "v2"
    },
}

TORCH_RUN = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, torch
    from transformers import BertForMaskedLM
    ckpt, tokens, batch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    z = np.load(tokens)
    ids, lengths = z["ids"], z["lengths"]
    model = BertForMaskedLM.from_pretrained(ckpt).eval()
    k = model.config.num_hidden_layers - 1
    model.bert.encoder.layer = model.bert.encoder.layer[:k]  # compute no layer after k
    order = np.argsort(-lengths, kind="stable")
    emb = np.zeros((len(ids), model.config.hidden_size), np.float32)
    def run(idx):
        L = int(lengths[idx].max())
        x = torch.from_numpy(ids[idx, :L].astype(np.int64))
        n = torch.from_numpy(lengths[idx])
        mask = (torch.arange(L)[None] < n[:, None]).long()
        h = model.bert(input_ids=x, attention_mask=mask).last_hidden_state
        return ((h * mask[..., None]).sum(1) / n[:, None].clamp(min=1)).numpy()
    with torch.inference_mode():
        run(order[:batch])  # warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        for s in range(0, len(ids), batch):
            idx = order[s : s + batch]
            emb[idx] = run(idx)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    np.save(out, emb)
    print(json.dumps({"cpu": cpu, "wall": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "settings": f"torch {torch.__version__}, batch {batch}, sorted, inference_mode, "
                                  f"{torch.get_num_threads()} threads, layers cut to {k}"}))
    """
)

DFM_HEAD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, jax
    from flax import nnx
    import diffbio_sc as dfm
    from diffbio_sc.models._packing import plan_packing, pack_tokens
    ckpt, tokens, budget, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    z = np.load(tokens)
    ids, lengths = z["ids"], z["lengths"]
    module = dfm.models.load_checkpoint(ckpt).module
    k = module.config.num_hidden_layers - 1
    pad = module.config.pad_token_id
    graph, params = nnx.split(module)
    """
)

# Run ``run()`` once untimed (compilation), then timed; ``settings`` is set by the body.
DFM_TAIL = textwrap.dedent(
    """
    run()
    c0, t0 = time.process_time(), time.perf_counter()
    emb = run()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    np.save(out, emb)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cpu": cpu, "wall": wall, "peak_mb": peak, "settings": settings}))
    """
)

DFM_PACKED = (
    DFM_HEAD
    + textwrap.dedent(
        """
    width = int(-(-lengths.max() // 64) * 64)
    rows = max(1, budget // width)
    SEGMENTS = 32  # cells per row at most
    plan = plan_packing(lengths, width, max_segments=SEGMENTS)

    @jax.jit
    def embed(params, x, seg, pos):
        m = nnx.merge(graph, params)
        states = m.packed_states(x, seg, pos, n_layers=k)[k]
        return m.pool_packed(x, seg, states, n_cells=x.shape[0] * SEGMENTS)

    def run():
        plan = plan_packing(lengths, width, max_segments=SEGMENTS)
        x, seg, pos = pack_tokens(ids, plan, pad_id=pad)
        emb = np.zeros((len(ids), module.config.hidden_size), np.float32)
        for s in range(0, plan.n_rows, rows):
            xs, ss, ps = (a[s : s + rows] for a in (x, seg, pos))
            if len(xs) < rows:  # one shape: fill the last call with empty rows
                fill = ((0, rows - len(xs)), (0, 0))
                xs, ss, ps = np.pad(xs, fill, constant_values=pad), np.pad(ss, fill), np.pad(ps, fill)
            cells = np.unique(ss[ss > 0]) - 1
            local = np.zeros_like(ss)  # segment ids local to the call: 1..n
            local[ss > 0] = np.searchsorted(cells, ss[ss > 0] - 1) + 1
            e = np.asarray(embed(params, xs, local, ps))
            emb[cells] = e[: len(cells)]
        return emb

    settings = (f"packed rows of {width} tokens x {rows} per call, fill {plan.fill:.2f}, "
                f"{plan.n_rows} rows, {k} layers, jax {jax.__version__}")
    """
    )
    + DFM_TAIL
)

DFM_BUCKETED = (
    DFM_HEAD
    + textwrap.dedent(
        """
    @jax.jit
    def embed(params, x):
        m = nnx.merge(graph, params)
        return m.pool(x, m.layer_states(x, k))

    order = np.argsort(-lengths, kind="stable")

    def run():  # sorted by length, batches padded to their longest cell rounded up to 64
        emb = np.zeros((len(ids), module.config.hidden_size), np.float32)
        s = 0
        while s < len(ids):
            L = int(-(-lengths[order[s]] // 64) * 64)
            b = max(1, budget // L)
            idx = order[s : s + b]
            x = ids[idx, :L]
            if len(idx) < b:
                x = np.pad(x, ((0, b - len(idx)), (0, 0)), constant_values=pad)
            emb[idx] = np.asarray(embed(params, x))[: len(idx)]
            s += b
        return emb

    settings = f"length-sorted batches of ~{budget} tokens, widths rounded up to 64, {k} layers"
    """
    )
    + DFM_TAIL
)


def _run(python: str, code: str, *args) -> dict:
    env = dict(os.environ)
    proc = subprocess.run(
        [python, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="pbmc_3batch_symphony")
    ap.add_argument("--n-cells", type=int, default=64)
    ap.add_argument("--size", choices=list(SIZES), default="V1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-batches", default="8,16,32,64")
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument(
        "--min-tokens", type=int, default=1, help="keep cells with at least this many tokens"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sub, medians, _ = prepare(args.dataset, args.n_cells, args.seed, tmp)
        ckpt = tmp / "ckpt"
        ids, lengths = build_checkpoint(
            args.torch_python, ckpt, SIZES[args.size], sub, medians, v2=False
        )
        keep = lengths >= args.min_tokens
        ids, lengths = ids[keep], lengths[keep]
        tokens = tmp / "tokens.npz"
        np.savez(tokens, ids=ids, lengths=lengths)
        print(
            f"{args.dataset}: {len(lengths)} cells, tokens per cell min/median/max "
            f"{lengths.min()}/{int(np.median(lengths))}/{lengths.max()}; size {args.size}",
            flush=True,
        )
        sweep = {}
        for b in map(int, args.torch_batches.split(",")):
            r = _run(args.torch_python, TORCH_RUN, ckpt, tokens, b, tmp / "t.npy")
            sweep[b] = r["cpu"]
            print(f"torch sweep: batch {b}: {len(ids) / r['cpu']:.2f} cells/CPU-s", flush=True)
        best = min(sweep, key=sweep.get)
        sides = {
            "torch": (args.torch_python, TORCH_RUN, best),
            "dfm packed": (py, DFM_PACKED, args.max_batch_tokens),
            "dfm bucketed": (py, DFM_BUCKETED, args.max_batch_tokens),
        }
        res: dict[str, list] = {s: [] for s in sides}
        for rnd in range(args.rounds):
            names = list(sides) if rnd % 2 == 0 else list(sides)[::-1]  # alternate the order
            for name in names:
                python, code, arg = sides[name]
                r = _run(python, code, ckpt, tokens, arg, tmp / f"{name.replace(' ', '_')}.npy")
                res[name].append(r)
                print(f"round {rnd}: {name}: {len(ids) / r['cpu']:.2f} cells/CPU-s", flush=True)
        ref = np.load(tmp / "torch.npy")
        print(
            "\n| side | cells/CPU-s min | median | peak RSS MiB (max) | max abs diff vs torch | settings |"
        )
        print("|---|---|---|---|---|---|")
        med = {}
        for name, rs in res.items():
            rate = np.array([len(ids) / r["cpu"] for r in rs])
            med[name] = float(np.median(rate))
            diff = float(np.abs(np.load(tmp / f"{name.replace(' ', '_')}.npy") - ref).max())
            print(
                f"| {name} | {rate.min():.2f} | {np.median(rate):.2f} | "
                f"{max(r['peak_mb'] for r in rs):.0f} | {diff:.1e} | {rs[-1]['settings']} |"
            )
        for name in ("dfm packed", "dfm bucketed"):
            ratios = [
                (len(ids) / a["cpu"]) / (len(ids) / t["cpu"])
                for a, t in zip(res[name], res["torch"], strict=True)
            ]
            print(
                f"{name} / torch (per round): min {min(ratios):.2f}, median {np.median(ratios):.2f}"
            )


if __name__ == "__main__":
    main()
