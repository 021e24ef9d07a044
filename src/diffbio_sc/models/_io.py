"""Saving and loading :class:`MaskedExpressionModel` (no pickle anywhere).

A saved model is a directory holding

* ``config.json``: ``format`` and ``format_version``, the package version, the
  architecture (``config``), the metadata (gene vocabulary, gene medians,
  tokenizer settings, bottleneck genes, batch categories, training summary)
  and the training history;
* the weights, ``weights.safetensors`` when the optional ``safetensors``
  package is importable, else ``weights.npz`` (plain NumPy arrays, read back
  with ``allow_pickle=False``). Keys are the dotted parameter paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "diffbio_sc.masked_expression"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
_WEIGHT_FILES = {"safetensors": "weights.safetensors", "npz": "weights.npz"}


def _flat_params(model) -> dict[str, np.ndarray]:
    from flax import nnx

    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(map(str, path)): np.asarray(var[...]) for path, var in flat}


def _have_safetensors() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def save_model(model, path: str | os.PathLike, *, weights_format: str | None = None) -> Path:
    """Write ``model`` to the directory ``path`` (created; existing files replaced).

    ``weights_format`` is ``'safetensors'`` (default when importable) or ``'npz'``.
    Returns the directory path.
    """
    from .._version import __version__

    if weights_format is None:
        weights_format = "safetensors" if _have_safetensors() else "npz"
    if weights_format not in _WEIGHT_FILES:
        raise ValueError(f"weights_format must be 'safetensors' or 'npz', got {weights_format!r}.")
    if weights_format == "safetensors" and not _have_safetensors():
        raise ImportError(
            "weights_format='safetensors' needs the optional safetensors package "
            "(pip install safetensors), or pass weights_format='npz'."
        )
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another path.")
    out.mkdir(parents=True, exist_ok=True)
    params = _flat_params(model)
    wfile = out / _WEIGHT_FILES[weights_format]
    if weights_format == "safetensors":
        import safetensors.numpy

        safetensors.numpy.save_file(
            {k: np.ascontiguousarray(v) for k, v in params.items()}, str(wfile)
        )
    else:
        with open(wfile, "wb") as fh:
            np.savez(fh, **params)
    for other in _WEIGHT_FILES.values():  # never leave a stale second weights file
        if other != wfile.name and (out / other).exists():
            (out / other).unlink()
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": model.config.to_dict(),
        "weights_file": wfile.name,
        "weights_format": weights_format,
        "metadata": model.metadata,
        "history": model.history,
    }
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=1, default=_json_default))
    return out


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Cannot store {type(obj).__name__} in config.json")


def load(path: str | os.PathLike):
    """Load a model saved with :meth:`MaskedExpressionModel.save`.

    Parameters
    ----------
    path
        The model directory (or its ``config.json``).

    Returns
    -------
    The :class:`MaskedExpressionModel` in eval mode, with ``metadata`` and
    ``history`` restored.

    Raises
    ------
    FileNotFoundError
        When the directory, ``config.json`` or the weights file is missing.
    ValueError
        When the format or its version is not one this package reads, or the
        weights do not match the architecture.
    """
    import jax.numpy as jnp
    from flax import nnx

    from ._masked import MaskedExpressionConfig, abstract_model

    p = Path(path)
    if p.is_file() and p.name == CONFIG_FILE:
        p = p.parent
    cfile = p / CONFIG_FILE
    if not cfile.is_file():
        raise FileNotFoundError(
            f"No saved model at {p}: {CONFIG_FILE} not found. Pass the directory "
            "written by model.save(path)."
        )
    try:
        doc = json.loads(cfile.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfile} is not valid JSON ({err}).") from err
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt != FORMAT_NAME:
        raise ValueError(
            f"{cfile} is not a diffbio_sc masked-expression model "
            f"(format {fmt!r}, expected {FORMAT_NAME!r})."
        )
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{cfile} has format_version {version!r}; this diffbio_sc reads version "
            f"{FORMAT_VERSION}. Use the diffbio_sc version that saved it "
            f"({doc.get('package_version', 'unknown')}) or re-train the model."
        )
    if not isinstance(doc.get("config"), dict):
        raise ValueError(f"{cfile} has no 'config' section; the saved model is incomplete.")
    config = MaskedExpressionConfig.from_dict(doc["config"])
    wname = doc.get("weights_file", "")
    if wname not in _WEIGHT_FILES.values():
        raise ValueError(f"{cfile} names an unknown weights file {wname!r}.")
    wfile = p / wname
    if not wfile.is_file():
        raise FileNotFoundError(f"Weights file {wfile} is missing.")
    if wname.endswith(".safetensors"):
        if not _have_safetensors():
            raise ImportError(
                f"{wfile} needs the optional safetensors package (pip install safetensors)."
            )
        import safetensors.numpy

        arrays = safetensors.numpy.load_file(str(wfile))
    else:
        with np.load(wfile, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}

    graphdef, state = nnx.split(abstract_model(config))
    flat = nnx.to_flat_state(state)
    names = {".".join(map(str, path)) for path, _ in flat}
    missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
    if missing or extra:
        raise ValueError(
            f"Weights in {wfile} do not match the architecture in {cfile}: missing "
            f"{missing[:5]}, unexpected {extra[:5]}. The files are inconsistent; re-save."
        )
    leaves = []
    for path_, var in flat:
        key = ".".join(map(str, path_))
        arr = arrays[key]
        want = var.get_value()
        if tuple(arr.shape) != tuple(want.shape):
            raise ValueError(f"Weight {key!r} has shape {arr.shape}, expected {tuple(want.shape)}.")
        leaves.append((path_, var.replace(jnp.asarray(arr, dtype=want.dtype))))
    model = nnx.merge(graphdef, nnx.from_flat_state(leaves))
    model._info.metadata = doc.get("metadata", {})
    model._info.history = doc.get("history", {"train_loss": [], "val_loss": []})
    model.eval()
    return model
