"""Per-subject gene haplotypes: reference bases patched with VCF alleles.

Rules (documented in ``docs/notes/genetics.md``):

* Every subject has two haplotypes. A phased call ``a|b`` puts allele ``a`` on
  haplotype 0 and ``b`` on haplotype 1; a haploid call ``a`` puts ``a`` on both.
* Unphased calls ``a/b`` (``unphased='ordered'``, the default) are used in the
  written order, as if phased. This only matters when a subject is unphased
  heterozygous at two or more variants of the same gene (the only case where
  phase changes the sequences); ``unphased='error'`` refuses exactly that case.
* Missing alleles (``.``) are the reference allele (``missing='reference'``,
  counted in the run log) or refused (``missing='error'``).
* A ``*`` allele (deleted by an overlapping deletion, which is applied by its own
  record) changes nothing. A genotype that uses a symbolic allele (``<DEL>``,
  ``<INS>``, breakends) is refused: its sequence is unknown.
* Variants are applied left to right on the plus strand, each cutting the
  reference from the end of the previous one, so later coordinates shift by
  the earlier indels automatically. Two alleles on one haplotype whose REF
  spans overlap are refused (an error naming both records and the subject).
* A variant whose REF span lies inside one interval (exon / CDS) is applied; one
  that only partly overlaps an interval (it crosses a splice boundary) is
  skipped and counted; variants between intervals (introns) or outside the gene
  are ignored and counted.
* Every record that touches an interval must agree with the reference at
  ``POS .. POS+len(REF)-1``; a mismatch is an error naming the position, both
  alleles and both files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..._validate import DfmInputError
from ...io._genome import Genome
from ...io._gtf import GeneModel
from ...io._vcf import VariantSet

__all__ = ["GeneHaplotypes", "gene_haplotypes"]


@dataclass
class GeneHaplotypes:
    """The distinct haplotype sequences of one gene across subjects.

    Attributes
    ----------
    model
        The gene model.
    sequences
        Distinct sequences, 5' to 3' on the gene's strand; ``sequences[0]`` is
        the reference.
    index
        ``int32 (n_subjects, 2)``: which entry of ``sequences`` each haplotype is.
    alt_alleles
        ``int32 (n_subjects,)``: non-reference alleles applied (over both haplotypes).
    counts
        ``n_variants`` (records touching the gene's intervals), ``n_applied``,
        ``n_boundary_skipped``, ``n_between_intervals``, ``n_missing_calls``,
        ``n_unphased_het``, ``n_star_alleles``.
    """

    model: GeneModel
    sequences: list[str]
    index: np.ndarray
    alt_alleles: np.ndarray
    counts: dict = field(default_factory=dict)


def _variant_label(variants: VariantSet, i: int) -> str:
    alts = ",".join(variants.alts[i]) or "."
    return f"{variants.contig[i]}:{variants.pos[i]} {variants.ref[i]}>{alts}"


def gene_haplotypes(
    genome: Genome,
    model: GeneModel,
    variants: VariantSet,
    *,
    vcf_contig: str | None = None,
    unphased: str = "ordered",
    missing: str = "reference",
    unique: bool = True,
) -> GeneHaplotypes:
    """Build the haplotype sequences of one gene for every subject of ``variants``.

    With ``unique=False`` every haplotype gets its own entry in ``sequences``
    (``2 * n_subjects`` of them after the reference; for benchmarking the cache).
    """
    n_subjects = len(variants.samples)
    pieces = genome.plus_pieces(model)
    reference = genome.orient(pieces, model.strand)
    vcf_contig = vcf_contig or model.seqname
    starts = np.array([s for s, _ in model.intervals])
    ends = np.array([e for _, e in model.intervals])
    span_lo, span_hi = model.span
    on_contig = variants.contig == vcf_contig
    var_end = variants.pos + np.array([len(r) for r in variants.ref], dtype=np.int64) - 1
    near = np.flatnonzero(on_contig & (variants.pos <= span_hi) & (var_end >= span_lo))
    applied, interval_of, n_boundary, n_between = [], [], 0, 0
    for i in near.tolist():
        p, q = int(variants.pos[i]), int(var_end[i])
        touching = np.flatnonzero((starts <= q) & (ends >= p))
        if touching.size == 0:
            n_between += 1
            continue
        j = int(touching[0])
        # REF check on the part of the REF allele that lies in the reference interval.
        lo, hi = max(p, int(starts[j])), min(q, int(ends[j]))
        ref_here = pieces[j][lo - int(starts[j]) : hi - int(starts[j]) + 1]
        ref_vcf = variants.ref[i].upper()[lo - p : hi - p + 1]
        if ref_here != ref_vcf:
            raise DfmInputError(
                f"REF mismatch at {variants.contig[i]}:{p} (gene {model.gene}): the VCF "
                f"{variants.path!r} says REF={variants.ref[i]!r} (ALT "
                f"{','.join(variants.alts[i]) or '.'}) but the reference "
                f"{str(genome.path)!r} has {genome.fetch(model.seqname, p, min(q, genome.lengths[genome.resolve(model.seqname)]))!r} "
                "there. The VCF was called against another assembly (or is not "
                "normalised): use the matching reference FASTA."
            )
        if touching.size > 1 or p < starts[j] or q > ends[j]:
            n_boundary += 1
            continue
        applied.append(i)
        interval_of.append(j)
    counts = {
        "n_variants": int(len(applied) + n_boundary + n_between),
        "n_applied": len(applied),
        "n_boundary_skipped": n_boundary,
        "n_between_intervals": n_between,
        "n_missing_calls": 0,
        "n_unphased_het": 0,
        "n_star_alleles": 0,
    }
    if not applied:
        index = np.zeros((n_subjects, 2), dtype=np.int32)
        seqs = [reference]
        if not unique:
            seqs = [reference] * (1 + 2 * n_subjects)
            index = (1 + np.arange(2 * n_subjects, dtype=np.int32)).reshape(n_subjects, 2)
        return GeneHaplotypes(model, seqs, index, np.zeros(n_subjects, np.int32), counts)

    order = np.argsort(variants.pos[applied], kind="stable")
    applied = [applied[k] for k in order]
    interval_of = [interval_of[k] for k in order]
    gt = variants.genotypes[applied].astype(np.int32)  # (v, n, 2)
    # Allele kinds: '*' changes nothing; symbolic alleles cannot be built.
    for r, i in enumerate(applied):
        for k, alt in enumerate(variants.alts[i], start=1):
            used = gt[r] == k
            if not used.any():
                continue
            if alt == "*":
                counts["n_star_alleles"] += int(used.sum())
                gt[r][used] = 0
            elif alt.startswith("<") or "[" in alt or "]" in alt or alt == ".":
                s = int(np.flatnonzero(used.any(axis=1))[0])
                raise DfmInputError(
                    f"Symbolic allele {alt!r} at {_variant_label(variants, i)} is carried by "
                    f"sample {variants.samples[s]!r}; its sequence is unknown. Remove "
                    "symbolic records (bcftools view --exclude-types other) first."
                )
    miss = gt < 0
    counts["n_missing_calls"] = int(miss.sum())
    if miss.any():
        if missing == "error":
            r, s, _ = np.argwhere(miss)[0]
            raise DfmInputError(
                f"Sample {variants.samples[s]!r} has a missing genotype at "
                f"{_variant_label(variants, applied[r])} (gene {model.gene}). Impute it, or "
                "pass missing='reference' to read missing alleles as the reference."
            )
        gt[miss] = 0
    het_unphased = (~variants.phased[applied]) & (gt[:, :, 0] != gt[:, :, 1])
    counts["n_unphased_het"] = int(het_unphased.sum())
    if unphased == "error":
        per_subject = het_unphased.sum(axis=0)
        bad = np.flatnonzero(per_subject >= 2)
        if bad.size:
            raise DfmInputError(
                f"Sample {variants.samples[bad[0]]!r} is unphased heterozygous at "
                f"{int(per_subject[bad[0]])} variants of {model.gene} ({bad.size} samples "
                "in all), so its two haplotypes are unknown. Phase the VCF (e.g. with "
                "SHAPEIT or Beagle) or pass unphased='ordered' to use the written order."
            )
    alt_alleles = (gt > 0).sum(axis=(0, 2)).astype(np.int32)
    rows = gt.transpose(1, 2, 0).reshape(2 * n_subjects, len(applied))  # haplotype x variant
    if unique:
        # Rows as fixed-width byte strings: one memcmp sort instead of a column lexsort.
        small = np.ascontiguousarray(rows.astype(np.int8 if rows.max() < 128 else np.int32))
        keys = small.view(np.dtype((np.void, small.dtype.itemsize * small.shape[1]))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        patterns = rows[first]
        inverse = np.asarray(inverse).reshape(-1)
    else:
        patterns, inverse = rows, np.arange(rows.shape[0])
    rel_starts = np.array(
        [int(variants.pos[i]) - int(starts[j]) for i, j in zip(applied, interval_of, strict=True)]
    )
    seqs = [reference]
    seq_index: dict[str, int] = {reference: 0}
    pattern_to_seq = np.empty(patterns.shape[0], dtype=np.int32)
    for u in range(patterns.shape[0]):
        alleles = patterns[u]
        carried = np.flatnonzero(alleles > 0)
        if carried.size == 0:
            seq = reference
        else:
            out = [list() for _ in pieces]
            cursor = [0] * len(pieces)
            prev = [None] * len(pieces)
            for r in carried.tolist():
                i, j = applied[r], interval_of[r]
                start = int(rel_starts[r])
                if start < cursor[j]:
                    h = int(np.flatnonzero(inverse == u)[0])
                    raise DfmInputError(
                        f"Overlapping variants on one haplotype of sample "
                        f"{variants.samples[h // 2]!r} (haplotype {h % 2}) in {model.gene}: "
                        f"{_variant_label(variants, prev[j])} and {_variant_label(variants, i)} "
                        "both change the same reference bases. Normalise and merge them "
                        "(bcftools norm -m +any), or fix the phasing."
                    )
                out[j].append(pieces[j][cursor[j] : start])
                out[j].append(variants.alts[i][alleles[r] - 1].upper())
                cursor[j] = start + len(variants.ref[i])
                prev[j] = i
            joined = [
                "".join(out[j]) + pieces[j][cursor[j] :] if out[j] else pieces[j]
                for j in range(len(pieces))
            ]
            seq = genome.orient(joined, model.strand)
        if unique:
            k = seq_index.get(seq)
            if k is None:
                k = len(seqs)
                seq_index[seq] = k
                seqs.append(seq)
        else:
            k = len(seqs)
            seqs.append(seq)
        pattern_to_seq[u] = k
    index = pattern_to_seq[inverse].reshape(n_subjects, 2).astype(np.int32)
    return GeneHaplotypes(model, seqs, index, alt_alleles, counts)
