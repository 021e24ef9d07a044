"""Nucleotide sequence kernels: alphabets, tokenizers, one-hot codes, reverse complements.

Everything here works on whole batches at once (NumPy byte tables, sliding
windows and prefix scans; no per-base Python loop). Sequences enter as Python
strings and are packed into a right-padded ``uint8`` matrix of ASCII codes
(:func:`pack_sequences`); tokenizers turn that matrix into right-padded token
ids plus an attention mask.

Alphabets and the IUPAC rule
----------------------------
DNA uses ``A C G T``, RNA ``A C G U``. The IUPAC ambiguity codes
``R Y S W K M B D H V N`` are accepted in both: one-hot codes spread a code's
probability evenly over the bases it stands for (``R = A|G`` -> 0.5 A + 0.5 G,
``N`` -> 0.25 each), the single-nucleotide tokenizer gives every code its own
token, and the k-mer tokenizers map any k-mer that contains a non-``ACGT``
symbol to ``<unk>`` (the 6-mer tokenizer keeps ``N`` as its own token, as the
Nucleotide Transformer does). ``U`` in DNA and ``T`` in RNA are errors, as is
any other character. Lowercase (soft-masked) bases are read as uppercase.

IUPAC complements (used by every reverse complement here)::

    A <-> T (U in RNA)   C <-> G   R <-> Y   K <-> M   B <-> V   D <-> H
    S <-> S   W <-> W   N <-> N

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

__all__ = [
    "DNA_BASES",
    "RNA_BASES",
    "IUPAC_CODES",
    "IUPAC_COMPLEMENT",
    "SequenceTokenizer",
    "CharTokenizer",
    "KmerTokenizer",
    "NucleotideTransformerTokenizer",
    "get_tokenizer",
    "pack_sequences",
    "check_alphabet",
    "find_invalid",
    "one_hot",
    "reverse_complement",
    "flip_valid",
    "reverse_complement_one_hot",
]

DNA_BASES = "ACGT"
RNA_BASES = "ACGU"
#: Ambiguity code -> the DNA bases it stands for.
IUPAC_CODES = {
    "N": "ACGT",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "B": "CGT",
    "D": "AGT",
    "H": "ACT",
    "V": "ACG",
}
#: DNA complement of every accepted symbol (RNA: swap T for U).
IUPAC_COMPLEMENT = {
    "A": "T",
    "C": "G",
    "G": "C",
    "T": "A",
    "R": "Y",
    "Y": "R",
    "S": "S",
    "W": "W",
    "K": "M",
    "M": "K",
    "B": "V",
    "V": "B",
    "D": "H",
    "H": "D",
    "N": "N",
}
ALPHABETS = ("dna", "rna")
SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")
PAD_ID, MASK_ID, CLS_ID, EOS_ID = 0, 1, 2, 3
AMBIGUOUS_CODES = "NRYSWKMBDHV"


def alphabet_bases(alphabet: str) -> str:
    """Return the unambiguous bases of ``alphabet`` (``'dna'``: ACGT, ``'rna'``: ACGU)."""
    if alphabet not in ALPHABETS:
        raise ValueError(f"alphabet must be 'dna' or 'rna', got {alphabet!r}.")
    return DNA_BASES if alphabet == "dna" else RNA_BASES


def _table(mapping: dict[str, int], default: int, dtype=np.int32) -> np.ndarray:
    """Build a 256-entry lookup table over ASCII codes (upper- and lowercase keys)."""
    t = np.full(256, default, dtype=dtype)
    for ch, v in mapping.items():
        t[ord(ch.upper())] = v
        t[ord(ch.lower())] = v
    return t


#: ASCII -> uppercase ASCII.
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32


def valid_table(alphabet: str) -> np.ndarray:
    """Return a 256-entry byte lookup: True for the bases and IUPAC codes of ``alphabet``."""
    return _table({c: 1 for c in alphabet_bases(alphabet) + AMBIGUOUS_CODES}, 0, np.bool_)


def _base_index_table(alphabet: str) -> np.ndarray:
    """ASCII -> 0..3 for the four bases, -1 for anything else."""
    return _table({c: i for i, c in enumerate(alphabet_bases(alphabet))}, -1)


def _complement_table(alphabet: str) -> np.ndarray:
    """ASCII -> ASCII of the complement (uppercase); 0 for characters without one."""
    t = np.zeros(256, dtype=np.uint8)
    swap = {"T": "U"} if alphabet == "rna" else {}
    for a, b in IUPAC_COMPLEMENT.items():
        a2, b2 = swap.get(a, a), swap.get(b, b)
        t[ord(a2)] = t[ord(a2.lower())] = ord(b2)
    return t


# ---------------------------------------------------------------------- packing
def pack_sequences(
    sequences: Sequence[str], *, max_length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pack strings into a right-padded ``(n, L)`` uint8 matrix of uppercase ASCII codes.

    Parameters
    ----------
    sequences
        Python strings (ASCII).
    max_length
        Width ``L`` of the matrix; ``None`` uses the longest sequence. Longer
        sequences are an error.

    Returns
    -------
    ``(codes, lengths)``: codes (0 in the padding) and the ``(n,)`` int64 lengths.
    """
    raw = []
    for i, s in enumerate(sequences):
        if not isinstance(s, str):
            raise TypeError(f"Sequence {i} is a {type(s).__name__}, expected a string.")
        raw.append(s)
    try:
        blobs = [s.encode("ascii") for s in raw]
    except UnicodeEncodeError as err:
        bad = next(i for i, s in enumerate(raw) if not s.isascii())
        pos = next(j for j, c in enumerate(raw[bad]) if not c.isascii())
        raise ValueError(
            f"Sequence {bad} has the non-ASCII character {raw[bad][pos]!r} at position "
            f"{pos + 1}; only nucleotide letters are allowed."
        ) from err
    n = len(blobs)
    lengths = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=n)
    width = int(lengths.max()) if n else 0
    if max_length is not None:
        if n and width > max_length:
            i = int(np.argmax(lengths))
            raise ValueError(
                f"Sequence {i} has {int(lengths[i])} bases, more than max_length={max_length}."
            )
        width = int(max_length)
    codes = np.zeros((n, width), dtype=np.uint8)
    if n and lengths.sum():
        flat = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        rows = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(flat.size) - np.repeat(starts, lengths)
        codes[rows, cols] = _UPPER[flat]
    return codes, lengths


def _valid_mask(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.arange(codes.shape[1])[None, :] < np.asarray(lengths)[:, None]


def find_invalid(
    codes: np.ndarray, lengths: np.ndarray, *, alphabet: str = "dna"
) -> tuple[int, int, str] | None:
    """Return ``(row, 0-based position, character)`` of the first invalid symbol, or None."""
    bad = ~valid_table(alphabet)[codes] & _valid_mask(codes, lengths)
    if not bad.any():
        return None
    row = int(np.argmax(bad.any(axis=1)))
    pos = int(np.argmax(bad[row]))
    return row, pos, chr(int(codes[row, pos]))


def check_alphabet(
    codes: np.ndarray,
    lengths: np.ndarray,
    *,
    alphabet: str = "dna",
    names: Sequence[str] | None = None,
) -> None:
    """Raise a ``ValueError`` naming the record and 1-based position of an invalid symbol."""
    hit = find_invalid(codes, lengths, alphabet=alphabet)
    if hit is None:
        return
    row, pos, ch = hit
    name = repr(str(names[row])) if names is not None else str(row)
    hint = ""
    if alphabet == "dna" and ch == "U":
        hint = " This looks like RNA: pass alphabet='rna' (or replace U with T)."
    elif alphabet == "rna" and ch == "T":
        hint = " This looks like DNA: pass alphabet='dna' (or replace T with U)."
    else:
        hint = f" Allowed: {alphabet_bases(alphabet)} and the IUPAC codes {AMBIGUOUS_CODES} (upper or lower case)."
    raise ValueError(
        f"Invalid character {ch!r} in sequence {name} at position {pos + 1} "
        f"({alphabet.upper()} alphabet).{hint}"
    )


# ---------------------------------------------------------------------- one-hot
def _one_hot_rows(alphabet: str) -> np.ndarray:
    """``(256, 4)`` float32: ASCII symbol -> probability over the 4 bases (IUPAC rule)."""
    bases = alphabet_bases(alphabet)
    t = np.zeros((256, 4), dtype=np.float32)
    for i, b in enumerate(bases):
        t[ord(b)] = t[ord(b.lower())] = np.eye(4, dtype=np.float32)[i]
    for code, members in IUPAC_CODES.items():
        row = np.zeros(4, dtype=np.float32)
        for m in members:
            row["ACGT".index(m)] = 1.0 / len(members)
        t[ord(code)] = t[ord(code.lower())] = row
    return t


def one_hot(
    sequences: Sequence[str] | np.ndarray,
    *,
    alphabet: str = "dna",
    max_length: int | None = None,
    lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot code sequences: ``(n, L, 4)`` float32 over ``ACGT`` (``ACGU``) and a mask.

    Ambiguity codes spread their probability over the bases they stand for
    (module docstring); padding rows are all zero. ``sequences`` may be strings
    or a packed ``uint8`` matrix (then pass ``lengths``).

    Parameters
    ----------
    sequences
        Strings, or a packed ``uint8`` code matrix.
    alphabet
        ``'dna'`` or ``'rna'``.
    max_length
        Pad or cut to this length; ``None``: the longest sequence.
    lengths
        Sequence lengths, required with a packed matrix.

    Returns
    -------
    ``(x, mask)`` with ``mask`` ``(n, L)`` bool, True on real bases.
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype == np.uint8:
        codes = sequences
        if lengths is None:
            raise ValueError("Pass lengths= with a packed code matrix.")
    else:
        codes, lengths = pack_sequences(sequences, max_length=max_length)
    check_alphabet(codes, lengths, alphabet=alphabet)
    mask = _valid_mask(codes, lengths)
    x = _one_hot_rows(alphabet)[codes]
    x[~mask] = 0.0
    return x, mask


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


# ------------------------------------------------------------ reverse complement
def reverse_complement(sequences: Sequence[str] | str, *, alphabet: str = "dna"):
    """Reverse complement of one sequence or a list (IUPAC complements; case kept).

    Raises a ``ValueError`` for a character without a complement.

    Parameters
    ----------
    sequences
        One sequence or a list of them.
    alphabet
        ``'dna'`` or ``'rna'``.

    Returns
    -------
    str or list of str
        The reverse complement(s), in the shape given.
    """
    single = isinstance(sequences, str)
    seqs = [sequences] if single else list(sequences)
    table = _complement_table(alphabet)
    lower = table.copy()
    for c in range(ord("a"), ord("z") + 1):
        if table[c]:
            lower[c] = table[c] + 32
    codes, lengths = pack_sequences(seqs)
    check_alphabet(codes, lengths, alphabet=alphabet)
    trans = bytes(lower.tolist())
    out = [s.encode("ascii").translate(trans)[::-1].decode("ascii") for s in seqs]
    return out[0] if single else out


def flip_valid(x, lengths):
    """Reverse the first ``lengths[b]`` entries of each row along axis 1 (JAX, jit-safe).

    ``x`` is ``(B, L, ...)``; entries past a row's length stay where they are.
    Applying it twice gives ``x`` back.
    """
    import jax.numpy as jnp

    length = x.shape[1]
    pos = jnp.arange(length)[None, :]
    lengths = jnp.asarray(lengths)[:, None]
    idx = jnp.where(pos < lengths, lengths - 1 - pos, pos)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def reverse_complement_one_hot(x, lengths):
    """Reverse complement of ``(B, L, 4)`` base probabilities in ``ACGT`` order (JAX).

    The complement of a base distribution is the channel order reversed
    (A<->T, C<->G); it maps every IUPAC code's distribution to its complement's.
    """
    return flip_valid(x[..., ::-1], lengths)
