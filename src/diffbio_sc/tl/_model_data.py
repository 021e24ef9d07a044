"""Data plumbing shared by :func:`~diffbio_sc.tl.pretrain` and :func:`~diffbio_sc.tl.embed`.

Everything here works on row chunks (:func:`diffbio_sc._validate.iter_row_chunks`),
so neither function densifies the whole matrix: tokens are computed per chunk
with the tokenizer's kernel :func:`diffbio_sc.ops._rank_value.rank_value_encode`
(the top ``max_tokens`` genes of the rank-value encoding that
``dfm.pp.tokenize`` writes), and bottleneck targets are kept sparse and only
densified per minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys
from .._validate import DfmInputError, validated_chunks

N_SPECIAL = len(_keys.SPECIAL_TOKENS)


def normalise_rows(chunk: sp.csr_matrix, target_sum: float, totals: np.ndarray) -> sp.csr_matrix:
    """Scale each row of ``chunk`` to ``target_sum`` given the row totals."""
    scale = target_sum / np.maximum(totals, 1e-12)
    out = chunk.astype(np.float32, copy=True)
    out.data *= np.repeat(scale, np.diff(out.indptr)).astype(np.float32)
    return out


@dataclass
class GeneStats:
    """Per-gene streaming statistics of counts normalised to ``target_sum``."""

    mean: np.ndarray
    var: np.ndarray
    n_cells_expressed: np.ndarray
    n_obs: int
    median: np.ndarray | None = None


def gene_stats(
    adata, layer: str | None, target_sum: float, chunk_size: int, *, medians: bool = False
) -> GeneStats:
    """One pass over the rows: validate values, accumulate per-gene mean/variance.

    With ``medians=True`` the gene medians are computed in the same pass (with
    the tokenizer's kernels) and stored as ``GeneStats.median``.
    """
    from ..ops._medians import nonzero_medians, normalised_nonzeros

    n_vars = adata.n_vars
    s1 = np.zeros(n_vars)
    s2 = np.zeros(n_vars)
    nz = np.zeros(n_vars, dtype=np.int64)
    med_genes, med_vals = [], []
    for _start, _stop, chunk, totals in validated_chunks(
        adata, layer, chunk_size, require_integer=False
    ):
        norm = normalise_rows(chunk, target_sum, totals)
        d = norm.data.astype(np.float64)
        s1 += np.bincount(norm.indices, weights=d, minlength=n_vars)
        s2 += np.bincount(norm.indices, weights=d * d, minlength=n_vars)
        nz += np.bincount(norm.indices[d > 0], minlength=n_vars)
        if medians:
            g, v = normalised_nonzeros(chunk, target_sum)
            med_genes.append(g)
            med_vals.append(v)
    n = adata.n_obs
    mean = s1 / n
    var = (s2 - n * mean**2) / max(n - 1, 1)
    med = None
    if medians:
        med = nonzero_medians(np.concatenate(med_genes), np.concatenate(med_vals), n_vars)
    return GeneStats(mean=mean, var=np.maximum(var, 0.0), n_cells_expressed=nz, n_obs=n, median=med)


def highly_variable(stats: GeneStats, n_top: int, candidates: np.ndarray) -> np.ndarray:
    """Return the ``n_top`` most variable genes among ``candidates`` (sorted indices).

    Seurat-style: log dispersion (variance / mean of normalised counts),
    z-scored within 20 bins of log mean expression; ties by gene order.
    """
    cand = np.asarray(candidates)
    if cand.size <= n_top:
        return np.sort(cand)
    mean = np.maximum(stats.mean[cand], 1e-12)
    disp = stats.var[cand] / mean
    disp[disp == 0] = np.nan
    log_disp = np.log(disp)
    log_mean = np.log1p(mean)
    bins = pd.cut(log_mean, bins=20)
    frame = pd.DataFrame({"d": log_disp, "bin": bins})
    grp = frame.groupby("bin", observed=True)["d"]
    mu = grp.transform("mean").to_numpy()
    sd = grp.transform("std").to_numpy()
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    z = (log_disp - mu) / sd
    z = np.where(np.isfinite(z), z, -np.inf)
    order = np.lexsort((np.arange(cand.size), -z))[:n_top]
    return np.sort(cand[order])


def tokens_for_chunk(
    chunk: sp.csr_matrix,
    gene_scale: np.ndarray,
    col_to_token: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    totals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-value tokens of one CSR chunk (canonical: no duplicate entries) as model inputs.

    Returns ``(token_ids int32, values float32)`` of shape ``(rows, max_tokens)``:
    token ids in rank order right-padded with the pad id 0, and the tokenizer
    values (normalised count times gene scale; 0 at padding).
    """
    from ..ops._rank_value import rank_value_encode

    ids, vals, _n = rank_value_encode(
        chunk,
        gene_scale,
        target_sum=target_sum,
        max_tokens=max_tokens,
        totals=totals,
        lut=col_to_token,
        pad_value=_keys.PAD_ID,
    )
    return ids, vals


def profile_rows(chunk: sp.csr_matrix, hvg_cols: np.ndarray, target_sum: float) -> sp.csr_matrix:
    """``log1p`` of counts normalised to ``target_sum`` (over all genes), HVG columns only."""
    totals = np.asarray(chunk.sum(axis=1)).ravel()
    norm = normalise_rows(chunk, target_sum, totals)[:, hvg_cols]
    norm.data = np.log1p(norm.data)
    return sp.csr_matrix(norm, dtype=np.float32)


def var_medians(adata) -> np.ndarray | None:
    """``.var['dfm_median']`` as float64 when present (from :func:`dfm.pp.gene_medians`)."""
    if _keys.MEDIAN_KEY not in adata.var.columns:
        return None
    return pd.to_numeric(adata.var[_keys.MEDIAN_KEY], errors="coerce").to_numpy(float)


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
        from .._validate import _preview

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


def iter_token_chunks(
    adata,
    layer: str | None,
    gene_scale: np.ndarray,
    col_to_token: np.ndarray,
    *,
    target_sum: float,
    max_tokens: int,
    chunk_size: int,
):
    """Yield ``(start, stop, token_ids, values)`` chunk by chunk (backed data too).

    Chunks are validated and made canonical by the tokenizer's own
    :func:`diffbio_sc._validate.validated_chunks`.
    """
    for start, stop, chunk, totals in validated_chunks(
        adata, layer, chunk_size, require_integer=False
    ):
        ids, vals = tokens_for_chunk(
            chunk,
            gene_scale,
            col_to_token,
            target_sum=target_sum,
            max_tokens=max_tokens,
            totals=totals,
        )
        yield start, stop, ids, vals
