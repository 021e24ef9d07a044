"""Saving and loading every registered model (no pickle anywhere).

A saved model is a directory holding

``config.json``
    ``format`` (``'diffbio_sc.model'``) and ``format_version`` (2), the
    ``model_type`` it was registered under (:func:`~diffbio_sc.models._base.register_model`)
    and the module that registers it (``model_module``), the package version,
    the architecture (``config``), the weights file name and format, the
    ``weights_sha256`` of the weights
    (:func:`~diffbio_sc.models._base.weights_sha256`), the ``metadata`` (for the
    native model: gene vocabulary, gene medians, tokenizer settings, bottleneck
    genes, batch categories, training summary) and the training ``history``;
``weights.safetensors`` or ``weights.npz``
    the parameters keyed by their dotted path (``blocks.0.qkv.kernel``):
    safetensors when the optional package is importable, else a NumPy ``.npz``
    read back with ``allow_pickle=False`` only.

Writes go through :func:`diffbio_sc.io._atomic.atomic_dir`: the directory is
written beside the target, fsynced and swapped in, so an error or a crash
leaves the previous model loadable. Loading checks everything before building
the model and raises one error class, :class:`~diffbio_sc.models._base.ModelFormatError`,
naming the directory, the file and what to do. Directories written by the
first format (``'diffbio_sc.masked_expression'``, version 1, no checksum) still load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import logger
from ._base import ModelFormatError, check_weights, get_model_class, registered_models
from ._base import weights_sha256 as _digest

FORMAT_NAME = "diffbio_sc.model"
FORMAT_VERSION = 2
#: The first format (``MaskedExpressionModel`` only, no checksum): still read.
LEGACY_FORMATS = {("diffbio_sc.masked_expression", 1): "masked_expression"}
CONFIG_FILE = "config.json"
_WEIGHT_FILES = {"safetensors": "weights.safetensors", "npz": "weights.npz"}
_FIX = "Re-save the model with model.save(path) from the code that trained it, or re-export it."


def _have_safetensors() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(
        f"Cannot store a {type(obj).__name__} in config.json; model metadata holds JSON "
        "types only (str, numbers, bools, None, lists, dicts)."
    )


def _is_model_dir(path: Path) -> bool:
    """Whether ``path`` looks like a saved diffbio_sc model (safe to replace)."""
    cfile = path / CONFIG_FILE
    if not cfile.is_file():
        return False
    try:
        doc = json.loads(cfile.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt == FORMAT_NAME or any(fmt == name for name, _ in LEGACY_FORMATS)


def save_model(model, path: str | os.PathLike, *, weights_format: str | None = None) -> Path:
    """Write ``model`` (a registered :class:`SavedModel`) to the directory ``path``.

    ``weights_format`` is ``'safetensors'`` (default when importable) or ``'npz'``.
    Missing parent directories are created. An existing model directory at
    ``path`` is replaced atomically; any other existing, non-empty directory is
    refused (it is not ours to delete). Returns the directory path.
    """
    from .._version import __version__
    from ..io._atomic import atomic_dir

    if not getattr(type(model), "model_type", ""):
        raise TypeError(
            f"{type(model).__name__} is not registered with register_model(); it cannot be "
            "saved in a form dfm.models.load can rebuild."
        )
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
    if out.is_dir() and any(out.iterdir()) and not _is_model_dir(out):
        raise FileExistsError(
            f"{out} is a non-empty directory that is not a saved diffbio_sc model; saving "
            "would replace its contents. Choose a new path (or remove the directory)."
        )
    params = model.get_weights()
    # Serialise everything before touching the disk: a bad metadata value fails here.
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_type": type(model).model_type,
        "model_module": type(model).__module__,
        "package_version": __version__,
        "config": model.config.to_dict(),
        "weights_file": _WEIGHT_FILES[weights_format],
        "weights_format": weights_format,
        "weights_sha256": _digest(params),
        "metadata": model.metadata,
        "history": model.history,
    }
    text = json.dumps(doc, indent=1, default=_json_default, allow_nan=False)
    if not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, what="model directory") as tmp:
        wfile = tmp / _WEIGHT_FILES[weights_format]
        if weights_format == "safetensors":
            import safetensors.numpy

            safetensors.numpy.save_file(
                {k: np.ascontiguousarray(v) for k, v in params.items()}, str(wfile)
            )
        else:
            with open(wfile, "wb") as fh:
                np.savez(fh, **params)
        (tmp / CONFIG_FILE).write_text(text)
    return out


def _error(where: Path, what: str, fix: str = _FIX) -> ModelFormatError:
    return ModelFormatError(f"Cannot load the model in {where.parent}: {where.name} {what}. {fix}")


def _read_config(cfile: Path) -> dict:
    if not cfile.is_file():
        raise _error(cfile, "is not a regular file")
    try:
        doc = json.loads(cfile.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _error(cfile, "is not a text file (binary content)") from err
    except json.JSONDecodeError as err:
        raise _error(cfile, f"is not valid JSON ({err})") from err
    except OSError as err:
        raise _error(cfile, f"cannot be read ({err.strerror or err})") from err
    if not isinstance(doc, dict):
        raise _error(cfile, f"holds a JSON {type(doc).__name__}, not an object")
    return doc


def _read_weights(wfile: Path, fmt: str) -> dict[str, np.ndarray]:
    if not wfile.is_file():
        raise _error(wfile, "is missing (the model directory is incomplete)")
    if fmt == "safetensors":
        if not _have_safetensors():
            raise ImportError(
                f"{wfile} needs the optional safetensors package (pip install safetensors)."
            )
        import safetensors.numpy

        try:
            return dict(safetensors.numpy.load_file(str(wfile)))
        except Exception as err:  # the Rust reader raises its own error types
            raise _error(
                wfile, f"is not a readable safetensors file (truncated or corrupt: {err})"
            ) from err
    with open(wfile, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(b"PK"):
        if head[:1] == b"\x80":
            what = "is a Python pickle, not an .npz archive; pickles are never loaded"
        elif head == b"\x93NUMPY":
            what = "is a single .npy array, not an .npz archive of named arrays"
        else:
            what = "is not an .npz archive (unrecognised content)"
        raise _error(wfile, what)
    try:
        with np.load(wfile, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as err:
        msg = str(err)
        if "pickle" in msg:  # never pass on numpy's advice to allow pickles
            msg = "holds pickled Python objects, which are never loaded"
        raise _error(wfile, f"is not a plain .npz archive of arrays ({msg})") from err
    except Exception as err:  # BadZipFile, EOFError, OSError: truncated or not a zip
        raise _error(
            wfile, f"is not a readable .npz archive (truncated or corrupt: {err})"
        ) from err


def load(path: str | os.PathLike):
    """Load a model saved with ``model.save(path)``, whatever its registered type.

    Parameters
    ----------
    path
        The model directory (or its ``config.json``).

    Returns
    -------
    The model (e.g. a :class:`~diffbio_sc.models.MaskedExpressionModel`) in eval
    mode, with ``metadata`` and ``history`` restored.

    Raises
    ------
    FileNotFoundError
        When there is no directory or no ``config.json`` at ``path``.
    ModelFormatError
        (a ``ValueError``) when anything on disk is wrong: invalid or binary
        ``config.json``, unknown format, version or model type, a missing key,
        invalid config fields, a missing, truncated or corrupt weights file, a
        pickle in place of the weights, weights whose names, shapes or dtype
        do not match the config or that are not finite, a checksum mismatch,
        or inconsistent metadata (e.g. gene medians that are not positive).
        The message names the directory, the file and what to do.
    """
    p = Path(path)
    if p.name == CONFIG_FILE and p.is_file():
        p = p.parent
    cfile = p / CONFIG_FILE
    if not p.exists():
        raise FileNotFoundError(
            f"No saved model at {p}: the path does not exist. Pass the directory (holding "
            f"{CONFIG_FILE} and the weights) written by model.save(path)."
        )
    if not cfile.exists():
        raise FileNotFoundError(
            f"No saved model at {p}: {CONFIG_FILE} not found. Pass the directory "
            "written by model.save(path)."
        )
    doc = _read_config(cfile)

    def need(key: str, types: type | tuple[type, ...]):
        if key not in doc:
            raise _error(cfile, f"has no {key!r} entry (the file is incomplete)")
        if not isinstance(doc[key], types):
            raise _error(cfile, f"has an invalid {key!r} entry ({doc[key]!r})")
        return doc[key]

    fmt, version = doc.get("format"), doc.get("format_version")
    legacy = LEGACY_FORMATS.get((fmt, version)) if isinstance(version, int) else None
    if legacy is not None:
        model_type, module = legacy, None
        expected_digest = None
    elif fmt == FORMAT_NAME:
        if version != FORMAT_VERSION:
            raise _error(
                cfile,
                f"has format_version {version!r}; this diffbio_sc reads version {FORMAT_VERSION}",
                f"Use the diffbio_sc version that saved it "
                f"({doc.get('package_version', 'unknown')}) or re-train the model.",
            )
        model_type = need("model_type", str)
        module = doc.get("model_module")
        expected_digest = need("weights_sha256", str)
    elif any(fmt == name for name, _ in LEGACY_FORMATS):
        raise _error(
            cfile,
            f"has format_version {version!r}; this diffbio_sc reads version 1 of {fmt!r}",
            f"Use the diffbio_sc version that saved it ({doc.get('package_version', 'unknown')}).",
        )
    else:
        raise _error(
            cfile,
            f"is not a diffbio_sc model (format {fmt!r}, expected {FORMAT_NAME!r})",
            "Pass the directory written by model.save(path).",
        )
    try:
        cls = get_model_class(model_type, module)
    except KeyError:
        raise _error(
            cfile,
            f"names the model type {model_type!r}, which no installed module registers "
            f"(known: {sorted(registered_models())})",
            "Upgrade diffbio_sc to the version that saved it "
            f"({doc.get('package_version', 'unknown')}).",
        ) from None
    try:
        config = cls.config_class.from_dict(need("config", dict))
    except (TypeError, ValueError) as err:
        raise _error(cfile, f"has an invalid 'config' section: {err}") from err
    metadata = doc.get("metadata", {})
    history = doc.get("history", {"train_loss": [], "val_loss": []})
    if not isinstance(metadata, dict) or not isinstance(history, dict):
        raise _error(cfile, "has a 'metadata' or 'history' entry that is not an object")
    try:
        cls.check_metadata(config, metadata)
    except (TypeError, ValueError) as err:
        raise _error(cfile, f"has invalid metadata: {err}") from err

    wname = need("weights_file", str)
    wfmt = {v: k for k, v in _WEIGHT_FILES.items()}.get(wname)
    if wfmt is None:  # also refuses paths such as '../x'
        raise _error(cfile, f"names an unknown weights file {wname!r}")
    wfile = p / wname
    arrays = _read_weights(wfile, wfmt)
    problems = check_weights(cls.expected_weights(config), arrays)
    if problems:
        raise _error(
            wfile, "does not match the architecture in config.json: " + "; ".join(problems)
        )
    if expected_digest is not None:
        if _digest(arrays) != expected_digest:
            raise _error(
                wfile,
                "does not match the weights_sha256 in config.json (the weights changed "
                "after the model was saved, or the copy is damaged)",
            )
    else:
        logger.info("Model %s has the version-1 format (no weights checksum); re-save it.", p)
    return cls.from_weights(config, arrays, metadata=metadata, history=history)
