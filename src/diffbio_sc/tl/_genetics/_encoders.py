"""Sequence encoders for gene embeddings: the interface and three implementations.

The interface :func:`embed_genes` needs is small. An encoder has

* ``embed(sequences: list[str]) -> ndarray (n, d)`` (float; one row per sequence,
  each row independent of the others in the call),
* ``description``: a JSON-serialisable dict that identifies it (it enters the
  ``embedding_strategy_id`` digest, so it must be stable across runs),
* ``max_length``: the longest sequence it accepts (``None``: any length);
  longer genes are cut into windows,
* ``rc_equivariant``: whether its output is exactly invariant to reverse
  complementing its input (needed for ``reverse_complement='equivariant'``).

Implementations: :class:`KmerEncoder` (deterministic k-mer frequencies, a
baseline), :class:`PrecomputedEncoder` (embeddings made elsewhere, e.g. by Evo 2
or Nucleotide Transformer, looked up by sequence digest) and
:class:`FunctionEncoder` (any in-process callable, e.g. a frozen model). A
``dfm.models.SequenceEncoder`` and a published DNA checkpoint
(``DnaCheckpointModel``: Nucleotide Transformer, GENERator) are adapted by
:func:`as_encoder`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..._validate import DfmInputError, check_bool, check_int
from ...io._genome import base_codes, sequence_digest

__all__ = [
    "GeneEncoder",
    "KmerEncoder",
    "PrecomputedEncoder",
    "FunctionEncoder",
    "NativeSequenceEncoder",
    "DnaCheckpointEncoder",
    "as_encoder",
]


@runtime_checkable
class GeneEncoder(Protocol):
    """What :func:`diffbio_sc.tl.embed_genes` needs from a sequence encoder."""

    description: Mapping[str, Any]
    max_length: int | None
    rc_equivariant: bool

    def embed(self, sequences: list[str]) -> np.ndarray:
        """Return an ``(n, d)`` float array, one row per sequence."""
        ...


def _rc_kmer_ids(k: int) -> np.ndarray:
    """For every k-mer id (base-4, first base most significant), the id of its reverse complement."""
    ids = np.arange(4**k)
    digits = (ids[:, None] // 4 ** np.arange(k - 1, -1, -1)) % 4  # (4^k, k)
    rc_digits = 3 - digits[:, ::-1]
    return (rc_digits * 4 ** np.arange(k - 1, -1, -1)).sum(axis=1)


class KmerEncoder:
    """k-mer frequency vectors: a deterministic, training-free baseline encoder.

    Each sequence becomes the frequencies of its overlapping k-mers (counts
    divided by the number of valid k-mers; k-mers containing a base other than
    A/C/G/T are skipped; a sequence shorter than ``k`` gives zeros).

    Parameters
    ----------
    k
        k-mer length, 1..8 (``4**k`` dimensions).
    canonical
        Merge each k-mer with its reverse complement (``(4**k + 4**(k/2)) / 2``
        dimensions for even ``k``); the vector is then exactly the same for a
        sequence and its reverse complement, so this encoder supports
        ``reverse_complement='equivariant'``.
    """

    def __init__(self, k: int = 4, *, canonical: bool = False) -> None:
        self.k = check_int("k", k, minimum=1, maximum=8)
        self.canonical = check_bool("canonical", canonical)
        self.max_length = None
        self.rc_equivariant = self.canonical
        if self.canonical:
            rc = _rc_kmer_ids(self.k)
            canon = np.minimum(np.arange(4**self.k), rc)
            keep, self._column = np.unique(canon, return_inverse=True)
            self.dim = int(keep.size)
        else:
            self._column = None
            self.dim = 4**self.k
        self.description = {
            "kind": "kmer_frequency",
            "k": self.k,
            "canonical": self.canonical,
            "normalization": "frequency",
            "dim": self.dim,
        }

    def __repr__(self) -> str:
        return f"KmerEncoder(k={self.k}, canonical={self.canonical})"

    def embed(self, sequences: list[str]) -> np.ndarray:
        """Return ``float32 (n, dim)`` k-mer frequencies (vectorised over all sequences)."""
        n = len(sequences)
        k = self.k
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n)
        # One code array with a -1 separator after each sequence, so no window spans two.
        codes = base_codes("N".join(sequences) + "N").astype(np.int64)
        seq_of = np.repeat(np.arange(n), lengths + 1)
        if codes.size < k:
            return np.zeros((n, self.dim), dtype=np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(codes, k)
        valid = (windows >= 0).all(axis=1)
        ids = windows[valid] @ (4 ** np.arange(k - 1, -1, -1))
        if self._column is not None:
            ids = self._column[ids]
        owner = seq_of[: windows.shape[0]][valid]
        counts = np.bincount(owner * self.dim + ids, minlength=n * self.dim)
        counts = counts.reshape(n, self.dim).astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).astype(
            np.float32
        )


class FunctionEncoder:
    """Wrap a callable ``f(list[str]) -> (n, d) array`` (e.g. a frozen in-process model).

    Parameters
    ----------
    fn
        The embedding function. Each output row must depend on its own sequence
        only.
    description
        A JSON-serialisable dict naming the model and its settings (weights
        digest, layer, pooling ...); it enters the strategy digest.
    max_length
        Longest accepted sequence (``None``: any).
    rc_equivariant
        Whether ``fn`` is exactly reverse-complement invariant.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], Any],
        description: Mapping[str, Any],
        *,
        max_length: int | None = None,
        rc_equivariant: bool = False,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}.")
        if not isinstance(description, Mapping) or not description:
            raise TypeError(
                "description must be a non-empty dict identifying the encoder (name, "
                "weights digest, pooling ...); it enters the embedding_strategy_id."
            )
        self.fn = fn
        self.description = dict(description)
        self.max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
        self.rc_equivariant = check_bool("rc_equivariant", rc_equivariant)

    def embed(self, sequences: list[str]) -> np.ndarray:
        """Call the function and check the shape of what it returns."""
        out = np.asarray(self.fn(list(sequences)), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(sequences):
            raise DfmInputError(
                f"The encoder function returned shape {out.shape} for {len(sequences)} "
                "sequences; it must return (n_sequences, n_dims)."
            )
        if not np.isfinite(out).all():
            raise DfmInputError("The encoder function returned NaN or infinite values.")
        return out


class PrecomputedEncoder:
    """Embeddings computed elsewhere, looked up by sequence digest.

    Write the sequences to embed with :func:`diffbio_sc.tl.export_gene_sequences`
    (a FASTA whose record ids are :func:`sequence_digest` values), embed them
    with the upstream model (DNABERT-2, Nucleotide Transformer, Evo 2 ...), and
    save the vectors with those ids in any layout :func:`diffbio_sc.io.read_embeddings`
    reads (e.g. ``.npz`` with ``embeddings`` and ``sequence_ids``).

    Parameters
    ----------
    path
        The embedding file.
    source
        A name for the upstream model (recorded in the strategy).
    max_length
        The context the upstream model was given when exporting (``None``: whole
        genes). Must match the ``window`` used in the export.
    rc_equivariant
        Whether the upstream model is RC-equivariant (e.g. Caduceus-PS).
    **read_kwargs
        Passed to :func:`diffbio_sc.io.read_embeddings` (``id_key``, ``format`` ...).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        source: str = "generic",
        max_length: int | None = None,
        rc_equivariant: bool = False,
        **read_kwargs: Any,
    ) -> None:
        from ...io._embeddings import read_embeddings

        art = read_embeddings(path, **read_kwargs)
        if art.ids is None:
            raise DfmInputError(
                f"{str(path)!r} has no sequence ids; precomputed gene embeddings are looked "
                "up by the ids written by dfm.tl.export_gene_sequences."
            )
        ids = [str(i) for i in art.ids]
        if len(set(ids)) != len(ids):
            raise DfmInputError(f"{str(path)!r} has duplicate sequence ids.")
        self._row = {i: r for r, i in enumerate(ids)}
        self._emb = np.asarray(art.embeddings, dtype=np.float32)
        self.max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
        self.rc_equivariant = check_bool("rc_equivariant", rc_equivariant)
        self.path = str(path)
        self.description = {
            "kind": "precomputed",
            "source": str(source),
            "artifact_sha256": art.metadata.get("sha256"),
            "dim": int(self._emb.shape[1]),
            "max_length": self.max_length,
        }

    def embed(self, sequences: list[str]) -> np.ndarray:
        """Look up each sequence by its digest; every one must be in the file."""
        keys = [sequence_digest(s) for s in sequences]
        missing = [k for k in keys if k not in self._row]
        if missing:
            raise DfmInputError(
                f"{len(missing)} of {len(keys)} sequences are not in {self.path!r} (e.g. "
                f"{missing[:3]}). Export them with dfm.tl.export_gene_sequences using the "
                "same genes, VCF, reverse_complement and window settings, embed that FASTA "
                "with the upstream model, and save the vectors with its record ids."
            )
        return self._emb[[self._row[k] for k in keys]]


class NativeSequenceEncoder:
    """A ``dfm.models.SequenceEncoder`` (frozen, evaluation mode) as a gene encoder.

    Sequences are tokenized and run through the package's one batched runner
    (:class:`~diffbio_sc.models._adapters.SequenceAdapter`: fixed-shape,
    length-bucketed batches; the model's own pooling), one strand at a time,
    with no AnnData in between: :func:`embed_genes` adds the reverse
    complements itself for ``reverse_complement='average'``, and an encoder
    built with ``reverse_complement='equivariant'`` is RC-invariant by
    construction. The weights are placed and hashed once per encoder.

    ``max_length`` is in bases: the model's sequence tokens for the ``char``
    tokenizer, ``tokens + k - 1`` for overlapping k-mers, and
    ``6 * (tokens - 5) + 5`` for Nucleotide-Transformer 6-mers (the most bases
    that always fit, since leftover bases become single tokens).
    """

    def __init__(self, model, *, batch_size: int = 64) -> None:
        import dataclasses

        from ...models._runner import weights_digest

        cfg = model.config
        tokens = int(cfg.max_sequence_tokens)
        if cfg.tokenizer == "char":
            self.max_length = tokens
        elif cfg.tokenizer == "kmer":
            self.max_length = tokens + int(cfg.k) - 1
        else:
            self.max_length = 6 * (tokens - 5) + 5
        self.rc_equivariant = cfg.reverse_complement == "equivariant"
        self.model = model
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self._adapter = None
        config = {k: v for k, v in dataclasses.asdict(cfg).items()}
        self.description = {
            "kind": "dfm_sequence_encoder",
            "config": config,
            "weights_sha256": weights_digest(model),
            "pooling": cfg.pooling,
        }

    def embed(self, sequences: list[str]) -> np.ndarray:
        """Embed with the native encoder (no RC averaging here; see the class notes)."""
        from .._sequence._common import check_lengths, check_sequence_list

        seqs = list(sequences)
        if not seqs:
            return np.zeros((0, int(self.model.config.hidden_dim)), dtype=np.float32)
        if self._adapter is None:
            from ...models._adapters import SequenceAdapter

            mode = "equivariant" if self.rc_equivariant else None
            self._adapter = SequenceAdapter(
                self.model, reverse_complement=mode, batch_size=self.batch_size
            )
        names = [f"s{i}" for i in range(len(seqs))]
        check_sequence_list(seqs, names, alphabet=self.model.config.alphabet)
        counts = self._adapter.counts(seqs)
        check_lengths(counts, self._adapter.max_tokens, names)
        return self._adapter(seqs, counts)


class DnaCheckpointEncoder:
    """A published DNA checkpoint (``DnaCheckpointModel``) as a gene encoder.

    Sequences are tokenized and run through the package's one batched runner
    (:class:`~diffbio_sc.models._adapters.SequenceAdapter`: fixed-shape
    batches bucketed by each sequence's own token count; the model's pooling:
    mean for Nucleotide Transformer, last token for GENERator), one strand at
    a time, with no AnnData in between: :func:`embed_genes` adds the reverse
    complements itself for ``reverse_complement='average'``; ``'equivariant'``
    (one pass) is accepted only for Caduceus-PS, whose pooled embedding is
    exactly strand-invariant.

    ``max_length`` is in bases: the largest window whose pieces of ``ACGT``
    always fit the model's context of ``max_tokens`` tokens
    (:func:`~diffbio_sc.tl._sequence._dna_checkpoint.max_window`). Symbols
    outside the model's alphabet (``ACGTN``; ``ACGT`` for GENERator) are an
    error.
    """

    def __init__(self, model, *, batch_size: int = 64, pooling: str | None = None) -> None:
        from .._sequence._dna_checkpoint import family_name, kmer_size, max_window

        self.model = model
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.pooling = model.pooling if pooling is None else pooling
        self.max_length = int(max_window(model))
        self.rc_equivariant = bool(model.rc_equivariant)  # Caduceus-PS
        self._adapter = None
        self.description = {
            "kind": "dna_checkpoint",
            "model_family": family_name(model),
            "checkpoint_sha256": model.sha256,
            **model.digests(),
            "k": kmer_size(model),
            "max_tokens": int(model.max_tokens),
            "pooling": self.pooling,
            "layer_index": int(model.n_layers),
            "hub": dict(model.hub) if model.hub else None,
        }

    def embed(self, sequences: list[str]) -> np.ndarray:
        """Embed one strand with the checkpoint (see the class notes)."""
        from .._sequence._common import check_lengths, check_sequence_list
        from .._sequence._dna_checkpoint import check_model_alphabet, family_name

        seqs = list(sequences)
        if not seqs:
            return np.zeros((0, int(self.model.hidden_dim)), dtype=np.float32)
        if self._adapter is None:
            from ...models._adapters import SequenceAdapter

            self._adapter = SequenceAdapter(
                self.model,
                reverse_complement=None,
                batch_size=self.batch_size,
                pooling=self.pooling,
            )
        names = [f"s{i}" for i in range(len(seqs))]
        check_sequence_list(seqs, names, alphabet="dna")
        check_model_alphabet(self.model, seqs, names)
        counts = self._adapter.counts(seqs)
        check_lengths(
            counts,
            self._adapter.max_tokens,
            names,
            what=f"the {family_name(self.model)} model",
            hint="Use a smaller window= (every N is a token of its own)",
        )
        return self._adapter(seqs, counts)


def as_encoder(encoder, *, batch_size: int = 64) -> GeneEncoder:
    """Return ``encoder`` as a :class:`GeneEncoder` (``None``: ``KmerEncoder(k=4)``)."""
    if encoder is None:
        return KmerEncoder(4)
    if isinstance(encoder, (KmerEncoder, FunctionEncoder, PrecomputedEncoder)):
        return encoder
    if isinstance(encoder, (str, os.PathLike)):
        return PrecomputedEncoder(encoder)
    if type(encoder).__name__ == "SequenceEncoder" and hasattr(encoder, "weights_sha256"):
        return NativeSequenceEncoder(encoder, batch_size=batch_size)
    from .._sequence._dna_checkpoint import is_dna_checkpoint

    if is_dna_checkpoint(encoder):
        return DnaCheckpointEncoder(encoder, batch_size=batch_size)
    if isinstance(encoder, GeneEncoder):
        return encoder
    raise TypeError(
        f"encoder must be a KmerEncoder, a dfm.models.SequenceEncoder, a DNA checkpoint "
        f"(dfm.models.load_checkpoint), a PrecomputedEncoder "
        f"(or a path to precomputed embeddings), a FunctionEncoder, or an object with "
        f"embed/description/max_length/rc_equivariant; got {type(encoder).__name__}."
    )


def strategy_digest(strategy: Mapping[str, Any]) -> str:
    """Stable digest of a JSON-serialisable strategy dict (sorted keys)."""
    import json

    text = json.dumps(strategy, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unique_in_order(items: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct items in first-seen order and the index of each item among them."""
    first: dict[str, int] = {}
    inverse = np.empty(len(items), dtype=np.int64)
    for i, s in enumerate(items):
        j = first.get(s)
        if j is None:
            j = len(first)
            first[s] = j
        inverse[i] = j
    return list(first), inverse
