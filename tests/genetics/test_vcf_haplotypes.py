"""VCF reading and haplotype patching: SNVs, indels and shifts, genotype policies, errors."""

from __future__ import annotations

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.io._genome import Genome
from diffbio_sc.io._gtf import select_gene_models
from diffbio_sc.tl._genetics._haplotypes import gene_haplotypes

HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID={contig},length=60>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{samples}\n"
)


def make_vcf(path, records, samples=("A", "B"), contig="c1"):
    """records: (pos, ref, alt, [gt per sample]) on ``contig``; written in the given order."""
    text = HEADER.format(contig=contig, samples="\t".join(samples))
    for pos, ref, alt, gts in records:
        text += f"{contig}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gts) + "\n"
    path.write_text(text)
    return path


def expected(seq, exons, strand, variants, rc):
    """Independent patching: per exon, apply alleles right to left (no shifts to track)."""
    parts = []
    for st, en in exons:
        e = seq[st - 1 : en]
        for pos, ref, alt in sorted(variants, reverse=True):
            if st <= pos and pos + len(ref) - 1 <= en:
                i = pos - st
                assert e[i : i + len(ref)] == ref
                e = e[:i] + alt + e[i + len(ref) :]
        parts.append(e)
    out = "".join(parts)
    return rc(out) if strand == "-" else out


def haps(toy, vcf, gene="PLUS", **kw):
    gtf = dfm.io.read_gtf(toy["gtf"])
    (m,) = select_gene_models(gtf, [gene], feature=kw.pop("feature", "exon"))
    variants = dfm.io.read_vcf(vcf, regions=[(m.seqname, *m.span)], samples=kw.pop("samples", None))
    with Genome(toy["fasta"]) as g:
        h = gene_haplotypes(g, m, variants, **kw)
    return h, m, variants


def seq_of(h, s, k):
    return h.sequences[h.index[s, k]]


def test_snv_insertion_deletion_shift_later_variants(toy):
    s, rc = toy["seq"], toy["rc"]
    muts = [
        (8, s[7], "T"),  # SNV
        (10, s[9], s[9] + "AA"),  # insertion: later positions shift by +2
        (12, s[11], "C"),  # SNV after the insertion
        (33, s[32:35], s[32]),  # deletion of 2 bases (second exon)
        (38, s[37], "G"),  # SNV after the deletion
    ]
    vcf = make_vcf(toy["dir"] / "a.vcf", [(p, r, a, ["1|0", "0|0"]) for p, r, a in muts])
    h, m, _ = haps(toy, vcf)
    exons = [(5, 14), (31, 40)]
    assert seq_of(h, 0, 0) == expected(s, exons, "+", muts, rc)
    assert len(seq_of(h, 0, 0)) == 20 + 2 - 2
    assert seq_of(h, 0, 1) == seq_of(h, 1, 0) == h.sequences[0] == expected(s, exons, "+", [], rc)
    assert h.alt_alleles.tolist() == [5, 0]
    assert h.counts["n_applied"] == 5
    assert len(h.sequences) == 2  # reference + one distinct haplotype


def test_minus_strand_gene_is_patched_then_reverse_complemented(toy):
    s, rc = toy["seq"], toy["rc"]
    muts = [(45, s[44], "G"), (53, s[52:54], s[52])]
    vcf = make_vcf(toy["dir"] / "m.vcf", [(p, r, a, ["0|1", "1|1"]) for p, r, a in muts])
    h, m, _ = haps(toy, vcf, gene="MINUS")
    want = expected(s, [(42, 47), (52, 58)], "-", muts, rc)
    assert seq_of(h, 0, 1) == seq_of(h, 1, 0) == seq_of(h, 1, 1) == want
    assert seq_of(h, 0, 0) == rc(s[41:47] + s[51:58])


def test_shipped_testmt_vcf_record_4472(genome_dir):
    gtf = dfm.io.read_gtf(genome_dir / "MT-ND2_ensembl.gtf")
    (m,) = select_gene_models(gtf, ["MT-ND2"], feature="CDS")
    v = dfm.io.read_vcf(genome_dir / "testMT.vcf", regions=[("MT", *m.span)])
    assert v.samples == ["P1"] and v.pos.tolist() == [4472] and v.ids == ["var1"]
    with Genome(genome_dir / "MT-human.fa", contig_map={"MT": "MT_human"}) as g:
        h = gene_haplotypes(g, m, v)
    ref, alt = h.sequences[h.index[0, 0]], h.sequences[h.index[0, 1]]  # 0/1: written order
    assert ref.startswith("ATT") and alt.startswith("ATA")
    assert alt == ref[:2] + "A" + ref[3:]
    assert h.counts["n_unphased_het"] == 1


def test_ref_mismatch_names_position_alleles_and_files(toy):
    vcf = make_vcf(toy["dir"] / "bad.vcf", [(8, "C", "T", ["0|1", "0|0"])])  # ref is G
    with pytest.raises(DfmInputError) as err:
        haps(toy, vcf)
    msg = str(err.value)
    assert "c1:8" in msg and "REF='C'" in msg and "'G'" in msg
    assert "bad.vcf" in msg and "toy.fa" in msg


def test_multiallelic_phasing_and_unphased_policy(toy):
    s = toy["seq"]
    recs = [(8, s[7], "T,C", ["1/2", "2|1"]), (12, s[11], "G", ["0/1", "1|0"])]
    vcf = make_vcf(toy["dir"] / "ma.vcf", recs)
    h, _, _ = haps(toy, vcf)
    a0, a1 = seq_of(h, 0, 0), seq_of(h, 0, 1)
    assert a0[3] == "T" and a1[3] == "C"  # pos 8 is offset 3 in exon 5-14
    assert a0[7] == s[11] and a1[7] == "G"  # written order
    b0, b1 = seq_of(h, 1, 0), seq_of(h, 1, 1)
    assert (b0[3], b0[7]) == ("C", "G") and (b1[3], b1[7]) == ("T", s[11])
    assert h.counts["n_unphased_het"] == 2
    with pytest.raises(DfmInputError, match="Sample 'A' is unphased heterozygous at 2"):
        haps(toy, vcf, unphased="error")
    one = make_vcf(toy["dir"] / "one.vcf", [recs[0]])
    haps(toy, one, unphased="error")  # a single unphased het site is unambiguous


def test_missing_haploid_star_and_symbolic(toy):
    s = toy["seq"]
    vcf = make_vcf(
        toy["dir"] / "x.vcf",
        [
            (8, s[7], "T", ["./.", "1"]),
            (12, s[11], "G,*", [".|1", "2|2"]),
            (36, s[35], "<DEL>", ["0|0", "0|0"]),
        ],
    )
    h, _, _ = haps(toy, vcf)
    assert h.counts["n_missing_calls"] == 3 and h.counts["n_star_alleles"] == 2
    assert seq_of(h, 0, 0) == h.sequences[0]  # missing -> reference
    assert seq_of(h, 0, 1)[7] == "G"
    b0, b1 = seq_of(h, 1, 0), seq_of(h, 1, 1)
    assert b0 == b1 and b0[3] == "T" and b0[7] == s[11]  # haploid on both; '*' changes nothing
    with pytest.raises(DfmInputError, match="missing genotype.*c1:8"):
        haps(toy, vcf, missing="error")
    sym = make_vcf(toy["dir"] / "sym.vcf", [(36, s[35], "<DEL>", ["0|1", "0|0"])])
    with pytest.raises(DfmInputError, match="Symbolic allele '<DEL>'.*sample 'A'"):
        haps(toy, sym)


def test_overlapping_variants_on_one_haplotype_are_refused(toy):
    s = toy["seq"]
    recs = [(33, s[32:35], s[32], ["1|0", "1|0"]), (34, s[33], "G", ["0|1", "1|0"])]
    vcf = make_vcf(toy["dir"] / "ov.vcf", recs)
    with pytest.raises(DfmInputError, match="Overlapping variants.*sample 'B'.*c1:33.*c1:34"):
        haps(toy, vcf)
    ok = make_vcf(
        toy["dir"] / "ok.vcf",
        [(*recs[0][:3], ["1|0", "1|0"]), (*recs[1][:3], ["0|1", "0|1"])],
    )
    h, _, _ = haps(toy, ok)  # on different haplotypes: fine
    assert len(h.sequences) == 3


def test_variants_outside_genes_between_exons_and_across_boundaries(toy):
    s = toy["seq"]
    recs = [
        (2, s[1], "A", ["0|1", "0|0"]),  # before the gene: ignored by the reader, counted
        (14, s[13:15], s[13], ["0|1", "0|0"]),  # crosses the exon 1 end: skipped, counted
        (20, s[19], "C", ["1|1", "0|0"]),  # intron: counted
        (32, s[31], "T", ["0|1", "0|0"]),  # applied
        (59, s[58], "A", ["0|1", "0|0"]),  # after the gene
    ]
    vcf = make_vcf(toy["dir"] / "o.vcf", recs)
    h, _, v = haps(toy, vcf)
    assert v.counts == {"n_records": 5, "n_kept": 3, "n_outside": 2}
    assert h.counts["n_between_intervals"] == 1
    assert h.counts["n_boundary_skipped"] == 1
    assert h.counts["n_applied"] == 1
    assert h.alt_alleles.tolist() == [1, 0]


def test_contig_prefix_unsorted_and_index(toy):
    s = toy["seq"]
    chr_vcf = make_vcf(toy["dir"] / "chr.vcf", [(8, s[7], "T", ["0|1", "0|0"])], contig="chrc1")
    with pytest.raises(DfmInputError, match="'chr' prefix"):
        dfm.io.read_vcf(chr_vcf, regions=[("c1", 5, 40)])
    v = dfm.io.read_vcf(chr_vcf, regions=[("c1", 5, 40)], contig_map={"c1": "chrc1"})
    assert v.n_variants == 1
    unsorted = make_vcf(
        toy["dir"] / "u.vcf", [(12, s[11], "T", ["0|1", "0|0"]), (8, s[7], "T", ["0|1", "0|0"])]
    )
    with pytest.raises(DfmInputError, match="not sorted: c1:8 comes after c1:12.*bcftools sort"):
        dfm.io.read_vcf(unsorted, regions=[("c1", 5, 40)])
    with pytest.raises(DfmInputError, match="has no index"):
        dfm.io.read_vcf(chr_vcf, regions=[("c1", 5, 40)], use_index=True)


def test_indexed_query_matches_full_read(toy):
    pysam = pytest.importorskip("pysam")
    s = toy["seq"]
    recs = [
        (2, s[1], "A", ["0|1", "1|1"]),
        (8, s[7], "T", ["0|1", "0|0"]),
        (45, s[44], "G", ["1|1", "0|1"]),
        (59, s[58], "A", ["0|1", "0|0"]),
    ]
    plain = make_vcf(toy["dir"] / "i.vcf", recs)
    gz = pysam.tabix_index(str(plain), preset="vcf", keep_original=True, force=True)
    regions = [("c1", 5, 40), ("c1", 42, 58)]
    full = dfm.io.read_vcf(plain, regions=regions)
    indexed = dfm.io.read_vcf(gz, regions=regions, use_index=True)
    assert indexed.pos.tolist() == full.pos.tolist() == [8, 45]
    np.testing.assert_array_equal(indexed.genotypes, full.genotypes)
    assert indexed.counts["n_outside"] is None and full.counts["n_outside"] == 2


def test_sample_subset_keeps_requested_order(toy):
    s = toy["seq"]
    vcf = make_vcf(
        toy["dir"] / "s.vcf", [(8, s[7], "T", ["0|1", "1|1", "0|0"])], samples=("A", "B", "C")
    )
    v = dfm.io.read_vcf(vcf, samples=["C", "A"])
    assert v.samples == ["C", "A"]
    assert v.genotypes[0].tolist() == [[0, 0], [0, 1]]
    with pytest.raises(DfmInputError, match=r"Samples \['Z'\] are not in the VCF"):
        dfm.io.read_vcf(vcf, samples=["Z"])


def test_plain_gzip_vcf_reads_like_the_text_file(toy):
    import gzip

    s = toy["seq"]
    plain = make_vcf(toy["dir"] / "p.vcf", [(8, s[7], "T", ["0|1", "1/1"])])
    gz = toy["dir"] / "p.vcf.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = dfm.io.read_vcf(plain), dfm.io.read_vcf(gz)
    np.testing.assert_array_equal(a.genotypes, b.genotypes)
    np.testing.assert_array_equal(a.phased, b.phased)
    assert a.phased[0].tolist() == [True, False]


def test_not_a_vcf_and_no_samples(toy):
    bad = toy["write"](toy["dir"] / "bad.vcf", "hello\nworld\n")
    with pytest.raises(DfmInputError, match="Could not open the VCF"):
        dfm.io.read_vcf(bad)
    sites_only = toy["write"](
        toy["dir"] / "sites.vcf",
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nc1\t8\t.\tG\tT\t.\t.\t.\n",
    )
    with pytest.raises(DfmInputError, match="no samples"):
        dfm.io.read_vcf(sites_only)
    with pytest.raises(FileNotFoundError):
        dfm.io.read_vcf(toy["dir"] / "missing.vcf")
