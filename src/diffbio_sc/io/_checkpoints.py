"""Reading published model checkpoints without running foreign code.

Two layouts are recognised in a checkpoint directory:

* **Hugging Face** (Geneformer): ``config.json`` plus ``model.safetensors``
  (preferred) or ``pytorch_model.bin`` (sharded variants with an
  ``*.index.json`` too).
* **scGPT**: ``args.json``, ``vocab.json`` and ``best_model.pt`` (or a
  ``model.safetensors`` converted from it).

PyTorch ``.bin``/``.pt`` files are pickles, read by the restricted unpickler of
:mod:`diffbio_sc.io._torch_pickle` (tensors and plain containers only; any other
global is refused naming it and the file; torch is not imported).

The arrays are returned in PyTorch's layout and naming (e.g. a ``Linear``
weight is ``(out, in)``); the model classes map names and transpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._torch_pickle import CheckpointError, read_torch_weights

__all__ = [
    "ALIGNMENT",
    "Checkpoint",
    "CheckpointError",
    "aligned_copy",
    "aligned_empty",
    "read_checkpoint",
    "read_torch_weights",
    "read_safetensors",
    "file_sha256",
]


#: Byte alignment of the arrays the readers return. JAX's CPU backend adopts a NumPy
#: buffer aligned to 64 bytes without copying it (``jax.device_put``), so weights read
#: into such buffers become device arrays at no extra memory.
ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """Return an uninitialised C-contiguous array starting on :data:`ALIGNMENT` bytes."""
    dt = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(x) for x in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = np.empty(nbytes + ALIGNMENT, np.uint8)
    off = (-buf.ctypes.data) % ALIGNMENT
    return buf[off : off + nbytes].view(dt).reshape(shape)


def aligned_copy(a) -> np.ndarray:
    """Return a C-contiguous copy of ``a`` on :data:`ALIGNMENT` bytes (e.g. of a ``.T`` view)."""
    a = np.asarray(a)
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into NumPy arrays, one tensor at a time.

    The format is an 8-byte little-endian header length, a JSON header (name ->
    ``dtype``, ``shape``, ``data_offsets``) and the raw bytes. Each tensor is
    read straight from the file into its own array (no copy of the whole file
    in memory, so peak memory is about the weights' size); bfloat16 values,
    which NumPy cannot hold, are widened to float32 exactly (their 16 bits
    become the high half of a float32).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: {path}")

    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a readable safetensors file ({msg}).")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise bad("truncated header")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as err:
            raise bad(str(err)) from None
        if not isinstance(header, dict):
            raise bad("the header is not a JSON object")
        body = size - 8 - n
        entries = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                kind = _ST_DTYPES[info["dtype"]]
                start, end = (int(x) for x in info["data_offsets"])
                shape = tuple(int(x) for x in info["shape"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(
                    f"{path}: tensor {name!r} has an unsupported or malformed entry {info!r}."
                ) from None
            if not 0 <= start <= end <= body:
                raise CheckpointError(f"{path}: tensor {name!r} lies outside the file.")
            count = int(np.prod(shape, dtype=np.int64))
            dt = np.dtype("<u2" if kind == "bf16" else kind)
            if end - start != dt.itemsize * count:
                raise CheckpointError(f"{path}: tensor {name!r} has the wrong byte size.")
            entries.append((start, end, name, kind, dt, count, shape))
        # as the safetensors library requires: tensors tile the data section, no overlap, no gap
        entries.sort(key=lambda e: (e[0], e[1]))
        pos = 0
        for start, end, name, *_ in entries:
            if start != pos:
                what = "overlaps another tensor" if start < pos else "leaves a gap before it"
                raise CheckpointError(f"{path}: tensor {name!r} {what} (invalid layout).")
            pos = end
        out = {}
        for start, _end, name, kind, dt, count, shape in entries:
            f.seek(8 + n + start)
            # read straight into an aligned buffer (see ALIGNMENT): no copy on the way to JAX
            arr = aligned_empty(count, dt)
            if f.readinto(arr.view(np.uint8)) != arr.nbytes:
                raise CheckpointError(f"{path}: tensor {name!r} is truncated.")
            if kind == "bf16":
                wide = aligned_empty(count, np.uint32)
                wide[...] = arr
                wide <<= 16
                arr = wide.view(np.float32)
            out[name] = arr.reshape(shape)
    return out


#: safetensors dtype names -> NumPy (BF16 is widened to float32 on reading).
_ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bf16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ checkpoint directories

_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HF_INDEX = {"model.safetensors.index.json": "safetensors", "pytorch_model.bin.index.json": "torch"}
_SCGPT_WEIGHTS = ("best_model.pt", "model.safetensors", "best_model.safetensors")


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its family, configuration and raw weights.

    Attributes
    ----------
    path
        The checkpoint directory.
    family
        ``'geneformer'`` (a Hugging Face BERT) or ``'scgpt'``.
    config
        The parsed ``config.json`` (Hugging Face) or ``args.json`` (scGPT).
    config_file
        The file ``config`` came from.
    weights
        Parameter name -> array, PyTorch layout and naming.
    weights_files
        The weight file(s) read.
    sha256
        Digest of the weight file (sha256 over the shards' digests when sharded).
    files
        Other files found in the directory by role (e.g. ``'vocab'``,
        ``'token_dictionary'``, ``'gene_median_dictionary'``).
    """

    path: Path
    family: str
    config: dict
    config_file: Path
    weights: dict[str, np.ndarray]
    weights_files: list[Path]
    sha256: str
    files: dict[str, Path] = field(default_factory=dict)


def read_json_object(path: Path, what: str) -> dict:
    """Read a JSON file holding an object; a clear ``CheckpointError`` otherwise."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} ({what}) is not valid JSON ({err}).") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path} ({what}) must hold a JSON object, got {type(doc).__name__}.")
    return doc


def _load_weight_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_weights(path)


def _load_sharded(directory: Path, index: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    doc = read_json_object(index, "weights index")
    wmap = doc.get("weight_map")
    if not isinstance(wmap, dict) or not wmap:
        raise CheckpointError(f"{index} has no 'weight_map'.")
    shards = sorted(set(map(str, wmap.values())))
    weights: dict[str, np.ndarray] = {}
    files = []
    for shard in shards:
        p = directory / shard
        if Path(shard).name != shard or not p.is_file():
            raise CheckpointError(
                f"{index} names the shard {shard!r}, which is not in {directory}."
            )
        files.append(p)
        weights.update(_load_weight_file(p))
    missing = sorted(set(wmap) - set(weights))
    if missing:
        raise CheckpointError(f"{index} lists tensors missing from its shards: {missing[:5]}.")
    return weights, files


def _digest(files: list[Path]) -> str:
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


#: Optional tokenizer files looked for beside the weights.
_SIDE_FILES = {
    "token_dictionary": ("token_dictionary.json",),
    "gene_median_dictionary": ("gene_median_dictionary.json",),
    "vocab": ("vocab.json",),
}


def _side_files(directory: Path) -> dict[str, Path]:
    found = {}
    for role, names in _SIDE_FILES.items():
        for name in names:
            if (directory / name).is_file():
                found[role] = directory / name
                break
    return found


def find_checkpoint(path: str | os.PathLike) -> tuple[Path, str]:
    """Return ``(directory, family)`` of the checkpoint at ``path``, or raise naming what is there.

    ``family`` is ``'geneformer'`` for a Hugging Face layout, ``'scgpt'`` for an
    scGPT one. Nothing is read beyond the file names.
    """
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"Checkpoint directory not found: {p}")
    names = sorted(x.name for x in p.iterdir())
    has = set(names)
    if "args.json" in has and any(w in has for w in _SCGPT_WEIGHTS):
        return p, "scgpt"
    if "config.json" in has and (
        any(w in has for w in _HF_WEIGHTS) or any(i in has for i in _HF_INDEX)
    ):
        return p, "geneformer"
    raise FileNotFoundError(
        f"{p} holds no recognised checkpoint. Expected a Hugging Face layout (config.json "
        "with model.safetensors or pytorch_model.bin, e.g. a Geneformer model) or an scGPT "
        f"layout (args.json, vocab.json and best_model.pt); found {names[:20]}."
    )


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a Geneformer (Hugging Face) or scGPT checkpoint directory without torch.

    Parameters
    ----------
    path
        The checkpoint directory (or a file inside it).

    Returns
    -------
    A :class:`Checkpoint` with the configuration and the raw weights.

    Raises
    ------
    FileNotFoundError
        When the directory holds no recognised checkpoint (the message lists what is there).
    CheckpointError
        When a file is malformed, or a ``.bin``/``.pt`` pickle refers to anything
        but tensors and plain containers.
    """
    directory, family = find_checkpoint(path)
    if family == "scgpt":
        cfile = directory / "args.json"
        config = read_json_object(cfile, "scGPT model arguments")
        wfile = next(directory / w for w in _SCGPT_WEIGHTS if (directory / w).is_file())
        weights, files = _load_weight_file(wfile), [wfile]
    else:
        cfile = directory / "config.json"
        config = read_json_object(cfile, "model configuration")
        single = next((directory / w for w in _HF_WEIGHTS if (directory / w).is_file()), None)
        if single is not None:
            weights, files = _load_weight_file(single), [single]
        else:
            index = next(directory / i for i in _HF_INDEX if (directory / i).is_file())
            weights, files = _load_sharded(directory, index)
    if not weights:
        raise CheckpointError(f"{files[0]} holds no tensors.")
    return Checkpoint(
        path=directory,
        family=family,
        config=config,
        config_file=cfile,
        weights=weights,
        weights_files=files,
        sha256=_digest(files),
        files=_side_files(directory),
    )
