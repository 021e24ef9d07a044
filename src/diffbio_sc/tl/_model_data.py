"""Model-data preparation for :func:`~diffbio_sc.tl.pretrain` and :func:`~diffbio_sc.tl.embed`.

The matrix is read at most twice, chunk by chunk (backed data too), always
through the validated chunk reader (values checked, duplicate CSR entries
summed, empty or overflowing cells refused):

1. :func:`scan` (pretraining only): per gene the number of expressing cells and,
   when the AnnData has no ``.var['dfm_median']``, the nonzero medians of counts
   normalised to ``target_sum`` (the tokenizer's kernels); plus the
   log-normalised rows of a seeded sample of at most :data:`HVG_MAX_CELLS` cells
   (every cell in smaller data), from which :func:`select_hvg` picks highly
   variable genes with ``scanpy.pp.highly_variable_genes`` (Seurat flavour).
2. :func:`tokens_and_targets`: the rank-value tokens (the top ``max_tokens``
   genes of the encoding ``dfm.pp.tokenize`` writes) and the bottleneck targets
   (``log1p`` of the normalised counts on the HVGs), both from the same chunk
   and the same cell totals. :func:`iter_token_chunks` is the tokens-only
   stream :func:`~diffbio_sc.tl.embed` uses.

Bottleneck targets stay sparse; :func:`profile_mean` averages them with
scikit-learn's sparse mean (``sklearn.utils.sparsefuncs``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys
from .._validate import DfmInputError, _preview, validated_chunks

N_SPECIAL = len(_keys.SPECIAL_TOKENS)
#: Cells whose log-normalised rows feed the HVG selection (all cells below this).
HVG_MAX_CELLS = 10_000
#: Appended to the "not counts" error of the chunk reader.
COUNTS_HINT = (
    "dfm.tl.pretrain and dfm.tl.embed normalise each cell themselves, as dfm.pp.tokenize does."
)


def _chunks(adata, layer, chunk_size):
    """Yield validated chunks: counts required (whole numbers), canonical CSR.

    The shared reader also refuses object dtypes, empty cells and totals that
    overflow float64, and reads float16 as float32. A backed chunk's arrays are
    reused by the next chunk (``reuse_buffers``): every caller copies what it
    keeps (tokens, log-normalised rows, HVG columns).
    """
    yield from validated_chunks(
        adata,
        layer,
        chunk_size,
        require_integer=True,
        counts_fix=COUNTS_HINT,
        reuse_buffers=True,
    )


def log_normalised(chunk: sp.csr_matrix, totals: np.ndarray, target_sum: float) -> sp.csr_matrix:
    """``log1p(count / total * target_sum)`` of a canonical CSR chunk (float32, sparse)."""
    scale = target_sum / np.maximum(np.asarray(totals, dtype=np.float64), 1e-12)
    data = np.log1p(chunk.data.astype(np.float64) * np.repeat(scale, np.diff(chunk.indptr)))
    return sp.csr_matrix(
        (data.astype(np.float32), chunk.indices.copy(), chunk.indptr.copy()), shape=chunk.shape
    )


# ---------------------------------------------------------------- pass 1
@dataclass
class Scan:
    """What pass 1 learns about the genes."""

    n_cells_expressed: np.ndarray
    medians: np.ndarray | None
    sample: sp.csr_matrix
    sample_cells: np.ndarray


def sample_cells(n_obs: int, seed: int, max_cells: int = HVG_MAX_CELLS) -> np.ndarray:
    """Sorted indices of the cells whose rows feed the HVG selection (all when few)."""
    if n_obs <= max_cells:
        return np.arange(n_obs)
    rng = np.random.default_rng([seed, 3])
    return np.sort(rng.choice(n_obs, max_cells, replace=False))


def scan(
    adata,
    layer: str | None,
    *,
    target_sum: float,
    chunk_size: int,
    need_medians: bool,
    cells: np.ndarray,
    median_method: str = "exact",
) -> Scan:
    """Pass 1: expressing-cell counts, medians (if needed) and the HVG sample rows.

    ``median_method='histogram'`` computes the medians from per-gene histograms
    (memory independent of the number of cells; ``dfm.pp.gene_medians``'s
    approximate method) instead of keeping every nonzero value.
    """
    from ..ops._medians import HistogramMedianAccumulator, nonzero_medians, normalised_nonzeros

    n_vars = adata.n_vars
    nz = np.zeros(n_vars, dtype=np.int64)
    med_genes, med_vals, rows = [], [], []
    hist = None
    if need_medians and median_method == "histogram":
        hist = HistogramMedianAccumulator(n_vars, target_sum=target_sum)
    for start, stop, chunk, totals in _chunks(adata, layer, chunk_size):
        nz += np.bincount(chunk.indices, minlength=n_vars)
        if hist is not None:
            hist.add(chunk, totals)
        elif need_medians:
            g, v = normalised_nonzeros(chunk, target_sum)
            med_genes.append(g)
            med_vals.append(v)
        lo, hi = np.searchsorted(cells, [start, stop])
        if hi > lo:
            local = cells[lo:hi] - start
            rows.append(log_normalised(chunk[local], totals[local], target_sum))
    medians = None
    if hist is not None:
        medians = hist.approximate()
    elif need_medians:
        medians = nonzero_medians(np.concatenate(med_genes), np.concatenate(med_vals), n_vars)
    sample = sp.vstack(rows, format="csr") if rows else sp.csr_matrix((0, n_vars), np.float32)
    return Scan(n_cells_expressed=nz, medians=medians, sample=sample, sample_cells=cells)


def select_hvg(sample: sp.csr_matrix, candidates: np.ndarray, n_top: int) -> np.ndarray:
    """Return the ``n_top`` most variable genes among ``candidates`` (sorted column indices).

    Normalised dispersions from ``scanpy.pp.highly_variable_genes(flavor='seurat')``
    on the log-normalised sample rows of the candidate genes; the top ``n_top`` by
    normalised dispersion (genes without one last), ties broken by gene order.
    """
    cand = np.sort(np.asarray(candidates))
    if cand.size <= n_top:
        return cand
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(sp.csr_matrix(sample[:, cand], dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "n_top_genes > number of dispersions"
        sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=int(n_top))
    disp = a.var["dispersions_norm"].to_numpy(dtype=np.float64)
    disp = np.where(np.isfinite(disp), disp, -np.inf)
    order = np.lexsort((np.arange(cand.size), -disp))[:n_top]
    return np.sort(cand[order])


# ---------------------------------------------------------------- pass 2
def native_plan(
    gene_scale: np.ndarray, col_to_token: np.ndarray, *, target_sum: float, max_tokens: int
):
    """Build the native model's tokenizer plan: rank-value tokens, no specials, pad id 0.

    ``gene_scale`` and ``col_to_token`` per column, as :func:`gene_mapping`
    returns them (a column with scale 0 is never a token).
    """
    from ..ops._plan import RankValuePlan

    return RankValuePlan(
        token_ids=col_to_token,
        gene_scale=gene_scale,
        target_sum=target_sum,
        max_length=max_tokens,
        pad_id=_keys.PAD_ID,
    )


def tokens_for_chunk(
    chunk: sp.csr_matrix,
    gene_scale: np.ndarray,
    col_to_token: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    totals: np.ndarray | None = None,
    plan=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-value tokens of one canonical CSR chunk as model inputs.

    Returns ``(token_ids int32, values float32)`` of shape ``(rows, max_tokens)``:
    token ids in rank order right-padded with the pad id 0, and the tokenizer
    values (normalised count times gene scale; 0 at padding). ``plan``: the
    :func:`native_plan` of these arguments when the caller built it already
    (streams build it once).
    """
    if plan is None:
        plan = native_plan(gene_scale, col_to_token, target_sum=target_sum, max_tokens=max_tokens)
    ids, vals, _n = plan(chunk, totals)
    return ids, vals


def iter_token_chunks(
    adata,
    layer: str | None,
    gene_scale: np.ndarray,
    col_to_token: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    chunk_size: int,
    with_chunks: bool = False,
):
    """Yield ``(start, stop, token_ids, values)`` chunk by chunk (validated chunks).

    With ``with_chunks=True`` each item also carries the canonical CSR chunk and its
    cell totals: ``(start, stop, token_ids, values, chunk, totals)``. The tokenizer
    plan is built once.
    """
    plan = native_plan(gene_scale, col_to_token, target_sum=target_sum, max_tokens=max_tokens)
    for start, stop, chunk, totals in _chunks(adata, layer, chunk_size):
        ids, vals = tokens_for_chunk(
            chunk,
            gene_scale,
            col_to_token,
            target_sum=target_sum,
            max_tokens=max_tokens,
            totals=totals,
            plan=plan,
        )
        yield (start, stop, ids, vals, chunk, totals) if with_chunks else (start, stop, ids, vals)


def tokens_and_targets(
    adata,
    layer: str | None,
    gene_scale: np.ndarray,
    col_to_token: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    chunk_size: int,
    hvg_cols: np.ndarray | None,
    with_counts: bool = False,
):
    """Pass 2: ``(token_ids, values, profile, counts)`` for every cell.

    ``profile`` (``None`` without ``hvg_cols``) is the sparse float32
    ``(n_cells, len(hvg_cols))`` matrix of ``log1p(count / total * target_sum)``
    over the HVG columns, with the cell total over all genes. ``counts`` holds
    the raw counts of the HVG columns (sparse float32, same shape), the targets
    of the negative-binomial decoder; it is ``None`` unless ``with_counts=True``
    (and ``hvg_cols`` is given).
    """
    n = adata.n_obs
    token_ids = np.zeros((n, max_tokens), dtype=np.int32)
    token_vals = np.zeros((n, max_tokens), dtype=np.float32)
    blocks, count_blocks = [], []
    for start, stop, ids, vals, chunk, totals in iter_token_chunks(
        adata,
        layer,
        gene_scale,
        col_to_token,
        target_sum=target_sum,
        max_tokens=max_tokens,
        chunk_size=chunk_size,
        with_chunks=True,
    ):
        token_ids[start:stop] = ids
        token_vals[start:stop] = vals
        if hvg_cols is not None:
            blocks.append(log_normalised(chunk, totals, target_sum)[:, hvg_cols])
            if with_counts:
                count_blocks.append(sp.csr_matrix(chunk[:, hvg_cols], dtype=np.float32))
    profile = sp.vstack(blocks, format="csr").astype(np.float32) if blocks else None
    counts = sp.vstack(count_blocks, format="csr") if count_blocks else None
    return token_ids, token_vals, profile, counts


def profile_mean(profile: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Column means of ``profile[rows]`` (float32), with scikit-learn's sparse mean."""
    from sklearn.utils.sparsefuncs import mean_variance_axis

    sub = sp.csr_matrix(profile[rows], dtype=np.float64)
    return mean_variance_axis(sub, axis=0)[0].astype(np.float32)


# ---------------------------------------------------------------- genes
def var_medians(adata) -> np.ndarray | None:
    """``.var['dfm_median']`` as float64 when present (from :func:`dfm.pp.gene_medians`).

    A column that is not numeric is an error (as in ``dfm.pp.tokenize``), never
    silently turned into NaN.
    """
    if _keys.MEDIAN_KEY not in adata.var.columns:
        return None
    col = adata.var[_keys.MEDIAN_KEY]
    if col.dtype.kind not in "iuf":
        raise DfmInputError(
            f".var[{_keys.MEDIAN_KEY!r}] has dtype {col.dtype}, not numbers. Recompute it "
            "with dfm.pp.gene_medians(adata), or delete the column to compute medians on "
            "the fly."
        )
    return col.to_numpy(dtype=np.float64)


def gene_mapping(
    model_genes: list[str],
    model_medians: np.ndarray,
    var_names: pd.Index,
    *,
    min_gene_coverage: float,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Map a model's gene vocabulary onto the columns of a dataset.

    Returns ``(gene_scale, col_to_token, summary)``: per-column scale
    ``1 / median`` (0 for genes outside the model's vocabulary, which are then
    never tokenized), per-column token id, and a coverage summary.

    Raises
    ------
    DfmInputError
        When fewer than ``min_gene_coverage`` of the model's genes are present,
        naming the missing genes.
    """
    from ..io._ids import normalise_gene_ids

    # Match as dfm.pp.tokenize does: Ensembl version suffixes are ignored
    # (ENSG00000139618.15 == ENSG00000139618), unless removing them would make
    # names collide on either side; then names are matched exactly.
    model_ids = pd.Index(normalise_gene_ids(model_genes))
    data_ids = pd.Index(normalise_gene_ids(var_names))
    if not (model_ids.is_unique and data_ids.is_unique):
        model_ids, data_ids = pd.Index(model_genes), pd.Index(var_names)
    if not model_ids.is_unique or len(model_medians) != len(model_genes):
        raise DfmInputError(
            f"The model's gene vocabulary is inconsistent ({len(model_genes)} genes, "
            f"{int(model_ids.duplicated().sum())} repeated, {len(model_medians)} medians); "
            "the saved model is corrupt: re-train or re-save it."
        )
    pos = model_ids.get_indexer(data_ids)
    present = pos >= 0
    n_model = len(model_genes)
    n_found = int(len(np.unique(pos[present])))
    coverage = n_found / max(n_model, 1)
    if n_found == 0 or coverage < min_gene_coverage:
        found = np.zeros(n_model, dtype=bool)
        found[pos[present]] = True
        missing = [g for g, f in zip(model_genes, found, strict=True) if not f]
        raise DfmInputError(
            f"Only {n_found} of the model's {n_model} genes ({coverage:.1%}) are in "
            f"adata.var_names; missing e.g. {_preview(missing)}. Check that the data uses "
            "the same gene identifiers as the training data (symbols vs Ensembl IDs), or "
            f"lower min_gene_coverage (now {min_gene_coverage})."
        )
    gene_scale = np.zeros(len(var_names), dtype=np.float64)
    med = np.asarray(model_medians, dtype=np.float64)[pos[present]]
    gene_scale[present] = 1.0 / med
    col_to_token = np.zeros(len(var_names), dtype=np.int32)
    col_to_token[present] = pos[present] + N_SPECIAL
    summary = {
        "n_model_genes": n_model,
        "n_genes_found": n_found,
        "gene_coverage": float(coverage),
    }
    return gene_scale, col_to_token, summary
