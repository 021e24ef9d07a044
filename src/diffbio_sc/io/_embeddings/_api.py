"""``read_embeddings`` / ``write_embeddings``: one table of per-format readers and writers.

Each format module supplies a reader ``(ReadRequest) -> (array, ids, info, labels)``
and a writer ``(temporary path, array, WriteRequest) -> None``; this module
validates the arguments, dispatches through :data:`FORMAT_TABLE`, applies the
checks every format shares (shape, dtype, ids, finiteness) and writes every file
atomically (:func:`diffbio_sc.io._atomic.atomic_path`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..._validate import DfmInputError, _preview, check_bool, check_int, check_key
from .._atomic import atomic_path
from . import _arrays, _h5ad, _table
from ._common import (
    MAX_DIMS,
    EmbeddingArtifact,
    ReadRequest,
    WriteRequest,
    check_numeric_dtype,
    check_shape,
    file_sha256,
    ids_to_str,
    infer_format,
    is_int_name,
    overflow_note,
)


@dataclass(frozen=True)
class FormatHandler:
    """How one format is read and written, and what it can hold."""

    read: Callable[[ReadRequest], tuple]
    write: Callable[[Path, np.ndarray, WriteRequest], None]
    holds_ids: bool = True
    holds_labels: bool = False
    named_entries: bool = False  # an embeddings entry and an ids entry (npz, safetensors)


#: Reader and writer of every format.
FORMAT_TABLE: dict[str, FormatHandler] = {
    "npz": FormatHandler(_arrays.read_npz, _arrays.write_npz, named_entries=True),
    "npy": FormatHandler(_arrays.read_npy, _arrays.write_npy, holds_ids=False),
    "safetensors": FormatHandler(
        _arrays.read_safetensors, _arrays.write_safetensors, named_entries=True
    ),
    "h5ad": FormatHandler(_h5ad.read_h5ad, _h5ad.write_h5ad, holds_labels=True),
    "csv": FormatHandler(_table.read_table, _table.write_table, holds_labels=True),
    "tsv": FormatHandler(_table.read_table, _table.write_table, holds_labels=True),
    "parquet": FormatHandler(_table.read_table, _table.write_table, holds_labels=True),
}


def _check_input_file(path: Path) -> None:
    """Raise our error for a path that does not exist or is not a regular file."""
    if path.is_dir():
        raise DfmInputError(
            f"{os.fspath(path)!r} is a directory, not an embedding file; pass the path of "
            "the exported file inside it."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"Embedding file not found: {os.fspath(path)!r}. Check the path (relative paths "
            f"start at {os.getcwd()!r})."
        )


def _target_dtype(dtype: Any) -> np.dtype | None:
    if dtype is None:
        return None
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise DfmInputError(
            f"dtype must be a floating dtype such as 'float32', got {dtype!r}."
        ) from None
    if target.kind != "f":
        raise DfmInputError(f"dtype must be a floating dtype, got {target}.")
    return target


def read_embeddings(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    id_key: str | None = None,
    obsm_key: str | None = None,
    ids_key: str | None = None,
    embeddings_key: str = "embeddings",
    dim_columns: str | Sequence[str] | None = None,
    allow_positional: bool = False,
    source: str | None = None,
    dtype: Any = np.float32,
    max_dims: int = MAX_DIMS,
    check_finite: bool = True,
) -> EmbeddingArtifact:
    """Read an embedding artifact exported by an upstream model.

    Nothing is ever unpickled (``allow_pickle=False`` throughout); the layouts
    are listed under Notes.

    Parameters
    ----------
    path
        File to read.
    format
        One of ``'npz'``, ``'npy'``, ``'h5ad'``, ``'csv'``, ``'tsv'``,
        ``'parquet'``, ``'safetensors'``; ``None`` infers it from the suffix
        (``.csv.gz`` etc. are read as tables).
    id_key
        Tables: the id column (default: a ``cell_id``/``sequence_id`` column, else
        the leading unnamed index column). ``.h5ad``: an ``.obs`` column to
        use instead of ``obs_names``. ``.npz``/``.safetensors``: used as
        ``ids_key`` when that is not given.
    obsm_key
        ``.h5ad`` only: the ``.obsm`` entry. ``None`` takes the only entry, or
        else the preset's usual key (``X_scGPT`` for ``source='scgpt'``,
        ``X_uce`` for ``'uce'``); an ambiguous file is an error listing the keys.
    ids_key
        ``.npz``/``.safetensors``: the id array or metadata entry. ``None`` takes
        ``cell_ids`` or ``sequence_ids`` (the preset's kind when both exist).
    embeddings_key
        ``.npz``/``.safetensors``: the embedding array.
    dim_columns
        Tables: the dimension columns, as a list of names or a name prefix.
        ``None`` selects the columns named ``0`` .. ``d-1``.
    allow_positional
        Accept a file without ids (``.npy``, or an ``.npz``/table/safetensors
        without an id entry); its ``ids`` are then ``None``.
    source
        Preset name (see :mod:`diffbio_sc.io._presets`); it picks the usual
        ``.obsm`` key and id kind.
    dtype
        Floating dtype of the returned embeddings; ``None`` keeps a floating
        file dtype (integers still become ``float32``).
    max_dims
        Sanity limit on the number of dimensions.
    check_finite
        Raise if any row holds NaN or infinite values.

    Returns
    -------
    EmbeddingArtifact
        ``embeddings``, ``ids`` (strings or ``None``), ``metadata`` and ``labels``.

    Notes
    -----
    Supported layouts (the format is inferred from the file suffix or given with
    ``format=``):

    ``.npz``
        An array ``embeddings`` (rows x dims) plus the row ids in ``cell_ids`` or
        ``sequence_ids`` (a unicode or bytes string array, or integers). Object
        arrays are refused: NumPy can only load them by unpickling, which can run
        arbitrary code.
    ``.npy``
        A bare ``embeddings`` array with no ids; it can only be aligned by
        position, so reading it needs ``allow_positional=True``.
    ``.h5ad``
        Any ``.obsm`` entry; the ids are the file's ``obs_names`` (or an ``.obs``
        column named by ``id_key``). Only ``obs`` and the chosen ``.obsm`` entry
        are read, never ``X``.
    ``.csv`` / ``.tsv`` / ``.parquet``
        The table Geneformer's ``EmbExtractor`` writes: a leading unnamed index
        column, one numeric column per dimension named ``0`` .. ``d-1``, then label
        columns such as ``cell_type``.
    ``.safetensors``
        A tensor ``embeddings`` plus the ids, either as a JSON list of strings in the
        header metadata under ``cell_ids`` / ``sequence_ids`` or as an integer
        companion tensor of that name. Needs the optional ``safetensors`` package.

    Dimension columns of a table
        By default the dimension columns are exactly the columns whose names are
        the non-negative integers ``0`` .. ``d-1`` (written without sign, leading
        zeros or decimals), in numeric order; they must form that full run with no
        gap. Every other column is a label column, so a numeric label column such
        as ``n_counts`` or ``leiden`` is never mistaken for a dimension. For other
        layouts pass ``dim_columns=``: a list of column names, or a string prefix
        (``'emb_'`` selects ``emb_0``, ``emb_1``, ... ordered by their integer suffix).

    Ids of a table
        ``id_key`` names the id column. Without it, the id column is a column named
        ``cell_id`` or ``sequence_id``, else the leading unnamed index column (the one
        pandas writes; for Parquet, the stored index). Ids are always read and
        compared as strings, so ``'0001'`` stays ``'0001'``; empty ids are refused.

    Sanity limits: the array must be 2-D with at least one row and between 1
    and ``max_dims`` (65,536) dimensions; a wider array with fewer rows than
    columns is reported as probably transposed. For ``.npz``, ``.npy`` and
    ``.h5ad`` these checks run on the stored header before any data is read.
    Text tables record ``original_dtype='text'`` and are parsed directly to
    ``dtype``.
    """
    from .._presets import get_preset

    path = Path(path)
    _check_input_file(path)
    fmt = infer_format(path, format)
    preset = get_preset(source) if source is not None else None
    max_dims = check_int("max_dims", max_dims, minimum=1)
    target = _target_dtype(dtype)
    allow_positional = check_bool("allow_positional", allow_positional)
    check_finite = check_bool("check_finite", check_finite)
    if FORMAT_TABLE[fmt].named_entries and ids_key is None and id_key is not None:
        ids_key = id_key
    req = ReadRequest(
        path=path,
        fmt=fmt,
        id_key=id_key,
        ids_key=ids_key,
        obsm_key=obsm_key,
        embeddings_key=embeddings_key,
        dim_columns=dim_columns,
        prefer_ids=preset.id_kind if preset is not None else None,
        preferred_obsm=preset.obsm_keys if preset is not None else (),
        extra_id_arrays=preset.extra_id_arrays if preset is not None else (),
        extra_id_columns=preset.extra_id_columns if preset is not None else (),
        allow_positional=allow_positional,
        max_dims=max_dims,
        dtype=target,
    )
    arr, ids, info, labels = FORMAT_TABLE[fmt].read(req)

    arr = np.asarray(arr)
    check_numeric_dtype(arr.dtype, f"The embeddings in {path.name!r}")
    check_shape(arr.shape, f"The embeddings in {path.name!r}", max_dims)
    if ids is not None and len(ids) != arr.shape[0]:
        raise DfmInputError(
            f"{path.name!r} holds {arr.shape[0]} embedding rows but {len(ids)} ids; every row "
            "needs exactly one id."
        )
    original_dtype = info.pop("original_dtype", str(arr.dtype))
    if target is None:
        target = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float32)
    with np.errstate(over="ignore"):  # values beyond the target range: reported below
        arr = np.ascontiguousarray(arr, dtype=target)
    if not arr.flags.writeable:
        arr = arr.copy()
    if check_finite:
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            named = ids[rows] if ids is not None else [f"row {r}" for r in rows]
            raise DfmInputError(
                f"{int(bad.sum())} embedding rows hold NaN or infinite values, e.g. "
                f"{_preview(named)}{overflow_note(original_dtype, arr.dtype)}. Re-export "
                "them or drop those rows."
            )
    metadata = {
        "path": os.fspath(path.resolve()),
        "file_name": path.name,
        "format": fmt,
        "sha256": file_sha256(path),
        "original_dtype": original_dtype,
        "dtype": str(arr.dtype),
        "n_rows": int(arr.shape[0]),
        "n_dims": int(arr.shape[1]),
        "columns": None,
        "label_columns": [],
        "obsm_key": None,
        "embeddings_key": None,
        "ids_key": None,
    }
    metadata.update(info)
    return EmbeddingArtifact(embeddings=arr, ids=ids, metadata=metadata, labels=labels)


def _labels_frame(labels, n: int, reserved: set) -> pd.DataFrame | None:
    if labels is None:
        return None
    if isinstance(labels, pd.DataFrame):
        frame = labels.reset_index(drop=True)
    elif isinstance(labels, Mapping):
        frame = pd.DataFrame({str(k): np.asarray(v) for k, v in labels.items()})
    else:
        raise TypeError(f"labels must be a DataFrame or a mapping, got {type(labels).__name__}.")
    if len(frame) != n:
        raise DfmInputError(f"labels has {len(frame)} rows but the embeddings have {n}.")
    frame.columns = [str(c) for c in frame.columns]
    clash = [c for c in frame.columns if c in reserved or is_int_name(c)]
    if clash:
        raise DfmInputError(
            f"Label columns {clash} clash with the id column or the dimension columns "
            "(integer names are reserved for dimensions); rename them."
        )
    return frame


def write_embeddings(
    path: str | os.PathLike,
    embeddings: Any,
    ids: Sequence[str] | np.ndarray | pd.Index | None = None,
    *,
    format: str | None = None,
    id_key: str = "cell_id",
    ids_key: str | None = None,
    labels: pd.DataFrame | Mapping[str, Any] | None = None,
    obsm_key: str = "X_embedding",
    embeddings_key: str = "embeddings",
    compress: bool = False,
) -> Path:
    """Write embeddings and their row ids in a layout :func:`read_embeddings` reads.

    Parameters
    ----------
    path
        Output file; its suffix picks the format unless ``format`` is given.
    embeddings
        2-D numeric array (rows x dims); its dtype is kept.
    ids
        One unique id per row (stored as strings). Required for every format
        except ``.npy``, which cannot hold ids.
    format
        As in :func:`read_embeddings`.
    id_key
        Tables: the name of the id column (written as the leading column);
        ``'sequence_id'`` makes ``.npz``/``.safetensors`` store ``sequence_ids``.
    ids_key
        ``.npz``/``.safetensors``: name of the id entry; default ``cell_ids``
        (``sequence_ids`` when ``id_key='sequence_id'``).
    labels
        Extra per-row columns (DataFrame or mapping) for tables and ``.h5ad``
        (written to ``.obs``), e.g. ``cell_type``.
    obsm_key
        ``.h5ad``: the ``.obsm`` key for the embeddings.
    embeddings_key
        ``.npz``/``.safetensors``: the name of the embedding array.
    compress
        ``.npz``: use ``np.savez_compressed``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    fmt = infer_format(path, format)
    handler = FORMAT_TABLE[fmt]
    check_key("id_key", id_key)
    check_key("obsm_key", obsm_key)
    check_key("embeddings_key", embeddings_key)
    check_key("ids_key", ids_key, allow_none=True)
    compress = check_bool("compress", compress)
    emb = np.asarray(embeddings)
    check_numeric_dtype(emb.dtype, "embeddings")
    check_shape(emb.shape, "embeddings", MAX_DIMS)
    n = emb.shape[0]
    if ids is None:
        if handler.holds_ids:
            raise DfmInputError(
                f"ids are required to write {fmt!r}: a file without ids can only be aligned "
                "by position. Pass one id per row (e.g. adata.obs_names)."
            )
        id_arr = None
    else:
        if not handler.holds_ids:
            raise DfmInputError(
                "A .npy file cannot store ids; write .npz (or another format) to keep them, "
                "or pass ids=None for a positional file."
            )
        id_arr = ids_to_str(np.asarray(ids, dtype=object), "ids")
        if len(id_arr) != n:
            raise DfmInputError(f"{len(id_arr)} ids for {n} embedding rows; pass one per row.")
        dup = pd.Index(id_arr)
        if not dup.is_unique:
            d = dup[dup.duplicated()].unique()
            raise DfmInputError(f"{len(d)} duplicate ids, e.g. {_preview(d)}; ids must be unique.")
    if ids_key is None:
        ids_key = "sequence_ids" if id_key == "sequence_id" else "cell_ids"
    if handler.named_entries and ids_key == embeddings_key:
        raise DfmInputError(
            f"ids_key and embeddings_key are both {ids_key!r}; the ids would overwrite the "
            "embeddings. Use two different names."
        )
    frame = _labels_frame(labels, n, {id_key})
    if frame is not None and not handler.holds_labels:
        raise DfmInputError(
            f"labels cannot be stored in {fmt!r}; write .csv, .tsv, .parquet or .h5ad to keep them."
        )
    req = WriteRequest(
        fmt=fmt,
        ids=id_arr,
        id_key=id_key,
        ids_key=ids_key,
        labels=frame,
        obsm_key=obsm_key,
        embeddings_key=embeddings_key,
        compress=compress,
    )
    make_parent_dirs(path)
    with atomic_path(path, what="embedding file") as tmp:
        handler.write(tmp, emb, req)
    return path


def make_parent_dirs(path: Path) -> None:
    """Create the missing parent folders of an output file, with our error if that fails."""
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists():
        raise NotADirectoryError(
            f"Cannot write {os.fspath(path)!r}: {os.fspath(parent)!r} is a file, not a "
            "directory. Choose another output path."
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(
            err.errno,
            f"Cannot create the output directory {os.fspath(parent)!r} for "
            f"{os.fspath(path)!r} ({err.strerror}). Create it yourself or choose a writable "
            "location",
            os.fspath(parent),
        ) from None
