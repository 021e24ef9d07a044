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

import numpy as np
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


def _duplicates_error(path, what: str, dup: list, values: dict) -> DfmInputError:
    shown = ", ".join(f"{g!r}: {values[g]}" for g in dup[:5])
    more = f" (and {len(dup) - 5} more)" if len(dup) > 5 else ""
    return DfmInputError(
        f"The {what} table {path} lists {len(dup)} gene IDs more than once ({shown}{more}); "
        "which row to use is ambiguous. Keep one row per gene."
    )


def _open_checked(path: Path, what: str) -> Path:
    """Return ``path`` after checking that it is a readable file, with errors naming it."""
    if not path.exists():
        raise FileNotFoundError(
            f"{what} table not found: {path} (resolved from the working directory "
            f"{Path.cwd()}). Check the path, or pass a .var column name or a mapping instead."
        )
    if path.is_dir():
        raise DfmInputError(
            f"{what} table {path} is a directory; pass the path of the .json/.csv/.tsv file "
            "inside it."
        )
    return path


def _read_json(path: Path, what: str, value_kind: str) -> dict:
    def no_duplicates(pairs):
        table, dup = {}, []
        for k, v in pairs:
            if k in table:
                dup.append(k)
            table[k] = v
        if dup:
            raise _duplicates_error(path, what, dup, {k: "repeated key" for k in dup})
        return table

    try:
        with open(path, encoding="utf-8") as fh:
            table = json.load(fh, object_pairs_hook=no_duplicates)
    except UnicodeDecodeError:
        raise DfmInputError(
            f"{what} table {path} is not a text file (not UTF-8); expected a JSON object "
            f'mapping gene -> {value_kind}, e.g. {{"ENSG00000139618": 1.5}}.'
        ) from None
    except json.JSONDecodeError as err:
        raise DfmInputError(
            f"{what} table {path} is not valid JSON ({err.msg} at line {err.lineno}, column "
            f"{err.colno}); expected an object mapping gene -> {value_kind}."
        ) from None
    if not isinstance(table, Mapping):
        raise DfmInputError(
            f"{path} must hold a JSON object mapping gene -> {value_kind}, got "
            f"{type(table).__name__}."
        )
    return dict(table)


def _read_delimited(path: Path, what: str, value_kind: str, sep: str) -> dict:
    not_text = (
        f"{what} table {path} could not be read as a {'tab' if sep == chr(9) else 'comma'}-"
        f"separated text table"
    )
    try:
        # Everything is read as text first: gene IDs stay exactly as written
        # (no '0123' -> 123, no 'NA' -> NaN).
        raw = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DfmInputError(f"{what} table {path} is empty.") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DfmInputError(
            f"{not_text} ({type(err).__name__}: {str(err)[:120]}). Pass a UTF-8 .csv or .tsv "
            f"file with a gene ID column and a {value_kind} column."
        ) from None
    if raw.shape[1] < 2:
        raise DfmInputError(
            f"{path} needs at least two columns (gene ID, {value_kind}); found "
            f"{raw.shape[1]}. Use a comma-separated .csv or tab-separated .tsv file."
        )
    # A header row is present unless the first row already holds a number
    # after the gene ID (a headerless "gene,value" table).
    has_header = not any(_is_number(x) for x in raw.iloc[0, 1:])
    if has_header:
        columns = [str(c) for c in raw.iloc[0]]
        df = raw.iloc[1:].reset_index(drop=True)
    else:
        columns = [str(i) for i in range(raw.shape[1])]
        df = raw
    lowered = {c.lower(): i for i, c in enumerate(columns)}
    candidates = {
        "median": ["median", "gene_median", "dfm_median", "value"],
        "token id": ["token_id", "id", "token", "value"],
    }.get(value_kind, ["value"])
    value_pos = next((lowered[c] for c in candidates if c in lowered), 1)
    gene_pos = 0 if value_pos != 0 else 1
    genes = df.iloc[:, gene_pos].astype(str)
    text = df.iloc[:, value_pos].astype(str).str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = values.isna() & (text != "")
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        shown = ", ".join(f"{genes.iloc[r]!r}: {text.iloc[r]!r}" for r in rows[:5])
        raise DfmInputError(
            f"The {value_kind} column {columns[value_pos]!r} of {what} table {path} holds "
            f"{rows.size} entries that are not numbers ({shown}); fix the table."
        )
    dup_mask = genes.duplicated(keep=False).to_numpy()
    if dup_mask.any():
        dup = list(dict.fromkeys(genes[dup_mask]))
        shown = {g: list(values[genes == g]) for g in dup[:5]}
        raise _duplicates_error(path, what, dup, shown)
    return dict(zip(genes, values.tolist(), strict=True))


def read_table(path, *, what: str, value_kind: str, trust_pickle: bool = False) -> dict:
    """Read a gene -> value mapping from JSON, CSV/TSV or (trusted) pickle.

    CSV/TSV: the first column holds gene IDs (read as text, exactly as
    written); the value column is the one named like ``what`` (e.g.
    ``median``, ``token_id``/``id``) or else the second column. A table whose
    first row already holds a number after the gene ID is read as having no
    header row. Empty values are missing (NaN).

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    DfmInputError
        A directory, a file that is not a text table or JSON object, values
        that are not numbers, a gene listed twice (CSV/TSV rows or JSON keys),
        or a pickle without ``trust_pickle=True``.
    """
    path = _open_checked(Path(path), what)
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
        return _read_json(path, what, value_kind)
    return _read_delimited(path, what, value_kind, "\t" if suffix in {".tsv", ".txt"} else ",")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
