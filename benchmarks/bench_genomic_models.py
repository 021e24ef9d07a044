r"""Genomic checkpoints: dfm (JAX) vs the upstream torch implementation, on CPU.

Sequences per CPU-second and peak RSS of the pooled last-layer embedding of real
DNA sequences, for each family at its smallest published size with random
weights (seed 0):

========== ====================================================== ==============================
family     size (published checkpoint)                            torch peer
========== ====================================================== ==============================
nt_v1      nucleotide-transformer-500m-human-ref: 24 x 1280,      ``transformers.EsmModel``
           20 heads, FFN 5120, learned positions
nt_v2      nucleotide-transformer-v2-50m-multi-species: 12 x 512, ``transformers.EsmModel`` with
           16 heads, gated FFN 2 x 2048 without biases, rotary    rotary positions, its two FFN
                                                                  modules swapped for NT v2's
                                                                  gated ones (see below)
dnabert2   DNABERT-2-117M: 12 x 768, 12 heads, gated FFN 3072,    DNABERT-2's own remote
           ALiBi, BPE vocabulary 4,096                            ``bert_layers.BertModel``
                                                                  (pure-PyTorch attention)
generator  GENERator-eukaryote-1.2b-base: 26 x 2048, 32 heads,    ``transformers.LlamaModel``
           8 key/value heads, FFN 5632 (sizes from the paper)
========== ====================================================== ==============================

NT v2's modelling file ships only as remote code on the model hub (no public
verbatim copy, see ``docs/UPSTREAM.md``); it is transformers' ESM (embeddings,
attention with the query scaled then rotated, pre-LayerNorm blocks) with a
feed-forward ``out(silu(a) * b)``, ``[a, b] = inter(x)`` without biases. The peer
here is exactly that: ``transformers.EsmModel`` with each layer's
``intermediate`` and ``output.dense`` replaced by those bias-free modules. The
DNABERT-2 peer imports the published ``bert_layers.py`` from a git directory
(``--dnabert2-git-dir``, fetched with the project's ``fetch`` tool, as
``scripts/make_dnabert2_fixture.py`` does); its tokenizer is a BPE of 4,096
tokens trained here on other promoter files of the same data set (the published
``tokenizer.json`` is on the model hub only), so token counts are realistic.

Both sides run the same thing: the same token ids (tokenised once by
diffbio_sc, whose tokenizers equal upstream's in the fixture tests), sorted by
length, cut into batches padded to the batch's longest row (dfm: rounded up to a
multiple of ``--bucket`` tokens so that few shapes compile), the last hidden
layer pooled as the authors do (NT, DNABERT-2: mean over the attention mask;
GENERator: the last real token). Each measurement is a fresh subprocess (clean
peak RSS) that loads the checkpoint, warms up on one batch of every shape
(dfm: that is the compile, reported separately), then times one pass over all
sequences in process CPU time (all threads) and wall time. A sweep over batch
sizes picks each side's best; then ``--rounds`` rounds alternate the sides
(torch first in even rounds) at their best batch sizes. torch: ``inference_mode``,
``set_num_threads(cores)``. The embeddings of both sides are compared (max abs
difference printed).

Run (from the repository root; the orchestrator runs in the diffbio_sc venv and
starts the torch side in ``--torch-python``)::

    PYTHONPATH=src /work/venv/bin/python benchmarks/bench_genomic_models.py \
        --family nt_v2 dnabert2 nt_v1 generator --rounds 3

``--scale`` divides layer counts (smoke tests only; the reported table uses 1).
Results go to ``benchmarks/results/genomic_models.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "checkpoints" / "fixtures"
DATA = Path(os.environ.get("DFM_SHARED_DATA", "/work/shared/data")) / "dna"
SEED = 0

#: Architecture of the smallest published checkpoint of each family.
SIZES = {
    "nt_v1": {
        "hidden_size": 1280,
        "num_hidden_layers": 24,
        "num_attention_heads": 20,
        "intermediate_size": 5120,
        "max_position_embeddings": 1002,
    },
    "nt_v2": {
        "hidden_size": 512,
        "num_hidden_layers": 12,
        "num_attention_heads": 16,
        "intermediate_size": 2048,
        "max_position_embeddings": 2050,
    },
    "dnabert2": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    },
    "generator": {
        "hidden_size": 2048,
        "num_hidden_layers": 26,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 5632,
        "max_position_embeddings": 16384,
    },
}
FIXTURE_OF = {
    "nt_v1": "nucleotide_transformer_v1",
    "nt_v2": "nucleotide_transformer_v2",
    "dnabert2": "dnabert2",
    "generator": "generator",
}


# ------------------------------------------------------------------ sequences


def _fasta(path: Path) -> list[str]:
    seqs, cur = [], []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if cur:
                seqs.append("".join(cur))
            cur = []
        elif line.strip():
            cur.append(line.strip())
    if cur:
        seqs.append("".join(cur))
    return seqs


def _acgt(seqs, n):
    out = [s.upper() for s in seqs if set(s.upper()) <= set("ACGT")]
    return out[:n]


def benchmark_sequences(n_per_source: int) -> list[str]:
    """A fixed set: ``n`` mouse TATA promoters (251 bp), E. coli promoters (81 bp), splice sites (60 bp)."""
    prom = DATA / "promoters_cnnprom"
    splice = [
        line.rsplit(",", 1)[1].strip()
        for line in (DATA / "splice_junction_uci.csv").read_text().splitlines()[1:]
    ]
    return (
        _acgt(_fasta(prom / "Mouse_tata.fa"), n_per_source)
        + _acgt(_fasta(prom / "Ecoli_prom.fa"), n_per_source)
        + _acgt(splice, n_per_source)
    )


def long_sequences(n: int, length: int) -> list[str]:
    """``n`` consecutive ``length``-bp slices of GRCh38 chr22:32,000,000-32,300,000 without ``N``."""
    text = (DATA.parent / "genome" / "hg38_chr22_32000000_32300000.fa").read_text()
    genome = "".join(line.strip() for line in text.splitlines() if not line.startswith(">"))
    slices = [genome[i : i + length].upper() for i in range(0, len(genome) - length, length)]
    return _acgt(slices, n)


def tokenizer_corpus() -> list[str]:
    """DNA for DNABERT-2's benchmark BPE: promoter files not benchmarked."""
    prom = DATA / "promoters_cnnprom"
    return _acgt(_fasta(prom / "Mouse_nonprom.fa") + _fasta(prom / "Arabidopsis_non_prom.fa"), 4000)


def batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices sorted by length (longest first), cut into batches."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad(rows, idx, pad_id, width):
    out = np.full((len(idx), width), pad_id, dtype=np.int64)
    for j, i in enumerate(idx):
        out[j, : len(rows[i])] = rows[i]
    return out


# ------------------------------------------------------------------ build (torch venv)


def _config_doc(family: str, scale: int) -> dict:
    doc = json.loads((FIXTURES / FIXTURE_OF[family] / "config.json").read_text())
    doc.update(SIZES[family])
    doc["num_hidden_layers"] = max(1, doc["num_hidden_layers"] // scale)
    if family == "generator":
        doc["head_dim"] = doc["hidden_size"] // doc["num_attention_heads"]
        doc["tie_word_embeddings"] = False
    if family in ("nt_v1", "nt_v2"):
        doc["layer_norm_eps"] = 1e-12
    return doc


def _hf_kwargs(doc: dict) -> dict:
    """``config.json`` fields a transformers config class takes as keyword arguments."""
    skip = ("auto_map", "model_type", "transformers_version", "architectures")
    return {k: v for k, v in doc.items() if k not in skip and not k.startswith("_")}


def _nt_v2_torch(cfg_doc: dict):
    """transformers' ESM with NT v2's bias-free gated feed-forward (see the module doc)."""
    import torch
    import transformers
    from torch import nn

    class GatedIntermediate(nn.Module):
        def __init__(self, h, i):
            super().__init__()
            self.dense = nn.Linear(h, 2 * i, bias=False)

        def forward(self, x):
            a, b = self.dense(x).chunk(2, dim=-1)
            return nn.functional.silu(a) * b

    kw = {k: v for k, v in _hf_kwargs(cfg_doc).items() if k != "add_bias_fnn"}
    cfg = transformers.EsmConfig(**kw)
    torch.manual_seed(SEED)
    model = transformers.EsmModel(cfg, add_pooling_layer=False)
    h, i = cfg.hidden_size, cfg.intermediate_size
    for layer in model.encoder.layer:
        layer.intermediate = GatedIntermediate(h, i)
        layer.output.dense = nn.Linear(i, h, bias=False)
    return model.eval()


def _dnabert2_modules(git_dir: Path, where: Path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_dnabert2_fixture import _reference_package

    layers, _padding, configuration = _reference_package(
        git_dir, "634202c1fc7d981e3932b5a310bd3fdba41ccdb9", where
    )
    return layers, configuration


def role_build(args) -> None:
    """Write ``config.json``, the tokenizer files and random weights (seed 0) to ``args.ckpt``."""
    import safetensors.torch
    import torch
    import transformers

    fam, out = args.family, Path(args.ckpt)
    out.mkdir(parents=True, exist_ok=True)
    fix = FIXTURES / FIXTURE_OF[fam]
    doc = _config_doc(fam, args.scale)
    torch.manual_seed(SEED)
    if fam == "dnabert2":
        from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
        trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=special, show_progress=False)
        tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
        )
        tok.save(str(out / "tokenizer.json"))
        shutil.copy(fix / "tokenizer_config.json", out / "tokenizer_config.json")
        doc["vocab_size"] = tok.get_vocab_size()
        layers, configuration = _dnabert2_modules(Path(args.dnabert2_git_dir), Path(args.tmp))
        kwargs = {k: v for k, v in doc.items() if not k.startswith("_") and k != "auto_map"}
        model = layers.BertModel(configuration.BertConfig(**kwargs), add_pooling_layer=False)
        state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    else:
        for f in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(fix / f, out / f)
        if fam == "nt_v2":
            model = _nt_v2_torch(doc)
            state = {f"esm.{k}": v.contiguous() for k, v in model.state_dict().items()}
        elif fam == "nt_v1":
            cfg = transformers.EsmConfig(**_hf_kwargs(doc))
            model = transformers.EsmModel(cfg, add_pooling_layer=False)
            state = {f"esm.{k}": v.contiguous() for k, v in model.state_dict().items()}
        else:
            model = transformers.LlamaModel(transformers.LlamaConfig(**_hf_kwargs(doc)))
            state = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("inv_freq")}
    safetensors.torch.save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(doc, indent=2))
    n = sum(v.numel() for v in state.values())
    print(json.dumps({"parameters": n}))


# ------------------------------------------------------------------ measured sides


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(run, groups):
    """(warm-up CPU s, warm-up wall s, CPU s, wall s, pooled rows) of one pass after warm-up."""
    shapes, warm = set(), []
    for g in groups:
        if g[1].shape not in shapes:
            shapes.add(g[1].shape)
            warm.append(g)
    c0, w0 = time.process_time(), time.perf_counter()
    for _idx, ids in warm:
        run(ids)
    c1, w1 = time.process_time(), time.perf_counter()
    out = {}
    for idx, ids in groups:
        pooled = run(ids)
        for j, i in enumerate(idx):
            out[int(i)] = pooled[j]
    c2, w2 = time.process_time(), time.perf_counter()
    return c1 - c0, w1 - w0, c2 - c1, w2 - w1, out


def _measure(side, family, rows, pad_id, batch_sizes, bucket, load, run, emb_path):
    t0, c0 = time.perf_counter(), time.process_time()
    model = load()
    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    lengths = np.array([len(r) for r in rows])
    results = []
    for bs in batch_sizes:
        groups = []
        for idx in batches(lengths, bs):
            width = int(lengths[idx].max())
            if bucket > 1:
                width = -(-width // bucket) * bucket
            groups.append((idx, pad(rows, idx, pad_id, width)))
        wc, ww, cpu, wall, out = _timed(lambda ids: run(model, ids), groups)
        results.append(
            {
                "batch_size": bs,
                "warmup_cpu_s": wc,
                "warmup_wall_s": ww,
                "cpu_s": cpu,
                "wall_s": wall,
                "seq_per_cpu_s": len(rows) / cpu,
                "seq_per_wall_s": len(rows) / wall,
            }
        )
        if emb_path:
            np.save(emb_path, np.stack([out[i] for i in range(len(rows))]).astype(np.float32))
    return {
        "side": side,
        "family": family,
        "load_wall_s": load_wall,
        "load_cpu_s": load_cpu,
        "peak_rss_mib": _peak_rss_mib(),
        "runs": results,
    }


def role_torch(args) -> None:
    """Load the checkpoint with the upstream torch code and measure (see the module doc)."""
    import safetensors.torch
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count())
    fam, ckpt = args.family, Path(args.ckpt)
    data = np.load(args.ids)
    rows = [data[f"row_{i}"] for i in range(int(data["n"]))]
    pad_id = int(data["pad_id"])
    doc = json.loads((ckpt / "config.json").read_text())

    def load():
        if fam == "nt_v1":
            return transformers.EsmModel.from_pretrained(ckpt, add_pooling_layer=False).eval()
        if fam == "generator":
            return transformers.LlamaModel.from_pretrained(ckpt, dtype=torch.float32).eval()
        state = safetensors.torch.load_file(str(ckpt / "model.safetensors"))
        if fam == "nt_v2":
            model = _nt_v2_torch(doc)
            state = {k[len("esm.") :]: v for k, v in state.items()}
        else:
            layers, configuration = _dnabert2_modules(Path(args.dnabert2_git_dir), Path(args.tmp))
            kwargs = {k: v for k, v in doc.items() if not k.startswith("_") and k != "auto_map"}
            model = layers.BertModel(configuration.BertConfig(**kwargs), add_pooling_layer=False)
            state = {k[len("bert.") :]: v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.endswith("inv_freq")] + list(unexpected)
        if bad:
            raise SystemExit(f"torch side: state dict mismatch {bad[:5]}")
        return model.eval()

    def run(model, ids_np):
        ids = torch.from_numpy(ids_np)
        mask = ids != pad_id
        with torch.inference_mode():
            if fam == "dnabert2":
                last, _ = model(ids, attention_mask=mask.long())
            else:
                last = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            if fam == "generator":
                pooled = last[torch.arange(ids.shape[0]), mask.sum(1) - 1]
            else:
                m = mask.unsqueeze(-1).to(last.dtype)
                pooled = (last * m).sum(1) / m.sum(1)
        return pooled.numpy()

    res = _measure("torch", fam, rows, pad_id, args.batch_sizes, 1, load, run, args.emb)
    res["settings"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "inference_mode": True,
        "padding": "each batch to its longest row",
    }
    print("RESULT " + json.dumps(res))


def role_dfm(args) -> None:
    """Load the checkpoint with diffbio_sc and measure (see the module doc)."""
    import jax

    import diffbio_sc as dfm
    from diffbio_sc.models._adapters import dna_checkpoint_forward
    from diffbio_sc.models._runner import eval_split

    fam = args.family
    data = np.load(args.ids)
    rows = [data[f"row_{i}"] for i in range(int(data["n"]))]
    pad_id = int(data["pad_id"])

    def load():
        m = dfm.models.load_checkpoint(args.ckpt)
        graphdef, state = eval_split(m.module)
        jax.block_until_ready(state)
        # the function the runner compiles for dfm.tl.embed_sequences (one per batch shape)
        static = (graphdef, "last" if fam == "generator" else None)
        return static, state, jax.jit(dna_checkpoint_forward, static_argnums=0)

    def run(model, ids_np):
        static, state, fn = model
        return np.asarray(fn(static, state, ids_np.astype(np.int32)))

    res = _measure("dfm", fam, rows, pad_id, args.batch_sizes, args.bucket, load, run, args.emb)
    res["settings"] = {
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "padding": f"each batch to its longest row rounded up to {args.bucket} tokens",
        "jit": "pooled last layer, the runner's jax.jit(dna_checkpoint_forward), one compile "
        "per batch shape",
    }
    print("RESULT " + json.dumps(res))


# ------------------------------------------------------------------ orchestrator


def _sub(python, role, family, args, extra, env=None):
    cmd = [
        python,
        __file__,
        "--role",
        role,
        "--family",
        family,
        "--ckpt",
        str(args.ckpt_dir(family)),
    ]
    cmd += ["--dnabert2-git-dir", args.dnabert2_git_dir, "--scale", str(args.scale)]
    cmd += ["--tmp", str(args.work / f"tmp_{role}")] + extra
    (args.work / f"tmp_{role}").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work / f"tmp_{role}" / "dnabert2_ref", ignore_errors=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{role} subprocess failed for {family}")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        if line.startswith("{"):
            return json.loads(line)
    return {}


def orchestrate(args) -> None:
    import diffbio_sc as dfm

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if args.set == "long":
        seqs = long_sequences(args.n_per_source, args.long_bp)
    else:
        seqs = benchmark_sequences(args.n_per_source)
    report = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "n_sequences": len(seqs),
        "families": {},
    }
    for fam in args.family:
        ckpt = args.ckpt_dir(fam)
        if not (ckpt / "model.safetensors").is_file():
            t0 = time.perf_counter()
            info = _sub(args.torch_python, "build", fam, args, [])
            print(f"[{fam}] built {info} in {time.perf_counter() - t0:.0f} s", flush=True)
        model = dfm.models.load_checkpoint(ckpt)
        ids, _ = model.tokenize(seqs)
        pad_id = int(model.tokenizer.pad_id)
        rows = [r[r != pad_id] for r in np.asarray(ids)]
        del model
        gc.collect()  # release the weights before the measured subprocesses start
        ids_file = args.work / f"{fam}_{args.set}_ids.npz"
        np.savez(
            ids_file, n=len(rows), pad_id=pad_id, **{f"row_{i}": r for i, r in enumerate(rows)}
        )
        lengths = [len(r) for r in rows]
        print(f"[{fam}] {len(rows)} sequences, tokens {min(lengths)}-{max(lengths)}", flush=True)

        def side(name, sizes, emb=None, fam=fam, ids_file=ids_file):
            extra = ["--ids", str(ids_file), "--bucket", str(args.bucket)]
            extra += ["--batch-sizes", *map(str, sizes)]
            if emb:
                extra += ["--emb", str(emb)]
            python = args.torch_python if name == "torch" else sys.executable
            return _sub(python, name, fam, args, extra, env=None if name == "torch" else env)

        sweep = {}
        for name, sizes in (("torch", args.torch_batches), ("dfm", args.dfm_batches)):
            res = side(name, sizes, emb=args.work / f"{fam}_{args.set}_{name}.npy")
            sweep[name] = res
            best = min(res["runs"], key=lambda r: r["cpu_s"])
            print(
                f"[{fam}] sweep {name}: "
                + ", ".join(
                    f"b{r['batch_size']}={r['seq_per_cpu_s']:.2f}/cpu-s" for r in res["runs"]
                )
                + f" -> best b={best['batch_size']}",
                flush=True,
            )
        best = {n: min(sweep[n]["runs"], key=lambda r: r["cpu_s"])["batch_size"] for n in sweep}
        # the sweep's last batch size wrote the embeddings; recompute both at best size below
        rounds = {"torch": [], "dfm": []}
        for r in range(args.rounds):
            order = ("torch", "dfm") if r % 2 == 0 else ("dfm", "torch")
            for name in order:
                emb = args.work / f"{fam}_{args.set}_{name}_best.npy" if r == 0 else None
                res = side(name, [best[name]], emb=emb)
                rounds[name].append(res)
                run = res["runs"][0]
                print(
                    f"[{fam}] round {r} {name} b={best[name]}: {run['seq_per_cpu_s']:.2f} seq/cpu-s, "
                    f"{run['seq_per_wall_s']:.2f} seq/s wall, warm-up {run['warmup_wall_s']:.1f} s, "
                    f"peak RSS {res['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
        a = np.load(args.work / f"{fam}_{args.set}_torch_best.npy")
        b = np.load(args.work / f"{fam}_{args.set}_dfm_best.npy")
        diff = float(np.abs(a - b).max())
        summary = {}
        for name in rounds:
            rates = [x["runs"][0]["seq_per_cpu_s"] for x in rounds[name]]
            cpus = [x["runs"][0]["cpu_s"] for x in rounds[name]]
            summary[name] = {
                "batch_size": best[name],
                "seq_per_cpu_s_median": statistics.median(rates),
                "seq_per_cpu_s_max": max(rates),
                "cpu_s_min": min(cpus),
                "cpu_s_median": statistics.median(cpus),
                "seq_per_wall_s_median": statistics.median(
                    x["runs"][0]["seq_per_wall_s"] for x in rounds[name]
                ),
                "peak_rss_mib_median": statistics.median(x["peak_rss_mib"] for x in rounds[name]),
                "warmup_wall_s_median": statistics.median(
                    x["runs"][0]["warmup_wall_s"] for x in rounds[name]
                ),
                "load_wall_s_median": statistics.median(x["load_wall_s"] for x in rounds[name]),
                "settings": rounds[name][0]["settings"],
            }
        ratio_med = (
            summary["dfm"]["seq_per_cpu_s_median"] / summary["torch"]["seq_per_cpu_s_median"]
        )
        ratio_best = summary["torch"]["cpu_s_min"] / summary["dfm"]["cpu_s_min"]
        print(
            f"[{fam}] dfm/torch sequences per CPU-second: median {ratio_med:.2f}x, "
            f"best-of-rounds {ratio_best:.2f}x; max |dfm - torch| = {diff:.2e}; "
            f"dfm b={best['dfm']} bucket {args.bucket}, torch b={best['torch']} "
            f"threads {summary['torch']['settings']['threads']}",
            flush=True,
        )
        report["families"][fam] = {
            "tokens": [min(lengths), max(lengths)],
            "sweep": sweep,
            "rounds": rounds,
            "summary": summary,
            "ratio_median": ratio_med,
            "ratio_min_cpu": ratio_best,
            "max_abs_diff": diff,
        }
        report["families"][fam]["command"] = " ".join(sys.argv)
        report["families"][fam]["n_sequences"] = len(seqs)
        report["families"][fam]["scale"] = args.scale
        out = ROOT / "benchmarks" / "results" / "genomic_models.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        done = json.loads(out.read_text()) if out.is_file() else {"families": {}}
        done["machine"] = report["machine"]
        report["families"][fam]["set"] = args.set
        done["families"][f"{fam}_x{args.scale}_{args.set}"] = report["families"][fam]
        out.write_text(json.dumps(done, indent=2))


def table(path: Path) -> str:
    """The markdown table of ``docs/benchmarks.md`` from a results file."""
    done = json.loads(path.read_text())
    lines = [
        "| family (size), set | side | batch | seq per CPU-s, median (best) | seq/s wall | "
        "warm-up CPU s (dfm: + compile) | peak RSS MiB | dfm / torch CPU, median (min-CPU) | "
        "max abs diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, fam in done["families"].items():
        s = fam["summary"]
        for name in ("dfm", "torch"):
            x = s[name]
            ratio = (
                f"**{fam['ratio_median']:.2f}** ({fam['ratio_min_cpu']:.2f})"
                if name == "dfm"
                else ""
            )
            diff = f"{fam['max_abs_diff']:.1e}" if name == "dfm" else ""
            warm = statistics.median(r["runs"][0]["warmup_cpu_s"] for r in fam["rounds"][name])
            lines.append(
                f"| {key if name == 'dfm' else ''} | {name} | {x['batch_size']} | "
                f"{x['seq_per_cpu_s_median']:.2f} ({x['seq_per_cpu_s_max']:.2f}) | "
                f"{x['seq_per_wall_s_median']:.2f} | {warm:.1f} | "
                f"{x['peak_rss_mib_median']:,.0f} | {ratio} | "
                f"{diff} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--role", default="orchestrate", choices=["orchestrate", "build", "torch", "dfm", "table"]
    )
    ap.add_argument("--family", nargs="+", default=["nt_v2", "dnabert2", "nt_v1", "generator"])
    ap.add_argument(
        "--set",
        default="promoters",
        choices=["promoters", "long"],
        help="promoters: n mouse TATA (251 bp) + n E. coli (81 bp) + n splice sites (60 bp); "
        "long: n slices of --long-bp bases of GRCh38 chr22",
    )
    ap.add_argument("--n-per-source", type=int, default=16, help="n (see --set)")
    ap.add_argument("--long-bp", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    ap.add_argument("--dfm-batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    ap.add_argument("--bucket", type=int, default=8)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dfm_genbench"))
    ap.add_argument("--torch-python", default="/work/venv-torch/bin/python")
    ap.add_argument("--dnabert2-git-dir", default="/work/.mirror/ashal-ali+CS224N_DNABERT2/repo")
    # internal (subprocess roles)
    ap.add_argument("--ckpt")
    ap.add_argument("--ids")
    ap.add_argument("--emb")
    ap.add_argument("--tmp")
    ap.add_argument("--batch-sizes", type=int, nargs="+")
    args = ap.parse_args()
    if args.role == "table":
        print(table(ROOT / "benchmarks" / "results" / "genomic_models.json"))
    elif args.role == "orchestrate":
        args.work.mkdir(parents=True, exist_ok=True)
        args.ckpt_dir = lambda fam: args.work / f"{fam}_x{args.scale}"
        orchestrate(args)
    else:
        args.family = args.family[0]
        {"build": role_build, "torch": role_torch, "dfm": role_dfm}[args.role](args)


if __name__ == "__main__":
    main()
