"""Nucleotide alphabets, packing, one-hot codes and reverse complements (NumPy / JAX).

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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DNA_BASES",
    "RNA_BASES",
    "IUPAC_CODES",
    "IUPAC_COMPLEMENT",
    "ALPHABETS",
    "AMBIGUOUS_CODES",
    "alphabet_bases",
    "valid_table",
    "pack_sequences",
    "check_alphabet",
    "find_invalid",
    "one_hot",
    "reverse_complement",
    "flip_valid",
    "reverse_complement_one_hot",
    "window_starts",
    "tile_sequences",
    "average_windows",
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


# ---------------------------------------------------------------------- windows
def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start positions of the windows that tile a sequence of ``length`` bases.

    The rule (used by ``dfm.tl.embed_sequences(window=, stride=)``):

    * ``length <= window``: one window, the whole sequence (start 0).
    * otherwise windows of exactly ``window`` bases, the first at 0 and the last
      ending at ``length``, ``n = ceil(D / stride) + 1`` of them (``D = length -
      window``; one more when ``D`` is odd and ``n`` odd, since no window can
      then be its own mirror image), spread as evenly as integers allow: start
      ``i`` is ``ceil(i * D / (n - 1))`` in the first half and ``floor(i * D /
      (n - 1))`` in the second (a start met twice in the middle is kept once).
      Consecutive starts are then at most ``stride`` apart, and the layout is
      mirror-symmetric (``start -> D - start`` maps the set onto itself), so
      the windows of the reverse complement are the reverse complements of
      the windows.

    Every base is covered (``stride <= window``) and the result depends on
    ``length``, ``window`` and ``stride`` only.

    Parameters
    ----------
    length, window, stride
        Sequence length, window length and the largest step between window
        starts (``1 <= stride <= window``).

    Returns
    -------
    numpy.ndarray
        Sorted int64 starts.
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"Need window >= 1 and 1 <= stride <= window; got {window}, {stride}.")
    span = int(length) - int(window)
    if span <= 0:
        return np.zeros(1, np.int64)
    n = -(-span // stride) + 1
    if span % 2 and n % 2:
        n += 1
    num = np.arange(n, dtype=np.int64) * span
    lo, hi = num // (n - 1), -(-num // (n - 1))
    return np.unique(np.where(2 * np.arange(n) < n - 1, hi, lo))


def tile_sequences(
    sequences: Sequence[str], window: int | None, stride: int | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cut sequences into windows by the one window rule (:func:`window_starts`).

    Used by ``dfm.tl.embed_sequences(window=, stride=)`` and
    ``dfm.tl.embed_genes(window=, stride=)``. The layout is
    mirror-symmetric, so the windows of a reverse-complemented sequence are
    exactly the reverse complements of its windows (in mirrored order), with
    the same weights: an average over windows is strand-invariant whenever the
    per-window vectors are.

    Parameters
    ----------
    sequences
        The sequences.
    window
        Window length (bases); ``None``: every sequence is one piece.
    stride
        Largest step between window starts (``1 <= stride <= window``;
        ``None``: ``window``).

    Returns
    -------
    ``(pieces, owner, weight)``: the window strings in sequence order, the index
    of the sequence each came from, and its length in bases (the averaging
    weight, :func:`average_windows`). A sequence no longer than ``window`` is
    its own single piece.
    """
    pieces: list[str] = []
    owner: list[int] = []
    for i, s in enumerate(sequences):
        if window is None or len(s) <= window:
            pieces.append(s)
            owner.append(i)
            continue
        for a in window_starts(len(s), window, stride or window).tolist():
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
