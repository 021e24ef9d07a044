"""Identifier normalisation shared by tokenization, the native model and embedding import.

* Gene IDs: Ensembl version suffixes are removed (``ENSG00000139618.15`` ->
  ``ENSG00000139618``), so tables and data written with different Ensembl
  releases match (:func:`strip_ensembl_version`, :func:`normalise_gene_ids`).
* Row IDs (cells, sequences): stored as integers, floats of whole numbers,
  bytes or objects, they become the same decimal text that ``obs_names`` hold
  (:func:`ids_to_str`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from .._validate import DfmInputError, _preview

_ENSEMBL_VERSIONED = re.compile(r"^(ENS[A-Z]*[GTPE]\d{11})\.\d+$")


def strip_ensembl_version(name: str) -> str:
    """``'ENSG00000139618.15'`` -> ``'ENSG00000139618'``; other names unchanged."""
    m = _ENSEMBL_VERSIONED.match(name)
    return m.group(1) if m else name


def normalise_gene_ids(names) -> np.ndarray:
    """Strip Ensembl version suffixes from an iterable of gene names."""
    return normalise_gene_ids_counted(names)[0]


def normalise_gene_ids_counted(names) -> tuple[np.ndarray, int]:
    """:func:`normalise_gene_ids` and the number of names it changed.

    Names that are all strings, none with a ``.`` (which a version suffix
    needs), are returned as they are after one check of their joined text:
    0.5 ms for 20,000 names instead of 10 ms name by name.
    """
    index = names if isinstance(names, pd.Index) else None
    if index is None and isinstance(names, (list, tuple, np.ndarray, pd.Series)):
        arr = np.asarray(names, dtype=object)
        index = pd.Index(arr) if arr.ndim == 1 else None
    if index is not None and (index.size == 0 or index.inferred_type == "string"):
        values = index.to_numpy(dtype=object, copy=True)
        if "." not in "".join(values):
            return values, 0
    out = [str(n) for n in (names if index is None else index)]
    ids = np.asarray([strip_ensembl_version(n) for n in out], dtype=object)
    return ids, int(sum(a != b for a, b in zip(out, ids, strict=True)))


def ids_to_str(values: Any, where: str) -> np.ndarray:
    """Convert ids to a unicode string array; integers become their decimal text."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DfmInputError(f"{where} must be 1-D, got shape {arr.shape}.")
    kind = arr.dtype.kind
    not_integer = f"{where} holds non-integer or missing numbers; ids must be strings or integers."
    if kind == "U":
        out = arr.astype(str)
    elif kind == "S":
        try:
            out = np.char.decode(arr, "utf-8").astype(str)
        except UnicodeDecodeError as err:
            raise DfmInputError(f"{where} holds bytes that are not UTF-8 ({err}).") from None
    elif kind in "iu":
        out = arr.astype(str)
    elif kind == "f":
        finite = np.isfinite(arr)
        if not (finite.all() and np.all(arr == np.round(arr))):
            raise DfmInputError(not_integer)
        out = arr.astype(np.int64).astype(str)
    elif kind == "O":
        series = pd.Series(arr, dtype=object)
        missing = series.isna().to_numpy()
        if missing.any():
            raise DfmInputError(
                f"{where} has {int(missing.sum())} missing ids, e.g. at rows "
                f"{_preview(np.flatnonzero(missing))}. Every row needs an id."
            )

        def text(v) -> str:
            # a float column of whole numbers (e.g. a Parquet/.obs id column) reads
            # as 7.0: write it as 7, as for float arrays, so it can match '7'
            if isinstance(v, (float, np.floating)):
                if not float(v).is_integer():
                    raise DfmInputError(not_integer)
                return str(int(v))
            return str(v)

        out = np.asarray([text(v) for v in series.tolist()], dtype=str)
    else:
        raise DfmInputError(f"{where} has dtype {arr.dtype}; ids must be strings or integers.")
    empty = np.flatnonzero(out == "")
    if empty.size:
        raise DfmInputError(
            f"{where} has {empty.size} empty ids, e.g. at rows {_preview(empty)}. Every row "
            "needs a non-empty id."
        )
    return out
