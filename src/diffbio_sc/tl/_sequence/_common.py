"""Shared pieces of the sequence tools: target resolution, validation, bucketed batches.

* :func:`resolve_target` finds the AnnData of sequences in a MuData (``mod``)
  or takes an AnnData as it is (the shared resolver of ``tl/_target.py``).
* :func:`check_sequences` reads ``.obs['sequence']`` and validates it against
  an alphabet (errors name the record and 1-based position).
* :func:`length_buckets` groups sequences by token count into fixed widths
  (powers of two up to the model's ``max_length``) and fixed batch sizes, so a
  jit-compiled step compiles once per width and a sequence's padded width
  depends on its own length only, never on its batch.
* :class:`SequenceRunner` embeds sequences with a :class:`SequenceEncoder` in
  those batches (eval mode, no dropout) or through a frozen callable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from ... import _keys
from ..._validate import DfmInputError
from ...ops._sequence import check_alphabet, pack_sequences, reverse_complement

#: Smallest bucket width (tokens).
MIN_BUCKET = 16


def resolve_target(data, mod: str | None):
    """Return the :class:`~diffbio_sc.tl._target.Target` holding the sequences.

    The one MuData/AnnData resolver of the tools (``tl/_target.py``); for an
    AnnData ``mod`` is ignored, since the sequence tools default to
    ``mod='dna'`` for MuData. Duplicate ids are checked with the sequences.
    """
    from .._target import _is_mudata
    from .._target import resolve_target as _resolve

    return _resolve(
        data,
        mod if _is_mudata(data) else None,
        require_unique_obs=False,
        what="sequence embeddings",
    )


def check_sequences(adata, *, alphabet: str, sequence_key: str = _keys.SEQUENCE_KEY) -> list[str]:
    """Return the sequences of ``adata.obs[sequence_key]`` after validating them."""
    if adata.n_obs == 0:
        raise DfmInputError("The AnnData holds no sequences.")
    if sequence_key not in adata.obs.columns:
        raise DfmInputError(
            f".obs[{sequence_key!r}] not found; available columns: {list(adata.obs.columns)}. "
            "Read sequences with dfm.io.read_fasta, or pass sequence_key=."
        )
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise DfmInputError(
            f"{len(dup)} duplicate sequence ids, e.g. {[str(d) for d in dup[:5]]}. Make them "
            "unique first (adata.obs_names_make_unique())."
        )
    seqs = adata.obs[sequence_key].tolist()
    for name, s in zip(adata.obs_names, seqs, strict=True):
        if not isinstance(s, str):
            raise DfmInputError(
                f"Sequence {str(name)!r} is a {type(s).__name__}, not a string (missing value?)."
            )
        if not s:
            raise DfmInputError(f"Sequence {str(name)!r} is empty; drop it first.")
    for start in range(0, len(seqs), 4096):  # bounded memory on large sets
        part = seqs[start : start + 4096]
        try:
            codes, lengths = pack_sequences(part)
            check_alphabet(
                codes, lengths, alphabet=alphabet, names=adata.obs_names[start : start + 4096]
            )
        except ValueError as err:
            raise DfmInputError(str(err)) from None
    return seqs


def token_counts(tokenizer, sequences: Sequence[str], *, add_cls: bool) -> np.ndarray:
    """Tokens per sequence, ``<cls>`` included (exact for every tokenizer)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if tokenizer.name == "nt6":
        out = np.empty(len(sequences), np.int64)
        for start in range(0, len(sequences), 4096):
            part = list(sequences[start : start + 4096])
            out[start : start + len(part)] = tokenizer.n_tokens(
                None, add_cls=add_cls, sequences=part
            )
        return out
    return tokenizer.n_tokens(lengths, add_cls=add_cls)


def check_lengths(
    counts: np.ndarray,
    max_length: int,
    names,
    *,
    what: str = "the encoder",
    hint: str = "Split them (e.g. into windows with dfm.io.read_fasta(regions=...)), trim them",
) -> None:
    """Raise naming the sequences with more tokens than ``max_length``."""
    over = np.flatnonzero(counts > max_length)
    if over.size:
        shown = ", ".join(f"{str(names[i])!r} ({int(counts[i])} tokens)" for i in over[:5])
        raise DfmInputError(
            f"{over.size} sequence(s) are longer than the max_length={max_length} tokens of "
            f"{what}, e.g. {shown}. {hint}, or use an encoder with a larger max_length."
        )


def tile_sequences(
    sequences: Sequence[str], window: int, stride: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cut sequences into windows (:func:`~diffbio_sc.ops._sequence.window_starts`).

    Returns
    -------
    ``(pieces, owner, weight)``: the window strings in sequence order, the index
    of the sequence each came from, and its length in bases (the averaging
    weight). A sequence no longer than ``window`` is its own single piece.
    """
    from ...ops._sequence import window_starts

    pieces: list[str] = []
    owner: list[int] = []
    for i, s in enumerate(sequences):
        if len(s) <= window:
            pieces.append(s)
            owner.append(i)
            continue
        for a in window_starts(len(s), window, stride).tolist():
            pieces.append(s[a : a + window])
            owner.append(i)
    own = np.asarray(owner, np.int64)
    weight = np.fromiter((len(p) for p in pieces), np.float64, count=len(pieces))
    return pieces, own, weight


def average_windows(emb: np.ndarray, owner: np.ndarray, weight: np.ndarray, n: int) -> np.ndarray:
    """Length-weighted mean of window embeddings per sequence, ``(n, d)`` float32."""
    total = np.zeros((n, emb.shape[1]), np.float64)
    np.add.at(total, owner, emb.astype(np.float64) * weight[:, None])
    norm = np.bincount(owner, weights=weight, minlength=n)
    return (total / norm[:, None]).astype(np.float32)


def bucket_widths(max_length: int) -> list[int]:
    """Powers of two from :data:`MIN_BUCKET` below ``max_length``, then ``max_length``."""
    widths = []
    w = MIN_BUCKET
    while w < max_length:
        widths.append(w)
        w *= 2
    return [*widths, int(max_length)]


def length_buckets(
    counts: np.ndarray, batch_size: int, max_length: int
) -> list[tuple[int, np.ndarray]]:
    """``[(width, indices), ...]``: sequences grouped by bucket, at most ``batch_size`` each."""
    widths = np.asarray(bucket_widths(max_length))
    which = np.searchsorted(widths, counts, side="left")
    out = []
    for b, width in enumerate(widths):
        idx = np.flatnonzero(which == b)
        for s in range(0, idx.size, batch_size):
            out.append((int(width), idx[s : s + batch_size]))
    return out


_STEP: dict = {}


def _embed_step():
    if not _STEP:
        import jax
        from flax import nnx

        @partial(jax.jit, static_argnums=(0, 1))
        def step(graphdef, mode, state, ids, valid, rc_ids, rc_valid):
            model = nnx.merge(graphdef, state)
            return model.embed(
                ids, valid, reverse_complement=mode, rc_inputs=rc_ids, rc_valid=rc_valid
            )

        _STEP["embed"] = step
    return _STEP["embed"]


def pad_rows(arr: np.ndarray, rows: int) -> np.ndarray:
    """Pad ``arr`` with zero rows up to ``rows`` (fixed batch shape)."""
    if arr.shape[0] == rows:
        return arr
    pad = np.zeros((rows - arr.shape[0], *arr.shape[1:]), arr.dtype)
    return np.concatenate([arr, pad])


class SequenceRunner:
    """Embed sequences in fixed-shape, length-bucketed batches.

    Parameters
    ----------
    encoder
        A :class:`~diffbio_sc.models.SequenceEncoder` (run in eval mode; the
        caller's model is left in its mode) or a frozen callable
        ``f(list_of_sequences) -> (n, d) array``.
    reverse_complement
        ``None``, ``'average'`` or ``'equivariant'`` (see
        :meth:`SequenceEncoder.embed`); for a callable, ``'average'`` embeds
        both strands and averages.
    batch_size
        Rows per forward pass (the last batch of a bucket is padded).
    """

    def __init__(self, encoder, *, reverse_complement, batch_size: int, alphabet: str = "dna"):
        from ...models._sequence import SequenceEncoder

        self.batch_size = int(batch_size)
        self.mode = reverse_complement
        if isinstance(encoder, SequenceEncoder):
            from flax import nnx

            self.native = True
            self.config = encoder.config
            self.alphabet = encoder.config.alphabet
            self.tokenizer = encoder.config.get_tokenizer()
            training = not encoder.embed_drop.deterministic
            encoder.eval()
            self.graphdef, self.state = nnx.split(encoder)
            if training:
                encoder.train()
            self.add_cls = False  # the model adds <cls> itself
            self.max_tokens = encoder.config.max_sequence_tokens
            self.n_dims = int(encoder.config.hidden_dim)
        elif callable(encoder):
            self.native = False
            self.fn: Callable = encoder
            self.alphabet = alphabet
            self.tokenizer = None
            self.n_dims = None
        else:
            raise TypeError(
                "encoder must be a SequenceEncoder, the path of a saved one, or a callable "
                f"mapping a list of sequences to an (n, d) array; got {type(encoder).__name__}."
            )

    def counts(self, sequences: Sequence[str]) -> np.ndarray:
        """Token counts (forward strand, and the reverse for ``nt6`` averaging)."""
        c = token_counts(self.tokenizer, sequences, add_cls=False)
        if self._needs_rc_tokens():
            rc = token_counts(
                self.tokenizer,
                reverse_complement(list(sequences), alphabet=self.alphabet),
                add_cls=False,
            )
            c = np.maximum(c, rc)
        return c

    def _needs_rc_tokens(self) -> bool:
        return (
            self.native
            and self.mode == "average"
            and self.config.tokenizer != "char"
            and (self.config.reverse_complement != "equivariant")
        )

    def __call__(self, sequences: Sequence[str], counts: np.ndarray | None = None) -> np.ndarray:
        """``(n, d)`` float32 embeddings of ``sequences`` in their order."""
        seqs = list(sequences)
        if not self.native:
            return self._call_frozen(seqs)
        import jax.numpy as jnp

        if counts is None:
            counts = self.counts(seqs)
        out = np.empty((len(seqs), self.n_dims), np.float32)
        step = _embed_step()
        for width, idx in length_buckets(counts, self.batch_size, self.max_tokens):
            part = [seqs[i] for i in idx]
            ids, valid = self.tokenizer.encode(part, max_length=width)
            rc_ids = rc_valid = None
            if self._needs_rc_tokens():
                rc_ids, rc_valid = self.tokenizer.encode(
                    reverse_complement(part, alphabet=self.alphabet), max_length=width
                )
                rc_ids, rc_valid = (
                    jnp.asarray(pad_rows(rc_ids, self.batch_size)),
                    jnp.asarray(pad_rows(rc_valid, self.batch_size)),
                )
            emb = step(
                self.graphdef,
                self.mode,
                self.state,
                jnp.asarray(pad_rows(ids, self.batch_size)),
                jnp.asarray(pad_rows(valid, self.batch_size)),
                rc_ids,
                rc_valid,
            )
            out[idx] = np.asarray(emb, np.float32)[: len(idx)]
        return out

    def _call_frozen(self, seqs: list[str]) -> np.ndarray:
        parts = []
        for s in range(0, len(seqs), self.batch_size):
            part = seqs[s : s + self.batch_size]
            emb = self._frozen_batch(part)
            if self.mode == "average":
                emb = 0.5 * (
                    emb + self._frozen_batch(reverse_complement(part, alphabet=self.alphabet))
                )
            parts.append(emb)
        out = np.concatenate(parts).astype(np.float32)
        self.n_dims = int(out.shape[1])
        return out

    def _frozen_batch(self, part: list[str]) -> np.ndarray:
        emb = np.asarray(self.fn(part))
        if emb.ndim != 2 or emb.shape[0] != len(part):
            raise DfmInputError(
                f"The frozen encoder returned shape {emb.shape} for {len(part)} sequences; "
                "it must return an (n_sequences, n_dims) array."
            )
        if emb.dtype.kind not in "fiu" or not np.isfinite(emb).all():
            raise DfmInputError("The frozen encoder returned non-numeric or non-finite values.")
        return emb.astype(np.float32)


def _hf_config(path) -> bool:
    """Whether ``path/config.json`` is a Hugging Face checkpoint's (``model_type``/``auto_map``)."""
    import json
    from pathlib import Path

    cfile = Path(path) / "config.json"
    try:
        doc = json.loads(cfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and ("model_type" in doc or "auto_map" in doc)


def resolve_encoder(encoder):
    """Return ``(encoder, model_path)`` for an encoder object, a callable or a directory.

    A directory is told by its ``config.json``: diffbio_sc's own model format
    (a ``format`` field) is read with :func:`~diffbio_sc.models.load` (a
    :class:`SequenceEncoder`, or a DNA checkpoint saved with
    ``DnaCheckpointModel.save``); a Hugging Face checkpoint (``model_type``, or
    NT v2's ``auto_map``) with :func:`~diffbio_sc.models.load_checkpoint`.
    """
    if isinstance(encoder, (str, os.PathLike)):
        from pathlib import Path

        from ...models._io import _is_model_dir, load
        from ...models._sequence import SequenceEncoder
        from ._dna_checkpoint import is_dna_checkpoint

        path = Path(encoder)
        if path.name == "config.json" and path.is_file():
            path = path.parent
        if _is_model_dir(path):
            model = load(path)
            md = getattr(model, "metadata", None) or {}
            if isinstance(model, SequenceEncoder):
                return model, os.fspath(encoder)
            if md.get("family") in ("nucleotide_transformer", "generator"):
                from ...models._dna_checkpoints import dna_from_saved

                return dna_from_saved(model, path), os.fspath(encoder)
        elif _hf_config(path):
            from ...models._pretrained import load_checkpoint

            model = load_checkpoint(path)
            if is_dna_checkpoint(model):
                return model, os.fspath(encoder)
            raise DfmInputError(
                f"{os.fspath(encoder)!r} is a {model.family} checkpoint (a single-cell model), "
                "not a DNA model; embed cells with it through dfm.tl.embed_checkpoint."
            )
        else:
            model = load(path)  # the package's errors for a missing or unreadable model
            if isinstance(model, SequenceEncoder):
                return model, os.fspath(encoder)
        raise DfmInputError(
            f"{os.fspath(encoder)!r} holds a {type(model).__name__}, not a SequenceEncoder "
            "or a DNA checkpoint (Nucleotide Transformer, GENERator)."
        )
    return encoder, None
