"""Per-gene nonzero medians of normalised counts (Geneformer's gene medians)."""

from __future__ import annotations

import numpy as np

from .. import _keys, _uns
from .._logging import timed
from .._validate import check_adata, resolve_copy, validated_chunks
from ..ops._medians import nonzero_medians, normalised_nonzeros


def compute_medians(
    adata, *, layer: str | None, target_sum: float, chunk_size: int | None
) -> np.ndarray:
    """Per-gene nonzero medians of counts normalised to ``target_sum`` (NaN: gene never expressed).

    Streams validated chunks; cells without counts contribute nothing.
    """
    genes, vals = [], []
    for _, _, chunk, _ in validated_chunks(
        adata, layer, chunk_size, require_integer=False, allow_empty=True
    ):
        g, v = normalised_nonzeros(chunk, target_sum)
        genes.append(g)
        vals.append(v)
    return nonzero_medians(np.concatenate(genes), np.concatenate(vals), adata.n_vars)


def gene_medians(
    adata,
    *,
    layer: str | None = None,
    target_sum: float = 10_000,
    key_added: str = _keys.MEDIAN_KEY,
    chunk_size: int | None = None,
    copy: bool = False,
):
    """Compute each gene's median over the cells that express it, after normalisation.

    Every cell is scaled to ``target_sum`` total counts; for each gene the median
    is taken over its nonzero normalised values only (Geneformer's "nonzero
    median"). Geneformer divides by these medians before ranking, so that
    ubiquitously high genes (housekeeping, mitochondrial) do not dominate every
    cell's token sequence.

    The matrix is read in chunks of cells (backed AnnData too); the nonzero
    values are then kept as float32 with their gene index (8 bytes per nonzero)
    to take exact medians. Cells without counts contribute nothing and are allowed.

    Parameters
    ----------
    adata
        Raw counts (cells x genes) in ``.X`` or ``layer``. Dense, CSR, CSC or backed.
    layer
        Layer to use instead of ``.X``.
    target_sum
        Total each cell is normalised to before taking medians.
    key_added
        ``.var`` column to write.
    chunk_size
        Cells per chunk (default ``dfm.settings.chunk_size``).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or the AnnData when ``copy=True``. Writes

    ``.var[key_added]``
        float64 median of the gene's nonzero normalised values; NaN for genes
        expressed in no cell (the tokenizer excludes such genes and reports them).
    ``.uns['dfm']['gene_medians']``
        target_sum, layer, the number of genes without a median, provenance.
    """
    check_adata(adata)
    target_sum = float(target_sum)
    if not np.isfinite(target_sum) or target_sum <= 0:
        raise ValueError(f"target_sum must be a positive number, got {target_sum}.")
    with timed("computing gene medians") as info:
        med = compute_medians(adata, layer=layer, target_sum=target_sum, chunk_size=chunk_size)
        out = resolve_copy(adata, copy)
        out.var[key_added] = med
        _uns.set_section(
            out,
            _keys.UNS_MEDIANS,
            {
                "target_sum": target_sum,
                "layer": layer if layer is not None else "X",
                "key_added": key_added,
                "n_genes_without_median": int(np.isnan(med).sum()),
                "created_by": _uns.provenance("pp.gene_medians"),
            },
        )
        info["added"] = [f".var[{key_added!r}]"]
    return out if copy else None
