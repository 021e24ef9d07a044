"""Deprecation shims for renamed arguments (docs/architecture.md, "One vocabulary of arguments")."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ._validate import DfmInputError


def renamed_arguments(
    function: str,
    old_kwargs: dict[str, Any],
    renames: Mapping[str, str],
    new_values: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """Map arguments passed under their old names to the new ones, with a ``FutureWarning``.

    ``old_kwargs`` are the extra keywords a function received (its ``**kwargs``);
    each must be an old name in ``renames`` (``{old: new}``), else ``TypeError``
    as for any unexpected keyword. Returns ``{new: value}`` for the new names:
    the old name's value where it was passed (an error when the new name was
    passed too, with a value other than its default), else ``new_values[new]``.
    """
    unknown = sorted(set(old_kwargs) - set(renames))
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword argument(s) {unknown}.")
    out = dict(new_values)
    for old, value in old_kwargs.items():
        new = renames[old]
        if out[new] != defaults[new]:
            raise DfmInputError(f"Pass {new}= only; {old}= is its old name.")
        warnings.warn(
            f"{function}({old}=) is deprecated and will be removed; use {new}= (same meaning).",
            FutureWarning,
            stacklevel=3,
        )
        out[new] = value
    return out
