"""Random access to an indexed FASTA: plain files through pyfaidx, bgzip files through pysam.

:class:`IndexedFasta` is the one place that opens a FASTA for random access
(:func:`diffbio_sc.io.read_fasta` with ``regions=`` and
:class:`diffbio_sc.io.Genome` both use it). It

* detects the compression from the file's first bytes: plain text, bgzip
  (gzip blocks with the ``BC`` extra field) or plain gzip, which has no random
  access and is refused with the fix (recompress with ``bgzip``);
* uses the index beside the file (``.fai``, plus ``.gzi`` for bgzip) only when
  it is at least as new as the FASTA and does not point past the end of it; a
  missing or stale index is built afresh in a private temporary directory
  (removed on :meth:`close`), so nothing is written next to the user's
  reference;
* reads bgzip files with pysam (an optional dependency: ``pip install pysam``),
  because pyfaidx needs BioPython for them.

Coordinates here are 0-based half-open (Python slices); the callers convert.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .._validate import DfmInputError

__all__ = ["IndexedFasta", "fasta_compression"]

logger = logging.getLogger("diffbio_sc")


def fasta_compression(path: str | os.PathLike) -> str:
    """Return ``'none'``, ``'bgzip'`` or ``'gzip'`` from the first bytes of ``path``."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    if head[:2] != b"\x1f\x8b":
        return "none"
    # BGZF: FLG.FEXTRA set and an extra subfield 'BC' (SAM specification, section 4.1).
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzip"
    return "gzip"


def _fresh(index: Path, fasta: Path) -> bool:
    """Return whether ``index`` exists and is not older than ``fasta``."""
    return index.is_file() and index.stat().st_mtime >= fasta.stat().st_mtime


def _fai_fits(fai: Path, size: int) -> bool:
    """Return whether every record of a plain-FASTA ``.fai`` ends within ``size`` bytes."""
    try:
        with open(fai) as fh:
            for line in fh:
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 5:
                    return False
                length, offset, bases, width = (int(x) for x in fields[1:5])
                if bases <= 0 or width < bases:
                    return False
                full, rest = divmod(length, bases)
                if offset + full * width + rest > size:
                    return False
    except (OSError, ValueError):
        return False
    return True


class IndexedFasta:
    """An indexed FASTA open for random access (plain or bgzip).

    Parameters
    ----------
    path
        The FASTA file.
    upper
        Return upper-case sequences (soft-masked bases upper-cased).

    Attributes
    ----------
    lengths
        ``{record name: length}`` in file order.
    compression
        ``'none'`` or ``'bgzip'``.
    rebuilt
        Why the index was built privately (``'missing'``, ``'stale'``) or ``None``
        when the index beside the file was used.
    """

    def __init__(self, path: str | os.PathLike, *, upper: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"FASTA file {str(self.path)!r} not found. Check the path.")
        self._upper = upper
        self._tmpdir: str | None = None
        self._handle = None
        self.rebuilt: str | None = None
        self.compression = fasta_compression(self.path)
        if self.compression == "gzip":
            raise DfmInputError(
                f"{str(self.path)!r} is gzip-compressed but not with bgzip, so it has no random "
                "access. Recompress it with bgzip (gunzip -c x.fa.gz | bgzip > x.fa.bgz), or "
                "decompress it."
            )
        try:
            if self.compression == "bgzip":
                self._open_bgzip()
            else:
                self._open_plain()
        except BaseException:
            self.close()
            raise
        if not self.lengths:
            self.close()
            raise DfmInputError(f"FASTA {str(self.path)!r} holds no records.")

    # -- opening
    def _private(self, *suffixes: str) -> list[str]:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="dfm-fai-")
        return [os.path.join(self._tmpdir, self.path.name + s) for s in suffixes]

    def _note_stale(self, index: Path) -> None:
        self.rebuilt = "stale"
        logger.warning(
            "The index %s does not match %s (older than the FASTA, or pointing past its end); "
            "a fresh index is built in a temporary directory instead. Refresh it with "
            "'samtools faidx %s'.",
            index,
            self.path,
            self.path,
        )

    def _open_plain(self) -> None:
        import pyfaidx

        fai = Path(str(self.path) + ".fai")
        if fai.is_file() and _fresh(fai, self.path) and _fai_fits(fai, self.path.stat().st_size):
            index, rebuild = str(fai), False
        else:
            if fai.is_file():
                self._note_stale(fai)
            else:
                self.rebuilt = "missing"
            (index,) = self._private(".fai")
            rebuild = True
        try:
            self._handle = pyfaidx.Faidx(
                str(self.path), indexname=index, rebuild=rebuild, as_raw=True
            )
        except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat) as err:
            raise DfmInputError(
                f"Could not index the FASTA {str(self.path)!r}: {err} Every line of a record "
                "but its last must have the same length for random access; rewrap it "
                "(e.g. seqkit seq -w 60) and try again."
            ) from None
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise DfmInputError(
                f"Could not index the FASTA {str(self.path)!r}: {err}. Check that it is a "
                "FASTA file."
            ) from None
        self.lengths = {name: int(rec.rlen) for name, rec in self._handle.index.items()}

    def _open_bgzip(self) -> None:
        try:
            import pysam
        except ImportError:
            raise DfmInputError(
                f"{str(self.path)!r} is bgzip-compressed; random access to it needs pysam. "
                "Install it (pip install pysam, or diffbio_sc[io]) or decompress the file "
                "(bgzip -d)."
            ) from None
        fai = Path(str(self.path) + ".fai")
        gzi = Path(str(self.path) + ".gzi")
        if _fresh(fai, self.path) and _fresh(gzi, self.path):
            index, index_gz = str(fai), str(gzi)
        else:
            if fai.is_file() or gzi.is_file():
                self._note_stale(fai if fai.is_file() else gzi)
            else:
                self.rebuilt = "missing"
            index, index_gz = self._private(".fai", ".gzi")
        from ._hts import quiet_htslib

        notes: list[str] = []
        try:
            with quiet_htslib(f"indexing {self.path.name}") as notes:
                if self.rebuilt is not None:
                    pysam.faidx(str(self.path), "--fai-idx", index, "--gzi-idx", index_gz)
                self._handle = pysam.FastaFile(
                    str(self.path), filepath_index=index, filepath_index_compressed=index_gz
                )
        except (OSError, ValueError, pysam.utils.SamtoolsError) as err:
            reason = "; ".join(notes[:2]) or str(err).strip()
            raise DfmInputError(
                f"Could not index the bgzip FASTA {str(self.path)!r} ({reason}). Check that it "
                "is a FASTA file compressed with bgzip, not truncated, and that every line of a "
                "record but its last has the same length (rewrap it, e.g. seqkit seq -w 60)."
            ) from None
        self.lengths = dict(
            zip(self._handle.references, (int(n) for n in self._handle.lengths), strict=True)
        )

    # -- access
    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._handle is None

    def fetch(self, name: str, start: int, end: int) -> str:
        """Bases ``start:end`` (0-based half-open) of record ``name``."""
        if self._handle is None:
            raise DfmInputError(
                f"The FASTA {str(self.path)!r} is closed; open it again (use it inside a "
                "'with' block, or fetch before close())."
            )
        if self.compression == "bgzip":
            seq = self._handle.fetch(name, int(start), int(end))
        else:
            seq = str(self._handle.fetch(name, int(start) + 1, int(end)))
        if len(seq) != end - start:
            raise DfmInputError(
                f"{str(self.path)!r} returned {len(seq)} bases for {name}:{start + 1}-{end} "
                f"where {end - start} were asked; the file or its index is damaged. Delete the "
                "index beside it and try again."
            )
        return seq.upper() if self._upper else seq

    def close(self) -> None:
        """Close the file and remove a privately built index."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> IndexedFasta:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
