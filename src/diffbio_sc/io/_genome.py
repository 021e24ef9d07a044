"""Reference genome access: strand-aware, spliced extraction from an indexed FASTA.

A thin layer over :class:`diffbio_sc.io._faidx.IndexedFasta` (pyfaidx for
plain files, pysam for bgzip). Coordinates taken here are **1-based,
closed** (as in GTF and VCF); the conversion to 0-based half-open slices
happens only inside :meth:`Genome.fetch`.

The FASTA index (``.fai``) is used when it sits beside the FASTA and is not
older than it. Otherwise (missing or stale) it is built in a private temporary
directory that is removed when the genome is closed, so nothing is ever written
next to the user's reference (which may be read-only).
"""

from __future__ import annotations

import hashlib
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._validate import DfmInputError
from ._gtf import GeneModel

__all__ = ["Genome", "reverse_complement", "contig_hint"]

# IUPAC complement (R<->Y, K<->M, B<->V, D<->H; S, W, N self-complementary), both cases.
_COMPLEMENT = str.maketrans("ACGTUNRYKMBVDHSWacgtunrykmbvdhsw", "TGCAANYRMKVBHDSWtgcaanyrmkvbhdsw")


def reverse_complement(seq: str) -> str:
    """Return the reverse complement of a DNA string (IUPAC codes complemented, case kept)."""
    return seq.translate(_COMPLEMENT)[::-1]


def contig_hint(name: str, available) -> str:
    """Explain why ``name`` is not among ``available`` contigs, e.g. a 'chr' prefix mismatch."""
    available = list(available)
    if name.startswith("chr") and name[3:] in available:
        return (
            f"The names differ by a 'chr' prefix: {name!r} here, {name[3:]!r} in the other "
            f"file. Pass contig_map={{{name!r}: {name[3:]!r}}} (or rename the contigs)."
        )
    if "chr" + name in available:
        return (
            f"The names differ by a 'chr' prefix: {name!r} here, {'chr' + name!r} in the other "
            f"file. Pass contig_map={{{name!r}: {'chr' + name!r}}} (or rename the contigs)."
        )
    if name in ("MT", "chrM", "chrMT", "M") and any(
        a in ("MT", "chrM", "chrMT", "M") for a in available
    ):
        other = next(a for a in available if a in ("MT", "chrM", "chrMT", "M"))
        return f"The mitochondrial contig is named {other!r} there: pass contig_map={{{name!r}: {other!r}}}."
    shown = ", ".join(repr(a) for a in available[:8]) + (" ..." if len(available) > 8 else "")
    return f"Available contigs: {shown}. Map names with contig_map={{{name!r}: '<name there>'}}."


class Genome:
    """An indexed reference FASTA with strand-aware, 1-based closed extraction.

    Parameters
    ----------
    path
        FASTA file (plain, or bgzip-compressed with its ``.gzi``).
    contig_map
        ``{name used in the GTF/VCF: record name in the FASTA}`` for contigs whose
        names differ (e.g. ``{'MT': 'MT_human'}``, ``{'chr22': '22'}``).
    version
        A label for the reference (e.g. ``'GRCh38.p14'``); stored as
        ``reference_version``. ``None`` uses ``'<file name>:<digest of the contig
        names and lengths>'``, which identifies the assembly without hashing
        gigabytes.

    Notes
    -----
    Sequences are returned upper-case (soft-masked lowercase bases are
    upper-cased). Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        contig_map: Mapping[str, str] | None = None,
        version: str | None = None,
    ) -> None:
        from ._faidx import IndexedFasta

        self.path = Path(path)
        self._fasta = None
        self._fasta = IndexedFasta(self.path, upper=True)
        self.lengths = dict(self._fasta.lengths)
        self.contig_map = dict(contig_map or {})
        bad = {k: v for k, v in self.contig_map.items() if v not in self.lengths}
        if bad:
            self.close()
            raise DfmInputError(
                f"contig_map points to contigs not in {str(self.path)!r}: {bad}. "
                f"FASTA contigs: {list(self.lengths)[:10]}."
            )
        digest = hashlib.sha256(
            "\n".join(f"{k}\t{v}" for k, v in self.lengths.items()).encode()
        ).hexdigest()[:16]
        self.version = str(version) if version is not None else f"{self.path.name}:{digest}"

    # -- lifecycle
    def close(self) -> None:
        """Close the FASTA and remove a privately built index."""
        fasta = getattr(self, "_fasta", None)
        if fasta is not None:
            fasta.close()
            self._fasta = None

    @property
    def _tmpdir(self) -> str | None:
        """The private directory of an index built for this genome (``None`` if none)."""
        return self._fasta._tmpdir if self._fasta is not None else None

    def __enter__(self) -> Genome:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- access
    def resolve(self, contig: str) -> str:
        """Return the FASTA record name for ``contig`` or raise naming the fix."""
        name = self.contig_map.get(contig, contig)
        if name not in self.lengths:
            raise DfmInputError(
                f"Contig {contig!r} is not in the FASTA {str(self.path)!r}. "
                + contig_hint(contig, self.lengths)
            )
        return name

    def fetch(self, contig: str, start: int, end: int, strand: str = "+") -> str:
        """Return bases ``start..end`` (1-based, closed) of ``contig``.

        On the minus strand the reverse complement is returned.
        """
        if self._fasta is None:
            raise DfmInputError(
                f"The genome {str(self.path)!r} is closed; fetch inside its 'with' block or "
                "before close(), or open a new Genome."
            )
        for label, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise DfmInputError(
                    f"{label} must be a whole number (1-based closed coordinate), got "
                    f"{value!r} of type {type(value).__name__}."
                )
        if strand not in ("+", "-"):
            raise DfmInputError(f"strand must be '+' or '-', got {strand!r}.")
        start, end = int(start), int(end)
        name = self.resolve(contig)
        length = self.lengths[name]
        if not (1 <= start <= end <= length):
            raise DfmInputError(
                f"Interval {contig}:{start}-{end} is outside contig {name!r} "
                f"(1..{length}; 1-based closed coordinates). Does the annotation match "
                "this reference assembly?"
            )
        seq = self._fasta.fetch(name, start - 1, end)
        return reverse_complement(seq) if strand == "-" else seq

    def extract(self, model: GeneModel) -> str:
        """Spliced sequence of a gene model, 5' to 3' on its own strand.

        The intervals are read on the plus strand in genomic order and joined;
        a minus-strand feature is then reverse-complemented as a whole, which
        puts its exons in transcript order.
        """
        return self.orient(self.plus_pieces(model), model.strand)

    def plus_pieces(self, model: GeneModel) -> list[str]:
        """Plus-strand bases of each interval of ``model`` (genomic order)."""
        return [self.fetch(model.seqname, s, e, "+") for s, e in model.intervals]

    @staticmethod
    def orient(pieces: list[str], strand: str) -> str:
        """Join plus-strand pieces and reverse-complement for the minus strand."""
        seq = "".join(pieces)
        return reverse_complement(seq) if strand == "-" else seq


def sequence_digest(seq: str) -> str:
    """Stable content id of a sequence (``'seq_'`` + 20 hex digits of its SHA-256)."""
    return "seq_" + hashlib.sha256(seq.encode("ascii")).hexdigest()[:20]


def base_codes(seq: str) -> np.ndarray:
    """Map A, C, G, T to 0..3 and anything else to -1 (vectorised)."""
    lut = np.full(256, -1, dtype=np.int8)
    for i, b in enumerate(b"ACGT"):
        lut[b] = i
        lut[b + 32] = i
    return lut[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
