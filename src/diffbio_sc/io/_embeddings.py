"""Read and write embedding artifacts exported by upstream models.

The layouts and the rules for tables are documented in :func:`read_embeddings`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._validate import DfmInputError, _preview
from ._ids import ids_to_str

FORMATS = ("npz", "npy", "h5ad", "csv", "tsv", "parquet", "safetensors")
MAX_DIMS = 65_536
_CSV_BLOCK_BYTES = 1 << 24  # bytes of text parsed per block (bounds parser memory)
ID_ARRAYS = ("cell_ids", "sequence_ids")
ID_COLUMNS = ("cell_id", "sequence_id")

_INT_NAME = re.compile(r"^(0|[1-9][0-9]*)$")
_SUFFIXES = {
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
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
_SAFE_ID_FIX = (
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


# ---------------------------------------------------------------------------
# helpers


def infer_format(path: str | os.PathLike, format: str | None = None) -> str:
    """Return the artifact format from ``format`` or the file suffix."""
    if format is not None:
        fmt = str(format).lower().lstrip(".")
        if fmt not in FORMATS:
            raise DfmInputError(f"Unknown format {format!r}; use one of {list(FORMATS)}.")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
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


def _check_shape(shape: tuple[int, ...], where: str, max_dims: int) -> None:
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


def _check_numeric_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise DfmInputError(
            f"{where} is an object array; diffbio_sc never unpickles data (unpickling a file "
            "can run arbitrary code). Re-save it as a numeric array."
        )
    if dtype.kind not in "iuf":
        raise DfmInputError(
            f"{where} has dtype {dtype}; embeddings must be integer or floating point numbers."
        )


def _read_npy_header(fh) -> tuple[tuple[int, ...], np.dtype] | None:
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


def _read_npz(path, *, ids_key, embeddings_key, prefer_ids, allow_positional, max_dims):
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DfmInputError(f"{os.fspath(path)!r} is not a valid .npz (zip) file.") from None
    with zf:
        headers: dict[str, tuple | None] = {}
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                try:
                    headers[member[:-4]] = _read_npy_header(fh)
                except ValueError as err:
                    raise DfmInputError(
                        f"Entry {member!r} of {os.fspath(path)!r} is not a valid .npy array ({err})."
                    ) from None
    names = list(headers)
    if embeddings_key not in headers:
        raise DfmInputError(
            f"The .npz has no array {embeddings_key!r}; it holds {names}. Save the embeddings "
            f"under 'embeddings' or pass embeddings_key= naming the array."
        )
    if ids_key is None:
        present = [k for k in ID_ARRAYS if k in headers]
        if len(present) == 2 and prefer_ids in present:
            ids_key = prefer_ids
        elif len(present) == 2:
            raise DfmInputError(
                f"The .npz holds both {ID_ARRAYS}; pass ids_key= to choose the id array."
            )
        elif present:
            ids_key = present[0]
    elif ids_key not in headers:
        raise DfmInputError(f"The .npz has no id array {ids_key!r}; it holds {names}.")
    if ids_key is None and not allow_positional:
        raise DfmInputError(
            f"The .npz holds no ids (arrays: {names}); expected 'cell_ids' or 'sequence_ids' "
            "beside 'embeddings'. Add the ids (np.savez(path, embeddings=emb, "
            "cell_ids=np.asarray(ids, dtype=str))), pass ids_key= naming the id array, or "
            "pass allow_positional=True if the rows are already in the AnnData's order."
        )
    for key in (embeddings_key, ids_key):
        if key is None or headers[key] is None:
            continue
        shape, dtype = headers[key]
        if dtype.hasobject:
            raise DfmInputError(
                f"The .npz entry {key!r} is an object array (dtype=object). NumPy can only load "
                "object arrays by unpickling them, and unpickling a file can run arbitrary "
                f"code, so diffbio_sc refuses it (allow_pickle=False). {_SAFE_ID_FIX}"
            )
    emb_header = headers[embeddings_key]
    if emb_header is not None:
        _check_shape(emb_header[0], f"The .npz array {embeddings_key!r}", max_dims)
        _check_numeric_dtype(emb_header[1], f"The .npz array {embeddings_key!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[embeddings_key]
            ids = npz[ids_key] if ids_key is not None else None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DfmInputError(
                f"The .npz holds object arrays, which diffbio_sc refuses to unpickle "
                f"(allow_pickle=False). {_SAFE_ID_FIX}"
            ) from None
        raise
    if ids is not None:
        ids = ids_to_str(ids, f"The .npz id array {ids_key!r}")
    info = {
        "embeddings_key": embeddings_key,
        "ids_key": ids_key,
        "id_source": f"npz array {ids_key!r}" if ids_key else "row position",
    }
    return arr, ids, info, None


def _read_npy(path, *, allow_positional, max_dims):
    if not allow_positional:
        raise DfmInputError(
            f"{os.fspath(path)!r} is a bare .npy array with no cell ids, so its rows can only "
            "be matched to cells by position, which silently mislabels cells when the tool "
            "reordered or dropped any (Geneformer sorts cells by length; scGPT and UCE may "
            "filter cells). Re-save it with ids (dfm.io.write_embeddings(path.npz, emb, ids)) "
            "or, if you are sure the rows follow adata.obs_names, pass allow_positional=True."
        )
    with open(path, "rb") as fh:
        try:
            header = _read_npy_header(fh)
        except ValueError as err:
            raise DfmInputError(f"{os.fspath(path)!r} is not a valid .npy file ({err}).") from None
    if header is not None:
        _check_numeric_dtype(header[1], "The .npy array")
        _check_shape(header[0], "The .npy array", max_dims)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DfmInputError(
                "The .npy holds an object array, which diffbio_sc refuses to unpickle "
                "(allow_pickle=False). Re-save it as a numeric array."
            ) from None
        raise
    return arr, None, {"id_source": "row position"}, None


def _choose_obsm_key(keys: list[str], obsm_key: str | None, preferred: tuple[str, ...]) -> str:
    if obsm_key is not None:
        if obsm_key not in keys:
            raise DfmInputError(f"The .h5ad has no .obsm[{obsm_key!r}]; its .obsm keys are {keys}.")
        return obsm_key
    if not keys:
        raise DfmInputError(
            "The .h5ad has no .obsm entries, so it holds no embedding. Store the embedding "
            "in .obsm (e.g. adata.obsm['X_scGPT']) before exporting."
        )
    if len(keys) == 1:
        return keys[0]
    for key in preferred:
        if key in keys:
            return key
    raise DfmInputError(
        f"The .h5ad holds several .obsm entries {keys}; pass obsm_key= to choose one."
    )


def _read_h5ad(path, *, obsm_key, id_key, preferred_obsm, max_dims):
    import h5py
    import scipy.sparse as sp

    try:
        from anndata.io import read_elem
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata.experimental import read_elem

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DfmInputError(f"Cannot open {os.fspath(path)!r} as .h5ad ({err}).") from None
    with f:
        if "obs" not in f or ("obsm" in f and not isinstance(f["obsm"], h5py.Group)):
            raise DfmInputError(
                f"{os.fspath(path)!r} is an HDF5 file but not an AnnData .h5ad this anndata "
                "version can read (no 'obs' group, or a legacy .obsm layout); re-save it with "
                "a current anndata (adata.write_h5ad)."
            )
        keys = sorted(f["obsm"].keys()) if "obsm" in f else []
        key = _choose_obsm_key(keys, obsm_key, preferred_obsm)
        elem = f["obsm"][key]
        where = f"The .h5ad entry .obsm[{key!r}]"
        if isinstance(elem, h5py.Dataset):
            _check_numeric_dtype(elem.dtype, where)
            _check_shape(elem.shape, where, max_dims)
            arr = elem[()]
            columns = None
        else:
            value = read_elem(elem)
            columns = None
            if isinstance(value, pd.DataFrame):
                bad = [c for c in value.columns if value[c].dtype.kind not in "iuf"]
                if bad:
                    raise DfmInputError(f"{where} is a table with non-numeric columns {bad}.")
                columns = [str(c) for c in value.columns]
                arr = value.to_numpy()
            elif sp.issparse(value):
                arr = value.toarray()
            else:
                arr = np.asarray(value)
        obs = read_elem(f["obs"])
    if id_key is None:
        ids = ids_to_str(obs.index.to_numpy(), "The .h5ad obs_names")
        id_source = "obs_names"
    else:
        if id_key not in obs.columns:
            raise DfmInputError(
                f"id_key={id_key!r} is not a column of the .h5ad's .obs; columns: "
                f"{list(obs.columns)}. Leave id_key=None to use its obs_names."
            )
        ids = ids_to_str(obs[id_key].to_numpy(dtype=object), f"The .h5ad .obs[{id_key!r}]")
        id_source = f"obs column {id_key!r}"
    labels = obs.reset_index(drop=True) if obs.shape[1] else None
    info = {
        "obsm_key": key,
        "id_source": id_source,
        "columns": columns,
        "label_columns": [str(c) for c in obs.columns if c != id_key],
    }
    return arr, ids, info, labels


def _is_int_name(name: Any) -> bool:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        return int(name) >= 0
    return isinstance(name, str) and _INT_NAME.match(name) is not None


def _select_dim_columns(columns: list, dim_columns, exclude: set) -> list:
    """Return the dimension columns in dimension order (see the module docstring)."""
    candidates = [c for c in columns if c not in exclude]
    if dim_columns is None:
        dims = [c for c in candidates if _is_int_name(c)]
        if not dims:
            raise DfmInputError(
                f"No dimension columns found among {_preview(columns, 12)}. Dimension columns "
                "are those named 0 .. d-1 (as Geneformer's EmbExtractor writes them); for "
                "another layout pass dim_columns= (a list of names or a prefix such as 'emb_')."
            )
        numbers = sorted(int(c) for c in dims)
        expected = list(range(len(numbers)))
        if numbers != expected:
            gaps = sorted(set(range(max(numbers) + 1)) - set(numbers))
            raise DfmInputError(
                f"The integer-named columns are not a full run 0 .. d-1 (missing {gaps[:10]}"
                f"{' ...' if len(gaps) > 10 else ''}, or duplicated). Pass dim_columns= to "
                "name the dimension columns."
            )
        return sorted(dims, key=int)
    if isinstance(dim_columns, str):
        prefix = dim_columns
        dims = [c for c in candidates if str(c).startswith(prefix)]
        if not dims:
            raise DfmInputError(
                f"No columns start with dim_columns={prefix!r}; columns: {_preview(columns, 12)}."
            )
        suffixes = [str(c)[len(prefix) :] for c in dims]
        if all(_INT_NAME.match(s) for s in suffixes):
            dims = [c for _, c in sorted(zip((int(s) for s in suffixes), dims, strict=True))]
        return dims
    if isinstance(dim_columns, Sequence):
        dims = list(dim_columns)
        missing = [c for c in dims if c not in columns]
        if missing:
            raise DfmInputError(
                f"dim_columns names {len(missing)} columns not in the file, e.g. "
                f"{_preview(missing)}; columns: {_preview(columns, 12)}."
            )
        overlap = [c for c in dims if c in exclude]
        if overlap:
            raise DfmInputError(f"dim_columns includes the id column {overlap[0]!r}.")
        if len(set(dims)) != len(dims):
            raise DfmInputError("dim_columns names a column more than once.")
        return dims
    raise TypeError(
        f"dim_columns must be None, a prefix string or a list of names, got {type(dim_columns)}."
    )


def _default_id_column(columns: list, index_col: str | None) -> str | None:
    # An explicit cell_id / sequence_id column wins over an unnamed index column: the
    # latter is usually pandas' row numbering (Geneformer's EmbExtractor writes 0 .. n-1
    # and sorts cells by length), the former names the ids on purpose.
    for name in ID_COLUMNS:
        if name in columns:
            return name
    return index_col


def _have_pyarrow() -> bool:
    """Whether pyarrow (fast, exact CSV and Parquet readers) can be used."""
    try:
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _csv_header(path, sep: str) -> list[str]:
    try:
        head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DfmInputError(f"{os.fspath(path)!r} is empty.") from None
    return [str(x) for x in head.iloc[0].tolist()]


def _open_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DfmInputError(f"Cannot read {os.fspath(path)!r} as Parquet ({err}).") from None


def _table_layout(path, fmt: str, sep: str):
    """Return ``(column names, index column or None, stored row index or None)``."""
    if fmt == "parquet":
        if not _have_pyarrow():
            raise ImportError("Reading .parquet needs pyarrow: pip install pyarrow")

        pf = _open_parquet(path)
        names = list(pf.schema_arrow.names)
        index_entries = (pf.schema_arrow.pandas_metadata or {}).get("index_columns", [])
        index_col, positions = None, None
        if len(index_entries) == 1 and isinstance(index_entries[0], str):
            index_col = index_entries[0]  # a stored pandas index (named or not)
            names = [index_col] + [c for c in names if c != index_col]
        elif len(index_entries) == 1 and isinstance(index_entries[0], dict):
            r = index_entries[0]
            if r.get("kind") == "range" and r.get("name") is None:
                # Geneformer-style default index: row positions only, kept as metadata.
                positions = np.arange(r["start"], r["stop"], r["step"])
        return names, index_col, positions
    header = _csv_header(path, sep)
    index_col = header[0] if header and header[0] in ("", "Unnamed: 0") else None
    return header, index_col, None


_PARSE_ERROR_FIX = "Dimension columns must hold numbers only; check for text or stray separators."


def _parse_error(path, err: Exception, names: list[str]) -> DfmInputError:
    found = re.search(r"column #(\d+)", str(err))
    where = f"column {names[int(found.group(1))]!r}" if found else "a column"
    return DfmInputError(
        f"Cannot parse {os.fspath(path)!r}: {where} holds a value that is not a number "
        f"({err}). {_PARSE_ERROR_FIX}"
    )


def _numeric_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn label columns read as text back into numbers where every value is one."""
    for col in frame.columns:
        try:
            frame[col] = pd.to_numeric(frame[col])
        except (ValueError, TypeError):
            pass
    return frame


def _read_csv_columns(path, sep, names, dims, dtype):
    """Read a delimited table: ``(matrix, DataFrame of the other columns as text)``.

    With pyarrow the file is parsed in blocks (bounded memory, exact float parsing);
    without it pandas' C parser reads it whole.
    """
    others = [c for c in names if c not in set(dims)]
    if not _have_pyarrow():
        dtypes = dict.fromkeys(others, str)
        dtypes.update(dict.fromkeys(dims, dtype))
        try:
            df = pd.read_csv(
                path,
                sep=sep,
                header=0,
                names=names,
                dtype=dtypes,
                keep_default_na=False,
                na_values={c: ["", "NA", "NaN", "nan", "null"] for c in dims},
                float_precision="round_trip",
                low_memory=False,
            )
        except ValueError as err:
            raise DfmInputError(
                f"Cannot parse {os.fspath(path)!r}: {err}. {_PARSE_ERROR_FIX}"
            ) from None
        return df[dims].to_numpy(dtype=dtype), df[others].reset_index(drop=True)

    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = dict.fromkeys(others, pa.string())
    types.update(dict.fromkeys(dims, pa.from_numpy_dtype(dtype)))
    blocks: list[np.ndarray] = []
    batches = []
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
        for batch in reader:
            block = np.empty((batch.num_rows, len(dims)), dtype=dtype)
            for j, name in enumerate(dims):
                block[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
            blocks.append(block)
            if others:
                batches.append(pa.Table.from_batches([batch]).select(others))
            del batch
    except pa.ArrowInvalid as err:
        raise _parse_error(path, err, names) from None
    arr = (
        np.concatenate(blocks)
        if len(blocks) > 1
        else (blocks[0] if blocks else np.empty((0, len(dims)), dtype=dtype))
    )
    del blocks
    frame = (
        pa.concat_tables(batches).to_pandas().reset_index(drop=True)
        if batches
        else pd.DataFrame(index=range(arr.shape[0]), columns=others)
    )
    pa.default_memory_pool().release_unused()
    return arr, frame


def _read_parquet_columns(path, names, dims, dtype):
    """Read a Parquet table a few columns at a time: ``(matrix, other columns, dtype)``."""
    import pyarrow as pa

    pf = _open_parquet(path)
    schema = pf.schema_arrow
    col_types = []
    bad = []
    for name in dims:
        t = schema.field(name).type
        if pa.types.is_floating(t) or pa.types.is_integer(t):
            col_types.append(np.dtype(t.to_pandas_dtype()))
        else:
            bad.append(name)
    if bad:
        raise DfmInputError(
            f"Dimension columns must be numeric, but {_preview(bad)} are not (e.g. type "
            f"{schema.field(bad[0]).type}). Check the column types of the Parquet file."
        )
    original = np.result_type(*col_types)
    target = original if (dtype is None and original.kind == "f") else np.dtype(dtype or np.float32)
    n = pf.metadata.num_rows
    arr = np.empty((n, len(dims)), dtype=target)
    group = 32  # columns per read: bounds the Arrow buffers to a slice of the file
    for start in range(0, len(dims), group):
        cols = dims[start : start + group]
        table = pf.read(columns=cols, use_pandas_metadata=False)
        for j, name in enumerate(cols):
            arr[:, start + j] = table.column(name).to_numpy()
        del table
    others = [c for c in names if c not in set(dims)]
    frame = (
        pf.read(columns=others, use_pandas_metadata=False)
        .to_pandas(ignore_metadata=True)
        .reset_index(drop=True)
        if others
        else pd.DataFrame(index=range(n))
    )
    pa.default_memory_pool().release_unused()
    return arr, frame, str(original)


def _read_table(path, fmt, *, id_key, dim_columns, allow_positional, max_dims, dtype):
    sep = "\t" if fmt == "tsv" else ","
    names, index_col, positions = _table_layout(path, fmt, sep)
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DfmInputError(f"The table has duplicated column names {dup}; rename them.")
    if id_key is not None:
        if id_key not in names:
            raise DfmInputError(
                f"id_key={id_key!r} is not a column of the file; columns: {_preview(names, 12)}."
            )
        id_col = id_key
    else:
        id_col = _default_id_column(names, index_col)
    exclude = {c for c in (id_col, index_col) if c is not None}
    dims = _select_dim_columns(names, dim_columns, exclude)
    _check_shape((1, len(dims)), f"The {fmt} table", max_dims)
    if id_col is None and positions is None and not allow_positional:
        raise DfmInputError(
            f"The table has no id column: no leading unnamed index column and no "
            f"{list(ID_COLUMNS)} column (columns: {_preview(names, 12)}). Pass id_key= naming "
            "the id column, or allow_positional=True if the rows follow adata.obs_names."
        )
    if fmt == "parquet":
        arr, other, original = _read_parquet_columns(path, names, dims, dtype)
    else:
        parse_dtype = np.dtype(np.float64) if dtype is None else np.dtype(dtype)
        arr, other = _read_csv_columns(path, sep, names, dims, parse_dtype)
        original = "text"
    _check_shape(arr.shape, f"The {fmt} table", max_dims)
    if id_col is not None:
        ids = ids_to_str(other[id_col].to_numpy(dtype=object), f"The id column {id_col!r}")
        id_source = f"column {id_col!r}" if id_col != index_col else "leading index column"
    elif positions is not None:
        ids = positions.astype(str)
        id_source = "stored row index"
    else:
        ids = None
        id_source = "row position"
    label_cols = [c for c in names if c not in set(dims) and c not in exclude]
    labels = None
    if label_cols:
        labels = other[label_cols].reset_index(drop=True)
        if fmt != "parquet":
            labels = _numeric_labels(labels)
    info = {
        "id_source": id_source,
        "columns": [str(c) for c in dims],
        "label_columns": [str(c) for c in label_cols],
        "id_column": None if id_col is None else str(id_col),
        "original_dtype": original,
    }
    return arr, ids, info, labels


def _import_safetensors():
    try:
        import safetensors  # noqa: F401
        from safetensors import safe_open
        from safetensors.numpy import save_file
    except ImportError:
        raise ImportError(
            "Reading or writing .safetensors files needs the optional 'safetensors' package: "
            "pip install safetensors"
        ) from None
    return safe_open, save_file


def _open_safetensors(safe_open, path):
    try:
        return safe_open(os.fspath(path), framework="np")
    except Exception as err:  # safetensors raises its own SafetensorError (not a ValueError)
        raise DfmInputError(f"Cannot read {os.fspath(path)!r} as .safetensors ({err}).") from None


def _read_safetensors(path, *, ids_key, embeddings_key, prefer_ids, allow_positional, max_dims):
    safe_open, _ = _import_safetensors()
    with _open_safetensors(safe_open, path) as f:
        meta = dict(f.metadata() or {})
        keys = list(f.keys())
        if embeddings_key not in keys:
            raise DfmInputError(
                f"The .safetensors has no tensor {embeddings_key!r}; it holds {keys}. Pass "
                "embeddings_key= naming the tensor."
            )
        _check_shape(
            tuple(f.get_slice(embeddings_key).get_shape()),
            f"The .safetensors tensor {embeddings_key!r}",
            max_dims,
        )
        available = [k for k in ID_ARRAYS if k in meta or k in keys]
        if ids_key is None:
            if len(available) == 2:
                if prefer_ids not in available:
                    raise DfmInputError(
                        f"The .safetensors holds both {ID_ARRAYS}; pass ids_key= to choose."
                    )
                ids_key = prefer_ids
            elif available:
                ids_key = available[0]
        elif ids_key not in meta and ids_key not in keys:
            raise DfmInputError(
                f"The .safetensors has no ids {ids_key!r} in its metadata {sorted(meta)} or "
                f"tensors {keys}."
            )
        arr = f.get_tensor(embeddings_key)
        ids = None
        id_source = "row position"
        if ids_key is not None and ids_key in meta:
            try:
                values = json.loads(meta[ids_key])
            except json.JSONDecodeError as err:
                raise DfmInputError(
                    f"The .safetensors metadata {ids_key!r} is not valid JSON ({err}); store "
                    "the ids as a JSON list of strings."
                ) from None
            if not isinstance(values, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in values
            ):
                raise DfmInputError(
                    f"The .safetensors metadata {ids_key!r} must be a JSON list of strings."
                )
            ids = np.asarray([str(v) for v in values], dtype=str)
            id_source = f"safetensors metadata {ids_key!r}"
        elif ids_key is not None:
            tensor = f.get_tensor(ids_key)
            if tensor.dtype.kind not in "iu":
                raise DfmInputError(
                    f"The .safetensors companion tensor {ids_key!r} has dtype {tensor.dtype}; "
                    "an id tensor must hold integers (store string ids as JSON metadata)."
                )
            ids = ids_to_str(tensor.reshape(-1), f"The .safetensors tensor {ids_key!r}")
            id_source = f"safetensors tensor {ids_key!r}"
    if ids is None and not allow_positional:
        raise DfmInputError(
            f"The .safetensors holds no ids (metadata keys {sorted(meta)}, tensors {keys}); "
            "store them as JSON metadata 'cell_ids' (dfm.io.write_embeddings does this), pass "
            "ids_key=, or allow_positional=True if the rows follow adata.obs_names."
        )
    info = {"embeddings_key": embeddings_key, "ids_key": ids_key, "id_source": id_source}
    return arr, ids, info, None


# ---------------------------------------------------------------------------
# public API


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
    from ._presets import get_preset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Embedding file not found: {os.fspath(path)!r}.")
    fmt = infer_format(path, format)
    preset = get_preset(source) if source is not None else None
    prefer_ids = preset.id_kind if preset is not None else None
    preferred_obsm = preset.obsm_keys if preset is not None else ()
    if int(max_dims) < 1:
        raise DfmInputError(f"max_dims must be >= 1, got {max_dims}.")
    if fmt in ("npz", "safetensors") and ids_key is None and id_key is not None:
        ids_key = id_key

    if fmt == "npz":
        arr, ids, info, labels = _read_npz(
            path,
            ids_key=ids_key,
            embeddings_key=embeddings_key,
            prefer_ids=prefer_ids,
            allow_positional=allow_positional,
            max_dims=max_dims,
        )
    elif fmt == "npy":
        arr, ids, info, labels = _read_npy(
            path, allow_positional=allow_positional, max_dims=max_dims
        )
    elif fmt == "h5ad":
        arr, ids, info, labels = _read_h5ad(
            path, obsm_key=obsm_key, id_key=id_key, preferred_obsm=preferred_obsm, max_dims=max_dims
        )
    elif fmt == "safetensors":
        arr, ids, info, labels = _read_safetensors(
            path,
            ids_key=ids_key,
            embeddings_key=embeddings_key,
            prefer_ids=prefer_ids,
            allow_positional=allow_positional,
            max_dims=max_dims,
        )
    else:
        arr, ids, info, labels = _read_table(
            path,
            fmt,
            id_key=id_key,
            dim_columns=dim_columns,
            allow_positional=allow_positional,
            max_dims=max_dims,
            dtype=dtype,
        )

    arr = np.asarray(arr)
    _check_numeric_dtype(arr.dtype, f"The embeddings in {path.name!r}")
    _check_shape(arr.shape, f"The embeddings in {path.name!r}", max_dims)
    if ids is not None and len(ids) != arr.shape[0]:
        raise DfmInputError(
            f"{path.name!r} holds {arr.shape[0]} embedding rows but {len(ids)} ids; every row "
            "needs exactly one id."
        )
    original_dtype = info.pop("original_dtype", str(arr.dtype))
    if dtype is None:
        target = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float32)
    else:
        target = np.dtype(dtype)
        if target.kind != "f":
            raise DfmInputError(f"dtype must be a floating dtype, got {target}.")
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
    clash = [c for c in frame.columns if c in reserved or _is_int_name(c)]
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
    emb = np.asarray(embeddings)
    _check_numeric_dtype(emb.dtype, "embeddings")
    _check_shape(emb.shape, "embeddings", MAX_DIMS)
    n = emb.shape[0]
    if ids is None:
        if fmt != "npy":
            raise DfmInputError(
                f"ids are required to write {fmt!r}: a file without ids can only be aligned "
                "by position. Pass one id per row (e.g. adata.obs_names)."
            )
        id_arr = None
    else:
        if fmt == "npy":
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
    if fmt in ("npz", "safetensors") and ids_key == embeddings_key:
        raise DfmInputError(
            f"ids_key and embeddings_key are both {ids_key!r}; the ids would overwrite the "
            "embeddings. Use two different names."
        )
    frame = _labels_frame(labels, n, {id_key})
    if frame is not None and fmt in ("npz", "npy", "safetensors"):
        raise DfmInputError(
            f"labels cannot be stored in {fmt!r}; write .csv, .tsv, .parquet or .h5ad to keep them."
        )
    path.parent.mkdir(parents=True, exist_ok=True)

    if fmt == "npz":
        saver = np.savez_compressed if compress else np.savez
        with open(path, "wb") as fh:
            saver(fh, **{embeddings_key: emb, ids_key: id_arr})
    elif fmt == "npy":
        with open(path, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
    elif fmt == "h5ad":
        import anndata as ad

        obs = frame.copy() if frame is not None else pd.DataFrame(index=range(n))
        obs.index = pd.Index(id_arr, name=None)
        adata = ad.AnnData(obs=obs, obsm={obsm_key: emb})
        adata.write_h5ad(path)
    elif fmt == "safetensors":
        _, save_file = _import_safetensors()
        save_file(
            {embeddings_key: np.ascontiguousarray(emb)},
            os.fspath(path),
            metadata={ids_key: json.dumps(id_arr.tolist()), "format": "diffbio_sc.embeddings"},
        )
    else:
        table = pd.DataFrame(emb, columns=[str(i) for i in range(emb.shape[1])])
        if frame is not None:
            table = pd.concat([table, frame], axis=1)
        table.index = pd.Index(id_arr, name=id_key)
        if fmt == "parquet":
            try:
                table.to_parquet(path, index=True)
            except ImportError as err:
                raise ImportError(
                    f"Writing .parquet needs pyarrow: pip install pyarrow ({err})"
                ) from None
        else:
            table.to_csv(path, sep="," if fmt == "csv" else "\t")
    return path
