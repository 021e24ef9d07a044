"""Write the tutorial notebooks from plain cell lists (run: python notebooks/make_notebooks.py).

Keeping the source here makes notebook diffs reviewable; the .ipynb files are
what users open, and tests/test_notebooks.py executes them.
"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent


def notebook(cells: list[tuple[str, str]]) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        for kind, src in cells
    ]
    return nb


QUICKSTART = [
    ("md", """# diffbio_sc quickstart

Tokenize single-cell counts, train the native masked-expression transformer, embed the cells,
import an embedding made elsewhere, and score everything against a PCA baseline, on the bundled
demo data: 1,408 cells from five lung-cancer cell lines profiled with five protocols
(sc_mixology, Tian et al. 2019, MIT licence)."""),
    ("code", """import numpy as np
import scanpy as sc
import diffbio_sc as dfm

dfm.settings.progress_bar = False   # keep the executed notebook tidy
adata = dfm.datasets.celllines_demo()
adata"""),
    ("md", """## Tokenize

Geneformer's rank-value encoding: normalise each cell to 10,000 counts, divide by each gene's
nonzero median over cells, rank the expressed genes. Ties keep gene order."""),
    ("code", """dfm.pp.gene_medians(adata)                       # .var['dfm_median']
dfm.pp.tokenize(adata, recipe="geneformer_v1")   # .obsm['dfm_tokens'], .obs['dfm_n_tokens']
tok = adata.uns["dfm"]["tokenizer"]["dfm_tokens"]
print(adata.obsm["dfm_tokens"].shape, "tokens; coverage of counts:", round(tok["frac_counts_in_vocab"], 3))
adata.obsm["dfm_tokens"][:3, :8]"""),
    ("code", """# Token ids map back to genes: <pad>, <mask>, <cls>, <eos>, then var_names in order
first_cell = adata.obsm["dfm_tokens"][0]
genes = adata.var_names[first_cell[first_cell >= 4][:5] - 4]
list(genes)"""),
    ("md", """scGPT-style bins: each cell's nonzero values are cut at that cell's own quantiles, so bins are
comparable across sequencing depths. Soft ranks are the differentiable version of the ranks."""),
    ("code", """dfm.pp.bin_expression(adata, n_bins=51)   # .layers['dfm_bins'] (sparse, int16)
dfm.pp.soft_rank(adata, temperature=0.1)   # .layers['dfm_soft_rank'] (sparse, float32)
adata"""),
    ("md", """## Differentiable ranking

`dfm.ops` holds pure JAX kernels: an O(n log n) soft rank that tends to the hard ranks as the
temperature goes to zero, with gradients."""),
    ("code", """import jax
import jax.numpy as jnp

x = jnp.array([0.3, 2.0, 1.1, 0.0, 5.0])
for t in (1.0, 0.1, 0.001):
    print(t, np.round(dfm.ops.soft_rank(x, temperature=t), 3))
grad = jax.grad(lambda v: dfm.ops.soft_rank(v, temperature=1.0)[1])(x)
print("d rank(x[1]) / dx =", np.round(grad, 3))"""),
    ("md", """## Native model

`dfm.tl.pretrain` trains a small Flax NNX transformer on the rank-value tokens of *this* dataset
with a masked-expression objective; `dfm.tl.embed` writes the cell embeddings."""),
    ("code", """model = dfm.tl.pretrain(adata, seed=0)
dfm.tl.embed(adata, model)                 # .obsm['X_dfm']
adata.uns["dfm"]["embeddings"]["X_dfm"]["adapter_mode"], adata.obsm["X_dfm"].shape"""),
    ("code", """model.save("quickstart_model")
reloaded = dfm.models.load("quickstart_model")
again = dfm.tl.embed(adata, reloaded, key_added="X_dfm_reloaded", copy=True)
np.abs(again.obsm["X_dfm_reloaded"] - adata.obsm["X_dfm"]).max()"""),
    ("md", """## Import an embedding made elsewhere

Upstream tools export embeddings to files; Geneformer's extractor writes a CSV with one column
per dimension and label columns, with rows in its own order. Here we write such a file (a PCA
standing in for a real model, rows shuffled) and load it back with strict ID alignment."""),
    ("code", """from diffbio_sc.tl._baselines import pca_baseline

emb = pca_baseline(adata, n_comps=32)
order = np.random.default_rng(0).permutation(adata.n_obs)
dfm.io.write_embeddings("external_embs.csv", emb[order], adata.obs_names[order].to_numpy(),
                        format="csv", id_key="cell_id",
                        labels={"cell_type": adata.obs["cell_type"].to_numpy()[order]})
dfm.tl.load_embeddings(adata, "external_embs.csv", source="geneformer", id_key="cell_id",
                       key_added="X_external")
np.allclose(adata.obsm["X_external"], emb, atol=1e-5), adata.uns["dfm"]["embeddings"]["X_external"]["alignment"]"""),
    ("md", """## Score against the baselines

kNN annotation (macro-F1 under stratified cross-validation) and scib-metrics bio-conservation and
batch-correction scores, side by side with an unintegrated PCA of log-normalised HVGs."""),
    ("code", """results = dfm.tl.benchmark(adata, ["X_dfm", "X_external"], batch_key="batch",
                           label_key="cell_type", baselines=("pca",), name="quickstart")
results.pivot_table(index="metric", columns="embedding", values="value").round(3)"""),
    ("code", """import matplotlib
matplotlib.use("Agg")
fig = dfm.pl.benchmark(results)"""),
    ("code", """fig = dfm.pl.embedding(adata, "X_dfm", color=("batch", "cell_type"))"""),
]


if __name__ == "__main__":
    nbf.write(notebook(QUICKSTART), HERE / "01_quickstart.ipynb")
    print("wrote", HERE / "01_quickstart.ipynb")
