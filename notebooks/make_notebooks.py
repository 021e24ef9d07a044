"""Write the tutorial notebooks from plain cell lists (run: python notebooks/make_notebooks.py).

The cells live here so that changes are reviewable as a diff; the ``.ipynb`` files
are what users open (stored without outputs). ``tests/test_notebooks.py`` checks
that the committed notebooks equal what this script writes, then executes them.

Cells that draw a figure are tagged ``plot``: the notebook test checks that each
of them shows exactly one image.

``--check`` exits with status 1 if a committed notebook differs from its source.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent

MD, CODE, PLOT = "md", "code", "plot"


def notebook(cells: list[tuple[str, str]]) -> nbf.NotebookNode:
    """Build a notebook from ``(kind, source)`` pairs (``kind``: ``md``, ``code``, ``plot``)."""
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    out = []
    for i, (kind, src) in enumerate(cells):
        if kind == MD:
            cell = nbf.v4.new_markdown_cell(src)
        else:
            cell = nbf.v4.new_code_cell(src)
            if kind == PLOT:
                cell.metadata["tags"] = ["plot"]
        cell["id"] = f"cell-{i:02d}"  # stable ids keep the files reproducible
        out.append(cell)
    nb.cells = out
    return nb


SETUP = """import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import diffbio_sc as dfm

# Budget: the full run takes about {full} on a 2-core CPU. The test suite and the
# documentation build set DFM_TUTORIAL_QUICK=1 to run a smaller version of it.
QUICK = os.environ.get("DFM_TUTORIAL_QUICK") == "1"
{budget}
# Metrics: None is the full scib-metrics set. The quick run leaves out kBET and BRAS,
# whose first call compiles for a minute or more on a small CPU.
FAST_METRICS = ["isolated_labels", "kmeans_nmi", "kmeans_ari", "silhouette_label", "clisi"]
FAST_METRICS += ["silhouette_batch", "ilisi", "graph_connectivity", "pcr_comparison"]
METRICS = FAST_METRICS if QUICK else None
outdir = Path(tempfile.mkdtemp(prefix="dfm_tutorial_"))  # every file written goes here
dfm.settings.progress_bar = False  # tidy output; True shows progress bars
sc.settings.verbosity = 0"""

# The training curve of a model trained by the shared trainer (its .history).
LOSS_PLOT = """history = {model}.history
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(np.arange(1, len(history["train_loss"]) + 1), history["train_loss"], label="training")
ax.plot(np.arange(1, len(history["val_loss"]) + 1), history["val_loss"], label="validation")
ax.set(xlabel="epoch", ylabel="{ylabel}", title="{title}")
ax.legend()
plt.show()"""

LOAD = """adata = dfm.datasets.celllines_demo()
if N_CELLS is not None:
    sc.pp.subsample(adata, n_obs=N_CELLS, random_state=0)
adata"""

# --------------------------------------------------------------------------------------
# 01: single cell, end to end
# --------------------------------------------------------------------------------------
SINGLE_CELL = [
    (
        MD,
        """# Single-cell embeddings, end to end

Tokenize raw counts the Geneformer way, pretrain the native masked-expression transformer on
them, embed the cells, look at them with UMAP and Leiden clusters, and score the embedding for
cell-type annotation and batch correction against the two baselines everyone should beat: an
unintegrated PCA and Harmony.

The data are real: the bundled demo set is 1,408 cells from five lung-cancer cell lines (the
labels) profiled with five protocols (the batches), from the sc_mixology benchmark (Tian et al.
2019, *Nat Methods*; MIT licence). Harmony needs `pip install "diffbio_sc[harmony]"`.""",
    ),
    (
        CODE,
        SETUP.format(
            full="4 minutes",
            budget="EPOCHS = 3 if QUICK else 15  # passes over the training cells\n"
            "N_CELLS = 500 if QUICK else None  # None: all 1,408 cells",
        ),
    ),
    (CODE, LOAD),
    (CODE, """pd.crosstab(adata.obs["cell_type"], adata.obs["batch"])"""),
    (
        MD,
        """## Tokenize

Geneformer's rank-value encoding: normalise each cell to 10,000 counts, divide every gene by its
median over the cells that express it (so that ubiquitous genes do not dominate), and list the
expressed genes from highest to lowest. Token ids are the special tokens (`<pad>`, `<mask>`,
`<cls>`, `<eos>`) followed by `adata.var_names` in order.""",
    ),
    (
        CODE,
        """dfm.pp.gene_medians(adata)  # .var['dfm_median']
dfm.pp.tokenize(adata, recipe="geneformer_v1")  # .obsm['dfm_tokens'], .obs['dfm_n_tokens']

tokens = adata.obsm["dfm_tokens"]
print(f"tokens {tokens.shape}, median {int(adata.obs['dfm_n_tokens'].median())} genes per cell")
first = tokens[0][tokens[0] >= 4][:5]  # token id - 4 = position in var_names
# Gene symbols where the data has a column of them; this set has Ensembl ids only.
symbol_col = next((c for c in ("gene_symbols", "symbol", "feature_name") if c in adata.var), None)
genes = adata.var[symbol_col] if symbol_col else adata.var_names.to_series()
kind = "gene symbols" if symbol_col else "Ensembl ids; the data has no gene symbols"
print(f"cell 0, top 5 genes ({kind}):", ", ".join(genes.iloc[first - 4]))""",
    ),
    (
        MD,
        """## Pretrain and embed

`dfm.tl.pretrain` trains a small Flax NNX transformer on *this* dataset: each cell's top 64
genes go in as rank-value tokens with their expression, a random 30% of them are masked
(`MaskedExpressionConfig.mask_ratio`), and the model learns to predict their values. The validation loss is measured on held-out cells, and the best weights are kept.
This is a model trained in minutes on one dataset, not a foundation model pretrained on
millions of cells: see the external-models tutorial for importing those.""",
    ),
    (
        CODE,
        """model = dfm.tl.pretrain(adata, epochs=EPOCHS, seed=0)
model.save(outdir / "model")  # reload with dfm.models.load(outdir / "model")
t = model.metadata["training"]
print(
    f"{t['epochs_run']} epochs ({t['steps']} steps of {t['batch_size']} cells); best "
    f"validation loss {t['best_val_loss']:.3f} at epoch {t['best_epoch']}"
    + (" (stopped early)" if t["stopped_early"] else "")
)""",
    ),
    (
        PLOT,
        "import matplotlib.pyplot as plt\n\n"
        + LOSS_PLOT.format(model="model", ylabel="loss", title="masked-expression pretraining"),
    ),
    (
        CODE,
        """dfm.tl.embed(adata, model)  # .obsm['X_dfm']
adata.obsm["X_dfm"].shape, adata.uns["dfm"]["embeddings"]["X_dfm"]["adapter_mode"]""",
    ),
    (
        MD,
        """## UMAP and Leiden clusters

The embedding is an ordinary `.obsm` entry, so scanpy works on it as on a PCA. Leiden runs on
igraph (`flavor="igraph"`, installed with diffbio_sc).""",
    ),
    (
        PLOT,
        """sc.pp.neighbors(adata, use_rep="X_dfm", random_state=0)
sc.tl.umap(adata, random_state=0)
sc.tl.leiden(
    adata, flavor="igraph", n_iterations=2, directed=False, random_state=0, key_added="leiden_dfm"
)
sc.pl.umap(adata, color=["cell_type", "batch", "leiden_dfm"], wspace=0.45)""",
    ),
    (
        MD,
        """What the figure shows: the five cell lines (left) lie in separate regions, so the embedding
keeps the biology. Within each cell line, though, the cells group by protocol (middle: the
colours form patches, e.g. Drop-seq and CEL-seq2 apart from the three CEL-seq2 plates), and
Leiden (right) can cut a cell line along those patches. The model was trained without the
batch labels, so nothing removed the protocol differences; the Harmony baseline below merges
the protocols within each cell line. (`dfm.tl.pretrain(adata, batch_key="batch")` trains the
model to remove them as well, with an adversarial batch classifier.)""",
    ),
    (
        CODE,
        """from sklearn.metrics import adjusted_rand_score

ari = adjusted_rand_score(adata.obs["cell_type"], adata.obs["leiden_dfm"])
print(f"Leiden clusters vs cell lines: adjusted Rand index {ari:.3f}")
pd.crosstab(adata.obs["leiden_dfm"], adata.obs["cell_type"])""",
    ),
    (
        MD,
        """## Benchmark against PCA and Harmony

`dfm.tl.benchmark` scores every embedding with the same protocol: kNN and logistic-regression
probes for the cell line (macro-F1 under stratified 5-fold cross-validation) and the scib-metrics
bio-conservation and batch-correction metrics. The baselines are computed from the counts:
`X_pca_baseline` (PCA of log-normalised highly variable genes, no integration) and
`X_harmony_baseline` (Harmony on that PCA). Higher is better for every metric.""",
    ),
    (
        CODE,
        """results = dfm.tl.benchmark(
    adata,
    "X_dfm",
    batch_key="batch",
    label_key="cell_type",
    baselines=("pca", "harmony"),
    baseline_key_added=True,
    metrics=METRICS,
    name="tutorial",
    dataset="sc_mixology cell lines",  # names the data in the figure's title
)
results.pivot_table(index="metric", columns="embedding", values="value").round(3)""",
    ),
    (PLOT, """dfm.pl.benchmark(results, save=outdir / "scores.png")"""),
    (
        PLOT,
        """dfm.pl.embedding(
    adata,
    "X_harmony_baseline",
    color=("cell_type", "batch"),
    title=("Harmony: cell line", "Harmony: batch"),
    compute_umap=True,  # a seeded UMAP of the 50-d embedding, on a private copy
)""",
    ),
    (
        MD,
        """The same cells after Harmony: each cell line is one group with its protocols mixed (right),
where the native embedding's UMAP above splits each cell line by protocol. That mixing is what
the batch-correction scores measure; the header of the scores figure above names the best
embedding on each aggregate and its margin over the unintegrated PCA.""",
    ),
    (
        MD,
        """The full report, with the parameters, seeds and package versions that produced it, is in
`adata.uns['dfm']['benchmarks']['tutorial']` and survives a round trip through `.h5ad`:""",
    ),
    (
        CODE,
        """adata.write_h5ad(outdir / "tutorial.h5ad")
report = sc.read_h5ad(outdir / "tutorial.h5ad").uns["dfm"]["benchmarks"]["tutorial"]
sorted(report)""",
    ),
]

# --------------------------------------------------------------------------------------
# 02: external models
# --------------------------------------------------------------------------------------
EXTERNAL = [
    (
        MD,
        """# Embeddings from other models: Geneformer, scGPT, UCE

Foundation models are usually run with their own code, often on a GPU; what comes back is a
file. `dfm.tl.load_embeddings` reads such files, matches their rows to your cells by ID (never
silently by position), stores the embedding in `.obsm` and records where it came from in
`.uns['dfm']['embeddings']`.

This tutorial writes one file in each tool's own layout into a temporary folder, loads them,
and scores them side by side. **Nothing is downloaded**: the "model outputs" are stand-ins
made from the data (a random projection of a PCA plus noise, in each tool's width), so the
scores below say nothing about Geneformer, scGPT or UCE. The file layouts, the alignment and
the provenance are the point. The last section runs Geneformer and scGPT checkpoints in
process, with tiny random-weight checkpoints from the repository's test fixtures.""",
    ),
    (
        CODE,
        SETUP.format(
            full="3 minutes",
            budget="N_CELLS = 400 if QUICK else None  # None: all 1,408 cells",
        ),
    ),
    (CODE, LOAD),
    (
        CODE,
        """rng = np.random.default_rng(0)
pca = dfm.tl.pca_baseline(adata, n_comps=30)


def stand_in(n_dims, noise):
    \"\"\"Make a stand-in model output: a PCA, randomly projected to n_dims, plus noise.\"\"\"
    projection = rng.normal(size=(pca.shape[1], n_dims)) / np.sqrt(pca.shape[1])
    signal = pca @ projection
    return (signal + noise * signal.std() * rng.normal(size=signal.shape)).astype(np.float32)""",
    ),
    (
        MD,
        """## Geneformer: a CSV from `EmbExtractor`

`EmbExtractor.extract_embs(...)` writes `<output_prefix>.csv` with pandas: an unnamed index
column holding *row numbers* of its own dataset (which it sorts by length, longest cell first),
one column per dimension named `0` to `d-1`, then the `emb_label` columns you asked for. Ask for
a label column that holds your cell IDs (here `cell_barcode`) and tell `load_embeddings` to use
it.""",
    ),
    (
        CODE,
        """n_genes = np.asarray((adata.X > 0).sum(axis=1)).ravel()
order = np.argsort(-n_genes, kind="stable")  # Geneformer's order: longest cell first
table = pd.DataFrame(stand_in(512, 0.5)[order])  # columns 0..511
table["cell_barcode"] = adata.obs_names[order]
table["cell_type"] = adata.obs["cell_type"].to_numpy()[order]
table.to_csv(outdir / "geneformer_embs.csv")  # index included, as EmbExtractor writes it
pd.read_csv(outdir / "geneformer_embs.csv", nrows=3).iloc[:, [0, 1, 2, 3, -2, -1]]""",
    ),
    (
        MD,
        """Forgetting `id_key` is the classic mistake: the only IDs left are the row numbers, which would
silently scramble the cells if used by position. The import refuses and says what to do; the
AnnData is unchanged after any error.""",
    ),
    (
        CODE,
        """try:
    dfm.tl.load_embeddings(adata, outdir / "geneformer_embs.csv", source="geneformer")
except ValueError as err:
    print(err)""",
    ),
    (
        CODE,
        """dfm.tl.load_embeddings(
    adata,
    outdir / "geneformer_embs.csv",
    source="geneformer",  # -> .obsm['X_geneformer']
    id_key="cell_barcode",
    preprocessing_version="rank_value_v2",
    pooling_strategy="mean",
    layer_index=-1,  # Geneformer's emb_layer: -1 = penultimate layer
    artifact_id="Geneformer-V2-104M (stand-in)",
)
adata.uns["dfm"]["embeddings"]["X_geneformer"]["alignment"]""",
    ),
    (
        MD,
        """## scGPT: an `.h5ad` with `.obsm['X_scGPT']`

`scgpt.tasks.embed_data(...)` returns your AnnData with L2-normalised cell embeddings in
`.obsm['X_scGPT']`, usually saved with `write_h5ad`; other `.obsm` entries (a UMAP, a PCA) often
travel with it. The IDs are the file's `obs_names`; the preset picks `X_scGPT` among the
entries and records whether the rows have unit norm.""",
    ),
    (
        CODE,
        """import anndata as ad

emb = stand_in(512, 0.5)
emb /= np.linalg.norm(emb, axis=1, keepdims=True)  # scGPT's rows have unit norm
shuffle = rng.permutation(adata.n_obs)  # the file's own row order
scgpt_out = ad.AnnData(obs=adata.obs.iloc[shuffle][["cell_type", "batch"]].copy())
scgpt_out.obsm["X_scGPT"] = emb[shuffle]
scgpt_out.obsm["X_umap"] = rng.normal(size=(adata.n_obs, 2)).astype(np.float32)
scgpt_out.write_h5ad(outdir / "scgpt_embedded.h5ad")

dfm.tl.load_embeddings(
    adata, outdir / "scgpt_embedded.h5ad", source="scgpt", artifact_id="scGPT_human (stand-in)"
)
info = adata.uns["dfm"]["embeddings"]["X_scgpt"]
info["obsm_key_in_file"], info["rows_unit_norm"], info["requires_batch_context"]""",
    ),
    (
        MD,
        """## UCE: `<name>_uce_adata.h5ad` with `.obsm['X_uce']`

UCE's `eval_single_anndata.py` writes the cells it embedded, with 1,280-dimensional embeddings
in `.obsm['X_uce']`. UCE drops cells and genes it cannot use, so its file can miss cells of
yours; the import then stops and names them (pass `allow_subset=True` only for the opposite
case: a file with *extra* cells).""",
    ),
    (
        CODE,
        """uce_out = ad.AnnData(obs=adata.obs[["cell_type"]].copy())
uce_out.obsm["X_uce"] = stand_in(1280, 0.5)
uce_out.write_h5ad(outdir / "demo_uce_adata.h5ad")
uce_out[3:].copy().write_h5ad(outdir / "filtered_uce_adata.h5ad")  # three cells dropped

try:
    dfm.tl.load_embeddings(adata, outdir / "filtered_uce_adata.h5ad", source="uce")
except ValueError as err:
    print(err)""",
    ),
    (
        CODE,
        """dfm.tl.load_embeddings(
    adata, outdir / "demo_uce_adata.h5ad", source="uce", artifact_id="UCE-33l (stand-in)"
)
{k: adata.obsm[k].shape for k in adata.obsm}""",
    ),
    (
        MD,
        """## Score them side by side

The same protocol as for the native model: annotation probes and scib-metrics, next to the
unintegrated PCA baseline.""",
    ),
    (
        CODE,
        """results = dfm.tl.benchmark(
    adata,
    ["X_geneformer", "X_scgpt", "X_uce"],
    batch_key="batch",
    label_key="cell_type",
    baselines=("pca",),
    metrics=METRICS,
    name="external",
    dataset="sc_mixology cell lines, stand-in embeddings",  # the figure's title
)
results.pivot_table(index="metric", columns="embedding", values="value").round(3)""",
    ),
    (PLOT, """dfm.pl.benchmark(results, save=outdir / "external_scores.png")"""),
    (PLOT, """dfm.pl.embedding(adata, "X_uce", color=("cell_type", "batch"), compute_umap=True)"""),
    (
        MD,
        """## Provenance

Each imported embedding records its source, the file's SHA-256, the options given and how the
rows were aligned, as plain values that survive `.h5ad`:""",
    ),
    (
        CODE,
        """adata.write_h5ad(outdir / "with_external.h5ad")
back = sc.read_h5ad(outdir / "with_external.h5ad")
record = back.uns["dfm"]["embeddings"]["X_geneformer"]
{
    k: record[k]
    for k in (
        "source",
        "adapter_mode",
        "artifact_id",
        "preprocessing_version",
        "pooling_strategy",
        "layer_description",
        "n_dims",
    )
}""",
    ),
    (
        MD,
        """## Running a checkpoint in process: Geneformer and scGPT

`dfm.tl.embed` also runs published Geneformer (Hugging Face `BertForMaskedLM`: `config.json`,
`model.safetensors` or `pytorch_model.bin`, the token and gene-median dictionaries) and scGPT
(`args.json`, `vocab.json`, `best_model.pt`) checkpoints itself, in JAX, without PyTorch:
tokenization as upstream, the forward pass, and the pooling of Geneformer's `EmbExtractor` or
scGPT's `embed_data`.

Real weights come from the upstream model hubs (Hugging Face `ctheodoris/Geneformer`, the
scGPT model zoo): download them yourself and pass the directory. Nothing here downloads
anything. This tutorial uses instead the **tiny random-weight checkpoints in the repository's
test fixtures** (`tests/checkpoints/fixtures`, present in a checkout of the repository, not
in an installed package): 2-3 layers, 16 dimensions, 40 genes, written by the real upstream
code (`transformers` and scGPT's own model class; `scripts/make_checkpoint_fixtures.py`),
together with the embeddings that code computed for seven small cells. Their embeddings mean
nothing biologically; what they show is that the files load and that the numbers match the
reference implementation.""",
    ),
    (
        CODE,
        """import inspect

FIXTURES = Path(inspect.getfile(dfm)).parents[2] / "tests" / "checkpoints" / "fixtures"
if not FIXTURES.is_dir():
    raise FileNotFoundError(f"{FIXTURES} not found: this section needs a repository checkout.")
sorted(p.name for p in (FIXTURES / "geneformer_v2").iterdir())""",
    ),
    (
        CODE,
        """import scipy.sparse as sp

c = np.load(FIXTURES / "cells.npz")  # 7 cells x 48 genes; 40 of the genes are in the vocabulary
cells = ad.AnnData(
    X=sp.csr_matrix(c["counts"].astype(np.float32)),
    obs=pd.DataFrame(index=c["obs"]),
    var=pd.DataFrame({"symbol": c["symbols"]}, index=c["ensembl"]),  # Ensembl IDs + symbols
)
dfm.tl.embed(cells, model=FIXTURES / "geneformer_v2")  # Geneformer matches Ensembl IDs
dfm.tl.embed(cells, model=FIXTURES / "scgpt", gene_key="symbol")  # scGPT matches symbols
{k: cells.obsm[k].shape for k in cells.obsm}""",
    ),
    (
        MD,
        """The provenance record names the checkpoint, the digests of its weights and vocabulary, how
the embedding was pooled, and how many of your genes the model knows. Low gene coverage is the
usual reason a checkpoint embeds a dataset poorly; below `min_vocab_coverage` (10% by default)
the call stops with an error instead.""",
    ),
    (
        CODE,
        """record = cells.uns["dfm"]["embeddings"]["X_geneformer"]
fields = ("source", "adapter_mode", "preprocessing_version", "pooling_strategy", "layer_index")
coverage = ("n_genes", "n_genes_in_vocab", "frac_genes_in_vocab", "frac_counts_in_vocab")
{k: record[k] for k in fields + coverage}""",
    ),
    (
        CODE,
        """record["artifact_sha256"][:16], record["checkpoint_path"]""",
    ),
    (
        MD,
        """The same cells, embedded by the upstream PyTorch code when the fixtures were made: the largest
difference is at the level of float32 rounding.""",
    ),
    (
        CODE,
        """reference = {
    "X_geneformer": np.load(FIXTURES / "expected_geneformer_v2.npz")["mean_embedding"],
    "X_scgpt": np.load(FIXTURES / "expected_scgpt.npz")["cls_embedding"],
}
{k: float(np.abs(cells.obsm[k] - ref).max()) for k, ref in reference.items()}""",
    ),
]

# --------------------------------------------------------------------------------------
# 04: gene-level genetics
# --------------------------------------------------------------------------------------
GENETICS_SETUP = """import os
import tempfile
from pathlib import Path

import numpy as np

import diffbio_sc as dfm

# Budget: the full run takes about 15 seconds on a 2-core CPU. The test suite and the
# documentation build set DFM_TUTORIAL_QUICK=1 to run a smaller version of it.
QUICK = os.environ.get("DFM_TUTORIAL_QUICK") == "1"
N_SUBJECTS = 120 if QUICK else 300
N_PERMUTATIONS = 99 if QUICK else 999  # permutation test of each gene
outdir = Path(tempfile.mkdtemp(prefix="dfm_tutorial_"))  # every file written goes here
dfm.settings.progress_bar = False  # tidy output; True shows progress bars"""

GENETICS = [
    (
        MD,
        """# Gene-level genetics: from a VCF to subject embeddings and gene attribution

`dfm.tl.embed_genes` turns a reference genome, a gene annotation (GTF) and the subjects'
variants (VCF) into embeddings: each subject's sequence of each gene (its alleles applied to the
reference), embedded, then joined into one vector per subject. `dfm.tl.logo_attribution` then
asks which genes carry the signal for a binary phenotype, by leaving one gene out at a time and
measuring the drop in cross-validated AUC, with a test that accounts for overlapping folds and a
Benjamini-Hochberg FDR.

To run anywhere, this tutorial writes its own small reference (random sequence with eight
two-exon genes, some on the minus strand) and simulates a cohort and a phenotype on it with
`dfm.datasets.simulate_genetic_cohort` and `simulate_phenotype`: the variants sit on the real
reference bases, so every check (REF matching, indels shifting later variants) runs for real,
but the cohort itself is synthetic. Point the same calls at your own FASTA, GTF and VCF.
Coordinates are 1-based and closed, as in GTF and VCF files.""",
    ),
    (CODE, GENETICS_SETUP),
    (
        MD,
        """## A reference and its genes

One 12 kb contig, `chr1`, and eight genes, each with two exons. `dfm.io.read_gtf` reads the
annotation into a table with the attributes as columns.""",
    ),
    (
        CODE,
        """rng = np.random.default_rng(0)
contig = "".join(rng.choice(list("ACGT"), 12_000))
fasta = outdir / "reference.fa"
rows = [contig[i : i + 60] for i in range(0, len(contig), 60)]
fasta.write_text(">chr1\\n" + "\\n".join(rows) + "\\n")

lines = []
for g in range(8):
    start = 500 + g * 1400  # gene span: start .. start + 999
    strand = "+" if g % 2 == 0 else "-"
    ids = f'gene_id "G{g}"; gene_name "GENE{g}";'
    tx = f'{ids} transcript_id "G{g}.1";'
    lines.append(f"chr1\\tsim\\tgene\\t{start}\\t{start + 999}\\t.\\t{strand}\\t.\\t{ids}")
    lines.append(f"chr1\\tsim\\ttranscript\\t{start}\\t{start + 999}\\t.\\t{strand}\\t.\\t{tx}")
    lines.append(f"chr1\\tsim\\texon\\t{start}\\t{start + 399}\\t.\\t{strand}\\t.\\t{tx}")
    lines.append(f"chr1\\tsim\\texon\\t{start + 600}\\t{start + 999}\\t.\\t{strand}\\t.\\t{tx}")
gtf = outdir / "genes.gtf"
gtf.write_text("\\n".join(lines) + "\\n")

annotation = dfm.io.read_gtf(gtf)
genes = annotation["gene_name"].unique().tolist()
annotation.head()""",
    ),
    (
        MD,
        """## A cohort and a phenotype

Each gene gets six segregating sites (SNVs and short indels); subjects are phased diploid. The
phenotype is driven by the alternative-allele burden in `GENE3` only.""",
    ),
    (
        CODE,
        """cohort = dfm.datasets.simulate_genetic_cohort(
    fasta, gtf, genes, outdir / "cohort.vcf", n_subjects=N_SUBJECTS, ploidy=2, seed=1
)
phenotype = dfm.datasets.simulate_phenotype(cohort, "GENE3", effect=2.0, seed=3)
print(f"{len(cohort.samples)} subjects, {len(cohort.sites)} sites, {phenotype.sum()} cases")
cohort.sites.head()""",
    ),
    (
        MD,
        """## Embed every subject's genes

The encoder here is a 4-mer profile (`dfm.tl.KmerEncoder`), which needs no training; any
sequence model can take its place (`dfm.tl.FunctionEncoder`, or embeddings computed elsewhere
with `dfm.tl.PrecomputedEncoder`). Haplotypes shared by several subjects (the reference above
all) are embedded once. The result is a MuData whose `genetics` modality holds one row per
subject.""",
    ),
    (
        CODE,
        """mdata = dfm.tl.embed_genes(
    fasta,
    gtf,
    cohort.path,
    genes=genes,
    encoder=dfm.tl.KmerEncoder(4),
    reverse_complement="average",  # embed both strands and average
    n_components=64,
    log_path=outdir / "embed_genes.log",
)
genetics = mdata["genetics"]
print(genetics)
rec = genetics.uns["dfm"]["genetics"]
list(rec["gene_list"]), rec["reference_version"]""",
    ),
    (
        MD,
        """## A published DNA model in the same call: Caduceus-PS

The k-mer profile can be swapped for a published DNA model run in-process, in JAX.
Caduceus-PS (bidirectional Mamba with reverse-complement parameter sharing) gives embeddings
that are exactly invariant to the strand, so `reverse_complement="equivariant"` embeds one
strand only. To stay offline and fast, this uses the package's test fixture: a *tiny, randomly
initialised* Caduceus-PS (2 layers, width 16, a 32-token context, so genes are cut into
windows) whose outputs equal the upstream code to 1e-5; its vectors show the plumbing, not
biology. A real checkpoint (131k-base context: whole genes, no windows) is a one-line change,
downloaded once and then read from the cache:

```python
caduceus = dfm.models.from_pretrained("kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16")
```""",
    ),
    (
        CODE,
        """import inspect

roots = [Path.cwd(), *Path.cwd().parents, Path(inspect.getfile(dfm)).resolve().parents[2]]
candidates = [r / "tests" / "checkpoints" / "fixtures" / "caduceus_ps" for r in roots]
fixture = next((c for c in candidates if c.is_dir()), None)  # None for an installed wheel
if fixture is None:
    print("no source checkout here: use dfm.models.from_pretrained(...) above instead")
else:
    caduceus = dfm.models.load_checkpoint(fixture)
    print(caduceus)
    by_caduceus = dfm.tl.embed_genes(
        fasta,
        gtf,
        cohort.path,
        genes=genes[:2],
        encoder=caduceus,
        reverse_complement="equivariant",  # one pass: the model is strand-invariant
        n_components=8,
        log_path=outdir / "embed_genes_caduceus.log",
    )
    print(by_caduceus["genetics"].obsm["X_dfm_genes"].shape)""",
    ),
    (
        MD,
        """## Which gene carries the signal?

Leave-one-gene-out: a ridge classifier on the subject embeddings is cross-validated with and
without each gene (repeated stratified folds, the projection refitted inside every fold); the
drop in AUC is the gene's contribution, tested by permutation and corrected for the number of
genes.""",
    ),
    (
        CODE,
        """attribution = dfm.tl.logo_attribution(
    mdata, phenotype, n_repeats=5, n_folds=5, n_permutations=N_PERMUTATIONS, seed=0
)
attribution.round(3)""",
    ),
    (PLOT, """dfm.pl.logo(attribution, save=outdir / "logo.png")"""),
    (
        MD,
        """`GENE3`, the only gene the phenotype depends on, comes first with a clear drop in AUC; the
others scatter around zero. A permutation test cannot give a p-value below
`1 / (n_permutations + 1)`: with the quick run's 99 permutations that is 0.01, which after the
correction for eight genes cannot reach q < 0.05. The full run's 999 permutations can; use at
least that many on your data, or `test="corrected_t"` (no permutations).""",
    ),
]

# --------------------------------------------------------------------------------------
# 03: DNA sequences in MuData
# --------------------------------------------------------------------------------------
SEQUENCES_SETUP = """import os
import tempfile
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import mudata as md
import numpy as np

import diffbio_sc as dfm

md.set_options(pull_on_update=False)  # mudata's upcoming default: modalities keep their .obs

# Budget: the full run takes about {full} on a 2-core CPU. The test suite and the
# documentation build set DFM_TUTORIAL_QUICK=1 to run a smaller version of it.
QUICK = os.environ.get("DFM_TUTORIAL_QUICK") == "1"
PER_CLASS = 150 if QUICK else 800  # sequences per class (promoter / non-promoter)
PRETRAIN_EPOCHS = 3 if QUICK else 30
FINETUNE_EPOCHS = 3 if QUICK else 20


def shared_data() -> Path:
    # shared/data beside the repository checkout this notebook runs in, found by looking
    # upwards from the working directory (notebooks/ when opened in Jupyter or run with
    # jupyter nbconvert); DFM_SHARED_DATA, if set, wins.
    if os.environ.get("DFM_SHARED_DATA"):
        return Path(os.environ["DFM_SHARED_DATA"])
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "src" / "diffbio_sc").is_dir():  # the repository root
            return folder.parent / "shared" / "data"
    raise FileNotFoundError(
        f"No diffbio_sc checkout above {{Path.cwd()}}: run this notebook from the "
        "repository's notebooks/ folder, or set DFM_SHARED_DATA to the shared data folder."
    )


# The real sequences live in shared/data beside a checkout of the repository; nothing is
# downloaded.
DATA = shared_data() / "dna"
if not (DATA / "promoters_cnnprom").is_dir():
    raise FileNotFoundError(f"{{DATA}} not found: set DFM_SHARED_DATA to the shared data folder.")
outdir = Path(tempfile.mkdtemp(prefix="dfm_tutorial_"))  # every file written goes here
dfm.settings.progress_bar = False  # tidy output; True shows progress bars"""

SEQUENCES = [
    (
        MD,
        """# DNA sequences in MuData: embed, then a genomics task

Sequences are observations like cells: `dfm.io.read_fasta` reads a FASTA file into an AnnData
with one row per record (the sequence in `.obs['sequence']`), which sits in a MuData as a
`dna` modality next to any expression modality. This tutorial pretrains a small
sequence transformer by masked-language modelling on real promoter sequences, embeds them,
looks at the embedding, and scores it on a classification task against two baselines that
need no training: k-mer frequencies and a positional one-hot encoding, both with logistic
regression.

The data are real: *E. coli* sigma-70 promoters from RegulonDB (81 bp, 839 of them) and
non-promoter fragments of the same length (3,000), as published with CNNProm (Umarov &
Solovyev 2017, *PLOS One*; MIT licence). They are not bundled with the package: a checkout
of the repository finds them in `../shared/data/dna` (or wherever `DFM_SHARED_DATA` points).
The model here has about 18,000 parameters and trains in a minute, unlike DNABERT-2 or the
Nucleotide Transformer; embeddings exported from those load with
`dfm.tl.load_embeddings` and are scored by the same task (`frozen_encoders=`).""",
    ),
    (CODE, SEQUENCES_SETUP.format(full="5 minutes")),
    (
        MD,
        """## Read the FASTA files into a MuData

One AnnData per file, the class in `.obs['label']`, a seeded subsample of each class, then a
MuData with the sequences as its `dna` modality.""",
    ),
    (
        CODE,
        """rng = np.random.default_rng(0)
parts = []
for label, name in [("promoter", "Ecoli_prom.fa"), ("non_promoter", "Ecoli_non_prom.fa")]:
    part = dfm.io.read_fasta(DATA / "promoters_cnnprom" / name, duplicates="make_unique")
    part = part[np.sort(rng.choice(part.n_obs, size=PER_CLASS, replace=False))].copy()
    part.obs["label"] = label
    parts.append(part)
seqs = ad.concat(parts, index_unique="-", keys=["p", "n"])  # record ids made unique
seqs.obs["label"] = seqs.obs["label"].astype("category")
mdata = md.MuData({"dna": seqs})
mdata""",
    ),
    (CODE, """mdata["dna"].obs.head(3)"""),
    (
        MD,
        """## Pretrain a sequence encoder

`dfm.tl.pretrain_sequences` trains a `dfm.models.SequenceEncoder` (single-nucleotide tokens, mean
pooling) to predict 15% masked bases from the rest, on these sequences only and without
their labels; a seeded tenth is held out for the validation loss and early stopping. The
configuration is deliberately tiny so that it trains on a laptop CPU in a minute.""",
    ),
    (
        CODE,
        """config = dfm.models.SequenceEncoderConfig(
    hidden_dim=32, num_layers=2, num_heads=4, intermediate_dim=64, max_length=96, dropout=0.1
)
encoder = dfm.tl.pretrain_sequences(
    mdata, mod="dna", config=config, epochs=PRETRAIN_EPOCHS, batch_size=32, seed=0
)
encoder.save(outdir / "encoder")  # reload with dfm.models.load(outdir / "encoder")
t = encoder.metadata["training"]
print(
    f"{t['epochs_run']} epochs ({t['steps']} steps of {t['batch_size']} sequences); best "
    f"validation loss {t['best_val_loss']:.3f} at epoch {t['best_epoch']}"
    + (" (stopped early)" if t["stopped_early"] else "")
)""",
    ),
    (
        PLOT,
        LOSS_PLOT.format(
            model="encoder", ylabel="masked-base loss", title="masked-language pretraining"
        ),
    ),
    (
        MD,
        """## Embed

`dfm.tl.embed_sequences` writes one vector per sequence into the `dna` modality's `.obsm` and
records the model and its settings. Promoters are oriented (the strand matters), so the
reverse complement is not averaged in here (`reverse_complement=None`); for unoriented
sequences keep the default `'average'`. A sequence's vector depends on that sequence alone,
not on what shares its batch.""",
    ),
    (
        CODE,
        """dfm.tl.embed_sequences(mdata, mod="dna", encoder=encoder, reverse_complement=None)
dna = mdata["dna"]
record = dna.uns["dfm"]["embeddings"]["X_dfm_seq"]
print(dna.obsm["X_dfm_seq"].shape)
fields = ("source", "adapter_mode", "pooling_strategy", "reverse_complement", "n_dims")
{k: record[k] for k in fields}""",
    ),
    (
        PLOT,
        """dfm.pl.embedding(
    dna, "X_dfm_seq", color="label", title="encoder embedding", compute_umap=True
)""",
    ),
    (
        MD,
        """## A published model in the same call

The same function runs published DNA models in-process, in JAX: Nucleotide Transformer v1/v2,
GENERator and DNABERT-2, loaded from their Hugging Face layout by `dfm.models.load_checkpoint`
or fetched by name with `dfm.models.from_pretrained` (a one-time download, then offline from
the cache). To keep this tutorial offline and fast, it uses the package's test fixture: a
*tiny, randomly initialised* Nucleotide Transformer v1 (2 layers, width 8) whose outputs
equal the reference `transformers` code to 1e-5. Its vectors show the plumbing, not biology;
the one-line change in the comment runs a real checkpoint.""",
    ),
    (
        CODE,
        """import inspect


def tiny_nt_fixture() -> Path | None:
    # the test fixture of a source checkout (this notebook's, or the one diffbio_sc is
    # installed from in development mode); None for an installed wheel
    for folder in [Path.cwd(), *Path.cwd().parents, Path(inspect.getfile(dfm)).resolve().parents[2]]:
        path = folder / "tests" / "checkpoints" / "fixtures" / "nucleotide_transformer_v1"
        if path.is_dir():
            return path
    return None


fixture = tiny_nt_fixture()
if fixture is None:
    print("no source checkout here: use dfm.models.from_pretrained(...) below instead")
else:
    nt = dfm.models.load_checkpoint(fixture)
    # A real checkpoint instead (about 200 MB, downloaded once):
    # nt = dfm.models.from_pretrained("InstaDeepAI/nucleotide-transformer-v2-50m-multi-species")
    print(nt)
    dfm.tl.embed_sequences(mdata, mod="dna", encoder=nt, reverse_complement=None, key_added="X_nt")
    record = mdata["dna"].uns["dfm"]["embeddings"]["X_nt"]
    print(mdata["dna"].obsm["X_nt"].shape, record["model_family"], record["pooling_strategy"])""",
    ),
    (
        MD,
        """## A genomics task: promoter or not?

`dfm.tl.genomics_tasks` splits the task's sequences once (seeded, stratified, identical
sequences kept on one side), then scores, on the held-out part: a logistic-regression probe on
the frozen encoder (`frozen_probe`), the encoder fine-tuned end to end with a classification
head (`fine_tuned`), and the two baselines (`kmer_logreg`, `onehot_logreg`). With
`encoder=None` it pretrains a fresh encoder from `config` on the *training* sequences only, so
no test sequence is seen before scoring (the encoder above saw every sequence, without labels;
pass it as `encoder=` to score it, knowing that).""",
    ),
    (
        CODE,
        """results = dfm.tl.genomics_tasks(
    "promoters_ecoli",
    config=config,
    data_dir=DATA,
    max_per_class=PER_CLASS,
    pretrain_epochs=PRETRAIN_EPOCHS,
    finetune_epochs=FINETUNE_EPOCHS,
    seed=0,
)
results.pivot_table(index="metric", columns="embedding", values="value").round(3)""",
    ),
    (
        PLOT,
        """dfm.pl.benchmark(results, title="E. coli promoters", save=outdir / "promoters.png")""",
    ),
    (
        MD,
        """Read the table as it is: on this task, at this size, the k-mer baseline is hard to beat, and
a small encoder trained for a minute does not beat it (the documentation's benchmarks page
has the numbers of a larger budget). That is the point of
scoring against baselines in the same run. The report records the data source, the split,
the encoder's configuration and training, and the seeds:""",
    ),
    (
        CODE,
        """report = results.attrs["report"]["tasks"]["promoters_ecoli"]
{k: report[k] for k in ("source", "n_train", "n_test", "class_counts", "n_identical_grouped")}""",
    ),
]


NOTEBOOKS = {
    "01_single_cell.ipynb": SINGLE_CELL,
    "02_external_models.ipynb": EXTERNAL,
    "03_sequences.ipynb": SEQUENCES,
    "04_genetics.ipynb": GENETICS,
}


def main(argv: list[str]) -> int:
    """Write the notebooks, or with ``--check`` report those that differ from this source."""
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbf.writes(notebook(cells)) + "\n"
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print("wrote", path)
    if stale:
        print("out of date (run python notebooks/make_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
