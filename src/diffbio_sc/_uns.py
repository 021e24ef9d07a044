"""Helpers for the ``.uns['dfm']`` metadata tree.

Only plain, h5ad-serialisable values are stored (str, numbers, bools, ``None``,
lists or arrays of one type, nested dicts). :func:`to_h5ad_safe` converts what
callers pass and raises, naming the key path, on anything it cannot store
faithfully; :func:`provenance` is the common ``created_by`` record.

Layout. Sections that describe one result each (tokenizer, bins, soft ranks,
gene medians) are keyed by the ``key_added`` of the result they describe, like
the data: ``.uns['dfm']['tokenizer']['dfm_tokens']`` describes
``.obsm['dfm_tokens']``, so a second call under another key keeps both records.
Files written before this layout hold one flat record per section
(``.uns['dfm']['tokenizer']['recipe']``); :func:`get_record` reads both, and
:func:`set_record` moves a flat record under its own ``key_added`` before adding
a new one.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _keys
from ._version import __version__

#: The key a flat record (the layout of 0.1.0) describes when it names none itself.
RECORD_DEFAULT_KEYS = {
    _keys.UNS_TOKENIZER: _keys.TOKENS_KEY,
    _keys.UNS_BINS: _keys.BINS_KEY,
    _keys.UNS_SOFT_RANK: _keys.SOFT_RANK_KEY,
    _keys.UNS_MEDIANS: _keys.MEDIAN_KEY,
}


class UnsValueError(TypeError):
    """A value cannot be stored in ``.uns`` (and so in an ``.h5ad`` file) as it is."""


def _cannot(path: str, value: Any, why: str) -> UnsValueError:
    return UnsValueError(
        f"Cannot store {path} = {value!r:.80} ({type(value).__name__}) in .uns: {why}. "
        "Convert it to a str, number, bool, None, a list or array of one of these, or a "
        "dict of such values."
    )


def to_h5ad_safe(value: Any, path: str = "value") -> Any:
    """Convert ``value`` to something anndata writes to ``.h5ad`` and reads back unchanged.

    Tuples become lists; paths become strings; NumPy scalars become Python
    scalars; lists of numbers (or of bools) become arrays; lists of strings stay
    lists; ``None`` stays ``None`` (anndata >= 0.12 stores it). Anything else
    raises :class:`UnsValueError` naming ``path`` (the key path of the value):
    objects without a plain representation, lists that mix types or hold
    dicts or ``None``, keys that are not strings or contain ``'/'``. Nothing
    is converted with ``str()`` or silently dropped.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, np.str_)) or "/" in k or not k:
                raise _cannot(f"{path}[{k!r}]", v, "keys must be non-empty strings without '/'")
            out[str(k)] = to_h5ad_safe(v, f"{path}[{k!r}]")
        return out
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        if value.dtype.kind in "biufU":
            return value.item()
        raise _cannot(path, value, f"NumPy scalars of dtype {value.dtype} are not supported")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return value
        if value.dtype.kind in "UO":
            items = value.tolist() if value.ndim == 1 else None
            if items is not None and all(isinstance(v, str) for v in items):
                return [str(v) for v in items]
            raise _cannot(path, value, "an array that is not numeric must be 1-D and hold strings")
        raise _cannot(path, value, f"arrays of dtype {value.dtype} are not supported")
    if isinstance(value, (list, tuple)):
        items = [to_h5ad_safe(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not items:
            return []
        if all(isinstance(v, str) for v in items):
            return items
        if all(isinstance(v, bool) for v in items):
            return np.asarray(items, dtype=bool)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return np.asarray(items)
        if all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in items):
            try:
                return np.stack(items)
            except ValueError:
                raise _cannot(path, value, "its arrays have different shapes") from None
        kinds = sorted({type(v).__name__ for v in items})
        raise _cannot(
            path,
            value,
            f"a list must hold values of one kind (strings, numbers or bools), not {kinds}; "
            "store a list of records as a dict keyed by name",
        )
    raise _cannot(path, value, "no h5ad representation")


def provenance(function: str) -> dict[str, str]:
    """Return the ``created_by`` record for a result written by ``function``."""
    return {
        "function": f"diffbio_sc.{function}",
        "package": "diffbio_sc",
        "version": __version__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def dfm_uns(adata) -> dict:
    """Return ``adata.uns['dfm']``, creating it if absent."""
    uns = adata.uns.get(_keys.UNS_KEY)
    if uns is None:
        uns = {}
        adata.uns[_keys.UNS_KEY] = uns
    return uns


def set_section(adata, section: str, value: Mapping) -> None:
    """Write ``value`` to ``adata.uns['dfm'][section]`` (replacing it)."""
    dfm_uns(adata)[section] = to_h5ad_safe(value, f".uns['dfm'][{section!r}]")


def set_entry(adata, section: str, key: str, value: Mapping) -> None:
    """Write ``value`` to ``adata.uns['dfm'][section][key]`` (replacing that entry)."""
    safe = to_h5ad_safe(value, f".uns['dfm'][{section!r}][{key!r}]")  # before any change
    uns = dfm_uns(adata)
    sec = uns.get(section)
    if sec is None:
        sec = {}
        uns[section] = sec
    sec[key] = safe


def is_flat_record(section_value) -> bool:
    """Whether a section holds one flat record (the layout before records were keyed).

    A keyed section maps result keys to record dicts; a flat record holds
    scalar fields (``recipe``, ``n_bins``, ``created_by``...) directly.
    """
    return isinstance(section_value, Mapping) and any(
        not isinstance(v, Mapping) for v in section_value.values()
    )


def set_record(adata, section: str, key: str, value: Mapping) -> None:
    """Write the record describing result ``key`` to ``adata.uns['dfm'][section][key]``.

    Other keys' records are kept. A flat record left by an earlier version is
    first moved under the key it describes (its ``key_added`` field, or the
    section's default key).
    """
    safe = to_h5ad_safe(value, f".uns['dfm'][{section!r}][{key!r}]")  # before any change
    uns = dfm_uns(adata)
    sec = uns.get(section)
    if is_flat_record(sec):
        old_key = str(sec.get("key_added", RECORD_DEFAULT_KEYS.get(section, "unknown")))
        sec = {old_key: dict(sec)}
    elif not isinstance(sec, Mapping):
        sec = {}
    else:
        sec = dict(sec)
    sec[key] = safe
    uns[section] = sec


def get_record(adata_or_uns, section: str, key: str | None = None) -> dict | None:
    """Return the record of ``section`` that describes result ``key`` (old or new layout).

    ``key=None`` means the section's default key (e.g. ``'dfm_tokens'`` for the
    tokenizer). Returns ``None`` when there is no such record. A flat record
    (written before records were keyed) is returned when it describes ``key``.
    """
    uns = getattr(adata_or_uns, "uns", adata_or_uns)
    sec = (uns.get(_keys.UNS_KEY) or {}).get(section)
    if not isinstance(sec, Mapping):
        return None
    key = RECORD_DEFAULT_KEYS.get(section) if key is None else key
    if is_flat_record(sec):
        described = sec.get("key_added", RECORD_DEFAULT_KEYS.get(section))
        return dict(sec) if described == key else None
    rec = sec.get(key)
    return dict(rec) if isinstance(rec, Mapping) else None
