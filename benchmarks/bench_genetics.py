"""Benchmark dfm.tl.embed_genes (haplotype cache on / off) and dfm.tl.logo_attribution.

A simulated cohort on the real mitochondrial genome: ``--subjects`` haploid
subjects x the 15 MT genes (13 protein-coding + 2 rRNA), variants drawn with
haplogroup structure (``--founders`` founder haplotypes with Zipf-like
frequencies, ``--sites`` segregating sites per gene) plus private SNVs
(``--private`` per kb per subject): about 20-30 differences from the reference
per subject inside the genes, as in human mtDNA. Each case runs in a fresh
subprocess; "peak RSS added" is the process's peak resident memory during the
call over what it held after loading its inputs.

``--checkpoints hyenadna caduceus-ps`` adds published DNA models as encoders
(random weights at a small published configuration, written once by the
upstream torch code through ``benchmarks/_long_context``, so ``--torch-python``
and the sources named there are needed): whole genes embedded by the model
with the haplotype cache on, reported as CPU seconds per unique haplotype (per
distinct gene sequence), beside the k-mer encoder on the same cohort.

Usage::

    python benchmarks/bench_genetics.py [--subjects 1000] [--permutations 999]
    python benchmarks/bench_genetics.py --subjects 100 --checkpoints hyenadna caduceus-ps \
        --skip-logo

Prints markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: name -> (family module under benchmarks/, changes to its CONFIG giving the published
#: configuration named in the label, label, rc mode, tokenizer context or None); random weights
#: sequences per encoder call for the checkpoints: HyenaDNA's FFT at batch 256 x 2k tokens
#: held 5 GiB
CHECKPOINT_BATCH = 16
CHECKPOINTS = {
    "hyenadna": (
        "_long_context.hyenadna",
        dict(d_model=128, n_layer=2, d_inner=512, max_seq_len=16_386),
        "HyenaDNA, hyenadna-tiny-16k-seqlen-d128 config (d 128, 2 layers)",
        "average",
        None,
    ),
    "caduceus-ps": (
        "_long_context.caduceus",
        dict(n_layer=4, rcps=True),
        "Caduceus-PS, caduceus-ps_seqlen-1k_d_model-256_n_layer-4 config (d 256, 4 layers; "
        "context raised to 4,096)",
        "equivariant",
        4096,
    ),
}
GENOME = REPO.parent / "shared" / "data" / "genome"
CONTIGS = {"MT": "MT_human"}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(
    case: str, vcf: str, k: int, canonical: bool, n_perm: int, ckpt: str = "", rc: str = ""
) -> None:
    import numpy as np

    import diffbio_sc as dfm

    fasta, gtf = GENOME / "MT-human.fa", GENOME / "MT-genes_rCRS.gtf"
    genes = dfm.io.read_gtf(gtf)["gene_name"].dropna().unique().tolist()
    if ckpt:
        enc = dfm.models.load_checkpoint(ckpt)
    else:
        enc = dfm.tl.KmerEncoder(k, canonical=canonical)
    kw = dict(genes=genes, contig_map=CONTIGS, encoder=enc)
    if ckpt:
        kw.update(reverse_complement=rc, batch_size=CHECKPOINT_BATCH)
    # warm up imports and caches on a tiny call, then measure
    dfm.tl.embed_genes(fasta, gtf, vcf, samples=["S0000", "S0001"], n_components=1, **kw)
    base = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    if case in ("cache", "no_cache"):
        md = dfm.tl.embed_genes(fasta, gtf, vcf, haplotype_cache=case == "cache", **kw)
        a = md["genetics"]
        counts = a.uns["dfm"]["genetics"]["counts"]
        out = {
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "peak_rss_added_mib": _rss_mib() - base,
            "encoder_inputs": int(counts["n_encoder_inputs"]),
            "embedded": int(counts["n_encoder_calls_sequences"]),
            "distinct_gene_seqs": int(counts["n_distinct_gene_sequences"]),
            # haploid calls fill both haplotypes, and .X counts alleles over both copies
            "alt_alleles_per_subject": float(np.asarray(a.X).sum(1).mean()) / 2,
            "checksum": float(np.abs(a.obsm["X_dfm_genes"]).sum()),
            "timings": dict(a.uns["dfm"]["genetics"]["run_log"]["timings_s"]),
        }
    else:
        md = dfm.tl.embed_genes(fasta, gtf, vcf, projection=None, **kw)
        burden = np.asarray(md["genetics"].X)[:, genes.index("MT-ND2")]
        rng = np.random.default_rng(0)
        z = (burden - burden.mean()) / burden.std()
        y = rng.random(len(z)) < 1 / (1 + np.exp(-2.0 * z))
        base = _rss_mib()
        t0, c0 = time.perf_counter(), time.process_time()
        res = dfm.tl.logo_attribution(md, y, n_permutations=n_perm, seed=0)
        out = {
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "peak_rss_added_mib": _rss_mib() - base,
            "top_gene": str(res["gene"].iloc[0]),
            "top_q": float(res["q"].iloc[0]),
            "n_flagged": int(res["significant"].sum()),
            "auc_all": float(res.attrs["auc_all"]),
        }
    print("RESULT " + json.dumps(out))


def run_case(case, vcf, k, canonical, n_perm, ckpt="", rc=""):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--vcf",
        vcf,
        "--k",
        str(k),
        "--permutations",
        str(n_perm),
        "--ckpt",
        str(ckpt),
        "--rc",
        rc,
    ] + (["--canonical"] if canonical else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--founders", type=int, default=60)
    ap.add_argument("--sites", type=int, default=6)
    ap.add_argument("--private", type=float, default=0.3)
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--canonical", action="store_true")
    ap.add_argument("--logo-only", action="store_true", help="skip the embed_genes cases")
    ap.add_argument("--checkpoints", nargs="*", default=[], choices=sorted(CHECKPOINTS))
    ap.add_argument(
        "--rc-modes",
        nargs="*",
        default=[],
        help="extra reverse_complement modes to time per checkpoint (besides its default)",
    )
    ap.add_argument("--skip-logo", action="store_true", help="skip logo_attribution")
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("DFM_TORCH_PYTHON", "/work/venv-torch/bin/python"),
    )
    ap.add_argument("--child")
    ap.add_argument("--vcf")
    ap.add_argument("--ckpt", default="")
    ap.add_argument("--rc", default="")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.vcf, args.k, args.canonical, args.permutations, args.ckpt, args.rc)
        return

    import diffbio_sc as dfm

    tmp = Path(tempfile.mkdtemp(prefix="dfm-bench-genetics-"))
    fasta, gtf = GENOME / "MT-human.fa", GENOME / "MT-genes_rCRS.gtf"
    genes = dfm.io.read_gtf(gtf)["gene_name"].dropna().unique().tolist()
    vcf = tmp / "cohort.vcf"
    cohort = dfm.datasets.simulate_genetic_cohort(
        fasta,
        gtf,
        genes,
        vcf,
        n_subjects=args.subjects,
        contig_map=CONTIGS,
        sites_per_gene=args.sites,
        n_founders=args.founders,
        private_rate=args.private,
        seed=0,
    )
    n_sites = len(cohort.sites)
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    print(
        f"cohort: {args.subjects} haploid subjects x {len(genes)} MT genes, {n_sites} VCF "
        f"records ({int(cohort.sites['private'].sum())} private)\n"
    )
    print(
        "| encoder | haplotype cache | wall s | CPU s | peak RSS added, MiB | sequences embedded "
        "(of encoder inputs) | distinct gene sequences | differences from the reference per subject |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for k, canon in () if args.logo_only else ((args.k, args.canonical), (3, True)):
        for case in ("cache", "no_cache"):
            r = run_case(case, str(vcf), k, canon, args.permutations)
            results[(k, canon, case)] = r
            name = f"KmerEncoder(k={k}{', canonical' if canon else ''})"
            print(
                f"| {name} | {'on' if case == 'cache' else 'off'} | {r['wall_s']:.2f} | "
                f"{r['cpu_s']:.2f} | {r['peak_rss_added_mib']:.0f} | {r['embedded']:,} "
                f"({r['encoder_inputs']:,}) | {r['distinct_gene_seqs']:,} | "
                f"{r['alt_alleles_per_subject']:.1f} |"
            )
        on, off = results[(k, canon, "cache")], results[(k, canon, "no_cache")]
        assert abs(on["checksum"] - off["checksum"]) <= 1e-3 * max(1.0, off["checksum"])
        print(
            f"|  | cache speed-up | {off['wall_s'] / on['wall_s']:.1f}x | "
            f"{off['cpu_s'] / on['cpu_s']:.1f}x | | {off['embedded'] / on['embedded']:.1f}x fewer "
            "| | |"
        )
    if args.checkpoints:
        checkpoint_table(args, tmp, str(vcf), results)
    if args.skip_logo:
        return
    print()
    r = run_case("logo", str(vcf), 3, True, args.permutations)
    print(
        "| LOGO | subjects | genes x dims | resamples | permutations | wall s | CPU s | "
        "peak RSS added, MiB | top gene (q) | genes flagged | AUC all genes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| ridge on per-fold PCA (512) | {args.subjects} | 15 x 32 | 10 x 5 | "
        f"{args.permutations} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
        f"{r['peak_rss_added_mib']:.0f} | {r['top_gene']} ({r['top_q']:.3g}) | "
        f"{r['n_flagged']} | {r['auc_all']:.3f} |"
    )


def write_checkpoint(args, name: str, directory: Path) -> None:
    """Random weights at the published config of ``name``, by the upstream torch code."""
    module, changes, _, _, context = CHECKPOINTS[name]
    code = (
        "import sys, json, importlib; from pathlib import Path; "
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
        f"m = importlib.import_module({module!r}); "
        "kw = {} if sys.argv[3] == 'None' else {'max_length': int(sys.argv[3])}; "
        "m.write_checkpoint(Path(sys.argv[1]), 0, config=dict(m.CONFIG, **json.loads(sys.argv[2])), **kw)"
    )
    cmd = [args.torch_python, "-c", code, str(directory), json.dumps(changes), str(context)]
    subprocess.run(cmd, check=True)


def checkpoint_table(args, tmp: Path, vcf: str, results: dict) -> None:
    """Published-model encoders, haplotype cache on: cost per unique haplotype."""
    print()
    print(
        "| encoder | reverse_complement | subjects | unique haplotypes (distinct gene "
        "sequences) | sequences embedded | wall s | CPU s | CPU s per unique haplotype | "
        "peak RSS added, MiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [("k-mer", None)] + [(n, None) for n in args.checkpoints]
    for name, _ in rows:
        if name == "k-mer":
            r = results.get((args.k, args.canonical, "cache"))
            label, modes = f"KmerEncoder(k={args.k})", ["average"]
        else:
            directory = tmp / name
            write_checkpoint(args, name, directory)
            _, _, label, default, _ = CHECKPOINTS[name]
            modes = [default] + [m for m in args.rc_modes if m != default]
        for mode in modes:
            if name != "k-mer":
                r = run_case("cache", vcf, 0, False, 0, ckpt=str(directory), rc=mode)
            if r is None:
                continue
            print(
                f"| {label} | {mode} | {args.subjects:,} | {r['distinct_gene_seqs']:,} | "
                f"{r['embedded']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                f"{r['cpu_s'] / r['distinct_gene_seqs']:.4f} | "
                f"{r['peak_rss_added_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
