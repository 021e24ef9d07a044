"""Vectorised nucleotide tokenizers: ``char``, ``kmer`` and ``nt6``.

Strings are packed once into a ``uint8`` matrix (``pack_sequences``);
byte lookup tables, sliding windows and prefix scans do the rest (no per-base
Python loop).

Vocabularies (ids are stable; ``<pad>`` is always 0)
-----------------------------------------------------
* ``char`` (single nucleotide, HyenaDNA/Caduceus character style):
  ``<pad>=0 <mask>=1 <cls>=2 <eos>=3``, then ``A C G T N R Y S W K M B D H V``
  = 4 .. 18 (``U`` shares ``T``'s id 7 in RNA).
* ``kmer`` (overlapping k-mers, stride 1): ``<pad> <mask> <cls> <eos> <unk>``
  = 0 .. 4, then the ``4**k`` k-mers in lexicographic ``ACGT`` order from 5.
  A sequence of length ``l`` gives ``l - k + 1`` tokens.
* ``nt6`` (Nucleotide Transformer style, non-overlapping 6-mers):
  ``<pad> <mask> <cls> <eos> <unk>`` = 0 .. 4, single nucleotides ``A C G T N``
  = 5 .. 9, then the 4096 6-mers from 10. ``<cls>`` first; each run of
  ``ACGT`` bases between ``N`` (or other non-``ACGT``) symbols is cut into
  6-mers from its left end, the leftover ``len % 6`` bases become
  single-nucleotide tokens, ``N`` is its own token and any other ambiguity
  code is ``<unk>``.

``decode(encode(s)) == s`` holds for every sequence with the ``char``
tokenizer, for ``ACGTN`` sequences with ``nt6`` and for ``ACGT`` sequences of
length ``>= k`` with ``kmer``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ._sequence_alphabet import (
    CLS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    _base_index_table,
    _complement_table,
    _one_hot_rows,
    _table,
    _valid_mask,
    alphabet_bases,
    check_alphabet,
    pack_sequences,
)

__all__ = [
    "TOKENIZERS",
    "SequenceTokenizer",
    "CharTokenizer",
    "KmerTokenizer",
    "NucleotideTransformerTokenizer",
    "get_tokenizer",
]


# ------------------------------------------------------------------ tokenizers
class SequenceTokenizer(ABC):
    """Base of the sequence tokenizers (see the module docstring for vocabularies).

    Attributes
    ----------
    name
        ``'char'``, ``'kmer'`` or ``'nt6'``.
    vocab
        Token strings; the index is the token id.
    alphabet
        ``'dna'`` or ``'rna'``.
    """

    name = ""
    specials: tuple[str, ...] = SPECIALS
    pad_id: int = PAD_ID

    def __init__(self, alphabet: str = "dna"):
        self.alphabet = alphabet
        self.alphabet_bases = alphabet_bases(alphabet)
        self.vocab: list[str] = self._build_vocab()
        self._vocab_arr = np.asarray(self.vocab, dtype=object)

    @abstractmethod
    def _build_vocab(self) -> list[str]:
        """Token strings in id order."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.vocab)

    @property
    def token_to_id(self) -> dict[str, int]:
        """Token string -> id."""
        return {t: i for i, t in enumerate(self.vocab)}

    @property
    def special_ids(self) -> dict[str, int]:
        """Special token -> id (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``, ``<unk>``)."""
        return {t: i for i, t in enumerate(self.vocab) if t.startswith("<")}

    def plan(self, *, max_length: int | None = None, add_cls: bool = False):
        """Return this tokenizer with its options fixed, as a ``SequencePlan`` (``ops._plan``).

        Its ``encode(sequences)`` returns ``(ids, lengths)``, as every tokenizer plan.
        """
        from ._plan import sequence_plan

        return sequence_plan(self, max_length=max_length, add_cls=add_cls)

    def describe(self) -> dict:
        """Plain description for provenance records."""
        return {"name": self.name, "alphabet": self.alphabet, "vocab_size": self.vocab_size}

    @abstractmethod
    def n_tokens(self, lengths: np.ndarray, *, add_cls: bool = False) -> np.ndarray:
        """Token count of sequences of the given lengths (``<cls>`` included)."""

    @abstractmethod
    def _tokens(self, codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ids and token counts of a packed, validated batch."""

    def encode(
        self,
        sequences: Sequence[str],
        *,
        max_length: int | None = None,
        add_cls: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize ``sequences`` into right-padded ids and an attention mask.

        Parameters
        ----------
        sequences
            Strings over the alphabet (IUPAC codes allowed, any case).
        max_length
            Width of the output (tokens, ``<cls>`` included); ``None`` uses the
            longest. A sequence with more tokens is an error naming it.
        add_cls
            Put ``<cls>`` first.

        Returns
        -------
        ``(ids, mask)``: ``(n, T)`` int32 ids (``<pad>`` = 0 after the end) and
        ``(n, T)`` bool, True on real tokens.
        """
        codes, lengths = pack_sequences(sequences)
        check_alphabet(codes, lengths, alphabet=self.alphabet)
        ids, counts = self._tokens(codes, lengths)
        if add_cls:
            ids = np.concatenate([np.full((ids.shape[0], 1), CLS_ID, np.int32), ids], axis=1)
            counts = counts + 1
        width = int(counts.max()) if counts.size else 0
        if max_length is not None:
            if counts.size and width > max_length:
                i = int(np.argmax(counts))
                raise ValueError(
                    f"Sequence {i} has {int(counts[i])} tokens, more than max_length="
                    f"{max_length}. Shorten it, raise max_length or embed in windows."
                )
            width = int(max_length)
        out = np.zeros((ids.shape[0], width), dtype=np.int32)
        keep = min(width, ids.shape[1])
        out[:, :keep] = ids[:, :keep]
        mask = _valid_mask(out, counts)
        out[~mask] = PAD_ID
        return out, mask

    @abstractmethod
    def decode(self, ids: np.ndarray) -> list[str]:
        """Turn token ids back into sequences (``<pad>``, ``<cls>``, ``<eos>`` dropped)."""

    def _strip(self, ids: np.ndarray) -> list[np.ndarray]:
        ids = np.atleast_2d(np.asarray(ids))
        skip = np.isin(ids, [PAD_ID, CLS_ID, EOS_ID])
        return [row[~s] for row, s in zip(ids, skip, strict=True)]


class CharTokenizer(SequenceTokenizer):
    """Single-nucleotide tokens: one token per base or IUPAC code (``char`` vocabulary)."""

    name = "char"
    symbols = "ACGTNRYSWKMBDHV"

    def _build_vocab(self) -> list[str]:
        syms = self.symbols.replace("T", "U") if self.alphabet == "rna" else self.symbols
        return list(SPECIALS) + list(syms)

    def _lookup(self) -> np.ndarray:
        syms = self.vocab[len(SPECIALS) :]
        return _table({c: len(SPECIALS) + i for i, c in enumerate(syms)}, PAD_ID)

    def n_tokens(self, lengths, *, add_cls: bool = False):
        """Token count: the sequence length (+1 for ``<cls>``)."""
        return np.asarray(lengths) + int(add_cls)

    def _tokens(self, codes, lengths):
        ids = self._lookup()[codes]
        ids[~_valid_mask(codes, lengths)] = PAD_ID
        return ids.astype(np.int32), np.asarray(lengths)

    def decode(self, ids) -> list[str]:
        """Inverse of :meth:`encode`."""
        return ["".join(self._vocab_arr[row].tolist()) for row in self._strip(ids)]

    def one_hot_table(self) -> np.ndarray:
        """``(vocab_size, 4)`` float32: token id -> base probabilities (specials zero)."""
        rows = _one_hot_rows(self.alphabet)
        t = np.zeros((self.vocab_size, 4), dtype=np.float32)
        for i, sym in enumerate(self.vocab[len(SPECIALS) :]):
            t[len(SPECIALS) + i] = rows[ord(sym)]
        return t

    def complement_ids(self) -> np.ndarray:
        """``(vocab_size,)`` int32: token id -> id of its complement (specials fixed)."""
        comp = _complement_table(self.alphabet)
        lut = self._lookup()
        out = np.arange(self.vocab_size, dtype=np.int32)
        for i, sym in enumerate(self.vocab[len(SPECIALS) :]):
            out[len(SPECIALS) + i] = lut[comp[ord(sym)]]
        return out


class _KmerBase(SequenceTokenizer):
    specials = (*SPECIALS, "<unk>")
    UNK_ID = 4

    def _kmer_strings(self, k: int) -> list[str]:
        idx = np.arange(4**k)
        digits = (idx[:, None] // 4 ** np.arange(k - 1, -1, -1)[None, :]) % 4
        letters = np.asarray(list(self.alphabet_bases))
        return ["".join(r) for r in letters[digits]]

    def _window_codes(self, codes: np.ndarray, lengths: np.ndarray, k: int):
        """Base-4 code of the k-mer starting at each position and whether it is all ACGT."""
        b = _base_index_table(self.alphabet)[codes]
        b[~_valid_mask(codes, lengths)] = -1
        padded = np.concatenate([b, np.full((b.shape[0], k), -1, b.dtype)], axis=1)
        win = np.lib.stride_tricks.sliding_window_view(padded, k, axis=1)[:, : b.shape[1]]
        ok = (win >= 0).all(axis=-1)
        code = (np.maximum(win, 0) * (4 ** np.arange(k - 1, -1, -1))).sum(axis=-1)
        return code, ok, b


class KmerTokenizer(_KmerBase):
    """Overlapping k-mers with stride 1 (``kmer`` vocabulary)."""

    name = "kmer"

    def __init__(self, k: int = 6, alphabet: str = "dna"):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 8:
            raise ValueError(f"k must be an integer in 1..8, got {k!r}.")
        self.k = int(k)
        super().__init__(alphabet)

    def _build_vocab(self) -> list[str]:
        return list(self.specials) + self._kmer_strings(self.k)

    def describe(self) -> dict:
        """Plain description for provenance records."""
        return {**super().describe(), "k": self.k}

    def n_tokens(self, lengths, *, add_cls: bool = False):
        """Token count: ``length - k + 1`` (+1 for ``<cls>``)."""
        return np.maximum(np.asarray(lengths) - self.k + 1, 0) + int(add_cls)

    def _tokens(self, codes, lengths):
        lengths = np.asarray(lengths)
        short = np.flatnonzero(lengths < self.k)
        if short.size:
            i = int(short[0])
            raise ValueError(
                f"Sequence {i} has {int(lengths[i])} bases, fewer than k={self.k}; "
                "it has no k-mer. Drop it or use a smaller k."
            )
        code, ok, _ = self._window_codes(codes, lengths, self.k)
        ids = np.where(ok, code + len(self.specials), self.UNK_ID).astype(np.int32)
        counts = lengths - self.k + 1
        ids[~_valid_mask(ids, counts)] = PAD_ID
        return ids, counts

    def decode(self, ids) -> list[str]:
        """Inverse of :meth:`encode` (``<unk>`` k-mers decode to ``N`` s)."""
        out = []
        for row in self._strip(ids):
            toks = [("N" * self.k if t == self.UNK_ID else self.vocab[t]) for t in row.tolist()]
            out.append(toks[0] + "".join(t[-1] for t in toks[1:]) if toks else "")
        return out


class NucleotideTransformerTokenizer(_KmerBase):
    """Non-overlapping 6-mers in the Nucleotide Transformer style (``nt6`` vocabulary)."""

    name = "nt6"
    k = 6
    SINGLE = "ACGTN"

    def _build_vocab(self) -> list[str]:
        singles = self.SINGLE.replace("T", "U") if self.alphabet == "rna" else self.SINGLE
        return list(self.specials) + list(singles) + self._kmer_strings(self.k)

    def _layout(self, codes: np.ndarray, lengths: np.ndarray):
        """Token start positions and their ids, per position (vectorised run logic)."""
        k = self.k
        n, width = codes.shape
        code, _ok, b = self._window_codes(codes, lengths, k)
        valid = _valid_mask(codes, lengths)
        isbase = b >= 0
        pos = np.broadcast_to(np.arange(width), (n, width))
        # index of the last non-base symbol at or before each position (-1 if none)
        prev = np.maximum.accumulate(np.where(~isbase & valid, pos, -1), axis=1)
        # index of the first non-base symbol (or the end) at or after each position
        stop = np.where(~isbase & valid, pos, np.asarray(lengths)[:, None])
        nxt = np.minimum.accumulate(stop[:, ::-1], axis=1)[:, ::-1]
        off = pos - prev - 1
        run = nxt - prev - 1
        full = (run // k) * k
        start6 = isbase & (off % k == 0) & (off < full)
        single = isbase & (off >= full)
        other = valid & ~isbase
        n_single = len(self.specials)
        ids = np.full((n, width), PAD_ID, dtype=np.int32)
        ids[start6] = code[start6] + n_single + len(self.SINGLE)
        ids[single] = b[single] + n_single
        is_n = other & (codes == ord("N"))
        ids[is_n] = n_single + 4
        ids[other & ~is_n] = self.UNK_ID
        return ids, start6 | single | other

    def n_tokens(self, lengths, *, add_cls: bool = False, sequences=None):
        """Token count of ``ACGT`` runs: ``len // 6 + len % 6`` (+1 for ``<cls>``).

        Exact for sequences without ``N``; with ``sequences`` given, counts them exactly.
        """
        if sequences is not None:
            codes, lens = pack_sequences(sequences)
            return self._layout(codes, lens)[1].sum(axis=1) + int(add_cls)
        lengths = np.asarray(lengths)
        return lengths // self.k + lengths % self.k + int(add_cls)

    def _tokens(self, codes, lengths):
        ids, starts = self._layout(codes, lengths)
        counts = starts.sum(axis=1)
        order = np.argsort(~starts, axis=1, kind="stable")
        packed = np.take_along_axis(ids, order, axis=1)[
            :, : int(counts.max()) if counts.size else 0
        ]
        packed[~_valid_mask(packed, counts)] = PAD_ID
        return packed, counts

    def decode(self, ids) -> list[str]:
        """Inverse of :meth:`encode` (``<unk>`` decodes to ``N``)."""
        vocab = self._vocab_arr.copy()
        vocab[self.UNK_ID] = "N"
        return ["".join(vocab[row].tolist()) for row in self._strip(ids)]


TOKENIZERS = ("char", "kmer", "nt6")


def get_tokenizer(name: str, *, alphabet: str = "dna", k: int = 6) -> SequenceTokenizer:
    """Return the tokenizer ``'char'``, ``'kmer'`` (with ``k``) or ``'nt6'``.

    Parameters
    ----------
    name
        ``'char'``, ``'kmer'`` or ``'nt6'``.
    alphabet
        ``'dna'`` or ``'rna'``.
    k
        k-mer size of the ``'kmer'`` tokenizer.

    Returns
    -------
    SequenceTokenizer
        The tokenizer.
    """
    if name == "char":
        return CharTokenizer(alphabet)
    if name == "kmer":
        return KmerTokenizer(k, alphabet)
    if name == "nt6":
        return NucleotideTransformerTokenizer(alphabet)
    raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {name!r}.")
