"""Nucleotide sequence kernels: alphabets, tokenizers, one-hot codes, reverse complements.

This module gathers the public names of two parts, documented there:

* :mod:`diffbio_sc.ops._sequence_alphabet`: the DNA/RNA alphabets, the IUPAC
  ambiguity rule and complements, packing strings into ``uint8`` matrices,
  one-hot codes, reverse complements (strings and one-hot, JAX) and the
  the one window rule of long sequences (:func:`window_starts`,
  :func:`tile_sequences`, :func:`average_windows`).
* :mod:`diffbio_sc.ops._sequence_tokenizers`: the vectorised ``char``,
  ``kmer`` and ``nt6`` tokenizers and their vocabularies.

Everything works on whole batches at once (no per-base Python loop).
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
    average_windows,
    check_alphabet,
    find_invalid,
    flip_valid,
    one_hot,
    pack_sequences,
    reverse_complement,
    reverse_complement_one_hot,
    tile_sequences,
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
    "tile_sequences",
    "average_windows",
]
