"""The ``.h5ad`` format: an ``.obsm`` entry with the ``obs_names`` (or an ``.obs`` column) as ids.

Only ``obs`` and the chosen ``.obsm`` entry are read, never ``X``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..._validate import DfmInputError
from ._common import ReadRequest, WriteRequest, check_numeric_dtype, check_shape, ids_to_str


def _choose_obsm_key(keys: list[str], obsm_key: str | None, preferred: tuple[str, ...]) -> str:
    if obsm_key is not None:
        if obsm_key not in keys:
            raise DfmInputError(f"The .h5ad has no .obsm[{obsm_key!r}]; its .obsm keys are {keys}.")
        return obsm_key
    if not keys:
        raise DfmInputError(
            "The .h5ad has no .obsm entries, so it holds no embedding. Store the embedding "
            "in .obsm (e.g. adata.obsm['X_scGPT']) before exporting."
        )
    if len(keys) == 1:
        return keys[0]
    for key in preferred:
        if key in keys:
            return key
    raise DfmInputError(
        f"The .h5ad holds several .obsm entries {keys}; pass obsm_key= to choose one."
    )


def read_h5ad(req: ReadRequest):
    """Read one ``.obsm`` entry and the ids of an ``.h5ad``."""
    path, obsm_key, id_key = req.path, req.obsm_key, req.id_key
    import h5py
    import scipy.sparse as sp

    try:
        from anndata.io import read_elem
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata.experimental import read_elem

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DfmInputError(
            f"Cannot open {os.fspath(path)!r} as .h5ad ({err}). Check that it is an AnnData "
            "file (adata.write_h5ad), or pass format= if it is another format."
        ) from None
    with f:
        if "obs" not in f or ("obsm" in f and not isinstance(f["obsm"], h5py.Group)):
            raise DfmInputError(
                f"{os.fspath(path)!r} is an HDF5 file but not an AnnData .h5ad this anndata "
                "version can read (no 'obs' group, or a legacy .obsm layout); re-save it with "
                "a current anndata (adata.write_h5ad)."
            )
        keys = sorted(f["obsm"].keys()) if "obsm" in f else []
        key = _choose_obsm_key(keys, obsm_key, req.preferred_obsm)
        elem = f["obsm"][key]
        where = f"The .h5ad entry .obsm[{key!r}]"
        if isinstance(elem, h5py.Dataset):
            check_numeric_dtype(elem.dtype, where)
            check_shape(elem.shape, where, req.max_dims)
            arr = elem[()]
            columns = None
        else:
            value = read_elem(elem)
            columns = None
            if isinstance(value, pd.DataFrame):
                bad = [c for c in value.columns if value[c].dtype.kind not in "iuf"]
                if bad:
                    raise DfmInputError(f"{where} is a table with non-numeric columns {bad}.")
                columns = [str(c) for c in value.columns]
                arr = value.to_numpy()
            elif sp.issparse(value):
                arr = value.toarray()
            else:
                arr = np.asarray(value)
        obs = read_elem(f["obs"])
    if id_key is None:
        ids = ids_to_str(obs.index.to_numpy(), "The .h5ad obs_names")
        id_source = "obs_names"
    else:
        if id_key not in obs.columns:
            raise DfmInputError(
                f"id_key={id_key!r} is not a column of the .h5ad's .obs; columns: "
                f"{list(obs.columns)}. Leave id_key=None to use its obs_names."
            )
        ids = ids_to_str(obs[id_key].to_numpy(dtype=object), f"The .h5ad .obs[{id_key!r}]")
        id_source = f"obs column {id_key!r}"
    labels = obs.reset_index(drop=True) if obs.shape[1] else None
    info = {
        "obsm_key": key,
        "id_source": id_source,
        "columns": columns,
        "label_columns": [str(c) for c in obs.columns if c != id_key],
    }
    return arr, ids, info, labels


def write_h5ad(tmp: Path, emb: np.ndarray, req: WriteRequest) -> None:
    """Write an AnnData holding only ``.obs`` (ids and labels) and ``.obsm[obsm_key]``."""
    import anndata as ad

    n = emb.shape[0]
    obs = req.labels.copy() if req.labels is not None else pd.DataFrame(index=range(n))
    obs.index = pd.Index(req.ids, name=None)
    ad.AnnData(obs=obs, obsm={req.obsm_key: emb}).write_h5ad(tmp)
