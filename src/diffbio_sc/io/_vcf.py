"""VCF reading (via cyvcf2) into plain arrays: positions, alleles, genotypes.

Coordinates are VCF's own: ``POS`` is **1-based** and the reference allele
covers ``POS .. POS + len(REF) - 1`` (closed).

Genotypes become an ``int16`` array ``(n_variants, n_samples, 2)`` of allele
indices (0 = REF, k = the k-th ALT, -1 = missing) and a boolean ``phased``
array ``(n_variants, n_samples)``. A haploid call (``1``, as in most
mitochondrial VCFs) fills both haplotypes with the same allele and counts as
phased (there is nothing to phase).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validate import DfmInputError
from ._genome import contig_hint
from ._hts import quiet_htslib

logger = logging.getLogger("diffbio_sc")

__all__ = ["VariantSet", "read_vcf"]


@dataclass
class VariantSet:
    """Variants of a VCF restricted to some regions.

    Attributes
    ----------
    path
        The VCF file.
    samples
        Sample ids, in file order (or the order asked for).
    contig, pos, ref, alts, ids
        One entry per record: contig (as in the VCF), 1-based ``POS``, ``REF``,
        the tuple of ``ALT`` alleles, and ``ID`` (``'.'`` when absent).
    genotypes
        ``int16 (n_variants, n_samples, 2)`` allele indices, -1 for missing.
    phased
        ``bool (n_variants, n_samples)``.
    counts
        ``n_records`` (records read), ``n_kept`` (overlapping a region),
        ``n_outside`` (records outside every region, ignored; ``None`` for an
        indexed query, which never reads them).
    contig_names
        ``{annotation contig: VCF contig}`` actually used for each region contig
        (after ``contig_map`` and ``contig_aliases``); empty without regions.
    """

    path: str
    samples: list[str]
    contig: np.ndarray
    pos: np.ndarray
    ref: list[str]
    alts: list[tuple[str, ...]]
    ids: list[str]
    genotypes: np.ndarray
    phased: np.ndarray
    counts: dict = field(default_factory=dict)
    contig_names: dict = field(default_factory=dict)

    @property
    def n_variants(self) -> int:
        """Number of records kept."""
        return int(self.pos.shape[0])


def _open(path: Path, samples):
    import cyvcf2

    try:
        vcf = cyvcf2.VCF(str(path), gts012=False, lazy=True, threads=1)
    except (OSError, Exception) as err:  # cyvcf2 raises bare Exceptions for bad files
        raise DfmInputError(
            f"Could not open the VCF {str(path)!r}: {err}. Check that it is a VCF "
            "(plain, or gzip/bgzip-compressed)."
        ) from None
    file_samples = list(vcf.samples)
    if samples is not None:
        samples = [str(s) for s in samples]
        missing = [s for s in samples if s not in file_samples]
        if missing:
            vcf.close()
            raise DfmInputError(
                f"Samples {missing[:10]} are not in the VCF {str(path)!r} "
                f"(it has {len(file_samples)} samples, e.g. {file_samples[:5]})."
            )
        if len(set(samples)) != len(samples):
            vcf.close()
            raise DfmInputError("samples lists a sample more than once.")
        vcf.set_samples(samples)
        # set_samples keeps file order; reorder the columns ourselves afterwards.
        order = np.array([sorted(samples, key=file_samples.index).index(s) for s in samples])
    else:
        samples = file_samples
        order = None
    if not samples:
        vcf.close()
        raise DfmInputError(
            f"The VCF {str(path)!r} has no samples (no genotype columns); subject "
            "embeddings need per-sample genotypes."
        )
    return vcf, samples, order


def _genotype_block(record, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alleles (n, 2) int16, phased (n,) bool)`` for one record."""
    arr = record.genotype.array()
    if arr.shape[1] == 2:  # every sample haploid
        a = arr[:, 0].astype(np.int16)
        return np.stack([a, a], axis=1), np.ones(n_samples, dtype=bool)
    if arr.shape[1] != 3:
        raise DfmInputError(
            f"VCF record {record.CHROM}:{record.POS} has ploidy {arr.shape[1] - 1}; only "
            "haploid and diploid genotypes are supported."
        )
    a = arr[:, 0].astype(np.int16)
    b = arr[:, 1].astype(np.int16)
    haploid = b == -2
    b = np.where(haploid, a, b)
    phased = (arr[:, 2] == 1) | haploid
    return np.stack([a, b], axis=1), phased


def _overlaps(regions_by_contig, contig: str, start: int, end: int) -> bool:
    ivs = regions_by_contig.get(contig)
    if ivs is None:
        return False
    starts, ends = ivs
    i = np.searchsorted(starts, end, side="right")  # regions starting at or before `end`
    return bool(i > 0 and ends[:i].max() >= start)


def _resolve_contigs(
    path: Path,
    candidates: dict[str, list[str]],
    per_contig: dict[str, int],
    declared: set[str],
    n_records: int,
    use_index: bool,
) -> dict[str, str]:
    """Pick the VCF name of each annotation contig; refuse or warn when one has none.

    A name is chosen when it has records, else when the header (or the index)
    declares it. A contig with neither is *missing*: its genes would get no
    variant at all. When the VCF has records elsewhere, that is refused if no
    requested contig was found (every subject would equal the reference) and
    warned about, with counts, otherwise.
    """
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for contig, names in candidates.items():
        name = next((n for n in names if per_contig.get(n)), None)
        if name is None:
            name = next((n for n in names if n in declared), None)
        if name is None:
            missing.append(contig)
            name = names[0]
        elif name != names[0]:
            logger.info("VCF %s: contig %r read as %r.", path.name, contig, name)
        chosen[contig] = name
    elsewhere = per_contig if not use_index else dict.fromkeys(declared, 0)
    if not missing or not elsewhere:
        return chosen
    found_any = len(missing) < len(candidates)
    first = missing[0]
    looked = ", ".join(repr(n) for n in candidates[first])
    if use_index:
        where = f"its index/header lists {len(declared)} other contig(s)"
    else:
        top = sorted(per_contig.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{c!r}: {n}" for c, n in top[:5]) + (" ..." if len(top) > 5 else "")
        where = f"its {n_records} record(s) are on other contigs ({shown})"
    present = sorted(set(per_contig) | declared)
    hint = contig_hint(candidates[first][0], present)
    suggested = re.search(r"contig_map=\{'[^']*': '([^']*)'\}", hint)
    if "prefix" in hint or "mitochondrial" in hint:
        diagnosis = hint.split(" Pass ")[0].split(": pass ")[0].rstrip(".") + "."
        target = suggested.group(1) if suggested else "<VCF name>"
    else:
        shown = ", ".join(repr(c) for c in present[:8]) + (" ..." if len(present) > 8 else "")
        diagnosis = f"The VCF's contigs: {shown}."
        target = present[0] if len(present) == 1 else "<VCF name>"
    hint = (
        f"{diagnosis} If {first!r} is named {target!r} there, map it: "
        f"vcf_contig_map={{{first!r}: {target!r}}} in embed_genes (CLI: --vcf-contig-map "
        f"{first}={target}), contig_map= the same in read_vcf."
    )
    msg = (
        f"{len(missing)} of {len(candidates)} requested contig(s) have no records in the VCF "
        f"{str(path)!r}: {missing[:5]} (e.g. {first!r} looked up as {looked}), while {where}."
    )
    if not found_any:
        raise DfmInputError(f"{msg} Every subject would equal the reference. {hint}")
    warnings.warn(
        f"{msg} The genes on them get no variant. {hint}",
        UserWarning,
        stacklevel=3,
    )
    return chosen


def read_vcf(
    path: str | os.PathLike,
    *,
    regions: Sequence[tuple[str, int, int]] | None = None,
    samples: Sequence[str] | None = None,
    contig_map: dict[str, str] | None = None,
    contig_aliases: Mapping[str, Sequence[str]] | None = None,
    use_index: bool = False,
) -> VariantSet:
    """Read the records of a VCF that overlap ``regions``.

    Parameters
    ----------
    path
        VCF file: plain, gzip or bgzip-compressed.
    regions
        ``(contig, start, end)`` triples, **1-based closed**, with contigs named
        as in the caller's annotation; ``None`` keeps every record. A record
        overlaps a region when its REF span ``POS .. POS+len(REF)-1`` does.
    samples
        Keep these samples, in this order; ``None`` keeps all.
    contig_map
        ``{annotation contig: VCF contig}`` where the names differ (e.g.
        ``{'MT': 'chrM'}``).
    contig_aliases
        ``{annotation contig: [other names]}``: names tried, in order, for an
        annotation contig that is not in ``contig_map`` and has no records
        under its own name (e.g. the FASTA's record name ``'MT_human'`` for the
        GTF's ``'MT'``). The name used is in ``VariantSet.contig_names``.
    use_index
        Query each region through the file's tabix/CSI index instead of reading
        the whole file once (for large whole-genome files). Records outside the
        regions are then not counted. Needs a bgzip-compressed, indexed file.

    Returns
    -------
    VariantSet

    Raises
    ------
    DfmInputError
        Unreadable file, unsorted records (in a full read), an index that is
        missing when ``use_index=True``, a genotype allele index beyond the
        record's ALT alleles, and a region contig with no records (under any of
        its names) while the VCF has records on other contigs and none on any
        requested contig: every subject would then silently equal the
        reference (a ``chr`` prefix or a mitochondrial alias is called out).
        When only some requested contigs have no records (and are not declared
        in the header) a ``UserWarning`` gives the counts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VCF file {str(path)!r} not found. Check the path.")
    contig_map = dict(contig_map or {})
    aliases = {str(k): [str(a) for a in v] for k, v in (contig_aliases or {}).items()}
    with quiet_htslib(f"opening the VCF {path.name}"):
        vcf, samples, order = _open(path, samples)
        n_samples = len(samples)
        try:
            header_contigs = list(vcf.seqnames)
        except Exception:  # pragma: no cover - header without contig lines in some htslib builds
            header_contigs = []
    # Names under which each annotation contig is looked up, in order of preference.
    candidates: dict[str, list[str]] = {}
    by_contig = None
    if regions is not None:
        grouped: dict[str, list[tuple[int, int]]] = {}
        for contig, start, end in regions:
            names = candidates.get(contig)
            if names is None:
                if contig in contig_map:
                    names = [contig_map[contig]]
                else:
                    names = list(dict.fromkeys([contig, *aliases.get(contig, [])]))
                if use_index and header_contigs:
                    # an indexed query can only ask one name: the first the file knows
                    names = [next((n for n in names if n in header_contigs), names[0])]
                candidates[contig] = names
            for vname in names:
                grouped.setdefault(vname, []).append((int(start), int(end)))
        by_contig = {}
        for c, ivs in grouped.items():
            ivs.sort()
            by_contig[c] = (np.array([s for s, _ in ivs]), np.array([e for _, e in ivs]))

    contigs, positions, refs, alts, ids, gts, phs = [], [], [], [], [], [], []
    n_records = 0
    n_outside = 0
    seen_contigs: list[str] = []

    per_contig: dict[str, int] = {}
    column_samples = list(samples)  # sample of each genotype column, in file order
    if order is not None:
        for k, o in enumerate(order.tolist()):
            column_samples[o] = samples[k]

    def keep(record) -> None:
        block, phased = _genotype_block(record, n_samples)
        n_alts = len(record.ALT)
        if block.max(initial=-1) > n_alts:
            s = int(np.flatnonzero((block > n_alts).any(axis=1))[0])
            sample = column_samples[s]
            raise DfmInputError(
                f"VCF record {record.CHROM}:{record.POS} ({record.REF}>"
                f"{','.join(record.ALT) or '.'}) gives sample {sample!r} allele "
                f"{int(block[s].max())}, but the record has only {n_alts} ALT allele(s). "
                f"The file {str(path)!r} is malformed (e.g. records split without updating "
                "the genotypes); fix it, e.g. with bcftools norm -m +any."
            )
        contigs.append(record.CHROM)
        positions.append(record.POS)
        refs.append(record.REF)
        alts.append(tuple(record.ALT))
        ids.append(record.ID or ".")
        gts.append(block)
        phs.append(phased)

    try:
        with quiet_htslib(f"reading the VCF {path.name}"):
            if use_index:
                if by_contig is None:
                    raise DfmInputError("use_index=True needs regions= to query.")
                if not any(Path(str(path) + suffix).is_file() for suffix in (".tbi", ".csi")):
                    raise DfmInputError(
                        f"The VCF {str(path)!r} has no index (.tbi or .csi beside it). Sort, "
                        "bgzip and index it (bcftools sort -Oz -o x.vcf.gz x.vcf && "
                        "bcftools index -t x.vcf.gz), or pass use_index=False to read it whole."
                    )
                done = set()
                for c, (starts, ends) in by_contig.items():
                    if header_contigs and c not in header_contigs:
                        continue  # nothing to find; reported by _resolve_contigs
                    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                        try:
                            records = vcf(f"{c}:{s}-{e}")
                        except Exception as err:
                            raise DfmInputError(
                                f"Index query {c}:{s}-{e} failed on {str(path)!r}: {err}."
                            ) from None
                        with warnings.catch_warnings():
                            # cyvcf2 warns for a region without records: a gene without
                            # variants, which is no news.
                            warnings.filterwarnings(
                                "ignore", message="no intervals found", category=UserWarning
                            )
                            records = list(records)
                        for record in records:
                            key = (record.CHROM, record.POS, record.REF, tuple(record.ALT))
                            if key in done:
                                continue
                            done.add(key)
                            n_records += 1
                            per_contig[record.CHROM] = per_contig.get(record.CHROM, 0) + 1
                            keep(record)
                n_outside = None
            else:
                last_contig, last_pos = None, 0
                for record in vcf:
                    n_records += 1
                    chrom, pos = record.CHROM, record.POS
                    if chrom != last_contig:
                        if chrom in seen_contigs:
                            raise DfmInputError(
                                f"The VCF {str(path)!r} is not sorted: contig {chrom!r} appears "
                                f"again at record {n_records} after other contigs. Sort it "
                                "(bcftools sort) first."
                            )
                        seen_contigs.append(chrom)
                        last_contig, last_pos = chrom, 0
                    if pos < last_pos:
                        raise DfmInputError(
                            f"The VCF {str(path)!r} is not sorted: {chrom}:{pos} comes after "
                            f"{chrom}:{last_pos} (record {n_records}). Sort it (bcftools sort) first."
                        )
                    last_pos = pos
                    per_contig[chrom] = per_contig.get(chrom, 0) + 1
                    end = pos + len(record.REF) - 1
                    if by_contig is None or _overlaps(by_contig, chrom, pos, end):
                        keep(record)
                    else:
                        n_outside += 1
    finally:
        vcf.close()

    contig_names: dict[str, str] = {}
    if by_contig is not None:
        contig_names = _resolve_contigs(
            path, candidates, per_contig, set(header_contigs), n_records, use_index
        )
        used = set(contig_names.values())
        if any(c not in used for c in contigs):  # records under a name not chosen
            sel = [k for k, c in enumerate(contigs) if c in used]
            contigs, positions = [contigs[k] for k in sel], [positions[k] for k in sel]
            refs, alts, ids = [refs[k] for k in sel], [alts[k] for k in sel], [ids[k] for k in sel]
            gts, phs = [gts[k] for k in sel], [phs[k] for k in sel]
            n_dropped = n_records - len(sel) - (n_outside or 0)
            if n_outside is not None:
                n_outside += n_dropped
            logger.info(
                "VCF %s: %d record(s) under another name of a requested contig ignored "
                "(names used: %s).",
                path.name,
                n_dropped,
                contig_names,
            )

    if gts:
        genotypes = np.stack(gts).astype(np.int16)
        phased = np.stack(phs)
    else:
        genotypes = np.zeros((0, n_samples, 2), dtype=np.int16)
        phased = np.zeros((0, n_samples), dtype=bool)
    if order is not None:
        genotypes = genotypes[:, order]
        phased = phased[:, order]
    return VariantSet(
        path=str(path),
        samples=list(samples),
        contig=np.asarray(contigs, dtype=object),
        pos=np.asarray(positions, dtype=np.int64),
        ref=refs,
        alts=alts,
        ids=ids,
        genotypes=genotypes,
        phased=phased,
        counts={"n_records": n_records, "n_kept": len(positions), "n_outside": n_outside},
        contig_names=contig_names,
    )
