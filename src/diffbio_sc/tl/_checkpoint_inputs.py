"""Inputs of ``dfm.tl.embed_checkpoint``: checkpoint and dictionaries, gene matching, tokens.

Each family's dictionaries are resolved once into a tokenizer plan
(:mod:`diffbio_sc.ops._plan`), then applied to the validated CSR chunks of the
caller's AnnData: Geneformer's rank-value tokens (the plan ``dfm.pp.tokenize``
builds from the same dictionaries), scGPT's bins (``dfm.pp.bin_expression``'s
rule) with its gene sampling. No AnnData is built per chunk and no public
writer is called.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._logging import logger
from .._validate import DfmInputError, _preview
from ..io._ids import normalise_gene_ids
from ..io._tables import is_table_path, read_table

__all__ = [
    "coverage_error",
    "gene_ids_of",
    "geneformer_chunks",
    "geneformer_plan",
    "is_checkpoint",
    "resolve_checkpoint",
    "scgpt_chunks",
    "scgpt_plan",
]


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


def geneformer_plan(model, ids: np.ndarray, max_tokens: int):
    """Resolve a Geneformer checkpoint's dictionaries into a tokenizer plan over ``ids``.

    The dictionaries are matched as ``dfm.pp.tokenize`` matches them (Ensembl
    version suffixes ignored on both sides). Returns ``(plan, notes)``, where
    ``notes`` counts the columns excluded: ``not_in_vocab`` and ``no_median``
    (vocabulary genes without a positive median), each with example indices.
    """
    from ..pp._tokenize import (
        _lookup,
        _median_values,
        _resolve_recipe,
        _resolve_vocab,
        rank_value_plan,
    )

    rec = _resolve_recipe(model.recipe)
    if max_tokens < rec.n_special + 1:
        raise DfmInputError(
            f"max_length={max_tokens} leaves no room for genes with recipe {rec.name!r} "
            f"({rec.n_special} special tokens)."
        )
    ids = np.asarray(ids)
    if np.unique(ids).size != ids.size:
        _, first = np.unique(ids, return_index=True)
        dup = np.setdiff1d(np.arange(ids.size), first)
        raise DfmInputError(
            f"The gene IDs repeat once Ensembl version suffixes are removed, e.g. "
            f"{_preview(ids[dup])}; aggregate or drop the duplicates first."
        )
    token_ids, special_ids, _, _ = _resolve_vocab(model.vocab, ids, rec, False)
    values, _ = _lookup(model.medians, ids, what="gene median")
    medians = _median_values(values, ids)
    plan = rank_value_plan(
        rec, token_ids, special_ids, medians, max_tokens=max_tokens, target_sum=rec.target_sum
    )
    in_vocab_ = token_ids >= 0
    if not plan.usable.any():
        raise DfmInputError(
            "No gene is both in the checkpoint's vocabulary and has a positive median: "
            f"{int(in_vocab_.sum())} of {ids.size} genes are in the vocabulary. Check that "
            "the gene IDs match the dictionaries (symbols vs Ensembl IDs)."
        )
    notes = {
        "not_in_vocab": np.flatnonzero(~in_vocab_),
        "no_median": np.flatnonzero(in_vocab_ & ~plan.usable),
    }
    return plan, notes


def _warn_excluded(notes: dict, ids: np.ndarray) -> None:
    """One warning per kind of excluded gene, with totals (not one per chunk)."""
    n_vocab = ids.size - notes["not_in_vocab"].size
    if notes["no_median"].size:
        logger.warning(
            "%d of %d vocabulary genes have no positive median in the checkpoint's "
            "dictionary and are excluded, e.g. %s",
            notes["no_median"].size,
            n_vocab,
            _preview(ids[notes["no_median"]]),
        )
    if notes["not_in_vocab"].size:
        logger.info(
            "%d of %d genes are not in the checkpoint's vocabulary and are excluded, e.g. %s",
            notes["not_in_vocab"].size,
            ids.size,
            _preview(ids[notes["not_in_vocab"]]),
        )


def geneformer_chunks(adata, model, ids, layer, chunk_size, max_tokens):
    """Yield ``(start, stop, chunk, tokens, lengths)``: Geneformer tokens of validated chunks.

    One tokenizer plan (:func:`geneformer_plan`) for all chunks; counts are
    required (whole numbers, no empty cell), as ``dfm.pp.tokenize`` requires.
    Excluded genes are reported once, before the first chunk.
    """
    from .._validate import validated_chunks

    plan, notes = geneformer_plan(model, ids, max_tokens)
    _warn_excluded(notes, np.asarray(ids))
    for start, stop, chunk, totals in validated_chunks(
        adata, layer, chunk_size, require_integer=True
    ):
        tokens, _, lengths = plan(chunk, totals, with_values=False)
        yield start, stop, chunk, tokens, lengths


def scgpt_plan(model, ids, found, seed: int, max_length: int):
    """Build scGPT's tokenizer plan: bins of the vocabulary columns ``found``, ``<cls>`` first."""
    from ..ops._plan import BinPlan

    cfg = model.config
    cols = np.flatnonzero(found)
    return BinPlan(
        n_bins=cfg.n_bins,
        seed=seed,
        columns=cols,
        token_ids=np.asarray([model.vocab[g] for g in np.asarray(ids)[cols]], dtype=np.int64),
        max_length=max_length,
        pad_id=cfg.pad_token_id,
        cls_id=cfg.cls_token_id,
        pad_value=cfg.pad_value,
    )


def scgpt_chunks(adata, model, ids, found, layer, chunk_size, seed, max_length):
    """Yield ``(start, stop, chunk, gene_ids, values, lengths, n_subsampled)``.

    ``<cls>`` + binned genes of validated chunks (any non-negative values;
    empty cells allowed), one tokenizer plan (:func:`scgpt_plan`) for all chunks.
    """
    from .._validate import validated_chunks

    plan = scgpt_plan(model, ids, found, seed, max_length)
    for start, stop, chunk, _totals in validated_chunks(
        adata, layer, chunk_size, require_integer=False, allow_empty=True
    ):
        (g, v, lengths), n_sub = plan.encode(chunk, plan.cell_keys(adata.obs_names[start:stop]))
        yield start, stop, chunk, g, v, lengths, n_sub
