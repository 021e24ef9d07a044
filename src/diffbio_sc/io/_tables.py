"""Reading gene -> value tables (medians, vocabularies) from mappings and files.

Geneformer publishes its gene median and token dictionaries as Python pickles.
Loading a pickle executes arbitrary code, so it needs ``trust_pickle=True``;
convert them to JSON once instead (see :func:`pickle_to_json_hint`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .._validate import DfmInputError

_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pk"}


def pickle_to_json_hint(path) -> str:
    return (
        "Convert the pickle to JSON once, in a session where you trust the file:\n"
        "    import json, pickle\n"
        f"    d = pickle.load(open({str(path)!r}, 'rb'))\n"
        "    json.dump({str(k): (v if isinstance(v, (int, str)) else float(v)) "
        "for k, v in d.items()}, open('table.json', 'w'))\n"
        "then pass the .json path (or pass trust_pickle=True to load the pickle directly)."
    )


def is_table_path(value) -> bool:
    """Whether ``value`` looks like a path to a table file rather than a column name."""
    if isinstance(value, os.PathLike):
        return True
    if isinstance(value, str):
        return Path(value).suffix.lower() in {".json", ".csv", ".tsv", ".txt", *_PICKLE_SUFFIXES}
    return False


def read_table(path, *, what: str, value_kind: str, trust_pickle: bool = False) -> dict:
    """Read a gene -> value mapping from JSON, CSV/TSV or (trusted) pickle.

    CSV/TSV: the first column holds gene IDs; the value column is the one named
    like ``what`` (e.g. ``median``, ``token_id``/``id``) or else the second column.
    A table whose first row already holds a number after the gene ID is read as
    having no header row.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} table not found: {path}")
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        if not trust_pickle:
            raise DfmInputError(
                f"{path} is a pickle; unpickling can run arbitrary code, so it is refused "
                "by default. " + pickle_to_json_hint(path)
            )
        import pickle

        with open(path, "rb") as fh:
            table = pickle.load(fh)  # noqa: S301 - explicit trust flag given
        if not isinstance(table, Mapping):
            raise DfmInputError(f"{path} does not hold a dictionary (got {type(table).__name__}).")
        return dict(table)
    if suffix == ".json":
        with open(path) as fh:
            table = json.load(fh)
        if not isinstance(table, Mapping):
            raise DfmInputError(
                f"{path} must hold a JSON object mapping gene -> {value_kind}, got "
                f"{type(table).__name__}."
            )
        return dict(table)
    sep = "\t" if suffix in {".tsv", ".txt"} else ","
    # A header row is present unless the first row already holds a number
    # after the gene ID (a headerless "gene,value" table).
    try:
        first = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DfmInputError(f"{what} table {path} is empty.") from None
    if first.shape[1] < 2:
        raise DfmInputError(
            f"{path} needs at least two columns (gene ID, {value_kind}); found "
            f"{first.shape[1]}. Use a comma-separated .csv or tab-separated .tsv file."
        )
    has_header = not any(_is_number(x) for x in first.iloc[0, 1:])
    df = pd.read_csv(path, sep=sep, header=0 if has_header else None)
    if df.shape[1] < 2:
        raise DfmInputError(
            f"{path} needs at least two columns (gene ID, {value_kind}); found {list(df.columns)}."
        )
    lowered = {str(c).lower(): c for c in df.columns}
    candidates = {
        "median": ["median", "gene_median", "dfm_median", "value"],
        "token id": ["token_id", "id", "token", "value"],
    }.get(value_kind, ["value"])
    value_col = next((lowered[c] for c in candidates if c in lowered), df.columns[1])
    gene_col = df.columns[0] if value_col != df.columns[0] else df.columns[1]
    return dict(zip(df[gene_col].astype(str), df[value_col], strict=True))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
