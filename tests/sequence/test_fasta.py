"""dfm.io.read_fasta and dfm.io.sequences_to_adata."""

from __future__ import annotations

import gzip
import os
import sys
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


# ------------------------------------------------- indexed access: stale, bgzip, gzip, damage

SEQ30 = "ACGTACGTAAGGCCTTACGATCGATCCGGA"  # 30 bases, written 10 per line


def _fasta30(path, header=">c1"):
    path.write_text(header + "\n" + "\n".join(SEQ30[i : i + 10] for i in (0, 10, 20)) + "\n")
    return path


def _age(path, seconds=100):
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_stale_fai_is_not_used(tmp_path, dfm_log):
    from diffbio_sc.io._genome import Genome

    fa = _fasta30(tmp_path / "s.fa")
    fai = tmp_path / "s.fa.fai"
    fai.write_text("c1\t30\t4\t10\t11\n")  # right for '>c1'
    assert read_fasta(fa, regions=["c1:1-10"]).obs["sequence"].iloc[0] == SEQ30[:10]
    # The FASTA is edited afterwards (a longer header shifts every base); the old index
    # would now read part of the header as bases.
    _fasta30(fa, header=">c1 now with a description")
    _age(fai)
    got = read_fasta(fa, regions=["c1:1-10", "c1:21-30"]).obs["sequence"].tolist()
    assert got == [SEQ30[:10], SEQ30[20:]]
    with Genome(fa) as g:
        assert g.fetch("c1", 1, 30) == SEQ30
    assert fai.read_text() == "c1\t30\t4\t10\t11\n"  # the user's file is left alone
    assert "older than the FASTA" in dfm_log.text and "samtools faidx" in dfm_log.text


def test_fai_pointing_past_the_end_is_rebuilt(tmp_path):
    fa = _fasta30(tmp_path / "t.fa")
    # newer than the FASTA, but written for a 40-base record that is no longer there
    (tmp_path / "t.fa.fai").write_text("c1\t40\t4\t10\t11\n")
    with pytest.raises(DfmInputError, match="past the end of 'c1' \\(30 bp\\)"):
        read_fasta(fa, regions=["c1:31-40"])
    assert read_fasta(fa, regions=["c1:25-30"]).obs["sequence"].iloc[0] == SEQ30[24:]


def test_regions_on_bgzip_match_the_whole_read(tmp_path):
    pysam = pytest.importorskip("pysam")
    from diffbio_sc.io._genome import Genome

    plain = tmp_path / "m.fa"
    plain.write_text(">c0 first\nGGGGAAAAC\nTT\n" + ">c1\n" + SEQ30 + "\n")
    bgz = tmp_path / "m.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert read_fasta(bgz).obs["sequence"].tolist() == ["GGGGAAAACTT", SEQ30]
    got = read_fasta(bgz, regions=["c1:2-9", "c0:8-11"]).obs["sequence"].tolist()
    assert got == [SEQ30[1:9], "ACTT"]
    with Genome(bgz) as g:
        assert g.fetch("c1", 1, 4, "-") == "ACGT"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no index written beside
    # an index made by samtools beside the file is used as is
    pysam.faidx(str(bgz))
    assert (tmp_path / "m.fa.gz.gzi").is_file()
    assert read_fasta(bgz, regions=["c1:30-30"]).obs["sequence"].iloc[0] == SEQ30[-1]


def test_regions_on_plain_gzip_and_without_pysam(tmp_path, monkeypatch):
    gz = _write(tmp_path, ">c1\n" + SEQ30 + "\n", name="g.fa.gz", gz=True)
    with pytest.raises(DfmInputError, match="not with bgzip.*Recompress it with bgzip"):
        read_fasta(gz, regions=["c1:1-5"])
    pysam = pytest.importorskip("pysam")
    bgz = tmp_path / "b.fa.gz"
    pysam.tabix_compress(str(_fasta30(tmp_path / "b.fa")), str(bgz))
    monkeypatch.setitem(sys.modules, "pysam", None)  # as if pysam were not installed
    with pytest.raises(DfmInputError, match="bgzip-compressed.*pip install pysam"):
        read_fasta(bgz, regions=["c1:1-5"])


def test_bgzip_with_ragged_lines_names_the_reason(tmp_path):
    pysam = pytest.importorskip("pysam")
    plain = tmp_path / "r.fa"
    plain.write_text(">c1\nACGTAC\nGTACGTAAA\nAC\n")
    bgz = tmp_path / "r.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz))
    with pytest.raises(DfmInputError, match="Different line length.*same length"):
        read_fasta(bgz, regions=["c1:1-5"])


def test_truncated_gzip_is_a_clear_error(tmp_path):
    body = "".join(f">r{i}\n{SEQ30 * 20}\n" for i in range(200))
    gz = _write(tmp_path, body, name="t.fa.gz", gz=True)
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DfmInputError, match="damaged gzip file.*cut short"):
        read_fasta(gz)
