"""Shared pieces of the embedding readers and writers: formats, ids, sanity checks.

Every format module (``_arrays``, ``_h5ad``, ``_table``) uses these; the id
entry of a file is chosen by :func:`choose_ids_key` and a file without ids is
refused by :func:`require_ids` (written once here for every format).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..._validate import DfmInputError
from .._ids import ids_to_str  # noqa: F401  (re-exported: the one id normaliser)

FORMATS = ("npz", "npy", "h5ad", "csv", "tsv", "parquet", "safetensors")
MAX_DIMS = 65_536

ID_ARRAYS = ("cell_ids", "sequence_ids")
ID_COLUMNS = ("cell_id", "sequence_id")

INT_NAME = re.compile(r"^(0|[1-9][0-9]*)$")
SUFFIXES = {
    ".npz": "npz",
    ".npy": "npy",
    ".h5ad": "h5ad",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".safetensors": "safetensors",
}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
SAFE_ID_FIX = (
    "Re-save the ids as a unicode string array, e.g. "
    "np.savez(path, embeddings=emb, cell_ids=np.asarray(ids, dtype=str)), "
    "or with dfm.io.write_embeddings(path, emb, ids)."
)


@dataclass(frozen=True, eq=False)
class EmbeddingArtifact:
    """Embeddings read from a file by :func:`read_embeddings`.

    Attributes
    ----------
    embeddings
        Float array of shape ``(n_rows, n_dims)`` in file row order.
    ids
        Row ids as a unicode string array, or ``None`` for a positional file
        (``.npy``, or an ``.npz`` without ids read with ``allow_positional``).
    metadata
        ``path``, ``file_name``, ``format``, ``sha256`` (of the file bytes),
        ``original_dtype``, ``dtype``, ``n_rows``, ``n_dims``, ``id_source``
        (where the ids came from), ``columns`` (dimension column names for
        tables, else ``None``), ``label_columns``, ``obsm_key`` (``.h5ad``),
        ``embeddings_key`` and ``ids_key`` (``.npz``/``.safetensors``).
    labels
        Label columns of a table or the ``.obs`` of an ``.h5ad``, one row per
        embedding row (positional index), or ``None``.
    """

    embeddings: np.ndarray
    ids: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: pd.DataFrame | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows (cells or sequences)."""
        return int(self.embeddings.shape[0])

    @property
    def n_dims(self) -> int:
        """Number of embedding dimensions."""
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        ids = "positional" if self.ids is None else f"{len(self.ids)} ids"
        return (
            f"EmbeddingArtifact({self.n_rows} x {self.n_dims} {self.embeddings.dtype}, {ids}, "
            f"format={self.metadata.get('format')!r})"
        )


def infer_format(path: str | os.PathLike, format: str | None = None) -> str:
    """Return the artifact format from ``format`` or the file suffix."""
    if format is not None:
        fmt = str(format).lower().lstrip(".")
        if fmt not in FORMATS:
            raise DfmInputError(f"Unknown format {format!r}; use one of {list(FORMATS)}.")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSION:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in SUFFIXES:
        return SUFFIXES[suffixes[-1]]
    raise DfmInputError(
        f"Cannot tell the format of {os.fspath(path)!r} from its suffix; pass format= "
        f"(one of {list(FORMATS)})."
    )


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    """Return the hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def overflow_note(original_dtype: str, dtype: np.dtype) -> str:
    """Explain that a conversion to a narrower float may have produced the infinities."""
    try:
        original = np.dtype(original_dtype)
    except TypeError:  # 'text': parsed straight into the target dtype
        return f" (or values beyond the {np.dtype(dtype).name} range)"
    if original.kind in "iuf" and original.itemsize > np.dtype(dtype).itemsize:
        return (
            f" (or {original.name} values beyond the {np.dtype(dtype).name} range, which "
            "become infinite on conversion)"
        )
    return ""


def check_shape(shape: tuple[int, ...], where: str, max_dims: int) -> None:
    """Check the rank and size limits of an embedding array before or after loading."""
    if len(shape) == 1:
        raise DfmInputError(
            f"{where} is 1-D (shape {tuple(shape)}); embeddings must be 2-D (rows x dims). "
            "If every row has one value, re-save it as arr[:, None]."
        )
    if len(shape) != 2:
        raise DfmInputError(
            f"{where} has shape {tuple(shape)} (rank {len(shape)}); embeddings must be 2-D "
            "(rows x dims). Per-token outputs (cells x tokens x dims) must be pooled first, "
            "e.g. the mean over tokens or the CLS row."
        )
    n_rows, n_dims = int(shape[0]), int(shape[1])
    if n_rows == 0:
        raise DfmInputError(f"{where} has no rows (shape {tuple(shape)}); nothing to load.")
    if n_dims == 0:
        raise DfmInputError(
            f"{where} has 0 dimensions (shape {tuple(shape)}); the export is empty or the "
            "dimension columns were not found."
        )
    if n_dims > max_dims:
        hint = (
            " It has more columns than rows, so it is probably transposed (dims x rows): "
            "re-save it as embeddings.T."
            if n_rows < n_dims
            else ""
        )
        raise DfmInputError(
            f"{where} has {n_dims:,} dimensions, above the sanity limit of {max_dims:,}.{hint} "
            "If this size is intended, pass max_dims= with a larger limit."
        )


def check_numeric_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise DfmInputError(
            f"{where} is an object array; diffbio_sc never unpickles data (unpickling a file "
            "can run arbitrary code). Re-save it as a numeric array."
        )
    if dtype.kind not in "iuf":
        raise DfmInputError(
            f"{where} has dtype {dtype}; embeddings must be integer or floating point numbers."
        )


def read_npy_header(fh) -> tuple[tuple[int, ...], np.dtype] | None:
    """Return (shape, dtype) from an open ``.npy`` stream without loading data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:  # pragma: no cover - future format versions: np.load still refuses pickles
        return None
    return tuple(int(s) for s in shape), np.dtype(dtype)


# ---------------------------------------------------------------------------
# readers: each returns (array, ids | None, info, labels | None)


def is_int_name(name: Any) -> bool:
    """Whether a column name is a non-negative integer written plainly (``0``, ``17``)."""
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        return int(name) >= 0
    return isinstance(name, str) and INT_NAME.match(name) is not None


def choose_ids_key(
    present: list[str],
    ids_key: str | None,
    prefer_ids: str | None,
    what: str,
    holds: str,
    extra: tuple[str, ...] = (),
) -> str | None:
    """Pick the id entry of an ``.npz``/``.safetensors`` file.

    ``present`` lists the entries of the file that can hold ids; an explicit
    ``ids_key`` must be among them; otherwise ``cell_ids`` or ``sequence_ids``
    is taken (the preset's kind, ``prefer_ids``, when the file holds both), then
    the preset's ``extra`` names in order.
    """
    if ids_key is not None:
        if ids_key not in present:
            raise DfmInputError(f"The {what} has no id entry {ids_key!r}; it holds {holds}.")
        return ids_key
    found = [k for k in ID_ARRAYS if k in present]
    if len(found) == 2:
        if prefer_ids in found:
            return prefer_ids
        raise DfmInputError(f"The {what} holds both {ID_ARRAYS}; pass ids_key= to choose.")
    if found:
        return found[0]
    return next((k for k in extra if k in present), None)


def choose_id_column(columns: list, index_col: str | None, extra: tuple[str, ...] = ()):
    """Pick the id column of a table: ``cell_id``/``sequence_id``, the preset's names, the index.

    An explicit id column wins over an unnamed index column: the latter is usually
    pandas' row numbering (Geneformer's EmbExtractor writes 0 .. n-1 and sorts cells
    by length), the former names the ids on purpose.
    """
    return next((c for c in (*ID_COLUMNS, *extra) if c in columns), index_col)


def require_ids(ids_found: bool, allow_positional: bool, what: str, holds: str, fix: str) -> None:
    """Refuse a file without ids unless the caller allowed positional alignment."""
    if ids_found or allow_positional:
        return
    raise DfmInputError(
        f"The {what} holds no ids ({holds}). {fix} Or pass allow_positional=True if the "
        "rows are already in the AnnData's order (adata.obs_names)."
    )


@dataclass(frozen=True)
class ReadRequest:
    """What :func:`~diffbio_sc.io.read_embeddings` asks of a format's reader."""

    path: Path
    fmt: str
    id_key: str | None = None
    ids_key: str | None = None
    obsm_key: str | None = None
    embeddings_key: str = "embeddings"
    dim_columns: Any = None
    prefer_ids: str | None = None
    preferred_obsm: tuple[str, ...] = ()
    allow_positional: bool = False
    max_dims: int = MAX_DIMS
    dtype: Any = np.float32
    extra_id_arrays: tuple[str, ...] = ()
    extra_id_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteRequest:
    """What :func:`~diffbio_sc.io.write_embeddings` hands a format's writer."""

    fmt: str
    ids: np.ndarray | None
    id_key: str = "cell_id"
    ids_key: str = "cell_ids"
    labels: pd.DataFrame | None = None
    obsm_key: str = "X_embedding"
    embeddings_key: str = "embeddings"
    compress: bool = False
