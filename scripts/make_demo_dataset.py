"""Build the bundled demo dataset from ../shared/data (run from the repo root).

Source: celllines_5tech_mixology.h5ad (LuyiTian/sc_mixology, MIT; GEO GSE118767;
Tian et al. 2019, Nat Methods). We keep all cells of the five batches that pass a
minimum-count filter, and the 2,000 most highly variable genes (scanpy's
default ``seurat`` flavour on log-normalised counts, batch-aware), as raw integer counts.
"""

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc

SRC = Path("../shared/data/singlecell/celllines_5tech_mixology.h5ad")
DST = Path("src/diffbio_sc/datasets/data/celllines_demo.h5ad")
N_GENES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000

a = ad.read_h5ad(SRC)
a = a[:, ~a.var_names.str.startswith("ERCC-")].copy()  # drop spike-ins
sc.pp.filter_cells(a, min_counts=500)
ln = a.copy()
sc.pp.normalize_total(ln, target_sum=1e4)
sc.pp.log1p(ln)
hv = sc.pp.highly_variable_genes(ln, n_top_genes=N_GENES, batch_key="batch", inplace=False)
keep = np.asarray(hv["highly_variable"].reindex(a.var_names).fillna(False).values, dtype=bool)
b = a[:, keep].copy()
sc.pp.filter_cells(b, min_counts=50)
b.X = b.X.astype(np.int32)
b.X.sort_indices()
b.obs = b.obs[["batch", "cell_type"]].copy()
for c in b.obs:
    b.obs[c] = b.obs[c].astype("category")
b.var = b.var[[]].copy()
b.uns = {
    "source": "celllines_5tech_mixology.h5ad from ../shared/data (LuyiTian/sc_mixology data/csv, "
    "MIT licence; GEO GSE118767; Tian et al. 2019, Nat Methods 16:479-487)",
    "subset": f"ERCC spike-ins removed; cells with >= 500 counts; {N_GENES} batch-aware seurat-flavour highly variable genes; "
    "raw UMI counts",
}
DST.parent.mkdir(parents=True, exist_ok=True)
b.write_h5ad(DST, compression="gzip", compression_opts=9)
print(b, f"\n{DST} {DST.stat().st_size / 1e6:.2f} MB, nnz/cell {b.X.nnz / b.n_obs:.0f}")
