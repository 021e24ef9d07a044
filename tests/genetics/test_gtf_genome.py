"""GTF reading, interval selection and strand-aware extraction (real MT genome + toy files)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.io._genome import Genome, reverse_complement
from diffbio_sc.io._gtf import select_gene_models


def _raw_fasta(path) -> dict[str, str]:
    """Independent FASTA reader for expectations."""
    out, name = {}, None
    for line in open(path):
        line = line.strip()
        if line.startswith(">"):
            name = line[1:].split()[0]
            out[name] = []
        elif line:
            out[name].append(line.upper())
    return {k: "".join(v) for k, v in out.items()}


def test_read_gtf_columns_types_and_attributes(toy):
    gtf = dfm.io.read_gtf(toy["gtf"])
    assert list(gtf.columns[:8]) == [
        "seqname",
        "source",
        "feature",
        "start",
        "end",
        "score",
        "strand",
        "frame",
    ]
    assert len(gtf) == 9  # the comment line is skipped
    assert gtf["start"].dtype == np.int64 and gtf["end"].dtype == np.int64
    cds = gtf[gtf["feature"] == "CDS"]
    assert cds["start"].tolist() == [7, 31] and cds["end"].tolist() == [
        14,
        36,
    ]  # 1-based, as in file
    assert cds["frame"].tolist() == [0, 1]
    assert gtf["frame"].isna().sum() == 7 and gtf["score"].isna().all()
    assert set(gtf["gene_name"]) == {"PLUS", "MINUS"}
    assert gtf.loc[gtf["feature"] == "gene", "transcript_id"].isna().all()


def test_read_gtf_repeated_keys_and_unquoted_values(tmp_path, toy):
    p = toy["write"](
        tmp_path / "r.gtf",
        'c1\tx\texon\t1\t5\t7.5\t+\t.\tgene_id "G"; tag "basic"; tag "CCDS"; level 2;\n',
    )
    gtf = dfm.io.read_gtf(p, features="exon")
    assert gtf.loc[0, "tag"] == "basic,CCDS"
    assert gtf.loc[0, "level"] == "2"
    assert gtf.loc[0, "score"] == 7.5


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('c1\tx\texon\t10\t5\t.\t+\t.\tgene_id "G";\n', "start 10 > end 5"),
        ('c1\tx\texon\t0\t5\t.\t+\t.\tgene_id "G";\n', "positive integer"),
        ('c1\tx\texon\t1\t5\t.\t*\t.\tgene_id "G";\n', "strand"),
        ("c1\tx\texon\t1\t5\n", "9"),
    ],
)
def test_read_gtf_bad_records(tmp_path, toy, line, match):
    p = toy["write"](tmp_path / "bad.gtf", line)
    with pytest.raises(dfm._validate.DfmInputError, match=match):
        dfm.io.read_gtf(p)


def test_read_gtf_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        dfm.io.read_gtf(tmp_path / "nope.gtf")


def test_spliced_extraction_both_strands(toy):
    seq, rc = toy["seq"], toy["rc"]
    gtf = dfm.io.read_gtf(toy["gtf"])
    with Genome(toy["fasta"]) as g:
        plus_exon, minus_exon = select_gene_models(gtf, ["PLUS", "MINUS"], feature="exon")
        assert g.extract(plus_exon) == seq[4:14] + seq[30:40]
        # minus strand: transcript order is exon 1 (52-58) then exon 2 (42-47), each RC'd
        assert g.extract(minus_exon) == rc(seq[51:58]) + rc(seq[41:47])
        assert minus_exon.strand == "-" and minus_exon.intervals == ((42, 47), (52, 58))
        (cds,) = select_gene_models(gtf, ["P"], feature="CDS")  # by gene_id
        assert g.extract(cds) == seq[6:14] + seq[30:36]
        assert cds.length == 14
        (span,) = select_gene_models(gtf, ["PLUS"], feature="gene")
        assert g.extract(span) == seq[4:40]
        (tx,) = select_gene_models(gtf, ["MINUS"], feature="transcript")
        assert g.extract(tx) == rc(seq[41:58])
        assert g.fetch("c1", 1, 4) == seq[:4]
        assert g.fetch("c1", 1, 4, "-") == rc(seq[:4])


def test_gene_and_contig_errors(toy):
    gtf = dfm.io.read_gtf(toy["gtf"])
    with pytest.raises(
        dfm._validate.DfmInputError, match="not found.*'PLUSS'.*did you mean 'PLUS'"
    ):
        select_gene_models(gtf, ["PLUSS"])
    with pytest.raises(dfm._validate.DfmInputError, match="non-coding: use feature='exon'"):
        select_gene_models(gtf, ["MINUS"], feature="CDS")
    with Genome(toy["fasta"]) as g:
        with pytest.raises(dfm._validate.DfmInputError, match="'chr' prefix.*contig_map"):
            g.fetch("chrc1", 1, 5)
        with pytest.raises(dfm._validate.DfmInputError, match="outside contig"):
            g.fetch("c1", 50, 61)
    with pytest.raises(dfm._validate.DfmInputError, match="contig_map points to contigs"):
        Genome(toy["fasta"], contig_map={"x": "nope"})


def test_no_index_written_beside_the_fasta(toy):
    with Genome(toy["fasta"]) as g:
        assert g.fetch("c1", 3, 3) == toy["seq"][2]
        private = g._tmpdir
        assert os.path.isdir(private)
    assert not (toy["dir"] / "toy.fa.fai").exists()
    assert not os.path.exists(private)  # removed on close


def test_reverse_complement_iupac():
    s = "ACGTRYKMBVDHSWNacgt"
    assert reverse_complement(reverse_complement(s)) == s
    assert reverse_complement("AAR") == "YTT"
    assert reverse_complement("acgN") == "Ncgt"


@pytest.mark.parametrize("gtf_name", ["MT-genes_rCRS.gtf", "MT-ND2_ensembl.gtf"])
def test_mt_nd2_cds_real(genome_dir, gtf_name):
    gtf = dfm.io.read_gtf(genome_dir / gtf_name)
    (m,) = select_gene_models(gtf, ["MT-ND2"], feature="CDS")
    with Genome(genome_dir / "MT-human.fa", contig_map={"MT": "MT_human"}) as g:
        s = g.extract(m)
    assert len(s) == 1042 and s.startswith("ATT")
    raw = _raw_fasta(genome_dir / "MT-human.fa")["MT_human"]
    assert s == raw[4469:5511]


def test_mt_nd6_minus_strand_real(mt):
    gtf = dfm.io.read_gtf(mt["gtf"])
    (m,) = select_gene_models(gtf, ["MT-ND6"], feature="CDS")
    assert m.strand == "-"
    with Genome(mt["fasta"], contig_map=mt["contig_map"]) as g:
        s = g.extract(m)
    raw = _raw_fasta(mt["fasta"])["MT_human"]
    assert s.startswith("ATG")
    assert s == reverse_complement(raw[m.intervals[0][0] - 1 : m.intervals[0][1]])


def test_all_fifteen_mt_genes_and_overlaps(mt):
    gtf = dfm.io.read_gtf(mt["gtf"])
    models = select_gene_models(gtf, mt["genes"], feature="exon")
    assert len(models) == 15
    by = {m.gene: m for m in models}
    # overlapping genes are extracted independently
    assert by["MT-ATP8"].span[1] > by["MT-ATP6"].span[0]
    assert by["MT-ND4L"].span[1] > by["MT-ND4"].span[0]
    with Genome(mt["fasta"], contig_map=mt["contig_map"]) as g:
        starts = {
            m.gene: g.extract(m)[:3]
            for m in models
            if m.gene.startswith("MT-") and "RNR" not in m.gene
        }
    assert all(v in ("ATG", "ATA", "ATT") for v in starts.values())


def test_larger_fasta_chr22_slice(genome_dir):
    path = genome_dir / "hg38_chr22_32000000_32300000.fa"
    raw = _raw_fasta(path)
    (name,) = raw
    with Genome(path) as g:
        assert g.lengths[name] == len(raw[name])
        assert g.fetch(name, 150_001, 150_100) == raw[name][150_000:150_100]
        assert g.fetch(name, 299_901, 300_000, "-") == reverse_complement(raw[name][-100:])
        assert g.version.startswith(path.name)


def test_existing_index_is_used(toy):
    import pyfaidx

    pyfaidx.Faidx(str(toy["fasta"])).close()  # writes toy.fa.fai beside the file
    fai = toy["dir"] / "toy.fa.fai"
    before = fai.read_bytes()
    with Genome(toy["fasta"]) as g:
        assert g._tmpdir is None
        assert g.fetch("c1", 31, 40) == toy["seq"][30:40]
    assert fai.read_bytes() == before


def test_gzipped_gtf(toy):
    import gzip

    gz = toy["dir"] / "toy.gtf.gz"
    gz.write_bytes(gzip.compress(toy["gtf"].read_bytes()))
    a, b = dfm.io.read_gtf(toy["gtf"]), dfm.io.read_gtf(gz)
    assert a.equals(b)
