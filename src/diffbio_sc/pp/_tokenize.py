"""Geneformer-style rank-value tokenization of single-cell counts."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys, _uns
from .._logging import timed
from .._settings import settings
from .._validate import (
    DfmInputError,
    _csr_view,
    _preview,
    check_adata,
    check_bool,
    check_copy,
    check_float,
    check_int,
    check_key,
    get_matrix,
    is_backed,
    iter_row_chunks,
    resolve_copy,
    validate_chunk,
)
from ..io._atomic import atomic_dir
from ..io._ids import normalise_gene_ids_counted, strip_ensembl_version
from ..io._tables import is_table_path, read_table
from ..ops._plan import RankValuePlan
from ..ops._rank_value import checkable, checkable_dtype, rank_value_encode
from ._dask import dask_encode, is_dask
from ._medians import compute_medians

logger = logging.getLogger("diffbio_sc")

__all__ = ["tokenize", "RECIPES", "TokenizerRecipe", "rank_value_encode"]


@dataclass(frozen=True)
class TokenizerRecipe:
    """A rank-value tokenization recipe.

    Attributes
    ----------
    name
        Recipe name.
    max_tokens
        Sequence length including special tokens.
    prepend_cls, append_eos
        Whether ``<cls>`` starts and ``<eos>`` ends each sequence.
    target_sum
        Total each cell is normalised to before dividing by gene medians.
    requires_counts
        Whether the input must hold whole-number counts.
    """

    name: str
    max_tokens: int
    prepend_cls: bool
    append_eos: bool
    target_sum: float = 10_000.0
    requires_counts: bool = True

    @property
    def n_special(self) -> int:
        return int(self.prepend_cls) + int(self.append_eos)


RECIPES: dict[str, TokenizerRecipe] = {
    # Geneformer (Theodoris et al. 2023): 2,048 genes, no special tokens.
    "geneformer_v1": TokenizerRecipe("geneformer_v1", 2048, False, False),
    # Geneformer V2 (2024 release): 4,094 genes between <cls> and <eos>, 4,096 total.
    "geneformer_v2": TokenizerRecipe("geneformer_v2", 4096, True, True),
}


def _resolve_recipe(recipe: str | TokenizerRecipe) -> TokenizerRecipe:
    if isinstance(recipe, TokenizerRecipe):
        return recipe
    if not isinstance(recipe, str):
        raise TypeError(
            f"recipe must be a recipe name ({', '.join(sorted(RECIPES))}) or a TokenizerRecipe, "
            f"got {type(recipe).__name__}."
        )
    if recipe not in RECIPES:
        raise DfmInputError(f"Unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}.")
    return RECIPES[recipe]


def _lookup(table: Mapping, var_ids: np.ndarray, *, what: str) -> tuple[list, list]:
    """Look up normalised var IDs in ``table`` (keys normalised too); return values and misses."""
    norm: dict[str, object] = {}
    for k, v in table.items():
        key = strip_ensembl_version(str(k))
        if key in norm and norm[key] != v:
            raise DfmInputError(
                f"The {what} table has two entries for {key!r} once Ensembl version suffixes "
                "are removed, with different values; keep one."
            )
        norm[key] = v
    values = [norm.get(g) for g in var_ids]
    return values, norm


def _resolve_vocab(vocab, var_ids: np.ndarray, recipe: TokenizerRecipe, trust_pickle: bool):
    """Return (token id per var (-1 = not in vocab), special ids, source, vocab size)."""
    specials = {t: i for i, t in enumerate(_keys.SPECIAL_TOKENS)}
    if vocab is None:
        ids = np.arange(var_ids.size, dtype=np.int64) + len(_keys.SPECIAL_TOKENS)
        return ids, specials, "default (special tokens + var_names)", int(ids.size) + len(specials)
    if is_table_path(vocab):
        source = f"file:{vocab}"
        vocab = read_table(
            vocab, what="vocabulary", value_kind="token id", trust_pickle=trust_pickle
        )
    elif isinstance(vocab, Mapping):
        source = "mapping"
    else:
        raise TypeError(
            "vocab must be None, a mapping gene -> token id, or a path to a JSON/CSV/TSV "
            f"table; got {type(vocab).__name__}."
        )
    # Plain str -> int tables (JSON, Geneformer's dictionaries) need no per-entry checks.
    plain = set(map(type, vocab)) <= {str} and all(
        issubclass(t, (int, np.integer)) and not issubclass(t, (bool, np.bool_))
        for t in set(map(type, vocab.values()))
    )
    not_ids = (
        []
        if plain
        else [
            (k, v)
            for k, v in vocab.items()
            if isinstance(v, (bool, np.bool_))
            or not isinstance(v, (int, np.integer, float, np.floating))
            or not float(v).is_integer()
        ]
    )
    if not_ids:
        shown = ", ".join(f"{k!r}: {v!r}" for k, v in not_ids[:5])
        raise DfmInputError(
            f"vocab values must be integer token ids; {len(not_ids)} are not ({shown}). "
            "Fix the table (no fractional, boolean or text ids)."
        )
    vocab = dict(vocab) if plain else {str(k): int(v) for k, v in vocab.items()}
    ids_all = np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
    if ids_all.size and (ids_all.min() < 0 or ids_all.max() > np.iinfo(np.int32).max):
        raise DfmInputError("vocab token ids must lie in [0, 2**31 - 1].")
    ids_sorted = np.sort(ids_all)
    if (ids_sorted[1:] == ids_sorted[:-1]).any():
        raise DfmInputError("vocab maps several tokens to the same id; ids must be unique.")
    needed = [_keys.PAD_TOKEN]
    if recipe.prepend_cls:
        needed.append(_keys.CLS_TOKEN)
    if recipe.append_eos:
        needed.append(_keys.EOS_TOKEN)
    missing = [t for t in needed if t not in vocab]
    if missing:
        raise DfmInputError(
            f"vocab lacks the special tokens {missing} that recipe {recipe.name!r} needs; add "
            f"them (Geneformer's dictionaries use {dict(zip(_keys.SPECIAL_TOKENS, range(4), strict=True))})."
        )
    special_ids = {t: vocab[t] for t in _keys.SPECIAL_TOKENS if t in vocab}
    genes_only = dict(vocab)
    for t in special_ids:
        del genes_only[t]
    keys, n_stripped = normalise_gene_ids_counted(list(genes_only))
    if n_stripped == 0:  # keys unchanged, so unique: one vectorised hash lookup
        at = pd.Index(keys, dtype=object).get_indexer(np.asarray(var_ids, dtype=object))
        gene_ids = np.fromiter(genes_only.values(), dtype=np.int64, count=len(genes_only))
        ids = np.where(at >= 0, gene_ids[at], -1) if gene_ids.size else np.full(at.size, -1)
        return ids.astype(np.int64), special_ids, source, len(vocab)
    values, _ = _lookup(genes_only, var_ids, what="vocabulary")
    ids = np.asarray([-1 if v is None else v for v in values], dtype=np.int64)
    return ids, special_ids, source, len(vocab)


def _median_values(values: list, var_ids: np.ndarray) -> np.ndarray:
    """Table values as float64 (NaN where missing); non-numbers are an error."""
    med = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            med[i] = float(v)
        except (TypeError, ValueError):
            raise DfmInputError(
                f"The gene median of {var_ids[i]!r} is {v!r}, not a number; fix the table."
            ) from None
    return med


def _resolve_medians(
    adata, gene_medians, var_ids, layer, target_sum, chunk_size, trust_pickle, requires_counts
):
    """Return (median per var, float64 with NaN = missing, source, computed?)."""
    if isinstance(gene_medians, Mapping):
        values, _ = _lookup(gene_medians, var_ids, what="gene median")
        return _median_values(values, var_ids), "mapping", False
    if is_table_path(gene_medians):
        table = read_table(
            gene_medians, what="gene median", value_kind="median", trust_pickle=trust_pickle
        )
        values, _ = _lookup(table, var_ids, what="gene median")
        return _median_values(values, var_ids), f"file:{gene_medians}", False
    if isinstance(gene_medians, str):
        if gene_medians in adata.var.columns:
            col = adata.var[gene_medians]
            if col.dtype.kind not in "iuf":
                raise DfmInputError(f".var[{gene_medians!r}] is not numeric ({col.dtype}).")
            return col.to_numpy(dtype=np.float64), f"var:{gene_medians}", False
        if gene_medians == _keys.MEDIAN_KEY:
            logger.info(
                "    .var[%r] not found: computing gene medians from the data", gene_medians
            )
            med = compute_medians(
                adata,
                layer=layer,
                target_sum=target_sum,
                chunk_size=chunk_size,
                require_counts=requires_counts,
            )
            return med, "computed from data", True
        raise DfmInputError(
            f"gene_medians={gene_medians!r} is neither a .var column (available: "
            f"{list(adata.var.columns)}) nor a path to a .json/.csv/.tsv table. Run "
            "dfm.pp.gene_medians(adata) first or pass a table."
        )
    raise TypeError(
        "gene_medians must be a .var column name, a mapping gene -> median or a path; "
        f"got {type(gene_medians).__name__}."
    )


def rank_value_plan(
    recipe: TokenizerRecipe,
    token_ids: np.ndarray,
    special_ids: Mapping[str, int],
    medians: np.ndarray,
    *,
    max_tokens: int,
    target_sum: float,
) -> RankValuePlan:
    """Build the tokenizer plan of resolved vocabulary ids and medians (per AnnData column).

    Columns outside the vocabulary (id -1) or without a positive, finite median
    are never tokens.
    """
    medians = np.asarray(medians, dtype=np.float64)
    has_median = np.isfinite(medians) & (medians > 0)
    usable = (np.asarray(token_ids) >= 0) & has_median
    gene_scale = np.where(usable, 1.0 / np.where(has_median, medians, 1.0), 0.0)
    return RankValuePlan(
        token_ids=token_ids,
        gene_scale=gene_scale,
        target_sum=target_sum,
        max_length=max_tokens,
        pad_id=special_ids[_keys.PAD_TOKEN],
        cls_id=special_ids[_keys.CLS_TOKEN] if recipe.prepend_cls else None,
        eos_id=special_ids[_keys.EOS_TOKEN] if recipe.append_eos else None,
    )


def _open_tokens_store(path, shape: tuple[int, int], rows: int, pad: int):
    """Create the int32 zarr array of a tokens store in directory ``path``."""
    import zarr

    return zarr.open_array(
        str(path),
        mode="w",
        shape=shape,
        chunks=(max(1, min(int(rows), max(shape[0], 1))), shape[1]),
        dtype=np.int32,
        fill_value=int(pad),
    )


def tokenize(
    adata,
    *,
    recipe: str | TokenizerRecipe = "geneformer_v1",
    layer: str | None = None,
    gene_medians=_keys.MEDIAN_KEY,
    vocab=None,
    max_tokens: int | None = None,
    target_sum: float | None = None,
    chunk_size: int | None = None,
    key_added: str = _keys.TOKENS_KEY,
    n_tokens_key: str = _keys.N_TOKENS_KEY,
    trust_pickle: bool = False,
    tokens_store: str | os.PathLike | None = None,
    copy: bool = False,
):
    """Rank-value encode each cell, Geneformer style.

    For each cell: counts are normalised to ``target_sum`` (by the cell's total
    over *all* genes), divided by each gene's nonzero median, and the expressed
    genes are ranked by that value, highest first. The token sequence is the
    ranked genes' token ids, truncated to the recipe's length and right-padded
    with ``<pad>``.

    Which cells a cell's tokens depend on: with fixed medians (a ``.var``
    column, a mapping or a table), on that cell alone, whatever other cells are
    in the AnnData. With the default ``gene_medians='dfm_median'`` and no such
    column, the medians are computed from the AnnData passed in, so every
    cell's tokens depend on all the cells in it: tokenizing a subset, or new
    data, gives different tokens. To tokenize datasets consistently, compute
    medians once (:func:`~diffbio_sc.pp.gene_medians` on a reference, or
    Geneformer's published table) and pass them. ``.uns`` records the median
    source and ``medians_fixed``.

    Recipes
        ``geneformer_v1``: 2,048 gene tokens, no special tokens.
        ``geneformer_v2``: ``<cls>``, up to 4,094 gene tokens, ``<eos>`` (4,096 total).

    Ties: genes with exactly equal normalised values keep their order in
    ``adata.var_names`` (a stable sort). Values are compared in float32 after
    scaling in float64 (rounding is monotone, so it never swaps two genes).

    Gene IDs: Ensembl version suffixes (``ENSG00000139618.15``) are removed from
    ``var_names`` and from table keys before matching. Genes that are not in
    the vocabulary, or that have no positive median, are excluded and reported
    (a warning with their number and examples), never silently zeroed.

    Geneformer publishes its medians and token dictionary as pickles. Convert
    them once to JSON in a session where you trust the files::

        import json, pickle
        med = pickle.load(open("gene_median_dictionary.pkl", "rb"))
        json.dump({k: float(v) for k, v in med.items()}, open("medians.json", "w"))
        tok = pickle.load(open("token_dictionary.pkl", "rb"))
        json.dump({k: int(v) for k, v in tok.items()}, open("vocab.json", "w"))

    and pass the JSON paths; loading a pickle directly needs ``trust_pickle=True``.

    Dask: when the matrix is a Dask array (e.g. read lazily from zarr with
    ``anndata.experimental.read_elem_lazy``), each row block is validated and
    encoded by a Dask task on the active scheduler (a ``dask.distributed``
    cluster too), giving the tokens of the in-memory path.

    Parameters
    ----------
    adata
        Raw counts (cells x genes) in ``.X`` or ``layer``: dense, CSR, CSC, a
        backed AnnData (``backed='r'``), which is streamed chunk by chunk, or a
        Dask array (see above).
    recipe
        ``'geneformer_v1'`` or ``'geneformer_v2'`` (or a :class:`TokenizerRecipe`).
    layer
        Layer holding the counts, instead of ``.X``.
    gene_medians
        A ``.var`` column name, a mapping gene -> median, or a path to a JSON
        object or a CSV/TSV table (gene ID column first, then a ``median`` column).
        With the default ``'dfm_median'`` and no such column, medians are computed
        from the data and also written to ``.var['dfm_median']`` (then tokens
        depend on all the cells passed in; see above).
    vocab
        Mapping gene -> token id, or a path to such a JSON/CSV/TSV table (must
        contain ``<pad>``, and ``<cls>``/``<eos>`` for v2). Default: ``<pad>``=0,
        ``<mask>``=1, ``<cls>``=2, ``<eos>``=3, then ``var_names`` in order (gene j
        gets id j + 4).
    max_tokens
        Sequence length including special tokens (default: the recipe's).
    target_sum
        Normalisation total (default: the recipe's, 10,000).
    chunk_size
        Cells per chunk (default ``dfm.settings.chunk_size``); memory besides
        the output is bounded by the chunk.
    key_added
        ``.obsm`` key for the tokens.
    n_tokens_key
        ``.obs`` column for the sequence lengths.
    trust_pickle
        Allow loading pickled tables (unpickling can execute code).
    tokens_store
        Path of a zarr store (a directory) to write the tokens to, chunk by
        chunk, instead of ``.obsm[key_added]``: for data whose tokens do not fit
        in memory (1M cells x 2,048 tokens are 8 GiB). It holds one int32 array
        ``(n_cells, max_tokens)`` with row chunks of ``chunk_size`` cells (the
        Dask row blocks for Dask input); read it with
        ``zarr.open_array(path, mode='r')`` or ``dask.array.from_zarr(path)``.
        Written atomically (an existing store at the path is replaced only once
        every chunk is written). With a Dask cluster, the workers write it: the
        path must be reachable from every worker (a shared file system).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or the AnnData when ``copy=True``. Writes

    ``.obsm[key_added]``
        int32 ``(n_cells, max_tokens)`` token ids, right-padded with the pad id
        (not written with ``tokens_store``: the zarr store holds them).
    ``.obs[n_tokens_key]``
        int, the number of non-pad tokens of each cell (special tokens included).
    ``.var['dfm_median']``
        only when medians were computed from the data (with its record in
        ``.uns['dfm']['gene_medians']['dfm_median']``).
    ``.uns['dfm']['tokenizer'][key_added]``
        recipe, vocabulary source and size, special token ids, max_tokens,
        target_sum, median source and ``medians_fixed`` (False when computed
        from the cells passed in), coverage (fractions of genes and of counts in
        the vocabulary), excluded genes, tie-breaking rule, package version. One
        record per ``key_added``: tokens written under another key keep theirs.
    """
    check_adata(adata)
    rec = _resolve_recipe(recipe)
    max_tokens = check_int("max_tokens", max_tokens, allow_none=True)
    max_tokens = rec.max_tokens if max_tokens is None else max_tokens
    if max_tokens < rec.n_special + 1:
        raise DfmInputError(
            f"max_tokens={max_tokens} leaves no room for genes with recipe {rec.name!r} "
            f"({rec.n_special} special tokens)."
        )
    target_sum = check_float(
        "target_sum",
        rec.target_sum if target_sum is None else target_sum,
        minimum=0.0,
        strict_min=True,
    )
    check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    check_key("key_added", key_added)
    check_key("n_tokens_key", n_tokens_key)
    if tokens_store is not None and not isinstance(tokens_store, (str, os.PathLike)):
        raise TypeError(
            f"tokens_store must be a path (str or os.PathLike) or None, got "
            f"{type(tokens_store).__name__}."
        )
    trust_pickle = check_bool("trust_pickle", trust_pickle)
    check_copy(adata, copy)
    n_genes_max = max_tokens - rec.n_special
    var_ids, n_stripped = normalise_gene_ids_counted(adata.var_names)
    # unchanged names: pandas' cached uniqueness of var_names answers
    if not adata.var_names.is_unique if n_stripped == 0 else len(set(var_ids)) != var_ids.size:
        s = np.asarray(var_ids)
        _, first = np.unique(s, return_index=True)
        dup = np.setdiff1d(np.arange(s.size), first)
        raise DfmInputError(
            f"var_names repeat once Ensembl version suffixes are removed, e.g. "
            f"{_preview(adata.var_names[dup])}; aggregate or drop the duplicates first."
        )

    with timed(f"tokenizing with recipe {rec.name!r}") as info:
        token_ids, special_ids, vocab_source, vocab_size = _resolve_vocab(
            vocab, var_ids, rec, trust_pickle
        )
        medians, median_source, computed = _resolve_medians(
            adata,
            gene_medians,
            var_ids,
            layer,
            target_sum,
            chunk_size,
            trust_pickle,
            rec.requires_counts,
        )
        in_vocab = token_ids >= 0
        has_median = np.isfinite(medians) & (medians > 0)
        usable = in_vocab & has_median
        if not usable.any():
            raise DfmInputError(
                "No gene is both in the vocabulary and has a positive median: "
                f"{int(in_vocab.sum())} of {adata.n_vars} genes are in the vocabulary, "
                f"{int(has_median.sum())} have a median. Check that the gene IDs of the "
                "vocabulary/median tables match adata.var_names (symbols vs Ensembl IDs)."
            )
        no_median = np.flatnonzero(in_vocab & ~has_median)
        not_in_vocab = np.flatnonzero(~in_vocab)
        if no_median.size:
            logger.warning(
                "%d of %d vocabulary genes have no positive median and are excluded, e.g. %s",
                no_median.size,
                int(in_vocab.sum()),
                _preview(adata.var_names[no_median]),
            )
        if not_in_vocab.size:
            logger.warning(
                "%d of %d genes are not in the vocabulary and are excluded, e.g. %s",
                not_in_vocab.size,
                adata.n_vars,
                _preview(adata.var_names[not_in_vocab]),
            )
        plan = rank_value_plan(
            rec, token_ids, special_ids, medians, max_tokens=max_tokens, target_sum=target_sum
        )
        pad = plan.pad_id
        in_vocab_f = None if in_vocab.all() else in_vocab.astype(np.float64)

        def encode(chunk, totals, out=None):
            """Tokens, lengths, total counts and in-vocabulary counts of one chunk."""
            block = np.empty((chunk.shape[0], max_tokens), np.int32) if out is None else out
            lengths = plan(chunk, totals, out=block, with_values=False).lengths
            total = float(totals.sum())
            vocab = total if in_vocab_f is None else float((chunk @ in_vocab_f).sum())
            return block, lengths, total, vocab

        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        rows = check_int(
            "dfm.settings.chunk_size",
            settings.chunk_size if chunk_size is None else chunk_size,
            minimum=1,
        )

        def encode_checked(start, chunk, out=None):
            """``encode`` of a raw chunk, validated in the kernel's pass.

            The kernel checks every row as :func:`validate_chunk` would (values,
            canonical indices, totals) while it encodes, and sums its counts in
            the vocabulary (what ``chunk @ in_vocab_f`` gives). Pieces of ``rows`` cells
            (the ``chunk_size`` pieces of the unfused path) holding a flagged row
            then go, in order, through :func:`validate_chunk`, which raises the
            same error as before or returns the piece canonical, and are
            re-encoded: the same errors and the same tokens as validating first.
            """
            n = chunk.shape[0]
            block = np.empty((n, max_tokens), np.int32) if out is None else out
            flags = np.empty(n, np.uint8)
            totals = np.empty(n, np.float64)
            per_row = None if in_vocab_f is None else np.empty(n, np.float64)
            lengths = plan(
                chunk,
                out=block,
                with_values=False,
                check=flags,
                require_integer=rec.requires_counts,
                totals_out=totals,
                vocab_mask=None if in_vocab_f is None else in_vocab,
                vocab_out=per_row,
            ).lengths
            pieces = range(0, n, rows)
            canonical = {}
            for s in (np.unique(np.flatnonzero(flags) // rows) * rows).tolist():
                e = min(s + rows, n)
                a, b = int(chunk.indptr[s]), int(chunk.indptr[e])
                piece = _csr_view(
                    chunk.data[a:b],
                    chunk.indices[a:b],
                    chunk.indptr[s : e + 1] - a,
                    (e - s, n_vars),
                )
                piece, piece_totals = validate_chunk(
                    piece,
                    adata.obs_names,
                    start + s,
                    where=where,
                    require_integer=rec.requires_counts,
                )
                totals[s:e] = piece_totals
                lengths[s:e] = plan(piece, piece_totals, out=block[s:e], with_values=False).lengths
                canonical[s] = piece
            # totals per piece of ``rows`` cells, as the unfused path summed them
            total = vocab = 0.0
            for s in pieces:
                e = min(s + rows, n)
                t = float(totals[s:e].sum())
                total += t
                if per_row is None:
                    vocab += t
                elif s in canonical:
                    vocab += float((canonical[s] @ in_vocab_f).sum())
                else:
                    vocab += float(per_row[s:e].sum())
            return block, lengths, total, vocab

        X = get_matrix(adata, layer)
        n_vars = adata.n_vars
        store = None
        with contextlib.ExitStack() as stack:
            if tokens_store is not None:
                tmp = stack.enter_context(atomic_dir(tokens_store, what="tokens store"))
                rows = chunk_size if chunk_size is not None else settings.chunk_size
                if is_dask(X):
                    rows = max(X.chunks[0])
                store = _open_tokens_store(tmp, (adata.n_obs, max_tokens), rows, pad)
            if is_dask(X):
                tokens, n_tok, total_counts, vocab_counts = dask_encode(
                    X,
                    adata.obs_names,
                    encode,
                    where="adata.X" if layer is None else f"adata.layers[{layer!r}]",
                    require_integer=rec.requires_counts,
                    store=store,
                )
            else:
                # In memory, every element is written by the kernel (in parallel), so
                # the output's pages are first touched by the worker threads.
                tokens = (
                    None if store is not None else np.empty((adata.n_obs, max_tokens), np.int32)
                )
                n_tok = np.zeros(adata.n_obs, dtype=np.int64)
                total_counts = vocab_counts = 0.0
                # An in-memory sparse matrix is encoded in one kernel call (the kernel
                # needs no memory beyond the output; the checks keep the chunk pieces).
                whole = store is None and not is_backed(adata) and sp.issparse(X)
                whole = whole and checkable_dtype(X.dtype)
                # Streamed to a store: one block of tokens, reused by every chunk
                # (with the chunk's arrays: nothing of a chunk is kept).
                reuse = None if store is None else np.empty((rows, max_tokens), np.int32)
                for start, stop, chunk in iter_row_chunks(
                    adata,
                    layer,
                    adata.n_obs if whole and adata.n_obs else rows,
                    reuse_buffers=store is not None,
                ):
                    out_rows = reuse[: stop - start] if tokens is None else tokens[start:stop]
                    if checkable(chunk):
                        block, n_tok[start:stop], total, vocab = encode_checked(
                            start, chunk, out_rows
                        )
                    else:  # e.g. boolean values: validate_chunk refuses them
                        chunk, totals = validate_chunk(
                            chunk,
                            adata.obs_names,
                            start,
                            where=where,
                            require_integer=rec.requires_counts,
                        )
                        block, n_tok[start:stop], total, vocab = encode(chunk, totals, out_rows)
                    if store is not None:
                        store[start:stop] = block
                    total_counts += total
                    vocab_counts += vocab
        no_tokens = np.flatnonzero(n_tok == rec.n_special)
        if no_tokens.size:
            logger.warning(
                "%d cells express none of the usable genes and get no gene tokens, e.g. %s",
                no_tokens.size,
                _preview(adata.obs_names[no_tokens]),
            )

        meta = {
            "recipe": rec.name,
            "layer": layer if layer is not None else "X",
            "key_added": key_added,
            "n_tokens_key": n_tokens_key,
            "vocab_source": vocab_source,
            "vocab_size": int(vocab_size),
            "special_token_ids": {k: int(v) for k, v in special_ids.items()},
            "pad_id": int(pad),
            "max_tokens": max_tokens,
            "max_gene_tokens": n_genes_max,
            "prepend_cls": rec.prepend_cls,
            "append_eos": rec.append_eos,
            "target_sum": target_sum,
            "median_source": median_source,
            "medians_fixed": not computed,
            "n_genes": int(adata.n_vars),
            "n_genes_in_vocab": int(in_vocab.sum()),
            "n_genes_used": int(usable.sum()),
            "frac_genes_in_vocab": float(in_vocab.mean()),
            "frac_counts_in_vocab": float(vocab_counts / total_counts) if total_counts else 0.0,
            "n_genes_without_median": int(no_median.size),
            "genes_without_median": [str(g) for g in adata.var_names[no_median[:100]]],
            "genes_not_in_vocab": [str(g) for g in adata.var_names[not_in_vocab[:100]]],
            "n_cells_without_gene_tokens": int(no_tokens.size),
            "tie_breaking": "equal values keep var_names order (stable); compared in float32",
            "ensembl_versions_stripped": True,
            "created_by": _uns.provenance("pp.tokenize"),
            "tokens_store": None if tokens_store is None else str(os.fspath(tokens_store)),
        }
        median_record = {
            "target_sum": target_sum,
            "layer": meta["layer"],
            "key_added": _keys.MEDIAN_KEY,
            "require_counts": rec.requires_counts,
            "n_genes_without_median": int(np.isnan(medians).sum()),
            "created_by": _uns.provenance("pp.tokenize"),
        }
        # convert the records before writing anything: an unstorable value raises here
        meta = _uns.to_h5ad_safe(meta, f".uns['dfm']['tokenizer'][{key_added!r}]")
        out = resolve_copy(adata, copy)
        if computed:
            out.var[_keys.MEDIAN_KEY] = medians
            _uns.set_record(out, _keys.UNS_MEDIANS, _keys.MEDIAN_KEY, median_record)
        if tokens is not None:
            out.obsm[key_added] = tokens
        out.obs[n_tokens_key] = n_tok
        _uns.set_record(out, _keys.UNS_TOKENIZER, key_added, meta)
        info["added"] = [
            f".obsm[{key_added!r}]" if tokens is not None else f"zarr array {tokens_store!s}",
            f".obs[{n_tokens_key!r}]",
            f".uns['dfm']['tokenizer'][{key_added!r}]",
        ]
    return out if copy else None
