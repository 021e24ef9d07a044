"""Sequence tokenizers, one-hot codes and reverse complements (ops/_sequence.py)."""

from __future__ import annotations

import numpy as np
import pytest

from diffbio_sc.ops._sequence import (
    IUPAC_CODES,
    IUPAC_COMPLEMENT,
    CharTokenizer,
    KmerTokenizer,
    NucleotideTransformerTokenizer,
    flip_valid,
    get_tokenizer,
    one_hot,
    pack_sequences,
    reverse_complement,
    reverse_complement_one_hot,
)


def _random(rng, n, lo, hi, alphabet="ACGT"):
    letters = np.frombuffer(alphabet.encode(), np.uint8)
    return [
        letters[rng.integers(0, len(alphabet), rng.integers(lo, hi + 1))].tobytes().decode()
        for _ in range(n)
    ]


def _nt6_reference(seq: str) -> list[str]:
    """Per-sequence reference of the Nucleotide Transformer rule, written plainly."""
    out = ["<cls>"]
    run = ""
    for ch in seq + "$":
        if ch in "ACGT":
            run += ch
            continue
        full = len(run) // 6 * 6
        out += [run[i : i + 6] for i in range(0, full, 6)] + list(run[full:])
        run = ""
        if ch == "N":
            out.append("N")
        elif ch != "$":
            out.append("<unk>")
    return out


def test_char_vocabulary_and_hand_case():
    tok = CharTokenizer()
    assert tok.vocab[:4] == ["<pad>", "<mask>", "<cls>", "<eos>"]
    assert tok.vocab[4:9] == ["A", "C", "G", "T", "N"]
    ids, mask = tok.encode(["ACgt", "NR"], add_cls=True)
    np.testing.assert_array_equal(ids, [[2, 4, 5, 6, 7], [2, 8, 9, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    rna = CharTokenizer("rna")
    assert rna.vocab[7] == "U"
    assert rna.decode(rna.encode(["ACGU"])[0]) == ["ACGU"]


def test_kmer_hand_case():
    tok = KmerTokenizer(3)
    assert tok.vocab[:5] == ["<pad>", "<mask>", "<cls>", "<eos>", "<unk>"]
    # AAA=0, AAC=1, ACG = 0*16+1*4+2 = 6, CGT = 1*16+2*4+3 = 27, GTN -> <unk>
    ids, mask = tok.encode(["AACGT", "ACGTN"])
    np.testing.assert_array_equal(ids, [[5 + 1, 5 + 6, 5 + 27], [5 + 6, 5 + 27, 4]])
    assert mask.all()
    assert tok.vocab[5 + 27] == "CGT"
    with pytest.raises(ValueError, match="fewer than k=3"):
        tok.encode(["AC"])


def test_nt6_hand_case():
    tok = NucleotideTransformerTokenizer()
    assert tok.vocab[5:10] == ["A", "C", "G", "T", "N"] and tok.vocab[10] == "AAAAAA"
    assert tok.vocab_size == 5 + 5 + 4096
    ids, mask = tok.encode(["AAAAAACCNGA"], add_cls=True)
    # <cls>, AAAAAA, C, C, N, G, A
    np.testing.assert_array_equal(ids[0], [2, 10, 6, 6, 9, 7, 5])
    assert mask.all()


def test_nt6_matches_plain_reference_on_random_sequences():
    rng = np.random.default_rng(1)
    seqs = _random(rng, 60, 1, 40, "ACGTACGTACGTNR")
    tok = NucleotideTransformerTokenizer()
    ids, mask = tok.encode(seqs, add_cls=True)
    for i, s in enumerate(seqs):
        assert [tok.vocab[t] for t in ids[i][mask[i]]] == _nt6_reference(s)
    np.testing.assert_array_equal(mask.sum(1), tok.n_tokens(None, add_cls=True, sequences=seqs))


@pytest.mark.parametrize(
    ("name", "alphabet"), [("char", "ACGTNRYSWKMBDHV"), ("nt6", "ACGTN"), ("kmer", "ACGT")]
)
def test_round_trips(name, alphabet):
    rng = np.random.default_rng(2)
    seqs = _random(rng, 50, 6, 30, alphabet)
    tok = get_tokenizer(name, k=4)
    ids, mask = tok.encode(seqs, add_cls=True, max_length=64)
    assert ids.shape == (50, 64) and (ids[~mask] == 0).all()
    assert tok.decode(ids) == seqs


def test_max_length_error_names_the_sequence():
    with pytest.raises(ValueError, match="Sequence 1 has 9 tokens, more than max_length=8"):
        get_tokenizer("char").encode(["ACGT", "ACGTACGTA"], max_length=8)


def test_invalid_symbols_name_the_position():
    with pytest.raises(ValueError, match=r"'U' in sequence 0 at position 3.*alphabet='rna'"):
        get_tokenizer("char").encode(["ACUG"])
    with pytest.raises(ValueError, match=r"'-'.*position 2"):
        one_hot(["A-G"])


def test_one_hot_iupac_rule():
    x, mask = one_hot(["ANR", "c"])
    np.testing.assert_allclose(x[0], [[1, 0, 0, 0], [0.25] * 4, [0.5, 0, 0.5, 0]])
    np.testing.assert_allclose(x[1], [[0, 1, 0, 0], [0] * 4, [0] * 4])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    # every code's row is uniform over the bases it stands for
    codes = list(IUPAC_CODES)
    y, _ = one_hot(["".join(codes)])
    for j, c in enumerate(codes):
        want = np.array([b in IUPAC_CODES[c] for b in "ACGT"], float)
        np.testing.assert_allclose(y[0, j], want / want.sum())


def test_char_one_hot_table_matches_one_hot():
    tok = CharTokenizer()
    seqs = ["ACGTNRYSWKMBDHV"]
    ids, _ = tok.encode(seqs)
    np.testing.assert_array_equal(tok.one_hot_table()[ids], one_hot(seqs)[0])


def test_reverse_complement_hand_cases_and_involution():
    assert reverse_complement("AACGT") == "ACGTT"
    assert reverse_complement("RYKMBVDHSWN") == "NWSDHBVKMRY"
    assert reverse_complement("acgN") == "Ncgt"
    assert reverse_complement("ACGU", alphabet="rna") == "ACGU"
    assert reverse_complement("AAU", alphabet="rna") == "AUU"
    for a, b in IUPAC_COMPLEMENT.items():
        assert IUPAC_COMPLEMENT[b] == a
    rng = np.random.default_rng(3)
    seqs = _random(rng, 20, 1, 30, "ACGTRYKMBVDHSWN")
    assert reverse_complement(reverse_complement(seqs)) == seqs
    with pytest.raises(ValueError, match="'U'"):
        reverse_complement("ACU")


def test_one_hot_reverse_complement_and_flip_valid():
    rng = np.random.default_rng(4)
    seqs = _random(rng, 8, 1, 12, "ACGTRYKMN")
    x, mask = one_hot(seqs, max_length=12)
    lengths = mask.sum(1)
    rc_x, _ = one_hot(reverse_complement(seqs), max_length=12)
    np.testing.assert_allclose(np.asarray(reverse_complement_one_hot(x, lengths)), rc_x)
    np.testing.assert_array_equal(np.asarray(flip_valid(flip_valid(x, lengths), lengths)), x)
    # padding stays where it is
    assert (np.asarray(flip_valid(x, lengths))[~mask] == 0).all()


def test_char_complement_ids():
    tok = CharTokenizer()
    seqs = ["ACGTNRYKMBVDHSW"]
    ids, _ = tok.encode(seqs)
    rc_ids, _ = tok.encode(reverse_complement(seqs))
    np.testing.assert_array_equal(tok.complement_ids()[ids][:, ::-1], rc_ids)


def test_pack_sequences():
    codes, lengths = pack_sequences(["ab", "", "xyz"])
    np.testing.assert_array_equal(lengths, [2, 0, 3])
    assert codes.tobytes() == b"AB\x00\x00\x00\x00XYZ"
