"""Input validation and chunked access shared by every AnnData-facing function.

Writers validate everything first and write last, so an error leaves the
AnnData exactly as it was. Messages name the problem and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp


class DfmInputError(ValueError):
    """Raised when the data handed to diffbio_sc cannot be used as given."""


def _preview(items, n: int = 10) -> str:
    items = list(items)
    shown = ", ".join(repr(str(x)) for x in items[:n])
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return f"{shown}{more}"


def check_adata(
    adata, *, check_var_names: bool = True, check_obs_names: bool = True, need_vars: bool = True
) -> None:
    """Check that ``adata`` is a non-empty AnnData with unique names.

    ``need_vars=False`` accepts an AnnData without variables (e.g. sequences, or
    embeddings only), which still needs observations.
    """
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        raise TypeError(
            f"Expected an AnnData object, got {type(adata).__name__}. "
            "Read your data with anndata.read_h5ad or scanpy.read_* first."
        )
    if adata.n_obs == 0 or (need_vars and adata.n_vars == 0):
        raise DfmInputError(
            f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
            "nothing to process. Check your filtering steps."
        )
    if check_obs_names and not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise DfmInputError(
            f"{len(dup)} duplicate obs_names, e.g. {_preview(dup)}. Cell IDs must be "
            "unique: call adata.obs_names_make_unique() first."
        )
    if check_var_names and not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        raise DfmInputError(
            f"{len(dup)} duplicate var_names, e.g. {_preview(dup)}. Gene names must be "
            "unique: aggregate the duplicates or call adata.var_names_make_unique() first."
        )


def check_writable(adata) -> None:
    """Refuse, before any work, an AnnData the results cannot be written into.

    A slice of a backed AnnData (``adata[a:b]`` of a file opened with
    ``backed='r'``) is a view that anndata cannot turn into an object to write
    into, so the writer would fail only after computing everything.
    """
    if getattr(adata, "is_view", False) and is_backed(adata):
        raise DfmInputError(
            "This is a slice of a backed AnnData; results cannot be written into it. "
            "Load the slice first with adata[a:b].to_memory(), or pass the whole backed "
            "AnnData."
        )


def is_backed(adata) -> bool:
    """Whether ``adata`` is opened in backed mode."""
    return bool(getattr(adata, "isbacked", False))


def get_matrix(adata, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]`` with a clear error for a bad key."""
    if layer is None:
        X = adata.X
        if X is None:
            raise DfmInputError("adata.X is None; pass layer= to choose a matrix.")
        return X
    if layer not in adata.layers:
        raise DfmInputError(
            f"Layer {layer!r} not found; available layers: {list(adata.layers.keys())}. "
            "Pass layer=None to use adata.X."
        )
    return adata.layers[layer]


def _to_csr(block) -> sp.csr_matrix:
    if hasattr(block, "compute") and hasattr(block, "chunks"):  # a Dask array: load this chunk
        block = block.compute()
    if sp.issparse(block):
        return sp.csr_matrix(block)
    arr = np.asarray(block)
    if arr.ndim != 2:
        raise DfmInputError(f"Expected a 2-D expression matrix, got shape {arr.shape}.")
    if arr.dtype == np.float16:  # scipy.sparse has no float16
        arr = arr.astype(np.float32)
    return sp.csr_matrix(arr)


def check_matrix_dtype(X, where: str) -> np.dtype | None:
    """Refuse matrices whose dtype no kernel can use, with our own message.

    Numbers (including booleans, which :func:`check_values` reports) pass;
    float16 passes too and is read as float32 by :func:`iter_row_chunks`
    (scipy.sparse has no float16). Returns the dtype (None when unknown).
    """
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        return None
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise DfmInputError(
            f"{where} has dtype {dtype} ({'text or Python objects' if dtype.kind in 'OUS' else 'not a real number type'}); "
            "expected a numeric matrix of counts or expression values. Convert it first, "
            "e.g. adata.X = adata.X.astype(np.float32) (or pick the numeric layer with layer=)."
        )
    return dtype


def _csr_view(data, indices, indptr, shape) -> sp.csr_matrix:
    """Wrap ``(data, indices, indptr)`` in a CSR matrix without copying the arrays.

    Set directly: scipy's constructor copies views of much larger arrays
    ("prune"), which would copy every chunk of an in-memory matrix.
    """
    if indptr[-1] > np.iinfo(indices.dtype).max:  # pragma: no cover - > 2**31 values per chunk
        indices = indices.astype(np.int64)
    chunk = sp.csr_matrix(shape, dtype=data.dtype)
    chunk.data = data
    chunk.indices = indices
    chunk.indptr = indptr.astype(indices.dtype, copy=False)
    return chunk


class _ChunkBuffers:
    """Arrays that backed CSR chunks are read into: grown to the largest chunk, then reused."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def _get(self, name: str, size: int, dtype) -> np.ndarray:
        buf = self._arrays.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            # 1/8 headroom: chunks differ a little in size, so the buffer rarely grows again
            buf = self._arrays[name] = np.empty(size + size // 8, dtype)
        return buf[:size]

    def read(self, name: str, dataset, a: int, b: int) -> np.ndarray:
        """``dataset[a:b]`` in the buffer ``name`` (valid until the next read of ``name``)."""
        out = self._get(name, b - a, np.dtype(dataset.dtype))
        if b <= a:
            return out
        read_direct = getattr(dataset, "read_direct", None)
        if read_direct is None:  # not an h5py dataset: slice, then copy into the buffer
            out[:] = np.asarray(dataset[a:b])
        else:
            read_direct(out, np.s_[a:b], np.s_[0 : b - a])
        return out

    def float32(self, values: np.ndarray) -> np.ndarray:
        """``values`` (float16) as float32, in a reused buffer."""
        out = self._get("float32", values.size, np.dtype(np.float32))
        np.copyto(out, values)
        return out


def _backed_csr_arrays(X, shape):
    """Return the HDF5 datasets ``(data, indices, indptr)`` behind a backed CSR matrix, or None."""
    group = getattr(X, "group", None)
    if getattr(X, "format", None) != "csr" or group is None or tuple(X.shape) != tuple(shape):
        return None
    try:
        return group["data"], group["indices"], group["indptr"]
    except (KeyError, TypeError):
        return None


def iter_row_chunks(
    adata,
    layer: str | None = None,
    chunk_size: int | None = None,
    *,
    reuse_buffers: bool = False,
) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, csr_chunk)`` over the rows of X or a layer.

    Works for dense, CSR and CSC matrices in memory, for backed AnnData
    (``backed='r'``) and for Dask arrays (``anndata.experimental.read_elem_lazy``
    or ``adata.X = dask_array``), where only one chunk is read into memory at a time.

    An in-memory CSR matrix is sliced without copying, so its chunks share
    arrays with the AnnData: callers must treat chunks as read-only (copy
    before changing them). A backed CSR matrix is read chunk by chunk straight
    from its HDF5 datasets (anndata's own slicing adds a few milliseconds of
    bookkeeping per read). An in-memory CSC matrix is converted to CSR once
    (row slicing CSC is slow).

    ``reuse_buffers=True`` is for streaming passes that hold no chunk (nor a
    view of its arrays) once they ask for the next one: a backed CSR chunk's
    ``data`` and ``indices`` are then read (``h5py`` ``read_direct``) into two
    arrays that grow to the largest chunk and are overwritten by the next
    chunk, and the C heap's free pages are handed back between chunks
    (:func:`diffbio_sc._malloc.trim`). Reading every chunk into fresh arrays of
    slightly different sizes (about 29 MiB each for 4,096 cells of 1,800
    nonzeros) fragments glibc's heap, and the peak memory of a pass then
    creeps up with the number of chunks. The chunks are the same either way.
    Other inputs ignore it.
    """
    from ._malloc import trim
    from ._settings import settings

    chunk_size = check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    if chunk_size is None:
        chunk_size = check_int("dfm.settings.chunk_size", settings.chunk_size, minimum=1)
    X = get_matrix(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    half = check_matrix_dtype(X, where) == np.float16
    n, n_vars = adata.shape
    backed = is_backed(adata)
    arrays = _backed_csr_arrays(X, adata.shape) if backed else None
    if not backed and sp.issparse(X) and X.format != "csr":
        X = sp.csr_matrix(X)
    in_memory_csr = not backed and sp.issparse(X)
    buffers = _ChunkBuffers() if reuse_buffers and arrays is not None else None
    for start in range(0, n, chunk_size):
        if buffers is not None and start:
            trim()  # the previous chunk's temporaries are freed: hand their pages back
        stop = min(start + chunk_size, n)
        if in_memory_csr:
            indptr = X.indptr[start : stop + 1]
            a, b = int(indptr[0]), int(indptr[-1])
            yield (
                start,
                stop,
                _csr_view(X.data[a:b], X.indices[a:b], indptr - a, (stop - start, n_vars)),
            )
        elif arrays is not None:
            d, i, p = arrays
            indptr = np.asarray(p[start : stop + 1])
            a, b = int(indptr[0]), int(indptr[-1])
            if buffers is not None:
                data, idx = buffers.read("data", d, a, b), buffers.read("indices", i, a, b)
                if half:
                    data = buffers.float32(data)
            else:
                data, idx = np.asarray(d[a:b]), np.asarray(i[a:b])
                if half:
                    data = data.astype(np.float32)
            yield (
                start,
                stop,
                _csr_view(data, idx, indptr - a, (stop - start, n_vars)),
            )
        else:
            yield start, stop, _to_csr(X[start:stop])


#: Values checked at a time by :func:`check_values` (4 MiB of float32).
_CHECK_PIECE = 1 << 20


def _all_pieces(data: np.ndarray, test) -> bool:
    """Whether ``test`` holds for every piece of :data:`_CHECK_PIECE` values of ``data``.

    Only 1-D arrays are cut into pieces; others are tested whole.
    """
    if data.ndim != 1:
        return bool(test(data))
    return all(test(data[a : a + _CHECK_PIECE]) for a in range(0, data.size, _CHECK_PIECE))


def check_values(
    data: np.ndarray,
    *,
    require_integer: bool,
    where: str = "the expression matrix",
    fix: str = "",
    counts_fix: str = "",
) -> None:
    """Check stored values: finite, non-negative and, if asked, whole numbers.

    ``fix`` is appended to every message, ``counts_fix`` to the whole-number one.
    Each check runs over pieces of :data:`_CHECK_PIECE` values, so its
    temporaries stay a few MiB whatever the size of ``data``.
    """
    if data.size == 0:
        return
    if data.dtype.kind == "b":
        raise DfmInputError(f"{where} is boolean; expected counts or expression values.")
    if data.dtype.kind not in "iuf":
        raise DfmInputError(f"{where} has dtype {data.dtype}; expected a numeric matrix.")
    if data.dtype.kind == "f":
        if not _all_pieces(data, lambda x: np.isfinite(x).all()):
            n_bad = int((~np.isfinite(data)).sum())
            raise DfmInputError(
                f"{where} holds {n_bad} NaN or infinite values. Remove or impute them "
                "before tokenizing (e.g. np.nan_to_num)." + (f" {fix}" if fix else "")
            )
    if data.dtype.kind != "u" and not _all_pieces(data, lambda x: not (x < 0).any()):
        raise DfmInputError(
            f"{where} holds {int((data < 0).sum())} negative values (min {data.min()}). "
            "Expected raw counts or non-negative normalised values; pass the counts layer "
            "with layer=." + (f" {fix}" if fix else "")
        )
    if (
        require_integer
        and data.dtype.kind == "f"
        and not _all_pieces(data, lambda x: bool(np.all(x == np.round(x))))
    ):
        raise DfmInputError(
            f"{where} holds non-integer values, but raw counts are needed here (e.g. "
            "log-normalised data would be normalised again). Pass the raw counts with layer= "
            "(e.g. layer='counts')."
            + (f" {counts_fix}" if counts_fix else "")
            + (f" {fix}" if fix else "")
        )


def check_totals_finite(totals: np.ndarray, obs_names: pd.Index, start: int, where: str) -> None:
    """Raise if a cell's total overflows float64 (values near 1e308 are not counts)."""
    bad = np.flatnonzero(~np.isfinite(totals))
    if bad.size:
        raise DfmInputError(
            f"The values of {bad.size} cells in {where} sum to more than the largest float64 "
            f"(about 1.8e308), e.g. {_preview(obs_names[start + bad])}; totals, medians and "
            "ranks cannot be computed. These are not counts: pass the raw counts with layer= "
            "or rescale the values."
        )


def check_cells_nonempty(totals: np.ndarray, obs_names: pd.Index, start: int = 0) -> None:
    """Raise if any cell has a zero total."""
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        names = obs_names[start + empty]
        raise DfmInputError(
            f"{empty.size} cells have no counts, e.g. {_preview(names)}. Remove empty "
            "cells first, e.g. sc.pp.filter_cells(adata, min_counts=1)."
        )


def validated_chunks(
    adata,
    layer: str | None,
    chunk_size: int | None,
    *,
    require_integer: bool,
    allow_empty: bool = False,
    counts_fix: str = "",
    reuse_buffers: bool = False,
) -> Iterator[tuple[int, int, sp.csr_matrix, np.ndarray]]:
    """Yield ``(start, stop, csr, totals)`` after checking values (and empty cells unless allowed).

    ``reuse_buffers`` is passed to :func:`iter_row_chunks`: only for callers
    that keep nothing of a chunk once they ask for the next one.

    Values must be finite and non-negative (whole numbers with
    ``require_integer``; ``counts_fix`` is appended to that error), and each cell's
    total finite. Each chunk is canonical (no duplicate entries, no stored zeros). A chunk
    of an in-memory CSR matrix is a view of the AnnData's arrays, so it is
    copied before anything is changed: callers must treat chunks as read-only.
    """
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    for start, stop, chunk in iter_row_chunks(
        adata, layer, chunk_size, reuse_buffers=reuse_buffers
    ):
        chunk, totals = validate_chunk(
            chunk,
            adata.obs_names,
            start,
            where=where,
            require_integer=require_integer,
            allow_empty=allow_empty,
            counts_fix=counts_fix,
        )
        yield start, stop, chunk, totals


def validate_chunk(
    chunk: sp.csr_matrix,
    obs_names: pd.Index,
    start: int,
    *,
    where: str,
    require_integer: bool,
    allow_empty: bool = False,
    counts_fix: str = "",
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Check one CSR chunk of cells (rows ``start ..``) as :func:`validated_chunks` does.

    Returns the canonical chunk (a private copy when duplicates or stored zeros
    had to be removed) and its cell totals. ``obs_names`` may be the chunk's own
    names with ``start=0`` (what a Dask worker receives).
    """
    from .ops._csr import row_totals

    check_values(chunk.data, require_integer=require_integer, where=where, counts_fix=counts_fix)
    if not chunk.has_canonical_format or not chunk.data.all():
        # Sum duplicate entries and drop stored zeros on a private copy.
        chunk = chunk.copy()
        chunk.sum_duplicates()
        chunk.eliminate_zeros()
    totals = row_totals(chunk)
    check_totals_finite(totals, obs_names, start, where)
    if not allow_empty:
        check_cells_nonempty(totals, obs_names, start)
    return chunk, totals


def check_copy(adata, copy) -> bool:
    """Check ``copy=`` up front: a real boolean, and not ``True`` for a backed AnnData.

    Also refuses an AnnData no result can be written into (:func:`check_writable`),
    so every writer that checks ``copy=`` refuses it before any work.
    """
    copy = check_bool("copy", copy)
    check_writable(adata)
    if copy and is_backed(adata):
        raise DfmInputError(
            "copy=True is not supported for backed AnnData; load it into memory "
            "(adata.to_memory()) or write results in place with copy=False."
        )
    return copy


def resolve_copy(adata, copy: bool):
    """Return the AnnData to write into: ``adata`` itself, or a copy when ``copy=True``.

    The one ``copy=`` handler of the AnnData writers: check the argument with
    :func:`check_copy` first, with the others, and call this right before writing.
    """
    return adata.copy() if check_copy(adata, copy) else adata


def check_obsm_rep(adata, use_rep: str) -> np.ndarray:
    """Return ``adata.obsm[use_rep]`` as a finite float 2-D array, or raise clearly."""
    if use_rep == "X":
        if is_backed(adata):
            parts = [chunk for _, _, chunk in iter_row_chunks(adata, None)]
            rep = sp.vstack(parts, format="csr")
        else:
            rep = adata.X
    elif use_rep not in adata.obsm:
        raise DfmInputError(
            f"adata.obsm[{use_rep!r}] not found; available keys: {list(adata.obsm.keys())}."
        )
    else:
        rep = adata.obsm[use_rep]
    if sp.issparse(rep):
        rep = rep.toarray()
    rep = np.asarray(rep)
    if rep.ndim != 2:
        raise DfmInputError(f"{use_rep!r} must be 2-D (cells x dims), got shape {rep.shape}.")
    if rep.dtype.kind not in "iuf":
        raise DfmInputError(f"{use_rep!r} has non-numeric dtype {rep.dtype}.")
    bad = ~np.isfinite(rep).all(axis=1)
    if bad.any():
        raise DfmInputError(
            f"{use_rep!r} has NaN/inf in {int(bad.sum())} cells, e.g. "
            f"{_preview(adata.obs_names[bad])}. Drop those cells or recompute the embedding."
        )
    return rep


def check_obs_key(adata, key: str, what: str = "column") -> pd.Series:
    """Return ``adata.obs[key]`` or raise an error that lists the available columns."""
    if key not in adata.obs.columns:
        raise DfmInputError(
            f"adata.obs[{key!r}] not found; available columns: {list(adata.obs.columns)}."
        )
    col = adata.obs[key]
    if col.isna().any():
        raise DfmInputError(
            f"adata.obs[{key!r}] has {int(col.isna().sum())} missing values; fill or drop "
            "those cells first."
        )
    return col


# ------------------------------------------------------------------ argument checks
# One place for the scalar argument checks every public function uses, so that
# ``chunk_size=2.5``, ``seed='3'`` or ``key_added='a/b'`` fail the same way,
# before anything is read or written.


def check_int(
    name: str,
    value,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Return ``value`` as a Python int, or raise if it is not an integer in range.

    Booleans, floats (even ``2.0``) and strings are refused: no silent coercion.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        hint = " or None" if allow_none else ""
        raise TypeError(
            f"{name} must be an integer{hint}, got {value!r} ({type(value).__name__}). "
            f"Pass a whole number, e.g. {name}={minimum if minimum is not None else 0}."
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise DfmInputError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise DfmInputError(f"{name} must be <= {maximum}, got {value}.")
    return value


#: Seeds are passed to numpy and JAX: both accept 0 .. 2**32 - 1 without surprises.
MAX_SEED = 2**32 - 1


def check_seed(value, name: str = "seed") -> int:
    """Return a valid seed (an integer in ``[0, 2**32 - 1]``)."""
    return check_int(name, value, minimum=0, maximum=MAX_SEED)


def check_float(
    name: str,
    value,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a finite Python float in range, or raise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not np.isfinite(value):
        raise DfmInputError(f"{name} must be a finite number, got {value!r}.")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        op = ">" if strict_min else ">="
        raise DfmInputError(f"{name} must be {op} {minimum}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise DfmInputError(f"{name} must be <= {maximum}, got {value!r}.")
    return value


def check_key(name: str, value, *, allow_none: bool = False) -> str | None:
    """Check an output key (``key_added`` and friends): a non-empty string without '/'.

    h5ad/h5mu files store keys as HDF5 paths, so ``'a/b'`` would make the AnnData
    impossible to save.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a string naming where to store the result, got {value!r} "
            f"({type(value).__name__})."
        )
    if not value.strip():
        raise DfmInputError(f"{name} must be a non-empty string, got {value!r}.")
    if "/" in value:
        raise DfmInputError(
            f"{name}={value!r} contains '/', which .h5ad files cannot store as a key. "
            "Choose a name without '/'."
        )
    return value


def check_choice(name: str, value, choices) -> object:
    """Check that ``value`` is one of ``choices`` (compared with ``==``)."""
    choices = tuple(choices)
    if isinstance(value, (list, dict, set)) or value not in choices:
        raise DfmInputError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}."
        )
    return value


def check_bool(name: str, value) -> bool:
    """Check that ``value`` is a real boolean (numpy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    return bool(value)
