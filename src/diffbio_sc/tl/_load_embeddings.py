"""Import embeddings computed by an upstream model into ``.obsm`` with strict alignment."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys
from .._logging import logger, timed
from .._uns import provenance, set_entry
from .._validate import DfmInputError, _preview, check_bool, check_copy, check_key
from ..io._presets import LAYER_FROM_TOP, get_preset
from ._target import resolve_target, writable_target

_INTEGER_ID = re.compile(r"^[+-]?[0-9]+$")
_UNIT_NORM_ATOL = 1e-3
_ADAPTER_MODE = "precomputed"  # one of _keys.ADAPTER_MODES


def _looks_integer(ids: np.ndarray | pd.Index) -> bool:
    values = pd.Index(ids).astype(str)
    return len(values) > 0 and bool(values.str.fullmatch(_INTEGER_ID.pattern).all())


def _row_stats(emb: np.ndarray, chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Per-row finiteness and L2 norm, computed in chunks to bound temporary memory."""
    n = emb.shape[0]
    finite = np.empty(n, dtype=bool)
    norms = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        block = emb[start : start + chunk].astype(np.float64)
        finite[start : start + chunk] = np.isfinite(block).all(axis=1)
        norms[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return finite, norms


def _numeric_hint(file_ids: np.ndarray, obs: pd.Index, label_columns: Sequence[str]) -> str:
    """Explain a mismatch where one side's ids look like integers and the other's do not."""
    file_int = _looks_integer(file_ids)
    obs_int = _looks_integer(obs)
    if file_int and not obs_int:
        n = len(file_ids)
        positions = set(file_ids.tolist()) == {str(i) for i in range(n)}
        what = f"the row positions 0 .. {n - 1}" if positions else "integers"
        cols = (
            f" The file's label columns are {list(label_columns)}; one of them may hold the "
            "cell ids."
            if label_columns
            else ""
        )
        return (
            f" The file's ids are {what} (e.g. {_preview(file_ids, 3)}) while adata.obs_names "
            f"are not (e.g. {_preview(obs, 3)}): the file probably holds row positions, not "
            "cell ids (Geneformer's EmbExtractor writes a 0 .. n-1 index and sorts cells by "
            "length, so positions do not follow your AnnData). Pass id_key= naming the column "
            "that holds the cell ids (for Geneformer, add it to emb_label), or "
            f"allow_positional=True only if the rows are in adata.obs_names order.{cols}"
        )
    if obs_int and not file_int:
        return (
            f" adata.obs_names look like integers (e.g. {_preview(obs, 3)}) while the file's "
            f"ids do not (e.g. {_preview(file_ids, 3)}): the AnnData probably has default "
            "row-number obs_names. Set adata.obs_names to the ids the model saw (e.g. "
            "adata.obs_names = adata.obs['barcode']) first."
        )
    return ""


def align_ids(
    file_ids: np.ndarray | None,
    obs_names: pd.Index,
    *,
    n_rows: int,
    allow_subset: bool = False,
    allow_positional: bool = False,
    label_columns: Sequence[str] = (),
    n_dims: int | None = None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Return the file row for each observation and an alignment summary.

    The indexer is ``None`` for a positional alignment (rows used in file order).
    Raises :class:`DfmInputError` for missing, duplicate or (without
    ``allow_subset``) extra ids.
    """
    obs = pd.Index(np.asarray(obs_names).astype(str))
    n_obs = len(obs)
    transposed = (
        f" The file's {n_dims} columns equal the number of cells, so the array may be "
        "transposed (dims x cells): re-save it as embeddings.T."
        if n_dims is not None and n_dims == n_obs and n_rows != n_obs
        else ""
    )

    def positional(reason: str) -> tuple[None, dict[str, Any]]:
        if n_rows != n_obs:
            raise DfmInputError(
                f"The file has {n_rows} rows but the AnnData has {n_obs} observations; "
                f"positional alignment ({reason}) needs exactly one row per observation, in "
                f"adata.obs_names order.{transposed}"
            )
        return None, {
            "method": "positional",
            "n_in_file": n_rows,
            "n_obs": n_obs,
            "n_matched": n_obs,
            "n_extra_dropped": 0,
            "reordered": False,
        }

    if file_ids is None:
        if not allow_positional:
            raise DfmInputError(
                "The file holds no ids, so rows can only be matched by position; pass "
                "allow_positional=True if the rows follow adata.obs_names, or re-export with ids."
            )
        return positional("the file has no ids")

    fidx = pd.Index(np.asarray(file_ids).astype(str))
    if not fidx.is_unique:
        dup = fidx[fidx.duplicated()].unique()
        raise DfmInputError(
            f"The file has {len(dup)} duplicated ids, e.g. {_preview(dup)}. Each row must have "
            "a unique id; a duplicated id cannot be matched to one cell. Deduplicate the export "
            "(check whether the tool was run twice on the same cells)."
        )
    indexer = fidx.get_indexer(obs)
    missing_mask = indexer < 0
    if missing_mask.any():
        hint = _numeric_hint(fidx.to_numpy(), obs, label_columns)
        # Only row-number ids may be overridden by position. A file with real ids that
        # do not match (e.g. an AnnData whose obs_names were reset to 0 .. n-1) must be
        # fixed on the AnnData side, not aligned by a row order the ids contradict.
        if allow_positional and _looks_integer(fidx) and not _looks_integer(obs):
            logger.warning(
                "The file's ids do not match adata.obs_names; aligning by position because "
                "allow_positional=True."
            )
            return positional("allow_positional=True with non-matching ids")
        missing = obs[missing_mask]
        raise DfmInputError(
            f"{len(missing)} of {n_obs} observations have no row in the file, e.g. "
            f"{_preview(missing)}. Every cell in the AnnData needs an embedding: subset the "
            f"AnnData to the exported cells (adata = adata[adata.obs_names.isin(ids)]) or "
            f"re-export all cells.{hint}{transposed}"
        )
    n_extra = n_rows - n_obs
    if n_extra > 0 and not allow_subset:
        keep = np.zeros(n_rows, dtype=bool)
        keep[indexer] = True
        extra = fidx[~keep]
        raise DfmInputError(
            f"The file has {n_extra} ids that are not in adata.obs_names, e.g. "
            f"{_preview(extra)}. If the AnnData is a filtered subset of the exported cells, "
            "pass allow_subset=True to drop them (recorded in the alignment summary)."
        )
    return indexer, {
        "method": "ids",
        "n_in_file": n_rows,
        "n_obs": n_obs,
        "n_matched": n_obs,
        "n_extra_dropped": int(n_extra),
        "reordered": bool(np.any(np.diff(indexer) < 0)),
    }


def load_embeddings(
    adata,
    path: str | os.PathLike,
    *,
    source: str = "generic",
    key_added: str | None = None,
    artifact_id: str | None = None,
    preprocessing_version: str | None = None,
    pooling_strategy: str | None = None,
    id_key: str | None = None,
    obsm_key: str | None = None,
    allow_subset: bool = False,
    allow_positional: bool = False,
    layer_index: int | None = None,
    l2_normalize: bool = False,
    requires_batch_context: bool | None = None,
    batch_key: str | None = None,
    context_version: str | None = None,
    ids_key: str | None = None,
    dim_columns: str | Sequence[str] | None = None,
    format: str | None = None,
    mod: str | None = None,
    max_dims: int = 65_536,
    copy: bool = False,
):
    """Load an embedding exported by an upstream model into ``.obsm``, aligned by id.

    Rows are matched to ``adata.obs_names`` by id (compared as strings) and
    reordered to follow them. Every observation must have exactly one row;
    missing ids, duplicated ids, extra ids (unless ``allow_subset``) and NaN or
    infinite rows are errors, raised before anything is written, so the AnnData
    is unchanged after any error. Values are stored as ``float32``.

    Parameters
    ----------
    adata
        AnnData, or a MuData together with ``mod``.
    path
        Embedding file: ``.npz``, ``.npy``, ``.h5ad``, ``.csv``, ``.tsv``,
        ``.parquet`` or ``.safetensors`` (see :func:`diffbio_sc.io.read_embeddings`).
    source
        Preset: ``'geneformer'``, ``'scgpt'``, ``'uce'``, ``'generic'``,
        ``'dnabert2'`` or ``'nucleotide_transformer'`` (the last two are
        sequence models whose files hold ``sequence_ids``).
    key_added
        ``.obsm`` key; ``None`` means ``X_<source>``.
    artifact_id
        Name of the model checkpoint or export (e.g. ``'Geneformer-V2-104M'``);
        default: the file name.
    preprocessing_version
        Geneformer: ``'rank_value_v1'`` or ``'rank_value_v2'``; other presets
        accept any string. Recorded as ``'unspecified'`` when not given.
    pooling_strategy
        Geneformer: ``'mean'`` (default) or ``'cls'``; scGPT: ``'cls'``
        (default), ``'mean'`` or ``'weighted_mean'``; UCE: ``'cls'``; sequence
        presets: ``'mean'`` (default), ``'cls'`` or ``'max'``; generic: any.
    id_key
        Tables: the id column (default: a ``cell_id``/``sequence_id`` column, else
        the leading index column). ``.h5ad``: an ``.obs`` column instead of
        ``obs_names``. ``.npz``/``.safetensors``: the id entry.
    obsm_key
        ``.h5ad``: which ``.obsm`` entry to read. ``None`` takes the only entry,
        or else the preset's usual key (``X_scGPT``, ``X_uce``, ...).
    allow_subset
        Accept a file with more rows than the AnnData (ids not in ``obs_names``
        are dropped and counted in the alignment summary).
    allow_positional
        Align by row position when the file holds no ids (``.npy``) or its ids
        are row numbers that do not match ``obs_names`` (which are not row
        numbers themselves). The file must then have exactly ``n_obs`` rows in
        ``obs_names`` order; use with care.
    layer_index
        The layer the export was taken from, as the upstream tool counts it;
        recorded together with a plain-words description. Geneformer counts
        from the top and accepts ``-1`` (penultimate, its default) or ``0``
        (last layer); other tools count from the input (``0`` = embedding-layer
        output, ``-1`` = last layer).
    l2_normalize
        Divide every row by its L2 norm. Whether the rows already had unit norm
        is always recorded (``rows_unit_norm``); scGPT exports are expected to.
    requires_batch_context
        Whether the embedding is only meaningful with its batch context
        (scGPT models that condition on batch). ``True`` needs ``batch_key``.
        Recorded for ``source='scgpt'`` (default ``False``) and whenever given.
    batch_key
        ``.obs`` column with the batch labels the model used (must exist).
    context_version
        Version string of the batch context (e.g. the scGPT checkpoint's batch
        vocabulary).
    ids_key
        ``.npz``/``.safetensors``: the id entry (default ``cell_ids`` or
        ``sequence_ids``, following the preset).
    dim_columns
        Tables: dimension columns as a list of names or a prefix; default the
        columns named ``0`` .. ``d-1``.
    format
        File format, when the suffix does not tell it.
    mod
        MuData modality to write into (its ``.obsm`` and ``.uns``).
    max_dims
        Sanity limit on the number of dimensions.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or the modified copy (AnnData or MuData) when ``copy=True``. Writes:

    ``.obsm[key_added]``
        ``float32`` array ``(n_obs, n_dims)``, rows in ``obs_names`` order.
    ``.uns['dfm']['embeddings'][key_added]``
        ``model_family``, ``adapter_mode`` (``'precomputed'``), ``artifact_id``,
        ``preprocessing_version``, ``pooling_strategy``, ``source``, ``n_dims``,
        ``created_by``, ``artifact_sha256``, ``artifact_format``,
        ``artifact_file``, ``id_source``, ``alignment`` (``method``,
        ``n_in_file``, ``n_obs``, ``n_matched``, ``n_extra_dropped``,
        ``reordered``, ``original_dtype``, ``dtype_converted``),
        ``rows_unit_norm``, ``l2_normalized``; ``obsm_key_in_file`` for
        ``.h5ad``; ``layer_convention`` for Geneformer and ``layer_index`` /
        ``layer_description`` when given; ``requires_batch_context``,
        ``batch_key``, ``context_version`` for scGPT or when given.
        For a MuData these go to the modality's ``.obsm`` and ``.uns``.
    """
    from ..io._embeddings import overflow_note, read_embeddings

    preset = get_preset(source)
    resolved = resolve_target(adata, mod, what="embeddings")
    target = resolved.adata
    key = check_key("key_added", f"X_{preset.name}" if key_added is None else key_added)
    if artifact_id is not None and (not isinstance(artifact_id, str) or not artifact_id.strip()):
        raise DfmInputError(f"artifact_id must be a non-empty string, got {artifact_id!r}.")
    allow_subset = check_bool("allow_subset", allow_subset)
    allow_positional = check_bool("allow_positional", allow_positional)
    l2_normalize = check_bool("l2_normalize", l2_normalize)
    copy = check_copy(adata, copy)
    if requires_batch_context is not None:
        requires_batch_context = check_bool("requires_batch_context", requires_batch_context)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}.")
    pooling = preset.check_pooling(pooling_strategy)
    prep = preset.check_preprocessing(preprocessing_version)
    layer = preset.check_layer(layer_index)
    if requires_batch_context and batch_key is None:
        raise DfmInputError(
            "requires_batch_context=True needs batch_key= naming the .obs column with the "
            "batch labels the model was given."
        )
    if batch_key is not None and batch_key not in target.obs.columns:
        raise DfmInputError(
            f"batch_key={batch_key!r} is not a column of adata.obs; columns: "
            f"{list(target.obs.columns)}."
        )

    with timed(f"loading {preset.name} embeddings from {os.fspath(path)!r}") as info:
        art = read_embeddings(
            path,
            format=format,
            id_key=id_key,
            obsm_key=obsm_key,
            ids_key=ids_key,
            dim_columns=dim_columns,
            allow_positional=allow_positional,
            source=preset.name,
            dtype=np.float32,
            max_dims=max_dims,
            check_finite=False,
        )
        meta = art.metadata
        indexer, summary = align_ids(
            art.ids,
            target.obs_names,
            n_rows=art.n_rows,
            allow_subset=allow_subset,
            allow_positional=allow_positional,
            label_columns=meta.get("label_columns") or (),
            n_dims=art.n_dims,
        )
        # The reader's array is ours alone: take the rows (or keep it) and drop the rest.
        emb = art.embeddings if indexer is None else np.take(art.embeddings, indexer, axis=0)
        del art
        finite, norms = _row_stats(emb)
        bad = ~finite
        if bad.any():
            names = target.obs_names[bad]
            raise DfmInputError(
                f"{int(bad.sum())} embedding rows hold NaN or infinite values, for "
                f"observations {_preview(names)}"
                f"{overflow_note(meta['original_dtype'], emb.dtype)}. Re-export those cells "
                "or remove them from the AnnData first."
            )
        unit = bool(np.allclose(norms, 1.0, rtol=0.0, atol=_UNIT_NORM_ATOL))
        if l2_normalize:
            zero = norms == 0
            if zero.any():
                raise DfmInputError(
                    f"{int(zero.sum())} embedding rows are all zeros and cannot be "
                    f"L2-normalised, e.g. {_preview(target.obs_names[zero])}."
                )
            emb /= norms[:, None].astype(np.float32)
        elif preset.expects_unit_norm and not unit:
            logger.warning(
                "%s embeddings are usually L2-normalised, but these rows are not (norms %.3g "
                ".. %.3g); pass l2_normalize=True to normalise them.",
                preset.name,
                float(norms.min()),
                float(norms.max()),
            )
        summary["original_dtype"] = meta["original_dtype"]
        summary["dtype_converted"] = meta["original_dtype"] not in ("float32", "text")
        entry: dict[str, Any] = {
            "model_family": preset.model_family,
            "adapter_mode": _ADAPTER_MODE,
            "artifact_id": artifact_id or meta["file_name"],
            "preprocessing_version": prep or "unspecified",
            "pooling_strategy": pooling or "unspecified",
            "source": preset.name,
            "n_dims": int(emb.shape[1]),
            "created_by": provenance("tl.load_embeddings"),
            "artifact_sha256": meta["sha256"],
            "artifact_format": meta["format"],
            "artifact_file": meta["file_name"],
            "id_source": meta["id_source"],
            "alignment": summary,
            "rows_unit_norm": unit,
            "l2_normalized": bool(l2_normalize),
        }
        if meta.get("obsm_key") is not None:
            entry["obsm_key_in_file"] = meta["obsm_key"]
        if preset.layer_convention == LAYER_FROM_TOP:
            entry["layer_convention"] = (
                f"{preset.name} counts layers from the top: 0 = last layer, -1 = penultimate"
            )
        if layer is not None:
            entry["layer_index"] = layer
            entry["layer_description"] = preset.describe_layer(layer)
        if preset.batch_context or requires_batch_context is not None:
            entry["requires_batch_context"] = bool(requires_batch_context)
        if batch_key is not None:
            entry["batch_key"] = batch_key
        if context_version is not None:
            entry["context_version"] = str(context_version)

        out = writable_target(resolved, copy)
        target = out.adata
        if key in target.obsm:
            logger.info("    replacing existing .obsm[%r]", key)
        target.obsm[key] = emb
        set_entry(target, _keys.UNS_EMBEDDINGS, key, entry)
        info["added"] = [f".obsm[{key!r}]", f".uns['dfm']['embeddings'][{key!r}]"]
    return out.root if copy else None
