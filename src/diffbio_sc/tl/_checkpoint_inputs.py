"""Inputs of ``dfm.tl.embed_checkpoint``: checkpoint and dictionaries, gene matching, tokens.

Geneformer cells are tokenized with :func:`diffbio_sc.pp.tokenize`, scGPT cells
binned with :func:`diffbio_sc.pp.bin_expression`, chunk by chunk, on a light
AnnData that shares the chunk (the caller's AnnData is never written to).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import _keys
from .._validate import DfmInputError, iter_row_chunks
from ..io._ids import normalise_gene_ids
from ..io._tables import is_table_path, read_table
from ..ops._bins import cell_keys, cell_uniforms

__all__ = [
    "coverage_error",
    "gene_ids_of",
    "geneformer_chunks",
    "is_checkpoint",
    "resolve_checkpoint",
    "scgpt_chunks",
]


@contextmanager
def _quiet():
    """Silence per-chunk warnings of pp functions; coverage is reported once, here."""
    lg = logging.getLogger("diffbio_sc")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


class _FileMapping(dict):
    """A dictionary read from a file, remembering the file (named in errors and provenance)."""

    source = "mapping"


def _resolve_dictionary(value, what: str, value_kind: str, trust_pickle: bool):
    """Return a user dictionary as a mapping (paths read as JSON/CSV/TSV; pickles only when trusted)."""
    if value is None or isinstance(value, dict):
        return value, None
    if is_table_path(value):
        table = _FileMapping(
            read_table(value, what=what, value_kind=value_kind, trust_pickle=trust_pickle)
        )
        table.source = str(value)
        return table, str(value)
    if hasattr(value, "items"):
        return dict(value.items()), None
    raise TypeError(
        f"{what} must be a mapping or a path to a .json/.csv/.tsv file, got {type(value).__name__}."
    )


def _single_cell_only(model) -> None:
    """Refuse a DNA checkpoint (GENERator, Nucleotide Transformer) for a cell embedding."""
    if model.family not in ("geneformer", "scgpt"):
        raise DfmInputError(
            f"{model.path} is a {model.family} DNA model; it embeds sequences, not cells: "
            "use model.embed(sequences) on the model from dfm.models.load_checkpoint."
        )


def resolve_checkpoint(checkpoint, token_dictionary, gene_median_dictionary, vocab, trust_pickle):
    from ..models._pretrained import CheckpointModel, load_checkpoint

    if isinstance(checkpoint, CheckpointModel):
        if any(v is not None for v in (token_dictionary, gene_median_dictionary, vocab)):
            raise TypeError(
                "Dictionaries are fixed when a checkpoint is loaded; pass them to "
                "dfm.models.load_checkpoint, not with a loaded model."
            )
        _single_cell_only(checkpoint)
        return checkpoint
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            "checkpoint must be a checkpoint directory or a model from "
            f"dfm.models.load_checkpoint, got {type(checkpoint).__name__}."
        )
    tok, tok_src = _resolve_dictionary(
        token_dictionary, "token dictionary", "token id", trust_pickle
    )
    med, med_src = _resolve_dictionary(
        gene_median_dictionary, "gene median", "median", trust_pickle
    )
    voc, voc_src = _resolve_dictionary(vocab, "vocabulary", "token id", trust_pickle)
    model = load_checkpoint(checkpoint, token_dictionary=tok, gene_median_dictionary=med, vocab=voc)
    _single_cell_only(model)
    for role, src in (
        ("token_dictionary", tok_src),
        ("gene_median_dictionary", med_src),
        ("vocab", voc_src),
    ):
        if src is not None:
            model.sources[role] = src
    return model


def is_checkpoint(model) -> bool:
    """Whether ``model`` is a Geneformer/scGPT checkpoint (directory or loaded) for this module.

    ``dfm.tl.embed`` hands such models to :func:`embed_checkpoint`. Only file
    names and ``config.json``'s ``model_type`` are read.
    """
    from ..models._pretrained import CheckpointModel

    if isinstance(model, CheckpointModel):
        return True
    if not isinstance(model, (str, os.PathLike)):
        return False
    from ..io._checkpoints import find_checkpoint, read_json_object

    try:
        find_checkpoint(model)
        return True
    except (FileNotFoundError, OSError):
        pass
    cfile = Path(model) / "config.json"
    try:
        doc = read_json_object(cfile, "model configuration") if cfile.is_file() else {}
    except ValueError:
        return False
    return doc.get("model_type") in ("bert_encoder", "scgpt_encoder")


def gene_ids_of(adata, gene_key: str | None) -> np.ndarray:
    if gene_key is None:
        return normalise_gene_ids(adata.var_names)
    if gene_key not in adata.var.columns:
        raise DfmInputError(
            f"gene_key={gene_key!r} is not a .var column; available: {list(adata.var.columns)}."
        )
    col = adata.var[gene_key]
    if col.isna().any():
        raise DfmInputError(
            f".var[{gene_key!r}] has {int(col.isna().sum())} missing gene IDs; fill or drop them."
        )
    return normalise_gene_ids(col.astype(str))


def in_vocab(ids, genes: set) -> np.ndarray:
    """Boolean mask of ``ids`` found in ``genes``, by set lookup.

    ``np.isin`` on string (object) arrays compares every pair: 13 CPU-s for
    28,000 genes against a 28,000-gene vocabulary.
    """
    return np.fromiter((g in genes for g in ids), dtype=bool, count=len(ids))


def coverage_error(adata, ids, genes: set, gene_key, min_cov: float, found: np.ndarray):
    """Raise a clear error when too few genes match the checkpoint's vocabulary."""
    suggestions = []
    for col in adata.var.columns:
        if (
            col == gene_key
            or adata.var[col].dtype.kind not in "OUS"
            and str(adata.var[col].dtype) not in ("category", "string")
        ):
            continue
        vals = normalise_gene_ids(adata.var[col].astype(str))
        frac = float(in_vocab(vals, genes).mean())
        if frac >= min_cov:
            suggestions.append((frac, col))
    if (
        gene_key is not None
        and float(in_vocab(normalise_gene_ids(adata.var_names), genes).mean()) >= min_cov
    ):
        suggestions.append((1.0, None))
    hint = ""
    if suggestions:
        frac, col = max(suggestions, key=lambda t: t[0])
        hint = (
            f" .var[{col!r}] matches {frac:.0%}: pass gene_key={col!r}."
            if col is not None
            else " adata.var_names match: pass gene_key=None."
        )
    example_vocab = [g for g in list(genes)[:5]]
    raise DfmInputError(
        f"Only {int(found.sum())} of {adata.n_vars} genes ({found.mean():.1%}) of "
        f"{'adata.var_names' if gene_key is None else f'.var[{gene_key!r}]'} are in the "
        f"checkpoint's vocabulary (needs >= {min_cov:.0%}; vocabulary entries look like "
        f"{example_vocab}, the data's like {[str(x) for x in ids[:5]]}). Geneformer "
        "dictionaries use Ensembl gene IDs and scGPT's gene symbols; map your genes or pass "
        "gene_key= naming a .var column with matching IDs." + hint
    )


def _tmp_adata(X, obs_names, var_names):
    import anndata as ad
    import pandas as pd

    return ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(obs_names)),
        var=pd.DataFrame(index=pd.Index(var_names)),
    )


def geneformer_chunks(adata, model, ids, layer, chunk_size, max_tokens):
    """Yield ``(start, stop, tokens, lengths)`` tokenized with ``dfm.pp.tokenize``."""
    from ..pp._tokenize import tokenize

    for start, stop, chunk in iter_row_chunks(adata, layer, chunk_size):
        tmp = _tmp_adata(chunk, adata.obs_names[start:stop], ids)
        with _quiet():
            tokenize(
                tmp,
                recipe=model.recipe,
                gene_medians=model.medians,
                vocab=model.vocab,
                max_tokens=max_tokens,
                chunk_size=stop - start,
            )
        yield (
            start,
            stop,
            chunk,
            np.asarray(tmp.obsm[_keys.TOKENS_KEY]),
            np.asarray(tmp.obs[_keys.N_TOKENS_KEY], dtype=np.int64),
        )


def _sample_keep(indptr, priorities, k):
    """Per row, keep the ``k`` entries with the smallest priority (all when a row has <= k)."""
    n_rows = indptr.size - 1
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(n_rows), counts)
    keep = np.ones(rows.size, dtype=bool)
    over = np.flatnonzero(counts > k)
    if over.size:
        sel = np.isin(rows, over)
        pos = np.flatnonzero(sel)
        order = np.lexsort((priorities[pos], rows[pos]))  # by row, then priority
        ranked = pos[order]
        first = np.searchsorted(rows[ranked], rows[ranked], side="left")
        rank = np.arange(ranked.size) - first
        keep[ranked[rank >= k]] = False
    return keep


def scgpt_chunks(adata, model, ids, found, layer, chunk_size, seed, max_length):
    """Yield ``(start, stop, chunk, gene_ids, values, lengths)``: ``<cls>`` + binned genes."""
    from ..pp._bins import bin_expression

    cfg = model.config
    cols = np.flatnonzero(found)
    gene_tok = np.asarray([model.vocab[g] for g in ids[cols]], dtype=np.int64)
    k = max_length - 1
    for start, stop, chunk in iter_row_chunks(adata, layer, chunk_size):
        names = adata.obs_names[start:stop]
        tmp = _tmp_adata(chunk[:, cols], names, ids[cols])
        with _quiet():
            bin_expression(tmp, n_bins=cfg.n_bins, seed=seed, chunk_size=stop - start)
        bins = tmp.layers[_keys.BINS_KEY].tocsr()
        bins.sort_indices()
        n = stop - start
        counts = np.diff(bins.indptr)
        rows = np.repeat(np.arange(n), counts)
        toks = gene_tok[bins.indices]
        # scGPT samples max_length - 1 genes at random; here by a hash of (seed, cell, gene).
        prio = cell_uniforms(cell_keys(names, seed), toks.astype(np.uint64), rows)
        keep = _sample_keep(bins.indptr, prio, k)
        rows_k = rows[keep]
        kept_counts = np.bincount(rows_k, minlength=n)
        first = np.concatenate([[0], np.cumsum(kept_counts)[:-1]])
        pos = 1 + np.arange(rows_k.size) - first[rows_k]
        g = np.full((n, max_length), cfg.pad_token_id, dtype=np.int32)
        v = np.full((n, max_length), cfg.pad_value, dtype=np.float32)
        g[:, 0] = cfg.cls_token_id
        g[rows_k, pos] = toks[keep]
        v[rows_k, pos] = bins.data[keep]
        yield start, stop, chunk, g, v, kept_counts + 1, int((counts > k).sum())
