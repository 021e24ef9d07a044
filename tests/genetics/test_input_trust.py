"""Genetics inputs that used to give a silently wrong result or a raw error (issue 24).

VCF contig names that match nothing, a VCF named like the FASTA, a genotype allele
beyond ALT, one subject and a projection, the run log's GTF record, Genome.fetch
misuse, GFF3 read as GTF, and htslib's stderr chatter.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.io._genome import Genome
from diffbio_sc.io._gtf import select_gene_models

VCF_HEAD = (
    "##fileformat=VCFv4.2\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{samples}\n"
)


def vcf_text(rows, samples=("A", "B"), contigs=()):
    head = VCF_HEAD.format(samples="\t".join(samples))
    decl = "".join(f"##contig=<ID={c}>\n" for c in contigs)
    head = head.replace("##FORMAT", decl + "##FORMAT", 1)
    return head + "".join(
        f"{c}\t{p}\t.\t{r}\t{a}\t.\tPASS\t.\tGT\t" + "\t".join(g) + "\n" for c, p, r, a, g in rows
    )


@pytest.fixture
def mt_renamed(tmp_path, genome_dir):
    """testMT.vcf with its contig renamed: returns a function name -> path."""
    text = (genome_dir / "testMT.vcf").read_text()

    def make(name):
        path = tmp_path / f"{name}.vcf"
        path.write_text(text.replace("\nMT\t", f"\n{name}\t"))
        return path

    return make


# ---------------------------------------------------------------- VCF contig names


def test_vcf_named_like_the_fasta_is_read_through_contig_map(mt, genome_dir, mt_renamed):
    kw = dict(genes=["MT-ND2", "MT-ND6"], contig_map=mt["contig_map"], projection=None)
    want = dfm.tl.embed_genes(mt["fasta"], mt["gtf"], genome_dir / "testMT.vcf", **kw)
    got = dfm.tl.embed_genes(mt["fasta"], mt["gtf"], mt_renamed("MT_human"), **kw)
    # the one variant (MT:4472 T>A, 0/1) is in MT-ND2 and now applied
    assert got["genetics"].X.tolist() == want["genetics"].X.tolist() == [[1, 0]]
    np.testing.assert_array_equal(
        got["genetics"].obsm["X_dfm_genes"], want["genetics"].obsm["X_dfm_genes"]
    )
    log = got["genetics"].uns["dfm"]["genetics"]["run_log"]
    assert log["inputs"]["vcf_contig_names"] == {"MT": "MT_human"}


def test_vcf_contig_matching_nothing_is_refused(mt, mt_renamed, tmp_path):
    vcf = mt_renamed("NC_012920.1")
    log = tmp_path / "run.json"
    with pytest.raises(DfmInputError, match=r"no records.*'NC_012920.1': 1.*equal the reference"):
        dfm.tl.embed_genes(
            mt["fasta"], mt["gtf"], vcf, genes=["MT-ND2"], contig_map=mt["contig_map"],
            projection=None, log_path=log,
        )  # fmt: skip
    assert not log.exists()
    # the suggested fix works
    out = dfm.tl.embed_genes(
        mt["fasta"], mt["gtf"], vcf, genes=["MT-ND2"], contig_map=mt["contig_map"],
        vcf_contig_map={"MT": "NC_012920.1"}, projection=None,
    )  # fmt: skip
    assert out["genetics"].X.tolist() == [[1]]


def test_read_vcf_missing_contigs_refused_warned_or_declared(tmp_path):
    rows = [("c1", 8, "G", "T", ["0|1", "0|0"]), ("c1", 12, "A", "C", ["1|1", "0|0"])]
    vcf = tmp_path / "v.vcf"
    vcf.write_text(vcf_text(rows))
    # no requested contig has records: every subject would be the reference
    with pytest.raises(DfmInputError, match=r"1 of 1 requested.*\['c2'\].*'c1': 2"):
        dfm.io.read_vcf(vcf, regions=[("c2", 1, 50)])
    # some do: a warning with the counts, the records found are kept
    with pytest.warns(UserWarning, match=r"1 of 2 requested.*\['c2'\].*2 record"):
        v = dfm.io.read_vcf(vcf, regions=[("c1", 1, 50), ("c2", 1, 50)])
    assert v.pos.tolist() == [8, 12]
    # a contig the header declares is simply without variants
    declared = tmp_path / "d.vcf"
    declared.write_text(vcf_text(rows, contigs=("c1", "c2")))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = dfm.io.read_vcf(declared, regions=[("c2", 1, 50)])
    assert v.n_variants == 0 and v.contig_names == {"c2": "c2"}
    # an alias is used only when the name itself has no records
    alias = dfm.io.read_vcf(vcf, regions=[("chr1", 1, 9)], contig_aliases={"chr1": ["c1"]})
    assert alias.pos.tolist() == [8] and alias.contig_names == {"chr1": "c1"}
    both = tmp_path / "both.vcf"
    both.write_text(vcf_text([("c0", 5, "A", "G", ["1|1", "0|0"]), *rows]))
    own = dfm.io.read_vcf(both, regions=[("c0", 1, 50)], contig_aliases={"c0": ["c1"]})
    assert own.pos.tolist() == [5] and own.contig_names == {"c0": "c0"}
    assert own.counts == {"n_records": 3, "n_kept": 1, "n_outside": 2}


def test_indexed_query_with_unknown_contig_is_refused(tmp_path):
    pysam = pytest.importorskip("pysam")
    rows = [("c1", 8, "G", "T", ["0|1", "0|0"])]
    plain = tmp_path / "i.vcf"
    plain.write_text(vcf_text(rows, contigs=("c1",)))
    gz = pysam.tabix_index(str(plain), preset="vcf", keep_original=True, force=True)
    with pytest.raises(DfmInputError, match="no records.*'c1'"):
        dfm.io.read_vcf(gz, regions=[("MT", 1, 50)], use_index=True)
    v = dfm.io.read_vcf(gz, regions=[("X", 1, 50)], contig_aliases={"X": ["c1"]}, use_index=True)
    assert v.pos.tolist() == [8]


def test_allele_index_beyond_alt_names_record_and_sample(tmp_path):
    rows = [("c1", 8, "G", "T", ["0|1", "0|2"])]
    vcf = tmp_path / "bad.vcf"
    vcf.write_text(vcf_text(rows))
    with pytest.raises(DfmInputError, match=r"c1:8.*sample 'B' allele 2.*only 1 ALT"):
        dfm.io.read_vcf(vcf, regions=[("c1", 1, 50)])
    # with the samples reordered the message still names the right one
    with pytest.raises(DfmInputError, match="sample 'B' allele 2"):
        dfm.io.read_vcf(vcf, samples=["B", "A"])


def test_htslib_messages_become_one_log_line(genome_dir, capfd, dfm_log):
    dfm_log.set_level(logging.DEBUG, logger="diffbio_sc")
    v = dfm.io.read_vcf(genome_dir / "testMT.vcf", regions=[("MT", 4470, 5511)])
    assert v.n_variants == 1
    err = capfd.readouterr().err
    assert "idx_find_and_load" not in err and "vcf_parse" not in err
    notes = [r for r in dfm_log.records if r.getMessage().startswith("htslib")]
    assert notes and all(r.levelno == logging.DEBUG for r in notes)
    assert any("not defined in the header" in r.getMessage() for r in notes)


# ---------------------------------------------------------------- projection and run log


def test_one_subject_refuses_a_projection(mt, genome_dir, tmp_path):
    out = tmp_path / "run.json"
    for projection in ("pca", "random"):
        with pytest.raises(DfmInputError, match=r"1 subject.*projection=None"):
            dfm.tl.embed_genes(
                mt["fasta"], mt["gtf"], genome_dir / "testMT.vcf", genes=["MT-ND2"],
                contig_map=mt["contig_map"], projection=projection, log_path=out,
            )  # fmt: skip
    assert not out.exists()
    a = dfm.tl.embed_genes(
        mt["fasta"], mt["gtf"], genome_dir / "testMT.vcf", genes=["MT-ND2"],
        contig_map=mt["contig_map"], projection=None,
    )["genetics"]  # fmt: skip
    assert "X_dfm_genetics" not in a.obsm and a.obsm["X_dfm_subject"].any()


def test_pca_wider_than_its_information_says_so(toy, dfm_log):
    s = toy["seq"]
    rows = [
        ("c1", 8, s[7], "T", ["0|1", "0|0", "1|1"]),
        ("c1", 45, s[44], "G", ["0|0", "0|1", "0|0"]),
    ]
    vcf = toy["dir"] / "three.vcf"
    vcf.write_text(vcf_text(rows, samples=("A", "B", "C"), contigs=("c1",)))
    a = dfm.tl.embed_genes(toy["fasta"], toy["gtf"], vcf, genes=["PLUS", "MINUS"], n_components=6)[
        "genetics"
    ]
    Z = a.obsm["X_dfm_genetics"]
    k = a.uns["dfm"]["genetics"]["projection"]["n_informative"]
    assert k == 2 and Z[:, :k].any() and not Z[:, k:].any()  # 3 subjects: 2 axes
    assert "2 informative axes" in dfm_log.text and "n_components=2" in dfm_log.text


def test_run_log_records_the_gtf_path_or_the_table(toy, tmp_path):
    rows = [("c1", 8, toy["seq"][7], "T", ["0|1", "0|0"])]
    vcf = tmp_path / "v.vcf"
    vcf.write_text(vcf_text(rows, contigs=("c1",)))
    kw = dict(genes=["PLUS"], projection=None)
    log = tmp_path / "a.json"
    dfm.tl.embed_genes(toy["fasta"], toy["gtf"], vcf, log_path=log, **kw)
    inputs = json.loads(log.read_text())["inputs"]
    assert inputs["gtf"] == str(toy["gtf"])
    assert inputs["gtf_sha256"] == hashlib.sha256(toy["gtf"].read_bytes()).hexdigest()
    table = dfm.io.read_gtf(toy["gtf"])
    dfm.tl.embed_genes(toy["fasta"], table, vcf, log_path=log, **kw)
    first = json.loads(log.read_text())["inputs"]
    assert first["gtf"] == "<DataFrame>" and first["gtf_source"] == str(toy["gtf"])
    edited = table.copy()
    edited.loc[edited["feature"] == "exon", "end"] -= 1
    dfm.tl.embed_genes(toy["fasta"], edited, vcf, log_path=log, **kw)
    second = json.loads(log.read_text())["inputs"]
    assert len(first["gtf_table_sha256"]) == 64
    assert second["gtf_table_sha256"] != first["gtf_table_sha256"]


# ---------------------------------------------------------------- Genome and GTF misuse


def test_genome_fetch_misuse_is_a_clear_error(toy):
    g = Genome(toy["fasta"])
    assert g.fetch("c1", np.int64(5), np.int64(8)) == toy["seq"][4:8]
    with pytest.raises(DfmInputError, match="start must be a whole number.*1.5"):
        g.fetch("c1", 1.5, 10)
    with pytest.raises(DfmInputError, match="end must be a whole number"):
        g.fetch("c1", 1, True)
    with pytest.raises(DfmInputError, match="strand must be"):
        g.fetch("c1", 1, 4, "x")
    g.close()
    with pytest.raises(DfmInputError, match="is closed"):
        g.fetch("c1", 1, 4)


def test_gff3_and_gtf_without_gene_id(tmp_path, toy):
    gff3 = tmp_path / "g.gff3"
    gff3.write_text(
        "##gff-version 3\n"
        "c1\tx\tgene\t5\t40\t.\t+\t.\tID=gene:P;Name=PLUS\n"
        "c1\tx\texon\t5\t14\t.\t+\t.\tParent=transcript:P1;Name=PLUS-1\n"
    )
    with pytest.raises(DfmInputError, match="GFF3.*gffread"):
        dfm.io.read_gtf(gff3)
    with pytest.raises(DfmInputError, match="GFF3"):
        dfm.tl.embed_genes(toy["fasta"], gff3, tmp_path / "none.vcf", genes=["PLUS"])
    no_id = tmp_path / "n.gtf"
    no_id.write_text('c1\tx\texon\t5\t14\t.\t+\t.\tgene_name "PLUS"; transcript_id "P1";\n')
    table = dfm.io.read_gtf(no_id)
    with pytest.raises(DfmInputError, match="no gene_id attribute"):
        select_gene_models(table, ["PLUS"])


def test_second_genetics_modality_is_added_quietly(toy, tmp_path):
    import warnings

    rows = [("c1", 8, toy["seq"][7], "T", ["0|1", "0|0"])]
    vcf = tmp_path / "v.vcf"
    vcf.write_text(vcf_text(rows, contigs=("c1",)))
    kw = dict(genes=["PLUS", "MINUS"], projection=None)
    md = dfm.tl.embed_genes(toy["fasta"], toy["gtf"], vcf, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mudata's notes on shared gene names included
        dfm.tl.embed_genes(
            toy["fasta"], toy["gtf"], vcf, encoder=dfm.tl.KmerEncoder(2), mdata=md,
            mod="genetics_k2", **kw,
        )  # fmt: skip
    assert set(md.mod) == {"genetics", "genetics_k2"}
    assert md["genetics_k2"].obsm["X_dfm_genes"].shape == (2, 2 * 16)
