"""FASTA files and in-memory sequences -> AnnData (one observation per sequence).

:func:`read_fasta` streams a plain or gzipped FASTA file record by record (the
memory used while parsing is bounded by the largest record, whatever the file
size), validates every record with a vectorised byte lookup and returns an
AnnData with no variables: ``obs_names`` are the record ids and the sequences
are in ``.obs['sequence']``. ``regions=`` reads only the named intervals of an
indexed genome (random access through :mod:`diffbio_sc.io._faidx`: a fresh
``.fai`` index beside the file is used when present, else one is built in a
temporary directory; bgzip files are read through pysam).
:func:`sequences_to_adata` does the same for a list, a mapping, a Series or a
DataFrame of sequences.

Rules, applied the same way by both:

* Lowercase (soft-masked) bases are accepted and stored uppercase unless
  ``keep_case=True``.
* IUPAC ambiguity codes (``N R Y S W K M B D H V``): ``ambiguous='keep'``
  stores them as written (one-hot codes then spread probability over the bases
  a code stands for, see :mod:`diffbio_sc.ops._sequence`), ``'N'`` replaces each
  by ``N``, ``'error'`` refuses them.
* ``U`` in DNA, ``T`` in RNA and any other character are errors naming the
  record and the 1-based position.
* Empty records and duplicate ids are errors (``duplicates='make_unique'``
  appends ``-1``, ``-2``, ... to repeated ids instead).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys, _uns
from .._validate import DfmInputError, check_bool, check_choice
from ..ops._sequence import ALPHABETS, AMBIGUOUS_CODES, alphabet_bases, valid_table

__all__ = ["read_fasta", "sequences_to_adata", "SEQUENCE_KEY"]

SEQUENCE_KEY = _keys.SEQUENCE_KEY
_COORD = re.compile(
    r"^(?P<chrom>[^:\s]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)"
    r"(?:\((?P<strand>[+\-.])\)|[:_](?P<strand2>[+\-]))?$"
)
_AMBIG_TABLE = np.zeros(256, dtype=bool)
for _c in AMBIGUOUS_CODES.replace("N", ""):
    _AMBIG_TABLE[ord(_c)] = _AMBIG_TABLE[ord(_c.lower())] = True


def _open(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _iter_records(path: Path) -> Iterator[tuple[str, str, bytes, int]]:
    """Yield ``(id, description, sequence bytes, line number of the header)``."""
    try:
        yield from _iter_lines(path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DfmInputError(
            f"{path} is a damaged gzip file ({err}); it was probably cut short while "
            "downloading or copying. Download or compress it again (gzip -t checks a file)."
        ) from None


def _iter_lines(path: Path) -> Iterator[tuple[str, str, bytes, int]]:
    """Parse the records for :func:`_iter_records` (which reports gzip damage clearly)."""
    name = desc = None
    parts: list[bytes] = []
    header_line = 0
    with _open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.startswith(b">"):
                if name is not None:
                    yield name, desc, b"".join(parts), header_line
                header = line[1:].decode("utf-8", errors="replace").strip()
                fields = header.split(None, 1)
                if not fields:
                    raise DfmInputError(
                        f"{path}: the header on line {lineno} has no id. Every record needs "
                        "'>id [description]'."
                    )
                name = fields[0]
                desc = fields[1] if len(fields) > 1 else ""
                parts = []
                header_line = lineno
            else:
                chunk = line.strip()
                if not chunk:
                    continue
                if name is None:
                    raise DfmInputError(
                        f"{path} is not a FASTA file: line {lineno} holds sequence data before "
                        "any '>' header."
                    )
                if chunk.startswith(b";"):
                    continue
                parts.append(chunk)
    if name is not None:
        yield name, desc, b"".join(parts), header_line


def _clean(
    seq: bytes,
    name: str,
    *,
    alphabet: str,
    ambiguous: str,
    keep_case: bool,
    valid: np.ndarray,
    where: str,
) -> str:
    """Validate one record (vectorised) and apply the IUPAC and case rules."""
    if not seq:
        raise DfmInputError(
            f"Sequence {name!r}{where} is empty. Remove empty records before reading."
        )
    arr = np.frombuffer(seq, dtype=np.uint8)
    bad = ~valid[arr]
    if bad.any():
        pos = int(np.argmax(bad))
        ch = chr(arr[pos])
        if alphabet == "dna" and ch in "uU":
            hint = " This looks like RNA: pass alphabet='rna'."
        elif alphabet == "rna" and ch in "tT":
            hint = " This looks like DNA: pass alphabet='dna'."
        else:
            hint = (
                f" Allowed: {alphabet_bases(alphabet)} and the IUPAC codes {AMBIGUOUS_CODES} "
                "(upper or lower case)."
            )
        raise DfmInputError(
            f"Invalid character {ch!r} in sequence {name!r}{where} at position {pos + 1}.{hint}"
        )
    amb = _AMBIG_TABLE[arr]
    if ambiguous == "error" and amb.any():
        pos = int(np.argmax(amb))
        raise DfmInputError(
            f"Sequence {name!r}{where} has the ambiguity code {chr(arr[pos])!r} at position "
            f"{pos + 1}; pass ambiguous='keep' or 'N' to accept IUPAC codes."
        )
    if ambiguous == "N" and amb.any():
        arr = arr.copy()
        arr[amb] = ord("N")
    text = arr.tobytes().decode("ascii") if ambiguous == "N" else seq.decode("ascii")
    return text if keep_case else text.upper()


def _cleaner(alphabet: str, ambiguous: str, keep_case: bool):
    """Return ``clean(raw, name, where=...)`` applying :func:`_clean` with these rules."""
    return partial(
        _clean,
        alphabet=alphabet,
        ambiguous=ambiguous,
        keep_case=keep_case,
        valid=valid_table(alphabet),
    )


def _check_options(alphabet, ambiguous, duplicates, keep_case, parse_coordinates):
    check_choice("alphabet", alphabet, ALPHABETS)
    check_choice("ambiguous", ambiguous, ("keep", "N", "error"))
    check_choice("duplicates", duplicates, ("error", "make_unique"))
    check_bool("keep_case", keep_case)
    check_bool("parse_coordinates", parse_coordinates)


def _build(
    names: list[str],
    seqs: list[str],
    *,
    duplicates: str,
    parse_coordinates: bool,
    extra: Mapping[str, Sequence] | None,
    uns: dict,
    where: str,
):
    """Assemble the AnnData (duplicate and empty checks included)."""
    from anndata import AnnData

    if not names:
        raise DfmInputError(f"No sequences{where}; nothing to read.")
    index = pd.Index(names, dtype=object)
    if not index.is_unique:
        dup = index[index.duplicated()].unique()
        if duplicates == "error":
            shown = ", ".join(repr(str(d)) for d in dup[:5])
            raise DfmInputError(
                f"{len(dup)} duplicate sequence id(s){where}, e.g. {shown}. Ids must be "
                "unique: fix the headers or pass duplicates='make_unique'."
            )
        import warnings

        from anndata.utils import make_index_unique

        with warnings.catch_warnings():  # anndata warns when made-up names resemble others
            warnings.simplefilter("ignore", UserWarning)
            index = make_index_unique(index, join="-")
    obs = pd.DataFrame(index=index.astype(str))
    obs[SEQUENCE_KEY] = pd.Series(seqs, index=obs.index, dtype=object)
    obs["length"] = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    for key, values in (extra or {}).items():
        obs[key] = list(values)
    if parse_coordinates:
        matches = [_COORD.match(n) for n in names]
        if all(m is not None for m in matches):
            obs["chrom"] = [m["chrom"] for m in matches]
            obs["start"] = [int(m["start"].replace(",", "")) for m in matches]
            obs["end"] = [int(m["end"].replace(",", "")) for m in matches]
            obs["strand"] = [m["strand"] or m["strand2"] or "." for m in matches]
    adata = AnnData(obs=obs)
    _uns.set_section(adata, _keys.UNS_SEQUENCES, uns)
    return adata


def read_fasta(
    path: str | os.PathLike,
    *,
    alphabet: str = "dna",
    ambiguous: str = "keep",
    keep_case: bool = False,
    duplicates: str = "error",
    parse_coordinates: bool = True,
    regions: Sequence[str] | None = None,
):
    """Read a FASTA file into an AnnData with one observation per record.

    Parameters
    ----------
    path
        A FASTA file, plain or gzipped (detected from the content), records
        over one or many lines.
    alphabet
        ``'dna'`` (``ACGT``) or ``'rna'`` (``ACGU``); IUPAC codes allowed in both.
    ambiguous
        IUPAC ambiguity codes: ``'keep'`` (default), ``'N'`` (replace by ``N``)
        or ``'error'``.
    keep_case
        Keep lowercase (soft-masked) letters; by default sequences are upper-cased.
    duplicates
        ``'error'`` (default) or ``'make_unique'`` for repeated record ids.
    parse_coordinates
        When every id looks like ``chrom:start-end``, optionally followed by
        ``(+)``/``(-)`` or ``:+``/``:-`` (samtools / bedtools style), add
        ``chrom``, ``start``, ``end`` and ``strand`` columns, the numbers as
        written in the ids.
    regions
        Read only these intervals, e.g. ``['chr22:32000001-32000100']``
        (samtools convention: 1-based, closed), by indexed random access; the
        records are named by the region strings. The file must be plain
        (read through pyfaidx) or bgzip-compressed (read through pysam, which
        must then be installed); a plain-gzip file is refused with the fix
        (recompress with ``bgzip``). The ``.fai`` (and ``.gzi``) beside the
        file is used when it is not older than the FASTA; otherwise an index
        is built in a temporary directory (with a warning for a stale one).

    Returns
    -------
    AnnData with ``n_vars == 0``: ``obs_names`` the record ids (the first word
    of each header), ``.obs['sequence']``, ``.obs['length']``,
    ``.obs['description']`` (rest of the header), optionally
    ``chrom/start/end/strand``, and ``.uns['dfm']['sequences']`` (source file,
    alphabet, IUPAC rule).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DfmInputError
        For an invalid character (naming the record and 1-based position),
        ``U`` in DNA / ``T`` in RNA, an empty record, duplicate ids, a file
        without records, a damaged (truncated) gzip file, or ``regions=`` on a
        plain-gzip file.
    """
    _check_options(alphabet, ambiguous, duplicates, keep_case, parse_coordinates)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"FASTA file {str(p)!r} not found.")
    clean = _cleaner(alphabet, ambiguous, keep_case)
    where = f" in {p.name}"
    uns = {
        "source": str(p),
        "alphabet": alphabet,
        "ambiguous": ambiguous,
        "keep_case": bool(keep_case),
    }
    if regions is not None:
        records = ((name, "", raw, where) for name, raw in _read_regions(p, regions))
        uns["regions"] = "samtools style, 1-based closed"
    else:
        records = (
            (name, desc, raw, f"{where} (header on line {line})")
            for name, desc, raw, line in _iter_records(p)
        )
    names: list[str] = []
    seqs: list[str] = []
    descs: list[str] = []
    for name, desc, raw, place in records:
        names.append(name)
        descs.append(desc)
        seqs.append(clean(raw, name, where=place))
    return _build(
        names,
        seqs,
        duplicates=duplicates,
        parse_coordinates=parse_coordinates,
        extra={"description": descs},
        uns=uns,
        where=where,
    )


def _read_regions(path: Path, regions: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """Fetch ``chrom:start-end`` regions (1-based, closed) through :class:`IndexedFasta`."""
    from ._faidx import IndexedFasta

    if isinstance(regions, str):
        regions = [regions]
    parsed = []
    for r in regions:
        m = _COORD.match(str(r))
        if m is None or m["strand"] or m["strand2"]:
            raise DfmInputError(
                f"Region {r!r} is not 'chrom:start-end' (1-based, closed, e.g. 'chr1:101-200')."
            )
        start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
        if start < 1 or end < start:
            raise DfmInputError(f"Region {r!r} needs 1 <= start <= end.")
        parsed.append((str(r), m["chrom"], start, end))
    with IndexedFasta(path, upper=False) as fa:
        for name, chrom, start, end in parsed:
            if chrom not in fa.lengths:
                raise DfmInputError(
                    f"Region {name!r}: sequence {chrom!r} is not in {path.name}; available: "
                    f"{list(fa.lengths)[:10]}."
                )
            length = fa.lengths[chrom]
            if end > length:
                raise DfmInputError(
                    f"Region {name!r} ends past the end of {chrom!r} ({length} bp)."
                )
            yield name, fa.fetch(chrom, start - 1, end).encode("ascii")


def sequences_to_adata(
    data,
    *,
    ids: Sequence[str] | None = None,
    sequence_column: str = SEQUENCE_KEY,
    id_column: str | None = None,
    alphabet: str = "dna",
    ambiguous: str = "keep",
    keep_case: bool = False,
    duplicates: str = "error",
    parse_coordinates: bool = True,
):
    """Build a sequence AnnData from a list, a mapping, a Series or a DataFrame.

    Parameters
    ----------
    data
        A list of strings (ids from ``ids`` or ``seq0, seq1, ...``), a mapping
        id -> sequence, a pandas Series (ids from its index) or a DataFrame
        (sequences in ``sequence_column``; ids in ``id_column`` or the index;
        the other columns are kept in ``.obs``).
    ids
        Ids for a list.
    sequence_column, id_column
        DataFrame columns.
    alphabet, ambiguous, keep_case, duplicates, parse_coordinates
        As in :func:`read_fasta`.

    Returns
    -------
    AnnData laid out as by :func:`read_fasta` (``.obs['sequence']``,
    ``.obs['length']``, optional coordinates, ``.uns['dfm']['sequences']``).
    """
    _check_options(alphabet, ambiguous, duplicates, keep_case, parse_coordinates)
    extra: dict[str, list] = {}
    if isinstance(data, pd.DataFrame):
        if sequence_column not in data.columns:
            raise DfmInputError(
                f"Column {sequence_column!r} not found; available: {list(data.columns)}. "
                "Pass sequence_column=."
            )
        if id_column is not None and id_column not in data.columns:
            raise DfmInputError(f"id_column {id_column!r} not found in the DataFrame.")
        names = [str(x) for x in (data[id_column] if id_column else data.index)]
        seqs = list(data[sequence_column])
        for col in data.columns:
            if col not in (sequence_column, id_column, "length"):
                extra[str(col)] = list(data[col])
    elif isinstance(data, pd.Series):
        names, seqs = [str(x) for x in data.index], list(data)
    elif isinstance(data, Mapping):
        names, seqs = [str(x) for x in data], list(data.values())
    elif isinstance(data, (list, tuple, np.ndarray)):
        seqs = list(data)
        if ids is None:
            names = [f"seq{i}" for i in range(len(seqs))]
        else:
            names = [str(x) for x in ids]
            if len(names) != len(seqs):
                raise DfmInputError(f"{len(names)} ids for {len(seqs)} sequences.")
    elif isinstance(data, str):
        raise TypeError(
            "data is a single string; pass a list of sequences, or use dfm.io.read_fasta "
            "for a file."
        )
    else:
        raise TypeError(
            f"data must be a list, mapping, Series or DataFrame of sequences, got "
            f"{type(data).__name__}."
        )
    clean = _cleaner(alphabet, ambiguous, keep_case)
    cleaned = []
    for name, s in zip(names, seqs, strict=True):
        if not isinstance(s, str):
            raise TypeError(f"Sequence {name!r} is a {type(s).__name__}, expected a string.")
        try:
            raw = s.encode("ascii")
        except UnicodeEncodeError:
            pos = next(j for j, c in enumerate(s) if not c.isascii())
            raise DfmInputError(
                f"Invalid character {s[pos]!r} in sequence {name!r} at position {pos + 1}."
            ) from None
        cleaned.append(clean(raw, name, where=""))
    uns = {
        "source": "in-memory " + type(data).__name__,
        "alphabet": alphabet,
        "ambiguous": ambiguous,
        "keep_case": bool(keep_case),
    }
    return _build(
        names,
        cleaned,
        duplicates=duplicates,
        parse_coordinates=parse_coordinates,
        extra=extra,
        uns=uns,
        where="",
    )
