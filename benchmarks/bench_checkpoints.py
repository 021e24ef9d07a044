"""Geneformer-sized checkpoints: dfm (JAX, length buckets) vs transformers on torch, CPU.

Two random-weight ``BertForMaskedLM`` checkpoints are built with transformers
(saved as safetensors): a Geneformer-V1-sized model (6 layers x 256, 4 heads,
relu, 2,048 positions) and one of the size of the published V2-104M model (12
layers x 768, 12 heads, intermediate 3,072, gelu, 4,096 positions,
``<cls>``/``<eos>``). Real cells from ``../shared/data/singlecell``
are tokenized once with ``dfm.pp.tokenize`` (a token dictionary over the data's
genes, medians from ``dfm.pp.gene_medians``), and the same tokens are embedded by

* ``dfm.tl.embed_checkpoint`` with packed rows (``packing=True``, what the
  default picks when cells are much shorter than the context), with length
  bucketing only (``packing=False``) and without either (every cell padded to
  the model's input size; skipped with ``--full-cells 0``), each in a fresh process,
  reporting the first call (compilation included) and a second, warm call;
* transformers on torch (``torch.inference_mode``, float32, its default
  threads), in a fresh process of a separate environment that has torch, after
  one untimed warm-up batch, its encoder cut to the pooled layer (it computes
  no extra layer): batches sorted by length and padded to their longest cell
  (what Geneformer's ``EmbExtractor`` does), at the batch size that a sweep
  (``--torch-batches``) found fastest, and, for the unbucketed comparison,
  padded to the model's input size.

Fairness rule (top of ``docs/benchmarks.md``): dfm and torch alternate, each in
a fresh process, over ``--rounds`` rounds; cells per CPU-second are reported
as min / median, and the ratio per round as min / median. For the packed path
and a model-level comparison see ``bench_packing.py``.

Two or more dfm code trees or settings side by side (``--dfm LABEL=SRC``, repeated):
each label is a dfm side of its own in every round, run with ``PYTHONPATH=SRC`` (e.g. a
``git worktree`` of an older commit) and, after ``@``, package constants set in its
process (``new-unrolled=src@models._bert.SCAN_MAX_BYTES=0``); the ratio between two
such sides is printed per round (``--dfm`` order: each later side against the first).

Cells/s and each process's peak RSS are printed as a markdown table, with the
largest difference between the dfm and torch embeddings (mean pooling of the
second-to-last layer, as the extractor). Torch runs where ``--torch-python``
(default ``/work/venv-torch/bin/python`` or ``$DFM_TORCH_PYTHON``) has
``torch`` and ``transformers``; torch is never a dependency of diffbio_sc.

The unbucketed runs (every cell padded to 2,048 / 4,096 tokens) use only the
first ``--full-cells`` cells: on a shared CPU they cost minutes per cell.

    python benchmarks/bench_checkpoints.py [--n-cells 16] [--v2-cells 8] [--full-cells 2] [--dataset pbmc_3batch_symphony] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_roofline import _run, forward_flops  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DFM_SHARED_DATA", REPO.parent / "shared" / "data"))

CONFIGS = {
    "V1-size (6x256, 2,048)": dict(
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=2048,
        hidden_act="relu",
        v2=False,
    ),
    "V2-104M size (12x768, 12 heads, 4,096)": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=4096,
        hidden_act="gelu",
        v2=True,
    ),
}

TORCH_BUILD = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import BertConfig, BertForMaskedLM
    out, vocab_size, cfg = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=vocab_size, pad_token_id=0, **cfg)).eval()
    model.save_pretrained(out, safe_serialization=True)
    print("{}")
    """
)

TORCH_RUN = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, torch
    from transformers import BertForMaskedLM
    ckpt, tokens, mode, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    bf16 = len(sys.argv) > 6 and sys.argv[6] == "bfloat16"
    if len(sys.argv) > 7 and int(sys.argv[7]):
        torch.set_num_threads(int(sys.argv[7]))
    import contextlib
    def autocast():  # opt-in bfloat16 matrix products (torch's autocast on CPU)
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    z = np.load(tokens)
    ids, lengths, v2 = z["ids"], z["lengths"], bool(z["v2"])
    model = BertForMaskedLM.from_pretrained(ckpt).eval()
    layer = model.config.num_hidden_layers - 1
    model.bert.encoder.layer = model.bert.encoder.layer[:layer]  # no layer after the one pooled
    # the encoder only (model.bert): the masked-LM head's logits over the vocabulary are no
    # part of the embedding, and dfm does not compute them
    order = np.argsort(-lengths, kind="stable") if mode == "sorted" else np.arange(len(ids))
    out = np.zeros((len(ids), model.config.hidden_size), np.float32)
    def warm_up():  # one untimed batch, as dfm's warm call reuses its compiled code
        idx = order[:batch]
        L = int(lengths[idx].max()) if mode == "sorted" else ids.shape[1]
        x = torch.from_numpy(ids[idx, :L].astype(np.int64))
        mask = (torch.arange(L)[None] < torch.from_numpy(lengths[idx])[:, None]).long()
        model.bert(input_ids=x, attention_mask=mask, output_hidden_states=True)
    with torch.inference_mode(), autocast():
        warm_up()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode(), autocast():
        for s in range(0, len(ids), batch):
            idx = order[s : s + batch]
            L = int(lengths[idx].max()) if mode == "sorted" else ids.shape[1]
            x = torch.from_numpy(ids[idx, :L].astype(np.int64))
            mask = (torch.arange(L)[None] < torch.from_numpy(lengths[idx])[:, None]).long()
            h = model.bert(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            h = h.float()
            n = torch.from_numpy(lengths[idx]).float()
            if v2:  # EmbExtractor: drop <cls>, average the len - 2 gene positions
                h, n = h[:, 1:], n - 2
            keep = (torch.arange(h.shape[1])[None] < n[:, None]).float()
            out[idx] = ((h * keep[..., None]).sum(1) / n[:, None].clamp(min=1)).numpy()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(sys.argv[5], out)
    print(json.dumps({"seconds": dt, "cpu": cpu, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": batch,
                      "dtype": "bfloat16" if bf16 else "float32"}))
    """
)

JAX_RUN = textwrap.dedent(
    """
    import json, resource, sys, time
    import anndata as ad, numpy as np
    import diffbio_sc as dfm
    dfm.settings.progress_bar = False
    ckpt, h5ad, mode, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    dtype, max_tokens = sys.argv[5], int(sys.argv[6]) or None
    import importlib
    for name, value in json.loads(sys.argv[7] if len(sys.argv) > 7 else "{}").items():
        module, attr = name.rsplit(".", 1)  # a package constant set for this process (--dfm)
        module = importlib.import_module("diffbio_sc." + module)
        if not hasattr(module, attr):
            raise SystemExit(f"diffbio_sc.{name} does not exist in this tree")
        setattr(module, attr, value)
    kw = {"auto": {}, "packed": dict(packing=True), "buckets": dict(packing=False),
          "full": dict(bucketing=False, packing=False)}[mode]
    kw.update(dtype=dtype, max_tokens=max_tokens)
    adata = ad.read_h5ad(h5ad)
    model = dfm.models.load_checkpoint(ckpt)
    times, cpus = [], []
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        dfm.tl.embed_checkpoint(adata, model, max_batch_tokens=16384, **kw)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    np.save(out, adata.obsm["X_geneformer"])
    entry = adata.uns["dfm"]["embeddings"]["X_geneformer"]
    import jax
    print(json.dumps({"cold": times[0], "warm": times[1], "cold_cpu": cpus[0], "warm_cpu": cpus[1],
                      "shapes": int(entry["n_compiled_shapes"]), "packed": bool(entry["packed"]),
                      "package": dfm.__file__,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "devices": str(jax.devices()[0].platform)}))
    """
)


def prepare(dataset: str, n_cells: int, seed: int, tmp: Path, min_genes: int = 0, repeat: int = 1):
    """Real cells and dictionaries: token ids for the data's genes, medians from the data.

    ``min_genes``: draw the cells among those with at least that many expressed
    genes (deep cells that fill a 2,048-token context). ``repeat``: the drawn
    cells ``repeat`` times (new cell names; both sides embed every copy), for a
    job larger than the data set (the slot layout is used from
    ``models._runner.SLOT_MIN_ITEMS`` cells on).
    """
    import anndata as ad

    import diffbio_sc as dfm

    adata = ad.read_h5ad(DATA / "singlecell" / f"{dataset}.h5ad")
    dfm.pp.gene_medians(adata)
    medians = {
        g: float(m) for g, m in zip(adata.var_names, adata.var["dfm_median"], strict=True) if m > 0
    }
    rng = np.random.default_rng(seed)
    x = adata.X.tocsr() if hasattr(adata.X, "tocsr") else adata.X
    pool = np.flatnonzero(np.diff(x.indptr) >= min_genes) if min_genes else np.arange(adata.n_obs)
    if len(pool) < n_cells:
        raise SystemExit(f"only {len(pool)} cells have >= {min_genes} expressed genes")
    sub = adata[np.sort(rng.choice(pool, size=n_cells, replace=False))].copy()
    del sub.var["dfm_median"]
    if repeat > 1:
        copies = []
        for k in range(repeat):
            c = sub.copy()
            c.obs_names = [f"{o}-copy{k}" for o in sub.obs_names]
            copies.append(c)
        sub = ad.concat(copies, merge="same")
    path = tmp / "cells.h5ad"
    sub.write_h5ad(path)
    return sub, medians, path


def build_checkpoint(
    torch_python: str, ckpt: Path, cfg: dict, sub, medians: dict, *, v2: bool, max_tokens=None
):
    """Random-weight BertForMaskedLM + Geneformer dictionaries in ``ckpt``; the cells' tokens.

    The token dictionary holds the specials and the data's genes with a median;
    returns the token ids ``(n, max_tokens)`` and the number of tokens per cell that
    ``dfm.pp.tokenize`` gives (the tokens both sides embed).
    """
    import diffbio_sc as dfm

    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if v2 else [])
    tok = {t: i for i, t in enumerate(specials)}
    for g in sub.var_names:
        if g in medians:
            tok[g] = len(tok)
    _run(torch_python, TORCH_BUILD, ckpt, len(tok), json.dumps(cfg))
    (ckpt / "token_dictionary.json").write_text(json.dumps(tok))
    (ckpt / "gene_median_dictionary.json").write_text(
        json.dumps({g: medians[g] for g in tok if g in medians})
    )
    model = dfm.models.load_checkpoint(ckpt)
    t = dfm.pp.tokenize(
        sub.copy(),
        recipe=model.recipe,
        vocab=tok,
        gene_medians=medians,
        max_tokens=max_tokens or model.max_tokens,
        copy=True,
    )
    return t.obsm["dfm_tokens"], np.asarray(t.obs["dfm_n_tokens"], dtype=np.int64)


def parse_variant(spec: str) -> tuple[str, dict | None, dict]:
    """``LABEL=SRC[@MODULE.NAME=VALUE,...]`` -> ``(label, env, settings)`` (``--dfm``)."""
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"--dfm {spec!r}: expected LABEL=SRC[@MODULE.NAME=VALUE,...]")
    src, _, sets = rest.partition("@")
    settings = {}
    for item in filter(None, sets.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--dfm {spec!r}: {item!r} is not MODULE.NAME=VALUE")
        settings[name] = json.loads(value)
    src = str(Path(src).resolve())
    if not (Path(src) / "diffbio_sc" / "__init__.py").exists():
        raise SystemExit(f"--dfm {spec!r}: {src} holds no diffbio_sc package")
    return label, {"PYTHONPATH": src}, settings


def _rate_stats(rates) -> tuple[float, float]:
    return float(np.min(rates)), float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="pbmc_3batch_symphony")
    ap.add_argument("--n-cells", type=int, default=16)
    ap.add_argument("--v2-cells", type=int, default=8)
    ap.add_argument("--full-cells", type=int, default=2, help="cells for the unbucketed runs")
    ap.add_argument(
        "--min-genes",
        type=int,
        default=0,
        help="draw cells among those with at least this many expressed genes (deep cells)",
    )
    ap.add_argument(
        "--max-tokens",
        type=int,
        default=0,
        help="tokens per cell on both sides (0: the model's input size)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeat", type=int, default=1, help="embed the drawn cells this many times (copies)"
    )
    ap.add_argument(
        "--torch-batches",
        default="8,16,32,64,128",
        help="torch batch sizes swept (those <= the cells); the best by CPU time is used",
    )
    ap.add_argument(
        "--modes",
        default="packed,buckets",
        help="dfm modes: auto (the defaults), packed (packing=True), buckets (packing=False)",
    )
    ap.add_argument(
        "--dtypes",
        default="float32",
        help="dfm dtypes; with bfloat16, torch also runs under bfloat16 autocast at its best "
        "float32 batch, and the bfloat16 rows get a ratio against it too",
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating dfm/torch rounds")
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument(
        "--dfm",
        action="append",
        default=None,
        metavar="LABEL=SRC[@MODULE.NAME=VALUE,...]",
        help="a dfm side run with PYTHONPATH=SRC and these package constants (JSON values) "
        "set, e.g. old=/work/wt-old/src or new-grid32=src@models._runner.SLOT_GRID=32; "
        "repeat for an A/B of trees or settings (default: one side, this interpreter's package)",
    )
    ap.add_argument(
        "--no-torch",
        action="store_true",
        help="dfm sides only (an A/B of --dfm trees; torch still builds the checkpoint)",
    )
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.dfm] if args.dfm else [("", None, {})]
    if not Path(args.torch_python).exists():
        raise SystemExit(f"building the checkpoints needs transformers ({args.torch_python})")
    modes = args.modes.split(",")
    dtypes = args.dtypes.split(",")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load average {os.getloadavg()}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in args.configs:
            cfg = dict(CONFIGS[name])
            v2 = cfg.pop("v2")
            n = args.v2_cells if v2 else args.n_cells
            sub, medians, h5ad = prepare(
                args.dataset, n, args.seed, tmp, args.min_genes, args.repeat
            )
            n = sub.n_obs
            ckpt = tmp / f"ckpt_{int(v2)}"
            ids, lengths = build_checkpoint(
                args.torch_python, ckpt, cfg, sub, medians, v2=v2, max_tokens=args.max_tokens
            )
            nf = min(n, args.full_cells)
            np.savez(tmp / "tokens.npz", ids=ids, lengths=lengths, v2=v2)
            np.savez(tmp / "tokens_full.npz", ids=ids[:nf], lengths=lengths[:nf], v2=v2)
            h5ad_full = tmp / "cells_full.h5ad"
            sub[:nf].copy().write_h5ad(h5ad_full)
            label = (
                f"{name}, {n} cells, tokens/cell median {int(np.median(lengths))} "
                f"(max {lengths.max()})"
            )
            # useful FLOPs per cell (no padding), up to the pooled layer: achieved GFLOP
            # per CPU-s beside each side's rate (peak: bench_roofline.py)
            gflop_cell = (
                forward_flops(
                    lengths,
                    d=cfg["hidden_size"],
                    inter=cfg["intermediate_size"],
                    layers=cfg["num_hidden_layers"] - 1,
                )["total"]
                / n
                / 1e9
            )
            # torch's best batch size (float32, length-sorted), from a sweep
            sweep, best, threads = {}, None, 0
            if not args.no_torch:
                for bs in [b for b in map(int, args.torch_batches.split(",")) if b <= n] or [n]:
                    r = _run(
                        args.torch_python,
                        TORCH_RUN,
                        ckpt,
                        tmp / "tokens.npz",
                        "sorted",
                        bs,
                        tmp / "t.npy",
                    )
                    sweep[bs] = round(r["cpu"], 2)
                best = min(sweep, key=sweep.get)
                # then its thread count at that batch (default = all cores; 1 often costs less
                # CPU time on a loaded machine)
                r = _run(
                    args.torch_python,
                    TORCH_RUN,
                    ckpt,
                    tmp / "tokens.npz",
                    "sorted",
                    best,
                    tmp / "t.npy",
                    "float32",
                    1,
                )
                threads = 1 if r["cpu"] < sweep[best] else 0
                sweep[f"{best}, 1 thread"] = round(r["cpu"], 2)
                print(
                    f"# {label}: torch sweep (CPU s by batch) {sweep}; best {best}, "
                    f"{'1 thread' if threads else 'default threads'}",
                    flush=True,
                )

            # every side once per round, the order rotated each round (fresh processes)
            sides = [("dfm", m, dt, v[0]) for dt in dtypes for m in modes for v in variants]
            if not args.no_torch:
                sides += [("torch", "sorted", dt, "") for dt in dtypes]
            by_label = {v[0]: v for v in variants}
            runs: dict = {side: [] for side in sides}
            embs: dict = {}
            for rnd in range(args.rounds):
                k = rnd % len(sides)
                for side in sides[k:] + sides[:k]:
                    kind, mode, dt, label_v = side
                    out = tmp / f"{kind}_{mode}_{dt}_{label_v}.npy"
                    if kind == "dfm":
                        _, env, settings = by_label[label_v]
                        r = _run(
                            sys.executable,
                            JAX_RUN,
                            ckpt,
                            h5ad,
                            mode,
                            out,
                            dt,
                            args.max_tokens,
                            json.dumps(settings),
                            env=env,
                        )
                        r["rate"] = n / r["warm_cpu"]
                    else:
                        r = _run(
                            args.torch_python,
                            TORCH_RUN,
                            ckpt,
                            tmp / "tokens.npz",
                            mode,
                            best,
                            out,
                            dt,
                            threads,
                        )
                        r["rate"] = n / r["cpu"]
                    runs[side].append(r)
                    embs[side] = np.load(out)
                    print(
                        f"# round {rnd}: {side} {r['rate']:.3f} cells per CPU-s "
                        f"(warm {r['warm_cpu'] if 'warm_cpu' in r else r['cpu']:.1f} CPU-s, cold "
                        f"{r.get('cold_cpu', float('nan')):.1f}; load {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
            torch32 = ("torch", "sorted", "float32", "")
            t32 = np.array([r["rate"] for r in runs[torch32]]) if torch32 in runs else None
            ref = embs[torch32 if t32 is not None else sides[0]]
            ref_name = "torch float32" if t32 is not None else f"{sides[0][3] or 'dfm'}"
            f32_dfm = embs.get(("dfm", modes[0], "float32", variants[0][0]))
            for side in sides:
                kind, mode, dt, label_v = side
                rates = np.array([r["rate"] for r in runs[side]])
                r = runs[side][-1]
                diff = np.abs(embs[side] - ref).max()
                note = (
                    f"{gflop_cell * np.median(rates):.0f} useful GFLOP per CPU-s (median); "
                    f"max diff vs {ref_name} {diff:.1e}"
                )
                if kind == "dfm":
                    ratio = rates / t32 if t32 is not None else None
                    ratio_s = (
                        "-" if ratio is None else f"{ratio.min():.2f} / {np.median(ratio):.2f}"
                    )
                    if dt == "bfloat16" and ratio is not None:
                        tb = np.array([x["rate"] for x in runs[("torch", "sorted", dt, "")]])
                        rb = rates / tb
                        ratio_s += f" (vs torch bfloat16: {rb.min():.2f} / {np.median(rb):.2f})"
                        if f32_dfm is not None:
                            e = embs[side]
                            cos = (e * f32_dfm).sum(1) / np.linalg.norm(e, axis=1)
                            cos /= np.linalg.norm(f32_dfm, axis=1)
                            note += (
                                f"; vs dfm float32: max diff "
                                f"{np.abs(e - f32_dfm).max():.1e}, min cosine {cos.min():.6f}"
                            )
                    note += f"; {r['shapes']} compiled shapes; packed: {r['packed']}"
                    first = ("dfm", mode, dt, variants[0][0])
                    cpu_s = " / ".join(f"{x['warm_cpu']:.1f}" for x in runs[side])
                    if label_v and side != first:  # against the first --dfm side, per round
                        vs = rates / np.array([x["rate"] for x in runs[first]])
                        note += (
                            f"; vs {variants[0][0]} per round "
                            f"{' / '.join(f'{x:.3f}' for x in vs)} "
                            f"(min {vs.min():.3f}, median {np.median(vs):.3f}); "
                            f"CPU-s warm {cpu_s}"
                        )
                    elif label_v:
                        note += f"; CPU-s warm {cpu_s}"
                    what = {
                        "auto": "defaults (packing=None)",
                        "packed": "packed rows (packing=True)",
                        "buckets": "length buckets (packing=False)",
                    }[mode]
                    runner = f"dfm JAX, {what}, dtype={dt}"
                    if label_v:
                        _, env, settings = by_label[label_v]
                        sets = ", ".join(f"{k}={v}" for k, v in settings.items())
                        runner += f"; **{label_v}**: {env['PYTHONPATH']}" + (
                            f" with {sets}" if sets else ""
                        )
                    wall, cold = n / r["warm"], n / r["cold"]
                else:
                    ratio_s, wall, cold = "-", n / r["seconds"], None
                    runner = (
                        f"transformers on torch {r['torch']} CPU ({r['threads']} threads), "
                        f"inference_mode, {dt}"
                        + (" autocast" if dt == "bfloat16" else "")
                        + f", batch {r['batch']} (best of the float32 sweep {sweep}), sorted by "
                        "length, padded per batch, layers cut to the pooled one"
                    )
                rows.append(
                    dict(
                        label=label,
                        runner=runner,
                        cpu=_rate_stats(rates),
                        wall=wall,
                        cold=cold,
                        peak=max(x["peak_mb"] for x in runs[side]),
                        ratio=ratio_s,
                        note=note,
                    )
                )
            if nf and not args.no_torch:  # every cell padded to the input size: one round
                rd = _run(
                    sys.executable,
                    JAX_RUN,
                    ckpt,
                    h5ad_full,
                    "full",
                    tmp / "jax.npy",
                    "float32",
                    args.max_tokens,
                )
                rt = _run(
                    args.torch_python,
                    TORCH_RUN,
                    ckpt,
                    tmp / "tokens_full.npz",
                    "full",
                    min(best, nf),
                    tmp / "torch.npy",
                    "float32",
                    threads,
                )
                diff = np.abs(np.load(tmp / "torch.npy") - np.load(tmp / "jax.npy")).max()
                rows.append(
                    dict(
                        label=label,
                        runner="dfm JAX, padded to input size (bucketing=False), float32",
                        cpu=(nf / rd["warm_cpu"],) * 2,
                        wall=nf / rd["warm"],
                        cold=nf / rd["cold"],
                        peak=rd["peak_mb"],
                        ratio=f"{rt['cpu'] / rd['warm_cpu']:.2f} (one round)",
                        note=f"{nf} cells; max diff vs torch {diff:.1e}",
                    )
                )
                rows.append(
                    dict(
                        label=label,
                        runner=f"torch, padded to input size, batch {min(best, nf)}",
                        cpu=(nf / rt["cpu"],) * 2,
                        wall=nf / rt["seconds"],
                        cold=None,
                        peak=rt["peak_mb"],
                        ratio="-",
                        note=f"{nf} cells",
                    )
                )
    print(
        f"\nCommand: python benchmarks/bench_checkpoints.py --dataset {args.dataset} "
        f"--n-cells {args.n_cells} --v2-cells {args.v2_cells} --full-cells {args.full_cells} "
        f"--min-genes {args.min_genes} --max-tokens {args.max_tokens} "
        f"--torch-batches {args.torch_batches} --modes {args.modes} --dtypes {args.dtypes} "
        f"--rounds {args.rounds} --repeat {args.repeat}"
        + "".join(f" --dfm {v}" for v in args.dfm or [])
        + (" --no-torch" if args.no_torch else "")
        + f"; {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average at the end {os.getloadavg()}\n"
    )
    print(
        "| model, cells | runner | cells per CPU-s (warm), min / median | cells/s wall (warm) "
        "| cells/s wall (first call, compile incl.) | peak RSS MiB | dfm / torch float32 (CPU), "
        "min / median per round | notes |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        cold_s = f"{row['cold']:.2f}" if row["cold"] is not None else "-"
        print(
            f"| {row['label']} | {row['runner']} | {row['cpu'][0]:.2f} / {row['cpu'][1]:.2f} "
            f"| {row['wall']:.2f} | {cold_s} | {row['peak']:.0f} | {row['ratio']} "
            f"| {row['note']} |"
        )


if __name__ == "__main__":
    main()
