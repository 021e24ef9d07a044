"""dfm.io.read_fasta and dfm.io.sequences_to_adata."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffbio_sc._validate import DfmInputError
from diffbio_sc.io import read_fasta, sequences_to_adata

DATA = Path("..") / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason="../shared/data (the shared real data sets) is not present"
)

FASTA = """>chr1:101-110(+) first record
ACGTacgtNN
>chr1:201-215(-)
ACGTAC
GTACGTAAA
>chr2:1-4(+) last
RYKM
"""


def _write(tmp_path, text, name="x.fa", gz=False):
    p = tmp_path / name
    if gz:
        with gzip.open(p, "wt") as fh:
            fh.write(text)
    else:
        p.write_text(text)
    return p


@pytest.mark.parametrize("gz", [False, True])
def test_read_plain_and_gzip_multiline(tmp_path, gz):
    a = read_fasta(_write(tmp_path, FASTA, "x.fa.gz" if gz else "x.fa", gz=gz))
    assert list(a.obs_names) == ["chr1:101-110(+)", "chr1:201-215(-)", "chr2:1-4(+)"]
    assert a.n_vars == 0
    assert list(a.obs["sequence"]) == ["ACGTACGTNN", "ACGTACGTACGTAAA", "RYKM"]
    assert list(a.obs["length"]) == [10, 15, 4]
    assert list(a.obs["description"]) == ["first record", "", "last"]
    assert list(a.obs["chrom"]) == ["chr1", "chr1", "chr2"]
    assert list(a.obs["start"]) == [101, 201, 1]
    assert list(a.obs["end"]) == [110, 215, 4]
    assert list(a.obs["strand"]) == ["+", "-", "+"]
    assert a.uns["dfm"]["sequences"]["alphabet"] == "dna"


def test_case_and_iupac_rules(tmp_path):
    p = _write(tmp_path, FASTA)
    kept = read_fasta(p, keep_case=True)
    assert kept.obs["sequence"].iloc[0] == "ACGTacgtNN"
    as_n = read_fasta(p, ambiguous="N")
    assert as_n.obs["sequence"].iloc[2] == "NNNN"
    with pytest.raises(DfmInputError, match=r"'chr2:1-4\(\+\)'.*ambiguity code 'R' at position 1"):
        read_fasta(p, ambiguous="error")


def test_coordinates_only_when_every_id_parses(tmp_path):
    a = read_fasta(_write(tmp_path, ">chr1:1-5\nACGTA\n>plain\nACG\n"))
    assert "chrom" not in a.obs.columns
    b = read_fasta(_write(tmp_path, ">c:1-5\nACGTA\n", "b.fa"), parse_coordinates=False)
    assert "chrom" not in b.obs.columns


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        (">a\nACGT\n>b\nACXGT\n", {}, r"Invalid character 'X' in sequence 'b'.*position 3"),
        (">a\nACGU\n", {}, r"'U'.*position 4.*alphabet='rna'"),
        (">a\nACGT\n", {"alphabet": "rna"}, r"'T'.*position 4.*alphabet='dna'"),
        (">a\nACGT\n>b\n\n>c\nAC\n", {}, r"Sequence 'b'.*is empty"),
        (">a\nACGT\n>a\nACGA\n", {}, r"duplicate sequence id.*'a'.*make_unique"),
        ("ACGT\n>a\nAC\n", {}, r"not a FASTA file.*line 1"),
        ("", {}, "No sequences"),
    ],
)
def test_bad_files(tmp_path, text, kwargs, match):
    with pytest.raises(DfmInputError, match=match):
        read_fasta(_write(tmp_path, text), **kwargs)


def test_invalid_position_spans_lines(tmp_path):
    # the bad base is on the second line of the record: position counts across lines
    with pytest.raises(DfmInputError, match=r"sequence 'r'.*line 1\) at position 7"):
        read_fasta(_write(tmp_path, ">r\nACGTA\nC*G\n"))


def test_duplicates_make_unique_and_missing_file(tmp_path):
    a = read_fasta(_write(tmp_path, ">a\nAC\n>a\nGT\n"), duplicates="make_unique")
    assert list(a.obs_names) == ["a", "a-1"]
    with pytest.raises(FileNotFoundError, match="nope.fa"):
        read_fasta(tmp_path / "nope.fa")
    with pytest.raises(DfmInputError, match="ambiguous"):
        read_fasta(tmp_path / "x.fa", ambiguous="maybe")


@needs_data
def test_regions_random_access_matches_whole_read(tmp_path):
    genome = DATA / "genome" / "MT-human.fa"
    whole = read_fasta(genome).obs["sequence"].iloc[0]
    # 1-based closed regions, read through the index (built in a temporary folder)
    a = read_fasta(genome, regions=["MT_human:1-10", "MT_human:16560-16569"])
    assert list(a.obs["sequence"]) == [whole[:10], whole[16559:16569]]
    assert list(a.obs["start"]) == [1, 16560]
    with pytest.raises(DfmInputError, match="past the end"):
        read_fasta(genome, regions=["MT_human:16560-16600"])
    with pytest.raises(DfmInputError, match="not in MT-human.fa"):
        read_fasta(genome, regions=["chrZ:1-5"])


@needs_data
def test_real_files():
    a = read_fasta(DATA / "dna" / "promoters_cnnprom" / "Ecoli_prom.fa")
    assert a.n_obs == 839 and set(a.obs["length"]) == {81}
    # real headers repeat (gene names): a clear error, or unique names on request
    p = DATA / "dna" / "promoters_cnnprom" / "Bacillus_prom.fa"
    with pytest.raises(DfmInputError, match="duplicate"):
        read_fasta(p)
    b = read_fasta(p, duplicates="make_unique")
    assert b.obs_names.is_unique and b.n_obs == 373


def test_sequences_from_list_mapping_series_dataframe():
    a = sequences_to_adata(["acgt", "GGN"])
    assert list(a.obs_names) == ["seq0", "seq1"]
    assert list(a.obs["sequence"]) == ["ACGT", "GGN"]
    b = sequences_to_adata({"x": "AC", "y": "GT"})
    assert list(b.obs_names) == ["x", "y"]
    c = sequences_to_adata(pd.Series(["AC", "GT"], index=["p", "q"]))
    assert list(c.obs_names) == ["p", "q"]
    df = pd.DataFrame({"gene": ["g1", "g2"], "seq": ["ACG", "TTT"], "label": [1, 0]})
    d = sequences_to_adata(df, sequence_column="seq", id_column="gene")
    assert list(d.obs_names) == ["g1", "g2"]
    assert list(d.obs["label"]) == [1, 0]
    assert list(d.obs["sequence"]) == ["ACG", "TTT"]
    rna = sequences_to_adata(["ACGU"], alphabet="rna")
    assert rna.obs["sequence"].iloc[0] == "ACGU"


@pytest.mark.parametrize(
    ("data", "kwargs", "err", "match"),
    [
        (["ACGT", ""], {}, DfmInputError, "Sequence 'seq1' is empty"),
        (["ACGT", "ACUG"], {}, DfmInputError, r"'U' in sequence 'seq1' at position 3"),
        (["AC", "GT"], {"ids": ["a", "a"]}, DfmInputError, "duplicate"),
        (["AC"], {"ids": ["a", "b"]}, DfmInputError, "2 ids for 1 sequences"),
        (["AC", 5], {}, TypeError, "Sequence 'seq1' is a int"),
        ("ACGT", {}, TypeError, "single string"),
        (pd.DataFrame({"s": ["A"]}), {}, DfmInputError, "Column 'sequence' not found"),
        (["ACé"], {}, DfmInputError, "position 3"),
    ],
)
def test_bad_in_memory_sequences(data, kwargs, err, match):
    with pytest.raises(err, match=match):
        sequences_to_adata(data, **kwargs)


def test_many_multiline_records_round_trip(tmp_path):
    # 2,000 records of 1 kb each over 60-column lines
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"ACGT", np.uint8)
    seqs = [letters[rng.integers(0, 4, 1000)].tobytes().decode() for _ in range(2000)]
    with open(tmp_path / "big.fa", "w") as fh:
        for i, s in enumerate(seqs):
            fh.write(f">r{i}\n" + "\n".join(s[j : j + 60] for j in range(0, 1000, 60)) + "\n")
    a = read_fasta(tmp_path / "big.fa")
    assert a.n_obs == 2000
    assert a.obs["sequence"].tolist() == seqs
