"""Time to the first embedding: a fresh process, from start to 1,000 embedded cells.

A Geneformer-V1-sized checkpoint (6 layers x 256, 4 heads, intermediate 512, 2,048
positions; random weights, built with ``transformers``) embeds real PBMC cells in a
fresh process. Each run is the whole process: interpreter start, imports, reading the
data, loading the checkpoint and embedding every cell once.

* ``dfm cold``: ``dfm.tl.embed_checkpoint`` with an empty compilation cache (every
  bucket shape compiles);
* ``dfm warm``: the same, with the persistent compilation cache the cold run filled
  (``~/.cache/diffbio_sc/jax`` by default; here a folder of this run);
* ``torch``: ``transformers`` on torch CPU in its own environment, given its best
  settings for these cells (batch 64 from a sweep, batches sorted by length and padded
  to their longest, ``torch.inference_mode``), its encoder cut to the pooled layer (the
  second-to-last: no layer after it is computed), mean pooling; once per thread count
  of ``--torch-threads`` (default 1 and 2: on a loaded machine 1 thread costs torch
  less CPU time); the ratio is taken against the best of them. It reads the token ids
  dfm made, so its time excludes tokenization. No warm-up: its first batch is part of
  the time to the first embedding, as dfm's compilation is.

With ``--dfm-one-core``, each round also runs ``dfm warm, 1 core``: the warm process
confined to one CPU (its affinity, as ``taskset -c``), so that XLA's CPU client starts
one intra-op thread instead of one per core and runs each program on the calling
thread (the comparison for the question whether XLA's second thread spends CPU time
waiting for work; torch's best is also 1 thread).

The sides alternate over ``--rounds`` rounds (the load average is printed); each
run's CPU time (user + system of the process and its threads), wall time, minor
page faults and peak resident memory are printed, then min and median.

    python benchmarks/bench_first_embedding.py [--n-cells 1000] [--rounds 3] [--torch-batch 64]
        [--torch-threads 1,2] [--layout auto|rows|slots] [--dfm-one-core]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_checkpoints import CONFIGS, DATA, build_checkpoint, prepare  # noqa: E402

DFM_FIRST = textwrap.dedent(
    """
    import json, resource, sys
    import anndata as ad
    import diffbio_sc as dfm
    dfm.settings.progress_bar = False
    ckpt, h5ad, layout = sys.argv[1], sys.argv[2], sys.argv[3]
    if layout != "auto":  # force the packing mode's layout for this job
        from diffbio_sc.models import _runner
        _runner.SLOT_MIN_ITEMS = 0 if layout == "slots" else 1 << 62
        _runner.SLOT_WORK_RATIO = 1e9 if layout == "slots" else _runner.SLOT_WORK_RATIO
    adata = ad.read_h5ad(h5ad)
    dfm.tl.embed_checkpoint(adata, ckpt, key_added="X_first")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": int(adata.obsm["X_first"].shape[0]), "rss": rss}))
    """
)

TORCH_FIRST = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np, torch
    from transformers import BertForMaskedLM
    ckpt, tokens, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    z = np.load(tokens)
    ids, lengths = z["ids"], z["lengths"]
    model = BertForMaskedLM.from_pretrained(ckpt).eval()
    layer = model.config.num_hidden_layers - 1
    model.bert.encoder.layer = model.bert.encoder.layer[:layer]  # no layer after the one pooled
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(ids), model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for s in range(0, len(ids), batch):
            idx = order[s : s + batch]
            L = int(lengths[idx].max())
            x = torch.from_numpy(ids[idx, :L].astype(np.int64))
            n = torch.from_numpy(lengths[idx])
            mask = (torch.arange(L)[None] < n[:, None]).long()
            h = model.bert(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            out[idx] = ((h * mask[..., None]).sum(1) / n[:, None].clamp(min=1)).numpy()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(out), "threads": torch.get_num_threads(), "torch": torch.__version__, "rss": rss}))
    """
)


def _timed(cmd: list[str], env: dict, *, one_core: bool = False) -> dict:
    """Run a fresh process; its wall time and CPU time (user + system, threads included).

    ``one_core``: the process runs on one CPU, its lowest allowed one (``taskset -c``;
    set by ``taskset`` rather than in the forked child, which must not run Python code
    in a process that has started JAX's threads).
    """
    if one_core:
        if shutil.which("taskset") is None:
            raise SystemExit("--dfm-one-core needs the 'taskset' command (util-linux)")
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sys_s = after.ru_stime - before.ru_stime
    faults = after.ru_minflt - before.ru_minflt
    return {
        "wall": wall,
        "cpu": cpu,
        "sys": sys_s,
        "minflt": faults,
        **json.loads(proc.stdout.strip().splitlines()[-1]),
    }


def _span(values, fmt: str) -> str:
    """``min-max`` of ``values`` formatted with ``fmt``."""
    values = list(values)
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="pbmc_3batch_symphony")
    ap.add_argument("--n-cells", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-batch", type=int, default=64)
    ap.add_argument(
        "--torch-threads",
        default="1,2",
        help="torch thread counts, each run every round; the ratio uses the best (lowest "
        "median CPU) of them",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--layout",
        choices=("auto", "rows", "slots"),
        default="auto",
        help="dfm's packing layout: auto (the package's job-size rule), rows (one shape) or "
        "slots (attention over each cell's own keys)",
    )
    ap.add_argument(
        "--malloc-tuning",
        choices=("off", "on"),
        default="off",
        help="dfm.settings.malloc_tuning in the dfm processes (DFM_MALLOC_TUNING); 'off' is "
        "the package default",
    )
    ap.add_argument(
        "--dfm-one-core",
        action="store_true",
        help="also run the warm dfm process on one CPU (affinity), each round: XLA's CPU "
        "client then starts one intra-op thread",
    )
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    args = ap.parse_args()
    if not Path(args.torch_python).exists():
        raise SystemExit(f"no torch environment at {args.torch_python} (--torch-python)")
    threads = [int(t) for t in args.torch_threads.split(",")]

    cfg = dict(CONFIGS["V1-size (6x256, 2,048)"])
    cfg.pop("v2")
    torch_names = [f"torch, {t} thread{'s' if t > 1 else ''}" for t in threads]
    results: dict[str, list[dict]] = {
        "dfm cold": [],
        "dfm warm": [],
        **({"dfm warm, 1 core": []} if args.dfm_one_core else {}),
        **{k: [] for k in torch_names},
    }
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sub, medians, h5ad = prepare(args.dataset, args.n_cells, args.seed, tmp)
        ckpt = tmp / "ckpt"
        ids, lengths = build_checkpoint(args.torch_python, ckpt, cfg, sub, medians, v2=False)
        np.savez(tmp / "tokens.npz", ids=ids, lengths=lengths)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION")}
        dfm_env = {**base_env, "DFM_MALLOC_TUNING": "1" if args.malloc_tuning == "on" else "0"}
        print(f"dfm: malloc_tuning {args.malloc_tuning}, layout {args.layout}")
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            env = {**dfm_env, "DFM_CACHE_DIR": str(tmp / f"cache{r}")}
            dfm_cmd = [sys.executable, "-c", DFM_FIRST, str(ckpt), str(h5ad), args.layout]
            results["dfm cold"].append(_timed(dfm_cmd, env))
            for name, t in zip(torch_names, threads, strict=True):
                cmd = [args.torch_python, "-c", TORCH_FIRST, str(ckpt), str(tmp / "tokens.npz")]
                results[name].append(_timed([*cmd, str(args.torch_batch), str(t)], base_env))
            results["dfm warm"].append(_timed(dfm_cmd, env))
            if args.dfm_one_core:
                results["dfm warm, 1 core"].append(_timed(dfm_cmd, env, one_core=True))
            loads.append(os.getloadavg()[0])
            print(
                f"round {r}: "
                + ", ".join(
                    f"{k} {v[-1]['cpu']:.1f} CPU-s ({v[-1]['sys']:.1f} sys, "
                    f"{v[-1]['minflt'] / 1e6:.2f}M faults, {v[-1]['rss']:,.0f} MiB) "
                    f"/ {v[-1]['wall']:.1f} s"
                    for k, v in results.items()
                )
                + f"; load average {loads[-2]:.1f} -> {loads[-1]:.1f}",
                flush=True,
            )
    torch_info = results[torch_names[0]][0]
    print(
        f"\nCommand: python benchmarks/bench_first_embedding.py --n-cells {args.n_cells} "
        f"--rounds {args.rounds} --torch-batch {args.torch_batch} --torch-threads "
        f"{args.torch_threads} --layout {args.layout}"
        f"{' --dfm-one-core' if args.dfm_one_core else ''}; {time.strftime('%Y-%m-%d %H:%M')}; "
        "load average "
        f"{min(loads):.1f}-{max(loads):.1f}; {args.n_cells} {args.dataset} cells, median "
        f"{int(np.median(lengths))} tokens (max {lengths.max()}); Geneformer V1 size "
        "(6 x 256, 4 heads, 2,048 positions), second-to-last layer, mean pooling\n"
    )
    print(
        "| process start -> first embedding | settings | CPU-s min | CPU-s median "
        "| wall s min | wall s median | system CPU-s | minor page faults | peak RSS MiB "
        "| CPU vs best torch (median) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    settings = {
        "dfm cold": "embed_checkpoint defaults, empty compilation cache",
        "dfm warm": "same, compilation cache filled by the cold run",
        "dfm warm, 1 core": "same, the process confined to one CPU (1 XLA intra-op thread)",
    }
    for name, t in zip(torch_names, threads, strict=True):
        settings[name] = (
            f"transformers on torch {torch_info['torch']}, {t} thread(s), batch "
            f"{args.torch_batch} sorted by length, inference_mode, encoder cut to the pooled "
            "layer; tokens given"
        )
    t_med = min(statistics.median(x["cpu"] for x in results[k]) for k in torch_names)
    for name, runs in results.items():
        cpu = [x["cpu"] for x in runs]
        wall = [x["wall"] for x in runs]
        print(
            f"| {name} | {settings[name]} | {min(cpu):.1f} | {statistics.median(cpu):.1f} "
            f"| {min(wall):.1f} | {statistics.median(wall):.1f} "
            f"| {_span((x['sys'] for x in runs), '.1f')} "
            f"| {_span((x['minflt'] / 1e6 for x in runs), '.2f')} M "
            f"| {_span((x['rss'] for x in runs), ',.0f')} "
            f"| {statistics.median(cpu) / t_med:.2f} |"
        )
    _ = DATA


if __name__ == "__main__":
    main()
