"""Helpers for the ``.uns['dfm']`` metadata tree.

Only plain, h5ad-serialisable values are stored (str, numbers, bools, lists or
arrays of one type, nested dicts). :func:`to_h5ad_safe` converts what callers
pass; :func:`provenance` is the common ``created_by`` record.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _keys
from ._version import __version__


def to_h5ad_safe(value: Any) -> Any:
    """Convert ``value`` to something anndata can write to ``.h5ad``.

    ``None`` entries of dicts are dropped (h5ad cannot store ``None``); tuples
    become lists; paths become strings; lists of mixed types become lists of
    strings; NumPy scalars become Python scalars.
    """
    if isinstance(value, Mapping):
        return {str(k): to_h5ad_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [str(v) for v in value.tolist()]
        return value
    if isinstance(value, (list, tuple)):
        items = [to_h5ad_safe(v) for v in value if v is not None]
        if not items:
            return []
        if all(isinstance(v, Mapping) for v in items):
            return {str(i): v for i, v in enumerate(items)}
        if all(isinstance(v, str) for v in items):
            return items
        if all(isinstance(v, bool) for v in items):
            return np.asarray(items, dtype=bool)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return np.asarray(items)
        return [str(v) for v in items]
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


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
    dfm_uns(adata)[section] = to_h5ad_safe(value)


def set_entry(adata, section: str, key: str, value: Mapping) -> None:
    """Write ``value`` to ``adata.uns['dfm'][section][key]`` (replacing that entry)."""
    uns = dfm_uns(adata)
    sec = uns.get(section)
    if sec is None:
        sec = {}
        uns[section] = sec
    sec[key] = to_h5ad_safe(value)
