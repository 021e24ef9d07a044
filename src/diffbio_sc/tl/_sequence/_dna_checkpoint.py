"""Published DNA checkpoints (Nucleotide Transformer, GENERator, DNABERT-2 ...) in ``embed_sequences``.

A :class:`~diffbio_sc.models._dna_checkpoints.DnaCheckpointModel` reads its own
tokens (6-mers plus single bases and special tokens), so its context is a
number of *tokens* (``model.max_tokens``) while ``window=`` counts *bases*.
The relation, for sequences of the model's bases (``k = 6``, ``s`` special
tokens: ``<cls>`` [+ ``<eos>``] for NT, ``<s>`` + ``</s>`` for GENERator):

* GENERator cuts a sequence of ``n`` bases into ``ceil(n / k)`` pieces, so it
  gives ``s + ceil(n / k)`` tokens.
* Nucleotide Transformer cuts each run of ``ACGT`` into 6-mers from its left
  end and the ``n % 6`` bases left over are single tokens: ``s + n // 6 +
  n % 6`` tokens for a run without ``N`` (every ``N`` is one more token and
  ends a run). This is not monotone in ``n`` (11 bases: 6 tokens, 12 bases:
  2), so the bound used for a window of ``w`` bases is the largest count over
  every length ``n <= w`` (a sequence shorter than the window is embedded
  whole): ``s + w // 6 + max(w % 6, 4)`` once ``w >= 6``.
* DNABERT-2 cuts each window by byte-pair encoding, tokenised on its own as
  ``[CLS] ... [SEP]``. Its pieces vary with the bases, but every BPE token
  covers at least one base (it reads only ``ACGT``), so a window of ``w``
  bases gives at most ``w + 2`` tokens. This bound does not depend on the
  data: the largest window is ``max_tokens - 2`` bases (its trained length,
  ALiBi has no position table but diffbio_sc keeps to the config's
  ``max_position_embeddings``). Longer windows, which would fit only for
  some sequences, are refused rather than checked per sequence.

:func:`max_window` is the largest ``window`` whose bound fits ``max_tokens``;
a larger window is refused before any work. The token counts of the actual
pieces (both strands) are checked too, since ``N`` adds tokens beyond the bound.

Pieces are run through the one runner
(:class:`~diffbio_sc.models._adapters.SequenceAdapter` on
:class:`~diffbio_sc.models._runner.BucketedRunner`): fixed-shape batches
grouped by their own token count, so a sequence's padded width, and with it
its embedding, does not depend on the other sequences of the call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..._validate import DfmInputError

#: Bases per k-mer token of the Nucleotide Transformer tokenizer.
_CHECKPOINT_K = 6


def is_dna_checkpoint(obj) -> bool:
    """Whether ``obj`` is a loaded :class:`DnaCheckpointModel`."""
    from ...models._dna_checkpoints import DnaCheckpointModel

    return isinstance(obj, DnaCheckpointModel)


def family_name(model) -> str:
    """``'nucleotide_transformer_v1'``, ``'nucleotide_transformer_v2'`` or ``'generator'``."""
    if model.family == "nucleotide_transformer":
        return f"nucleotide_transformer_{model.settings.get('version', 'v1')}"
    return str(model.family)


def is_bpe(model) -> bool:
    """Whether the model's tokens are byte-pair pieces of varying length (DNABERT-2)."""
    return model.family == "dnabert2"


def kmer_size(model) -> int | None:
    """Bases per k-mer token (6 for NT; the tokenizer's ``k`` for GENERator; None for BPE)."""
    if is_bpe(model):
        return None
    return int(getattr(model.tokenizer, "k", _CHECKPOINT_K))


def token_rule(model) -> str:
    """How the model's tokens relate to bases, for messages."""
    s = n_special_tokens(model)
    if is_bpe(model):
        return f"byte-pair tokens of one or more bases and {s} special tokens"
    return f"{kmer_size(model)}-mer tokens, single-base leftovers and {s} special token(s)"


def n_special_tokens(model) -> int:
    """Count the special tokens of every sequence (``<cls>`` [+ ``<eos>``]; ``<s>``, ``</s>``)."""
    if model.family in ("generator", "dnabert2"):  # <s> </s>; [CLS] [SEP]
        return 2
    if hasattr(model.tokenizer, "n_special"):  # tokenizers that say it (Caduceus)
        return int(model.tokenizer.n_special)
    return 1 + int(bool(model.tokenizer.add_eos))


def token_bound(model, window: int) -> int:
    """Most tokens a piece of at most ``window`` bases (of ``ACGT``) gives (module docstring)."""
    s = n_special_tokens(model)
    if is_bpe(model):  # every BPE token covers >= 1 base
        return s + window
    k = kmer_size(model)
    if model.family == "generator":
        return s + -(-window // k)
    if window < k:
        return s + window
    return s + window // k + max(window % k, k - 2)


def max_window(model) -> int:
    """Largest ``window`` (bases) whose :func:`token_bound` fits ``model.max_tokens`` (0: none)."""
    lo, hi = 0, (kmer_size(model) or 1) * int(model.max_tokens)  # token_bound non-decreasing
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if token_bound(model, mid) <= model.max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_window(model, window: int) -> None:
    """Refuse a ``window`` whose pieces may exceed the model's context, naming the largest."""
    bound = token_bound(model, window)
    if bound > model.max_tokens:
        largest = max_window(model)
        raise DfmInputError(
            f"window={window} bases can give up to {bound} tokens for the "
            f"{family_name(model)} model ({token_rule(model)}), more than its context of "
            f"{model.max_tokens} tokens. The largest window that fits is window={largest}."
        )


def check_model_alphabet(model, sequences: Sequence[str], names) -> None:
    """Raise naming the sequence and 1-based position of a symbol the model does not read."""
    alphabet = model.tokenizer.alphabet
    bad = re.compile(f"[^{alphabet}]")
    for name, seq in zip(names, sequences, strict=True):
        hit = bad.search(seq)
        if hit is None:
            continue
        ch = hit.group()
        hint = (
            " Lower case (soft-masked) bases: upper-case the sequences first (str.upper())."
            if ch.isalpha() and ch.upper() in alphabet
            else " Replace or remove it (e.g. ambiguity codes by N where the model reads N)."
        )
        raise DfmInputError(
            f"Invalid character {ch!r} in sequence {str(name)!r} at position {hit.start() + 1}: "
            f"the {family_name(model)} model reads only {alphabet!r}.{hint}"
        )


def embed_with_checkpoint(
    model,
    sequences: Sequence[str],
    names,
    *,
    reverse_complement: str | None,
    batch_size: int,
    pooling: str | None = None,
    window: int | None = None,
    stride: int | None = None,
    progress_bar: bool = False,
    desc: str = "embed_sequences",
):
    """Embed sequences with a DNA checkpoint, whole or in windows (the one checkpoint path).

    Used by :func:`~diffbio_sc.tl.embed_sequences` and
    :func:`~diffbio_sc.tl.genomics_tasks`. The caller has checked the alphabet
    (:func:`check_model_alphabet`) and ``window`` (:func:`check_window`);
    here every piece's token count (both strands with ``'average'``) is checked
    against the context before any forward pass, naming the first that is over.
    ``progress_bar``: a bar named ``desc`` advanced per batch.

    Returns
    -------
    ``(embeddings, runner, n_pieces)``: float32 ``(len(sequences), d)`` vectors
    (a windowed sequence gets the length-weighted mean of its windows'), the
    :class:`~diffbio_sc.models._adapters.SequenceAdapter` used (its
    ``max_piece_tokens`` is the largest token count of a piece, either strand),
    and the number of pieces embedded.
    """
    from ...models._adapters import SequenceAdapter
    from ._common import average_windows, check_lengths, run_with_bar, tile_sequences

    pieces, piece_names = list(sequences), names
    if window is not None:
        pieces, owner, weight = tile_sequences(sequences, window, stride)
        # owner is in sequence order: a window's number within its own sequence
        local = np.arange(owner.size) - np.searchsorted(owner, owner)
        piece_names = [f"{names[o]}[window {j}]" for o, j in zip(owner, local, strict=True)]
    runner = SequenceAdapter(
        model, reverse_complement=reverse_complement, batch_size=batch_size, pooling=pooling
    )
    counts = runner.counts(pieces)
    check_lengths(
        counts,
        runner.max_tokens,
        piece_names,
        what=f"the {family_name(model)} model",
        hint=f"Embed them in windows (window=, stride=; the largest window that fits is "
        f"window={max_window(model)} bases)"
        if window is None
        else "Use a smaller window= (every N is a token of its own)",
    )
    runner.max_piece_tokens = int(counts.max()) if counts.size else 0
    emb = run_with_bar(runner, pieces, counts, show=progress_bar, desc=desc)
    if window is not None:
        emb = average_windows(emb, owner, weight, len(sequences))
    return emb, runner, len(pieces)
