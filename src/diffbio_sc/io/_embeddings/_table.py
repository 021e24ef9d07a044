"""Table formats: ``.csv``, ``.tsv`` (plain or compressed) and ``.parquet`` (read and write).

The layout Geneformer's ``EmbExtractor`` writes: a leading id (or index) column,
one numeric column per dimension named ``0`` .. ``d-1``, then label columns.
Text is parsed in blocks with pyarrow (bounded memory, exact float parsing), or
whole with pandas when pyarrow is missing; Parquet is read a few columns at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._validate import DfmInputError, _preview
from ._common import (
    ID_COLUMNS,
    INT_NAME,
    ReadRequest,
    WriteRequest,
    check_shape,
    choose_id_column,
    ids_to_str,
    is_int_name,
    require_ids,
)

_CSV_BLOCK_BYTES = 1 << 24  # bytes of text parsed per block (bounds parser memory)


def _select_dim_columns(columns: list, dim_columns, exclude: set) -> list:
    """Return the dimension columns in dimension order (see the module docstring)."""
    candidates = [c for c in columns if c not in exclude]
    if dim_columns is None:
        dims = [c for c in candidates if is_int_name(c)]
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
        if all(INT_NAME.match(s) for s in suffixes):
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
    except (UnicodeDecodeError, pd.errors.ParserError, EOFError, OSError) as err:
        raise DfmInputError(
            f"Cannot read {os.fspath(path)!r} as a delimited text table ({type(err).__name__}: "
            f"{err}). Is it a binary file? Pass format= naming its real format, or re-export "
            "it as CSV/TSV."
        ) from None
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


def read_table(req: ReadRequest):
    """Read a delimited text or Parquet table (see the module docstring)."""
    path, fmt, id_key, dim_columns = req.path, req.fmt, req.id_key, req.dim_columns
    max_dims, dtype = req.max_dims, req.dtype
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
        id_col = choose_id_column(names, index_col, req.extra_id_columns)
    exclude = {c for c in (id_col, index_col) if c is not None}
    dims = _select_dim_columns(names, dim_columns, exclude)
    check_shape((1, len(dims)), f"The {fmt} table", max_dims)
    require_ids(
        id_col is not None or positions is not None,
        req.allow_positional,
        "table",
        "no id column: no leading unnamed index column and none of "
        f"{[*ID_COLUMNS, *req.extra_id_columns]}; "
        f"columns: {_preview(names, 12)}",
        "Pass id_key= naming the id column.",
    )
    if fmt == "parquet":
        arr, other, original = _read_parquet_columns(path, names, dims, dtype)
    else:
        parse_dtype = np.dtype(np.float64) if dtype is None else np.dtype(dtype)
        arr, other = _read_csv_columns(path, sep, names, dims, parse_dtype)
        original = "text"
    check_shape(arr.shape, f"The {fmt} table", max_dims)
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


def write_table(tmp: Path, emb: np.ndarray, req: WriteRequest) -> None:
    """Write the id column, the dimension columns ``0`` .. ``d-1`` and the label columns."""
    table = pd.DataFrame(emb, columns=[str(i) for i in range(emb.shape[1])])
    if req.labels is not None:
        table = pd.concat([table, req.labels], axis=1)
    table.index = pd.Index(req.ids, name=req.id_key)
    if req.fmt == "parquet":
        try:
            table.to_parquet(tmp, index=True)
        except ImportError as err:
            raise ImportError(
                f"Writing .parquet needs pyarrow: pip install pyarrow ({err})"
            ) from None
    else:
        table.to_csv(tmp, sep="," if req.fmt == "csv" else "\t")
