"""Simulated genetic cohorts on a real reference: VCFs for tests, examples and benchmarks.

Variants are placed inside real genes (a reference FASTA + GTF), with the true
reference base as REF, so everything downstream (REF checks, indel shifts,
haplotype deduplication) runs on real sequence. The result is **synthetic**:
allele frequencies and phenotypes are drawn from the stated model, nothing more.

Model
-----
* Each gene gets ``sites_per_gene`` segregating sites at least 6 bases apart
  (SNVs, or with probability ``indel_fraction`` a 1-3 base insertion or
  deletion), each with an alternative-allele frequency drawn uniformly from
  ``freq_range``.
* ``n_founders=None``: every haplotype draws each site independently (no
  linkage), the setting where one gene's signal cannot leak into another's.
  ``n_founders=F``: ``F`` founder haplotypes draw the sites; each subject copies
  a founder chosen with Zipf-like weights (a few common haplogroups, many rare
  ones, as in mitochondrial DNA) and then gains private SNVs at
  ``private_rate`` per kilobase, each carried by that subject only.
* ``ploidy=1`` writes haploid calls (``0``/``1``, as mitochondrial VCFs do);
  ``ploidy=2`` writes phased diploid calls (``0|1``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._validate import DfmInputError, check_float, check_int, check_seed

__all__ = ["GeneticCohort", "simulate_genetic_cohort", "simulate_phenotype"]

_BASES = np.array(list("ACGT"))


@dataclass
class GeneticCohort:
    """A simulated cohort written to a VCF.

    Attributes
    ----------
    path
        The VCF written.
    samples
        Subject ids.
    genes
        Gene names, in the order asked for.
    sites
        One row per VCF record: ``contig``, ``pos`` (1-based), ``ref``, ``alt``,
        ``kind`` (``snv``/``insertion``/``deletion``), ``genes`` (comma-joined
        names of the genes whose span holds it), ``private``.
    genotypes
        ``int8 (n_sites, n_subjects, ploidy)`` allele indices (0/1).
    burden
        ``int32 (n_subjects, n_genes)``: alternative alleles each subject carries
        in each gene.
    """

    path: str
    samples: list[str]
    genes: list[str]
    sites: pd.DataFrame
    genotypes: np.ndarray
    burden: np.ndarray


def simulate_genetic_cohort(
    fasta: str | os.PathLike,
    gtf: str | os.PathLike,
    genes: Sequence[str],
    path: str | os.PathLike,
    *,
    n_subjects: int,
    contig_map: Mapping[str, str] | None = None,
    sites_per_gene: int = 6,
    indel_fraction: float = 0.1,
    freq_range: tuple[float, float] = (0.05, 0.5),
    n_founders: int | None = None,
    private_rate: float = 0.0,
    ploidy: int = 1,
    seed: int = 0,
) -> GeneticCohort:
    """Simulate subjects' variants in real genes and write them as a sorted VCF.

    Parameters
    ----------
    fasta, gtf
        Reference and annotation.
    contig_map
        Maps the GTF's contig names to FASTA record names, as in
        :func:`diffbio_sc.tl.embed_genes`.
    genes
        Genes to place variants in (their exon spans).
    path
        VCF to write (atomically). Contigs are named as in the GTF.
    n_subjects
        Number of subjects (``S0000``, ``S0001`` ...).
    sites_per_gene, indel_fraction, freq_range, n_founders, private_rate, ploidy
        See the module notes.
    seed
        Seed of every random draw.

    Returns
    -------
    GeneticCohort
    """
    from ..io._atomic import atomic_path
    from ..io._genome import Genome
    from ..io._gtf import read_gtf, select_gene_models

    n_subjects = check_int("n_subjects", n_subjects, minimum=1)
    sites_per_gene = check_int("sites_per_gene", sites_per_gene, minimum=0)
    indel_fraction = check_float("indel_fraction", indel_fraction, minimum=0.0, maximum=1.0)
    private_rate = check_float("private_rate", private_rate, minimum=0.0)
    n_founders = check_int("n_founders", n_founders, minimum=1, allow_none=True)
    ploidy = check_int("ploidy", ploidy, minimum=1, maximum=2)
    seed = check_seed(seed)
    lo, hi = (float(x) for x in freq_range)
    if not 0.0 < lo <= hi < 1.0:
        raise DfmInputError(f"freq_range must satisfy 0 < low <= high < 1, got {freq_range}.")
    rng = np.random.default_rng(seed)
    models = select_gene_models(read_gtf(gtf), list(genes), feature="exon")
    samples = [f"S{i:04d}" for i in range(n_subjects)]

    with Genome(fasta, contig_map=contig_map) as genome:
        used: dict[str, set[int]] = {}
        records = []  # (contig, pos, ref, alt, kind, private, carriers or None)

        def free(contig: str, p: int, span: int) -> bool:
            taken = used.setdefault(contig, set())
            return all(q not in taken for q in range(p - 6, p + span + 6))

        def take(contig: str, p: int, span: int) -> None:
            used[contig].update(range(p, p + span))

        for m in models:
            lo_pos, hi_pos = m.span
            placed, tries = 0, 0
            while placed < sites_per_gene and tries < 1000 * max(sites_per_gene, 1):
                tries += 1
                p = int(rng.integers(lo_pos + 1, hi_pos - 4))
                kind = "snv"
                if rng.random() < indel_fraction:
                    kind = "deletion" if rng.random() < 0.5 else "insertion"
                size = int(rng.integers(1, 4))
                span = size + 1 if kind == "deletion" else 1
                if not free(m.seqname, p, span):
                    continue
                ref = genome.fetch(m.seqname, p, p + span - 1)
                if any(b not in "ACGT" for b in ref):
                    continue
                if kind == "snv":
                    alt = str(rng.choice([b for b in "ACGT" if b != ref]))
                elif kind == "deletion":
                    alt = ref[0]
                else:
                    alt = ref + "".join(rng.choice(_BASES, size))
                take(m.seqname, p, span)
                records.append([m.seqname, p, ref, alt, kind, False, None])
                placed += 1
        n_common = len(records)
        freqs = rng.uniform(lo, hi, size=n_common)
        n_hap = n_subjects * ploidy
        if n_founders is None:
            hap_alleles = (rng.random((n_common, n_hap)) < freqs[:, None]).astype(np.int8)
        else:
            founders = (rng.random((n_common, n_founders)) < freqs[:, None]).astype(np.int8)
            weights = 1.0 / np.arange(1, n_founders + 1)
            pick = rng.choice(n_founders, size=n_subjects, p=weights / weights.sum())
            pick = np.repeat(pick, ploidy)
            hap_alleles = founders[:, pick]
        # Private SNVs: one record per new position, carried by one subject (all its copies).
        if private_rate > 0:
            for m in models:
                lam = private_rate * m.length / 1000.0
                for s in range(n_subjects):
                    for _ in range(int(rng.poisson(lam))):
                        p = int(rng.integers(m.span[0] + 1, m.span[1] - 4))
                        if not free(m.seqname, p, 1):
                            continue
                        ref = genome.fetch(m.seqname, p, p)
                        if ref not in "ACGT":
                            continue
                        alt = str(rng.choice([b for b in "ACGT" if b != ref]))
                        take(m.seqname, p, 1)
                        records.append([m.seqname, p, ref, alt, "snv", True, s])
    n_sites = len(records)
    genotypes = np.zeros((n_sites, n_subjects, ploidy), dtype=np.int8)
    if n_common:
        genotypes[:n_common] = hap_alleles.reshape(n_common, n_subjects, ploidy)
    for r in range(n_common, n_sites):
        genotypes[r, records[r][6], :] = 1
    order = sorted(range(n_sites), key=lambda r: (records[r][0], records[r][1]))
    genotypes = genotypes[order]
    records = [records[r] for r in order]
    sites = pd.DataFrame(
        records, columns=["contig", "pos", "ref", "alt", "kind", "private", "carrier"]
    ).drop(columns="carrier")
    in_gene = np.zeros((n_sites, len(models)), dtype=bool)
    for g, m in enumerate(models):
        in_gene[:, g] = (sites["contig"].to_numpy() == m.seqname) & (
            sites["pos"].between(m.span[0], m.span[1]).to_numpy()
        )
    sites["genes"] = [",".join(m.gene for g, m in enumerate(models) if row[g]) for row in in_gene]
    burden = np.einsum("vsp,vg->sg", genotypes.astype(np.int32), in_gene.astype(np.int32))

    contigs = sorted({m.seqname for m in models})
    with atomic_path(path, what="VCF") as tmp, open(tmp, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n##source=diffbio_sc.datasets.simulate_genetic_cohort\n")
        for c in contigs:
            fh.write(f"##contig=<ID={c}>\n")
        fh.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples))
        fh.write("\n")
        sep = "|"
        for r, (c, p, ref, alt, *_rest) in enumerate(records):
            g = genotypes[r]
            if ploidy == 1:
                calls = g[:, 0].astype(str)
            else:
                calls = np.char.add(np.char.add(g[:, 0].astype(str), sep), g[:, 1].astype(str))
            fh.write(f"{c}\t{p}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(calls) + "\n")
    return GeneticCohort(
        path=str(path),
        samples=samples,
        genes=[m.gene for m in models],
        sites=sites,
        genotypes=genotypes,
        burden=burden.astype(np.int32),
    )


def simulate_phenotype(
    cohort: GeneticCohort,
    gene: str | None,
    *,
    effect: float = 2.0,
    seed: int = 0,
) -> np.ndarray:
    """Binary phenotype driven by the alternative-allele burden in one gene.

    ``P(case) = sigmoid(effect * z)`` with ``z`` the standardised burden of
    ``gene``; ``gene=None`` gives a null phenotype (a fair coin per subject).

    Parameters
    ----------
    cohort
        A cohort from :func:`simulate_genetic_cohort`.
    gene
        The causal gene, or ``None`` for a null phenotype.
    effect
        Log-odds per standard deviation of the gene's burden.
    seed
        Seed of the draw.

    Returns
    -------
    numpy.ndarray
        Boolean, one entry per subject, with both classes present.
    """
    rng = np.random.default_rng(check_seed(seed))
    n = len(cohort.samples)
    if gene is None:
        logit = np.zeros(n)
    else:
        if gene not in cohort.genes:
            raise DfmInputError(f"gene {gene!r} is not in the cohort's genes {cohort.genes}.")
        b = cohort.burden[:, cohort.genes.index(gene)].astype(np.float64)
        sd = b.std()
        if sd == 0:
            raise DfmInputError(f"No subject carries a variant in {gene!r}; nothing to drive.")
        logit = effect * (b - b.mean()) / sd
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    if y.all() or not y.any():
        raise DfmInputError("The simulated phenotype has one class only; use more subjects.")
    return y
