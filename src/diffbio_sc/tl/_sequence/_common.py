"""Shared pieces of the sequence tools: target resolution, validation, frozen callables.

* :func:`resolve_target` finds the AnnData of sequences in a MuData (``mod``)
  or takes an AnnData as it is (the shared resolver of ``tl/_target.py``).
* :func:`check_sequences` reads ``.obs['sequence']`` and validates it against
  an alphabet (errors name the record and 1-based position).
* :func:`sequence_embedder` returns what embeds sequences: a
  :class:`~diffbio_sc.models._adapters.SequenceAdapter` (a model on the one
  runner, :class:`~diffbio_sc.models._runner.BucketedRunner`: length buckets
  of powers of two up to the model's ``max_length``, fixed batch shapes, eval
  mode) or, for a frozen callable, :class:`FrozenEncoder`.
* Windows of long sequences follow the one window rule,
  :func:`~diffbio_sc.ops._sequence.tile_sequences`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from ... import _keys
from ..._validate import DfmInputError
from ...models._adapters import SequenceAdapter, token_counts
from ...ops._sequence import (
    average_windows,
    check_alphabet,
    pack_sequences,
    reverse_complement,
    tile_sequences,
)

__all__ = [
    "FrozenEncoder",
    "average_windows",
    "check_lengths",
    "check_sequence_list",
    "check_sequences",
    "resolve_encoder",
    "resolve_target",
    "sequence_embedder",
    "tile_sequences",
    "token_counts",
]


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
    check_sequence_list(seqs, adata.obs_names, alphabet=alphabet)
    return seqs


def check_sequence_list(seqs: Sequence, names, *, alphabet: str) -> None:
    """Raise naming the first sequence that is not a non-empty string over ``alphabet``."""
    for name, s in zip(names, seqs, strict=True):
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
            check_alphabet(codes, lengths, alphabet=alphabet, names=names[start : start + 4096])
        except ValueError as err:
            raise DfmInputError(str(err)) from None


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


def pad_rows(arr: np.ndarray, rows: int) -> np.ndarray:
    """Pad ``arr`` with zero rows up to ``rows`` (fixed batch shape of the fine-tuning steps)."""
    if arr.shape[0] == rows:
        return arr
    pad = np.zeros((rows - arr.shape[0], *arr.shape[1:]), arr.dtype)
    return np.concatenate([arr, pad])


class FrozenEncoder:
    """A frozen callable ``f(list_of_sequences) -> (n, d) array``, called ``batch_size`` at a time.

    Not a JAX model, so it does not go through the runner; ``'average'``
    embeds both strands and averages.
    """

    native = False
    tokenizer = None
    passes = 1  # both strands of a batch in one step

    def __init__(self, fn: Callable, *, reverse_complement, batch_size: int, alphabet: str):
        self.fn = fn
        self.mode = reverse_complement
        self.batch_size = int(batch_size)
        self.alphabet = alphabet
        self.n_dims = None

    def __call__(self, sequences: Sequence[str], counts=None, progress=None) -> np.ndarray:
        """``(n, d)`` float32 embeddings of ``sequences`` in their order.

        ``progress(k)`` is called after each batch with its number of sequences.
        """
        seqs = list(sequences)
        parts = []
        for s in range(0, len(seqs), self.batch_size):
            part = seqs[s : s + self.batch_size]
            emb = self._batch(part)
            if self.mode == "average":
                emb = 0.5 * (emb + self._batch(reverse_complement(part, alphabet=self.alphabet)))
            parts.append(emb)
            if progress is not None:
                progress(len(part))
        out = np.concatenate(parts).astype(np.float32)
        self.n_dims = int(out.shape[1])
        return out

    def _batch(self, part: list[str]) -> np.ndarray:
        emb = np.asarray(self.fn(part))
        if emb.ndim != 2 or emb.shape[0] != len(part):
            raise DfmInputError(
                f"The frozen encoder returned shape {emb.shape} for {len(part)} sequences; "
                "it must return an (n_sequences, n_dims) array."
            )
        if emb.dtype.kind not in "fiu" or not np.isfinite(emb).all():
            raise DfmInputError("The frozen encoder returned non-numeric or non-finite values.")
        return emb.astype(np.float32)


def run_with_bar(embedder, pieces: Sequence[str], counts=None, *, show: bool, desc: str):
    """``embedder(pieces, counts)`` with a tqdm bar advanced per batch (hidden unless ``show``).

    The bar counts sequences (windows) embedded, ``embedder.passes`` per piece.
    """
    from ..._logging import tqdm

    with tqdm(
        total=len(pieces) * embedder.passes, desc=desc, unit="seq", disable=not show, leave=False
    ) as bar:
        return embedder(pieces, counts, progress=bar.update)


def sequence_embedder(
    encoder, *, reverse_complement, batch_size: int, alphabet: str = "dna", pooling=None
):
    """Return what embeds sequences with ``encoder``: a model on the runner, or a callable.

    A :class:`~diffbio_sc.models.SequenceEncoder` or a DNA checkpoint gives a
    :class:`~diffbio_sc.models._adapters.SequenceAdapter` (the one runner); a
    callable a :class:`FrozenEncoder`. Both are called as ``f(sequences,
    counts=None) -> (n, d)``.
    """
    from ...models._dna_checkpoints import DnaCheckpointModel
    from ...models._sequence import SequenceEncoder

    if isinstance(encoder, (SequenceEncoder, DnaCheckpointModel)):
        return SequenceAdapter(
            encoder, reverse_complement=reverse_complement, batch_size=batch_size, pooling=pooling
        )
    if callable(encoder):
        return FrozenEncoder(
            encoder, reverse_complement=reverse_complement, batch_size=batch_size, alphabet=alphabet
        )
    raise TypeError(
        "encoder must be a SequenceEncoder, the path of a saved one, or a callable "
        f"mapping a list of sequences to an (n, d) array; got {type(encoder).__name__}."
    )


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
