"""Array formats: ``.npz``, ``.npy`` and ``.safetensors`` (read and write).

Headers are read before any data, and nothing is ever unpickled
(``allow_pickle=False`` throughout).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..._validate import DfmInputError
from ._common import (
    SAFE_ID_FIX,
    ReadRequest,
    WriteRequest,
    check_numeric_dtype,
    check_shape,
    choose_ids_key,
    ids_to_str,
    read_npy_header,
    require_ids,
)

_NO_IDS_FIX = (
    "Add the ids (np.savez(path, embeddings=emb, cell_ids=np.asarray(ids, dtype=str)) or "
    "dfm.io.write_embeddings(path, emb, ids)) or pass ids_key= naming the id entry."
)


def _refuse_pickle(err: ValueError, what: str) -> None:
    """Turn NumPy's ``allow_pickle`` refusal into our message; re-raise anything else."""
    if "allow_pickle" in str(err):
        raise DfmInputError(
            f"The {what} holds object arrays, which diffbio_sc refuses to unpickle "
            f"(unpickling a file can run arbitrary code; allow_pickle=False). {SAFE_ID_FIX}"
        ) from None
    raise DfmInputError(f"The {what} cannot be read ({err}). Re-export it.") from None


# --------------------------------------------------------------------------- .npz


def read_npz(req: ReadRequest):
    """Read ``embeddings`` and the ids of an ``.npz``."""
    path = req.path
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DfmInputError(
            f"{os.fspath(path)!r} is not a valid .npz (zip) file ({err}). Re-export it, or "
            "pass format= if it is another format."
        ) from None
    with zf:
        headers: dict[str, tuple | None] = {}
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                try:
                    headers[member[:-4]] = read_npy_header(fh)
                except (ValueError, EOFError, zipfile.BadZipFile) as err:
                    raise DfmInputError(
                        f"Entry {member!r} of {os.fspath(path)!r} is not a valid .npy array "
                        f"({err})."
                    ) from None
    names = list(headers)
    if req.embeddings_key not in headers:
        raise DfmInputError(
            f"The .npz has no array {req.embeddings_key!r}; it holds {names}. Save the "
            "embeddings under 'embeddings' or pass embeddings_key= naming the array."
        )
    ids_key = choose_ids_key(
        names, req.ids_key, req.prefer_ids, ".npz", f"arrays {names}", req.extra_id_arrays
    )
    require_ids(
        ids_key is not None,
        req.allow_positional,
        ".npz",
        f"arrays: {names}; expected 'cell_ids' or 'sequence_ids' beside 'embeddings'",
        _NO_IDS_FIX,
    )
    for key in (req.embeddings_key, ids_key):
        if key is not None and headers[key] is not None and headers[key][1].hasobject:
            raise DfmInputError(
                f"The .npz entry {key!r} is an object array (dtype=object). NumPy can only load "
                "object arrays by unpickling them, and unpickling a file can run arbitrary "
                f"code, so diffbio_sc refuses it (allow_pickle=False). {SAFE_ID_FIX}"
            )
    emb_header = headers[req.embeddings_key]
    where = f"The .npz array {req.embeddings_key!r}"
    if emb_header is not None:
        check_shape(emb_header[0], where, req.max_dims)
        check_numeric_dtype(emb_header[1], where)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[req.embeddings_key]
            ids = npz[ids_key] if ids_key is not None else None
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as err:
        _refuse_pickle(err if isinstance(err, ValueError) else ValueError(str(err)), ".npz")
    if ids is not None:
        ids = ids_to_str(ids, f"The .npz id array {ids_key!r}")
    info = {
        "embeddings_key": req.embeddings_key,
        "ids_key": ids_key,
        "id_source": f"npz array {ids_key!r}" if ids_key else "row position",
    }
    return arr, ids, info, None


def write_npz(tmp: Path, emb: np.ndarray, req: WriteRequest) -> None:
    """Write ``embeddings`` and the ids (a unicode array) to an ``.npz``."""
    saver = np.savez_compressed if req.compress else np.savez
    with open(tmp, "wb") as fh:
        saver(fh, **{req.embeddings_key: emb, req.ids_key: req.ids})


# --------------------------------------------------------------------------- .npy


def read_npy(req: ReadRequest):
    """Read a bare ``.npy`` array (positional only)."""
    path = req.path
    if not req.allow_positional:
        raise DfmInputError(
            f"{os.fspath(path)!r} is a bare .npy array with no cell ids, so its rows can only "
            "be matched to cells by position, which silently mislabels cells when the tool "
            "reordered or dropped any (Geneformer sorts cells by length; scGPT and UCE may "
            "filter cells). Re-save it with ids (dfm.io.write_embeddings(path.npz, emb, ids)) "
            "or, if you are sure the rows follow adata.obs_names, pass allow_positional=True."
        )
    with open(path, "rb") as fh:
        try:
            header = read_npy_header(fh)
        except (ValueError, EOFError) as err:
            raise DfmInputError(f"{os.fspath(path)!r} is not a valid .npy file ({err}).") from None
    if header is not None:
        check_numeric_dtype(header[1], "The .npy array")
        check_shape(header[0], "The .npy array", req.max_dims)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        _refuse_pickle(err if isinstance(err, ValueError) else ValueError(str(err)), ".npy")
    return arr, None, {"id_source": "row position"}, None


def write_npy(tmp: Path, emb: np.ndarray, req: WriteRequest) -> None:
    """Write a bare ``.npy`` array (no ids)."""
    with open(tmp, "wb") as fh:
        np.save(fh, emb, allow_pickle=False)


# --------------------------------------------------------------------------- .safetensors


def _import_safetensors():
    try:
        import safetensors  # noqa: F401
        from safetensors import safe_open
        from safetensors.numpy import save_file
    except ImportError:
        raise ImportError(
            "Reading or writing .safetensors files needs the optional 'safetensors' package: "
            "pip install safetensors"
        ) from None
    return safe_open, save_file


def _open_safetensors(safe_open, path):
    try:
        return safe_open(os.fspath(path), framework="np")
    except Exception as err:  # safetensors raises its own SafetensorError (not a ValueError)
        raise DfmInputError(f"Cannot read {os.fspath(path)!r} as .safetensors ({err}).") from None


def _json_ids(meta: dict, ids_key: str) -> np.ndarray:
    try:
        values = json.loads(meta[ids_key])
    except json.JSONDecodeError as err:
        raise DfmInputError(
            f"The .safetensors metadata {ids_key!r} is not valid JSON ({err}); store the ids "
            "as a JSON list of strings."
        ) from None
    if not isinstance(values, list) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in values
    ):
        raise DfmInputError(
            f"The .safetensors metadata {ids_key!r} must be a JSON list of strings."
        )
    return np.asarray([str(v) for v in values], dtype=str)


def read_safetensors(req: ReadRequest):
    """Read the ``embeddings`` tensor and ids from JSON metadata or an integer tensor."""
    safe_open, _ = _import_safetensors()
    with _open_safetensors(safe_open, req.path) as f:
        meta = dict(f.metadata() or {})
        keys = list(f.keys())
        if req.embeddings_key not in keys:
            raise DfmInputError(
                f"The .safetensors has no tensor {req.embeddings_key!r}; it holds {keys}. Pass "
                "embeddings_key= naming the tensor."
            )
        check_shape(
            tuple(f.get_slice(req.embeddings_key).get_shape()),
            f"The .safetensors tensor {req.embeddings_key!r}",
            req.max_dims,
        )
        holds = f"metadata keys {sorted(meta)}, tensors {keys}"
        ids_key = choose_ids_key(
            [*meta, *keys], req.ids_key, req.prefer_ids, ".safetensors", holds, req.extra_id_arrays
        )
        require_ids(
            ids_key is not None,
            req.allow_positional,
            ".safetensors",
            holds,
            "Store them as JSON metadata 'cell_ids' (dfm.io.write_embeddings does this) or "
            "pass ids_key=.",
        )
        arr = f.get_tensor(req.embeddings_key)
        ids = None
        id_source = "row position"
        if ids_key is not None and ids_key in meta:
            ids = _json_ids(meta, ids_key)
            id_source = f"safetensors metadata {ids_key!r}"
        elif ids_key is not None:
            tensor = f.get_tensor(ids_key)
            if tensor.dtype.kind not in "iu":
                raise DfmInputError(
                    f"The .safetensors companion tensor {ids_key!r} has dtype {tensor.dtype}; "
                    "an id tensor must hold integers (store string ids as JSON metadata)."
                )
            ids = ids_to_str(tensor.reshape(-1), f"The .safetensors tensor {ids_key!r}")
            id_source = f"safetensors tensor {ids_key!r}"
    info = {"embeddings_key": req.embeddings_key, "ids_key": ids_key, "id_source": id_source}
    return arr, ids, info, None


def write_safetensors(tmp: Path, emb: np.ndarray, req: WriteRequest) -> None:
    """Write the ``embeddings`` tensor with the ids as JSON header metadata."""
    _, save_file = _import_safetensors()
    save_file(
        {req.embeddings_key: np.ascontiguousarray(emb)},
        os.fspath(tmp),
        metadata={req.ids_key: json.dumps(req.ids.tolist()), "format": "diffbio_sc.embeddings"},
    )
