"""Nucleotide sequence kernels: alphabets, tokenizers, one-hot codes, reverse complements.

This module gathers the public names of two parts: :mod:`._sequence_alphabet`
(alphabets, the IUPAC rule, packing, one-hot codes, reverse complements) and
:mod:`._sequence_tokenizers` (the ``char``, ``kmer`` and ``nt6`` tokenizers).

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

from ._sequence_alphabet import (
    ALPHABETS,
    AMBIGUOUS_CODES,
    CLS_ID,
    DNA_BASES,
    EOS_ID,
    IUPAC_CODES,
    IUPAC_COMPLEMENT,
    MASK_ID,
    PAD_ID,
    RNA_BASES,
    SPECIALS,
    alphabet_bases,
    check_alphabet,
    find_invalid,
    flip_valid,
    one_hot,
    pack_sequences,
    reverse_complement,
    reverse_complement_one_hot,
    valid_table,
    window_starts,
)
from ._sequence_tokenizers import (
    TOKENIZERS,
    CharTokenizer,
    KmerTokenizer,
    NucleotideTransformerTokenizer,
    SequenceTokenizer,
    get_tokenizer,
)

__all__ = [
    "PAD_ID",
    "MASK_ID",
    "CLS_ID",
    "EOS_ID",
    "SPECIALS",
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
    "ALPHABETS",
    "AMBIGUOUS_CODES",
    "TOKENIZERS",
    "alphabet_bases",
    "valid_table",
    "window_starts",
]
