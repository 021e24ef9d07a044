"""Compare native-model variants against PCA on one dataset (issue 15 iteration script).

Trains ``dfm.tl.pretrain`` with the given config fields and pretrain options,
embeds, and prints one JSON line: process CPU and wall time of pretrain + embed,
epochs and steps, kNN macro-F1 (``dfm.tl.score_annotation``: k=15, 5-fold
stratified CV), optionally the scib-metrics bio / batch / total
(``dfm.tl.score_integration``), and the same for the PCA baseline
(``pca_baseline``: 50 PCs of log-normalised HVGs) on the same cells.

    python benchmarks/bench_native_variants.py pbmc_3batch_symphony \
        c.profile_likelihood=nb c.n_latents=16 c.max_tokens=128 epochs=8 [--bk] [--scib]

``c.<field>=<value>`` sets a ``MaskedExpressionConfig`` field, ``<name>=<value>``
a ``dfm.tl.pretrain`` option; ``--bk`` pretrains with ``batch_key='batch'``;
``--no-pca`` skips the PCA rows (when they are known from an earlier run);
the dataset is a file stem in ``../shared/data/singlecell`` or ``demo``.
The final every-method, 3-seed table is ``benchmarks/bench_quality.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

DATA = Path(
    os.environ.get("DFM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _parse(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(v, v)


def main(argv: list[str]) -> dict:
    import anndata as ad

    import diffbio_sc as dfm
    from diffbio_sc.models import MaskedExpressionConfig
    from diffbio_sc.tl._baselines import pca_baseline

    warnings.simplefilter("ignore")
    name, cfg_kw, pre_kw, scib, reps = argv[0], {}, {}, False, [("X_dfm", "dfm")]
    if "--no-pca" not in argv:
        reps.append(("X_pca", "pca"))
    for a in argv[1:]:
        if a == "--no-pca":
            continue
        if a == "--scib":
            scib = True
        elif a == "--bk":
            pre_kw["batch_key"] = "batch"
        else:
            k, v = a.split("=", 1)
            (cfg_kw if k.startswith("c.") else pre_kw)[k.removeprefix("c.")] = _parse(v)
    if name == "demo":
        adata = dfm.datasets.celllines_demo()
    else:
        adata = ad.read_h5ad(DATA / "singlecell" / f"{name}.h5ad")
    c0, w0 = time.process_time(), time.perf_counter()
    model = dfm.tl.pretrain(
        adata, config=MaskedExpressionConfig(**cfg_kw), progress_bar=False, **pre_kw
    )
    dfm.tl.embed(adata, model, progress_bar=False)
    row = {
        "dataset": name,
        "config": cfg_kw,
        "pretrain": pre_kw,
        "cpu_s": round(time.process_time() - c0, 1),
        "wall_s": round(time.perf_counter() - w0, 1),
        "epochs": model.metadata["training"]["epochs_run"],
        "steps": model.metadata["training"]["steps"],
    }
    if len(reps) > 1:
        adata.obsm["X_pca"] = pca_baseline(adata)
    for rep, tag in reps:
        ann = dfm.tl.score_annotation(adata, rep, "cell_type")
        row[f"{tag}_f1"] = round(ann["scores"]["knn"]["macro_f1"]["mean"], 4)
        if scib:
            agg = dfm.tl.score_integration(adata, rep, "batch", "cell_type")["aggregate"]
            row[f"{tag}_bio"] = round(agg["bio_conservation"], 4)
            row[f"{tag}_batch"] = round(agg["batch_correction"], 4)
            row[f"{tag}_total"] = round(agg["total"], 4)
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
