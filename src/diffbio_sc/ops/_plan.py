"""Tokenizer plans: resolved, immutable tokenizers applied to raw CSR chunks of cells.

A plan is built once per dataset and model (vocabulary lookup per AnnData
column, gene scaling, special-token ids, length cap, scheme) and then applied
to chunk after chunk; it knows nothing of AnnData, files or logging. Every
path that turns counts into model inputs calls one: ``dfm.pp.tokenize`` and the
native model's data (``tl/_model_data``) a :class:`RankValuePlan`,
``dfm.pp.bin_expression`` and scGPT checkpoints a :class:`BinPlan`.

Sequence tokenizers follow the same shape (:class:`TokenPlan`): a resolved
object with its special ids and length cap whose ``encode`` returns ids and
lengths; :func:`sequence_plan` adapts the nucleotide tokenizers
(``char``/``kmer``/``nt6`` and the published DNA checkpoints' tokenizers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from ._bins import cell_keys, cell_uniforms, quantile_bins
from ._rank_value import rank_value_encode

__all__ = [
    "BinPlan",
    "CellTokenPlan",
    "CellTokens",
    "RankValuePlan",
    "SequencePlan",
    "SequenceTokenPlan",
    "TokenPlan",
    "sequence_plan",
]


class CellTokens(NamedTuple):
    """Model inputs of a chunk of cells (or a batch of sequences).

    ``ids`` int32 ``(n, max_length)`` right-padded with the pad id; ``values``
    float32, same shape (``None`` when not asked for or not part of the
    scheme); ``lengths`` int64 ``(n,)``: real tokens per row, specials included.
    """

    ids: np.ndarray
    values: np.ndarray | None
    lengths: np.ndarray


@runtime_checkable
class TokenPlan(Protocol):
    """The interface every tokenizer plan offers (cells and sequences).

    Attributes
    ----------
    scheme
        Name of the tokenization scheme (``'rank_value'``, ``'scgpt_bins'``,
        ``'char'``, ``'kmer'``, ``'nt6'``, a checkpoint tokenizer's name).
    pad_id
        Id after a row's last token.
    special_ids
        Special token -> id (read-only mapping).
    max_length
        Length cap of a row, specials included (``None``: the longest row).
    """

    scheme: str
    pad_id: int
    max_length: int | None

    @property
    def special_ids(self) -> Mapping[str, int]: ...


@runtime_checkable
class CellTokenPlan(TokenPlan, Protocol):
    """A :class:`TokenPlan` of cells: called on a canonical CSR chunk.

    ``plan(chunk, ...) -> CellTokens(ids, values, lengths)``; the second
    argument is the scheme's per-cell input (totals, or the cells' keys).
    """

    def __call__(self, chunk: sp.csr_matrix, *args, **kwargs) -> CellTokens: ...


@runtime_checkable
class SequenceTokenPlan(TokenPlan, Protocol):
    """A :class:`TokenPlan` of sequences: ``encode(sequences) -> (ids, lengths)``."""

    def encode(self, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...


def _frozen(a, dtype) -> np.ndarray:
    """Return a private read-only copy of ``a``."""
    a = np.array(a, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, eq=False)
class RankValuePlan:
    """Rank-value tokens (Geneformer v1/v2 and the native model) of CSR chunks.

    Per cell, counts are normalised to ``target_sum`` by the cell's total over
    all columns and multiplied by ``gene_scale`` (``1 / median``); columns with
    a positive result are ranked, highest first, ties by column order
    (:func:`~diffbio_sc.ops._rank_value.rank_value_encode`), and the first
    ``max_length - n_special`` become token ids, between ``<cls>``/``<eos>``
    when the plan has them.

    Attributes
    ----------
    token_ids
        Token id per column (int64, read-only); -1: not in the vocabulary.
    gene_scale
        Multiplier per column (float64, read-only); columns with a scale that is
        not positive and finite, or without a token id, are never tokens.
    target_sum
        Total each cell is normalised to.
    max_length
        Row length, special tokens included.
    pad_id, cls_id, eos_id
        Special ids (``cls_id``/``eos_id`` ``None``: no such token).
    """

    token_ids: np.ndarray
    gene_scale: np.ndarray
    target_sum: float
    max_length: int
    pad_id: int
    cls_id: int | None = None
    eos_id: int | None = None
    scheme: ClassVar[str] = "rank_value"
    _lut: np.ndarray = field(init=False, repr=False)
    _scale: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        ids = _frozen(self.token_ids, np.int64).reshape(-1)
        scale = _frozen(self.gene_scale, np.float64).reshape(-1)
        if ids.shape != scale.shape:
            raise ValueError(f"token_ids {ids.shape} and gene_scale {scale.shape} differ in shape")
        if not float(self.target_sum) > 0:
            raise ValueError(f"target_sum must be > 0, got {self.target_sum}")
        _set(self, "token_ids", ids)
        _set(self, "gene_scale", scale)
        _set(self, "target_sum", float(self.target_sum))
        _set(self, "max_length", int(self.max_length))
        _set(self, "pad_id", int(self.pad_id))
        for name in ("cls_id", "eos_id"):
            v = getattr(self, name)
            _set(self, name, None if v is None else int(v))
        if self.max_genes < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for genes "
                f"({self.n_special} special tokens)"
            )
        # the kernel's inputs: columns without a token are excluded by their scale
        usable = (ids >= 0) & np.isfinite(scale) & (scale > 0)
        _set(self, "_scale", _frozen(np.where(usable, scale, 0.0), np.float64))
        _set(self, "_lut", ids)

    @property
    def n_genes(self) -> int:
        """Number of columns a chunk must have."""
        return int(self.token_ids.size)

    @property
    def n_special(self) -> int:
        """Special tokens per row (``<cls>``, ``<eos>``)."""
        return int(self.cls_id is not None) + int(self.eos_id is not None)

    @property
    def max_genes(self) -> int:
        """Gene tokens per row at most."""
        return self.max_length - self.n_special

    @property
    def usable(self) -> np.ndarray:
        """Boolean per column: can become a token (in the vocabulary, positive scale)."""
        return self._scale > 0

    @property
    def special_ids(self) -> Mapping[str, int]:
        d = {"<pad>": self.pad_id}
        if self.cls_id is not None:
            d["<cls>"] = self.cls_id
        if self.eos_id is not None:
            d["<eos>"] = self.eos_id
        return MappingProxyType(d)

    def __call__(
        self,
        chunk: sp.csr_matrix,
        totals: np.ndarray | None = None,
        *,
        with_values: bool = True,
        out: np.ndarray | None = None,
        n_jobs: int | None = None,
        check: np.ndarray | None = None,
        require_integer: bool = False,
        totals_out: np.ndarray | None = None,
        vocab_mask: np.ndarray | None = None,
        vocab_out: np.ndarray | None = None,
    ) -> CellTokens:
        """Tokens of a canonical CSR chunk (no duplicate entries), cells x ``n_genes``.

        Parameters
        ----------
        chunk
            Counts, cells x columns of the plan.
        totals
            Per-cell totals over all columns, if known (summed from ``chunk`` otherwise).
        with_values
            Also return the ranked values (normalised count times scale; 0 at
            specials and padding).
        out
            Optional int32 ``(n, max_length)`` array (a view is fine) to write the ids into.
        n_jobs
            Threads of the rank kernel (default ``dfm.settings.n_jobs``).
        check, require_integer, totals_out, vocab_mask, vocab_out
            Check the rows in the kernel's pass instead (the chunk need not be
            canonical): flags per row, see
            :func:`~diffbio_sc.ops._rank_value.rank_value_encode`; flagged rows
            are not encoded.

        Returns
        -------
        :class:`CellTokens` ``(ids, values, lengths)``.
        """
        if chunk.shape[1] != self.n_genes:
            raise ValueError(f"chunk has {chunk.shape[1]} columns, the plan {self.n_genes}")
        n = chunk.shape[0]
        if out is None:
            out = np.empty((n, self.max_length), dtype=np.int32)
        elif out.shape != (n, self.max_length) or out.dtype != np.int32:
            raise ValueError(f"out must be int32 of shape ({n}, {self.max_length})")
        lo = int(self.cls_id is not None)
        hi = lo + self.max_genes
        _, vals, ng = rank_value_encode(
            chunk,
            self._scale,
            target_sum=self.target_sum,
            max_tokens=self.max_genes,
            totals=totals,
            lut=self._lut,
            pad_value=self.pad_id,
            out=out[:, lo:hi],
            with_values=with_values,
            n_jobs=n_jobs,
            check=check,
            require_integer=require_integer,
            totals_out=totals_out,
            vocab_mask=vocab_mask,
            vocab_out=vocab_out,
        )
        if self.cls_id is not None:
            out[:, 0] = self.cls_id
        out[:, hi:] = self.pad_id
        if self.eos_id is not None:
            out[np.arange(n), lo + ng] = self.eos_id
        if vals is not None and self.n_special:
            full = np.zeros((n, self.max_length), dtype=np.float32)
            full[:, lo:hi] = vals
            vals = full
        return CellTokens(out, vals, ng.astype(np.int64) + self.n_special)


@dataclass(frozen=True, eq=False)
class BinPlan:
    """scGPT's per-cell quantile bins and its gene sampling, on CSR chunks.

    Bins (:func:`~diffbio_sc.ops._bins.quantile_bins`): per cell, edges at the
    quantiles of its nonzero values over ``columns``; values on tied edges get
    a bin drawn uniformly among them with a uniform keyed by ``seed``, the
    cell's name and the column's position in ``columns``. Tokens: ``<cls>``,
    then the cell's binned genes in column order; a cell with more than
    ``max_length - 1`` such genes keeps the ``max_length - 1`` with the
    smallest uniform keyed by ``seed``, the cell's name and the gene's token id
    (scGPT samples at random; this draw does not depend on the other cells).

    Attributes
    ----------
    n_bins, seed
        Bins including the zero bin; seed of both draws.
    columns
        Columns of a chunk that are binned (int64, read-only); ``None``: all.
    token_ids
        Token id of each binned column (``None``: a bins-only plan, as
        ``dfm.pp.bin_expression`` uses).
    max_length, pad_id, cls_id, pad_value
        Row length with ``<cls>``; padding id and value.
    """

    n_bins: int
    seed: int
    columns: np.ndarray | None = None
    token_ids: np.ndarray | None = None
    max_length: int | None = None
    pad_id: int = 0
    cls_id: int | None = None
    pad_value: float = 0.0
    scheme: ClassVar[str] = "scgpt_bins"

    def __post_init__(self):
        if not 2 <= int(self.n_bins) <= 32767:
            raise ValueError(f"n_bins must lie in [2, 32767], got {self.n_bins}")
        _set(self, "n_bins", int(self.n_bins))
        _set(self, "seed", int(self.seed))
        if self.columns is not None:
            _set(self, "columns", _frozen(self.columns, np.int64).reshape(-1))
        if self.token_ids is not None:
            tok = _frozen(self.token_ids, np.int64).reshape(-1)
            if self.columns is None or tok.shape != self.columns.shape:
                raise ValueError("token_ids needs columns of the same length")
            if self.cls_id is None or self.max_length is None or int(self.max_length) < 2:
                raise ValueError("a token plan needs cls_id and max_length >= 2")
            _set(self, "token_ids", tok)
            _set(self, "max_length", int(self.max_length))
            _set(self, "cls_id", int(self.cls_id))
        _set(self, "pad_id", int(self.pad_id))
        _set(self, "pad_value", float(self.pad_value))

    @property
    def special_ids(self) -> Mapping[str, int]:
        d = {"<pad>": self.pad_id}
        if self.cls_id is not None:
            d["<cls>"] = self.cls_id
        return MappingProxyType(d)

    def cell_keys(self, obs_names) -> np.ndarray:
        """Per-cell 64-bit keys of both draws (from the names and the seed)."""
        return cell_keys(obs_names, self.seed)

    def bins(self, chunk: sp.csr_matrix, keys: np.ndarray) -> sp.csr_matrix:
        """Bins of a canonical CSR chunk's ``columns``: int16 CSR with their sparsity pattern.

        ``keys``: :meth:`cell_keys` of the chunk's cells.
        """
        sub = chunk if self.columns is None else chunk[:, self.columns]
        b = quantile_bins(sub, self.n_bins, keys)
        out = sp.csr_matrix((b, sub.indices, sub.indptr), shape=sub.shape)
        if not out.has_sorted_indices:  # never reorder arrays shared with the caller
            out = out.copy()
            out.sort_indices()
        return out

    def __call__(self, chunk: sp.csr_matrix, keys: np.ndarray) -> CellTokens:
        """``<cls>`` + sampled binned genes: :class:`CellTokens` (values are the bins)."""
        return self.encode(chunk, keys)[0]

    def encode(self, chunk: sp.csr_matrix, keys: np.ndarray) -> tuple[CellTokens, int]:
        """As calling the plan, plus the number of cells whose genes were sampled."""
        if self.token_ids is None:
            raise ValueError("this BinPlan has no token ids (bins only)")
        bins = self.bins(chunk, keys)
        n, k = bins.shape[0], self.max_length - 1
        counts = np.diff(bins.indptr)
        rows = np.repeat(np.arange(n), counts)
        toks = self.token_ids[bins.indices]
        prio = cell_uniforms(keys, toks.astype(np.uint64), rows)
        keep = _sample_keep(bins.indptr, prio, k)
        rows_k = rows[keep]
        kept = np.bincount(rows_k, minlength=n)
        first = np.concatenate([[0], np.cumsum(kept)[:-1]])
        pos = 1 + np.arange(rows_k.size) - first[rows_k]
        g = np.full((n, self.max_length), self.pad_id, dtype=np.int32)
        v = np.full((n, self.max_length), self.pad_value, dtype=np.float32)
        g[:, 0] = self.cls_id
        g[rows_k, pos] = toks[keep]
        v[rows_k, pos] = bins.data[keep]
        return CellTokens(g, v, kept.astype(np.int64) + 1), int((counts > k).sum())


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


@dataclass(frozen=True, eq=False)
class SequencePlan:
    """A sequence tokenizer with its options fixed: the :class:`TokenPlan` of sequences.

    Built by :func:`sequence_plan`; ``encode(sequences)`` returns ``(ids, lengths)``.
    """

    tokenizer: Any
    max_length: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _set(self, "options", MappingProxyType(dict(self.options)))

    @property
    def scheme(self) -> str:
        return str(self.tokenizer.name)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_id)

    @property
    def special_ids(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self.tokenizer.special_ids))

    def encode(self, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded int32 ids ``(n, T)`` and int64 lengths ``(n,)`` (specials included)."""
        ids, mask = self.tokenizer.encode(sequences, max_length=self.max_length, **self.options)
        return ids, mask.sum(axis=1, dtype=np.int64)


def sequence_plan(tokenizer, *, max_length: int | None = None, **options) -> SequencePlan:
    """Fix a sequence tokenizer's options into a :class:`SequencePlan`.

    ``tokenizer``: a ``char``/``kmer``/``nt6`` tokenizer
    (:func:`~diffbio_sc.ops.get_tokenizer`) with options ``add_cls``, or a DNA
    checkpoint tokenizer with option ``unknown``. Unknown options are refused here.
    """
    import inspect

    allowed = set(inspect.signature(tokenizer.encode).parameters) - {"sequences", "max_length"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise TypeError(
            f"{type(tokenizer).__name__}.encode takes no option(s) {bad}; it takes {sorted(allowed)}"
        )
    return SequencePlan(tokenizer, None if max_length is None else int(max_length), options)
