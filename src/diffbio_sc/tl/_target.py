"""The one MuData/AnnData target resolver of the tools that write into a modality.

:func:`resolve_target` checks ``data`` / ``mod`` and returns the AnnData to align
to; :func:`writable_target` returns the object to write into (the copy when
``copy=True``). Used by :func:`~diffbio_sc.tl.load_embeddings` and meant for the
sequence tools (``embed_sequences(data, mod='dna')``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import DfmInputError, _preview, resolve_copy


@dataclass(frozen=True)
class Target:
    """An AnnData to write into, and the object the user passed.

    Attributes
    ----------
    root
        The AnnData or MuData passed in (or its copy).
    mod
        The modality name for a MuData, else ``None``.
    adata
        The AnnData the results go to: ``root`` itself or ``root.mod[mod]``.
    """

    root: object
    mod: str | None
    adata: object


def check_mod(data, mod, default: str | None) -> None:
    """Refuse an AnnData passed with a ``mod`` other than the function's default.

    The rule every tool with ``mod=`` follows (docs/architecture.md, "One
    vocabulary of arguments"): ``mod`` names a MuData modality and defaults to
    the tool's natural one (``'dna'`` for the sequence tools, ``'genetics'`` for
    the genetics tools, ``None`` where there is none); with an AnnData, ``mod``
    left at that default is not used, and any other value is an error (it names
    a modality an AnnData cannot have).
    """
    from anndata import AnnData

    if isinstance(data, AnnData) and mod is not None and mod != default:
        raise DfmInputError(
            f"mod={mod!r} applies to a MuData; an AnnData was passed. Leave mod out, or "
            "pass the MuData that holds the modality."
        )


def _is_mudata(data) -> bool:
    try:
        from mudata import MuData
    except ImportError:  # pragma: no cover - mudata is a dependency
        return False
    return isinstance(data, MuData)


def resolve_target(
    data, mod: str | None = None, *, require_unique_obs: bool = True, what: str = "results"
) -> Target:
    """Return the :class:`Target` for ``data`` (AnnData, or MuData with ``mod``), checked.

    Raises ``TypeError`` for another object, and :class:`DfmInputError` for a
    MuData without ``mod`` or without that modality, an AnnData passed with
    ``mod``, an empty target, or (``require_unique_obs``) duplicate
    ``obs_names``; each message says what to pass instead.
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        check_mod(data, mod, None)
        target = data
    elif _is_mudata(data):
        if mod is None:
            raise DfmInputError(
                f"Pass mod= to choose the MuData modality for the {what}; modalities: "
                f"{list(data.mod)}."
            )
        if not isinstance(mod, str):
            raise TypeError(f"mod must be a modality name (a string), got {mod!r}.")
        if mod not in data.mod:
            raise DfmInputError(
                f"Modality {mod!r} not found; the MuData has {list(data.mod)}. Pass one of "
                "those as mod=."
            )
        target = data.mod[mod]
    else:
        raise TypeError(f"Expected an AnnData or MuData object, got {type(data).__name__}.")
    if target.n_obs == 0:
        raise DfmInputError(f"The AnnData has no observations; nothing to align the {what} to.")
    if require_unique_obs and not target.obs_names.is_unique:
        dup = target.obs_names[target.obs_names.duplicated()].unique()
        raise DfmInputError(
            f"{len(dup)} duplicate obs_names, e.g. {_preview(dup)}. Ids must be unique to align "
            f"the {what}: call adata.obs_names_make_unique() first."
        )
    return Target(root=data, mod=mod, adata=target)


def writable_target(target: Target, copy: bool) -> Target:
    """Return ``target`` itself, or with ``copy=True`` the same target within a copy of its root."""
    root = resolve_copy(target.root, copy)  # the one copy= handler
    if root is target.root:
        return target
    adata = root.mod[target.mod] if target.mod is not None else root
    return Target(root=root, mod=target.mod, adata=adata)
