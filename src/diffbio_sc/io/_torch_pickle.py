"""A restricted reader for PyTorch ``.bin``/``.pt`` state dicts: tensors only, no torch.

PyTorch weight files are pickles, and loading a pickle can run any code. The
unpickler here only knows how to rebuild tensors: the globals it resolves are
the tensor-rebuild functions (``torch._utils._rebuild_tensor_v2``,
``_rebuild_tensor``, ``_rebuild_parameter``), the storage classes
(``torch.FloatStorage`` ...) and ``collections.OrderedDict``; everything else
(any other class or function) is refused with an error naming the global and
the file, before anything is built. The tensors are rebuilt as NumPy arrays
from the raw storages (the ``data/`` entries of the zip archive, or the records
after the pickles in the pre-1.6 legacy format), each bounds-checked against
its storage. torch is not imported. This is the idea behind
``torch.load(weights_only=True)``; a general pickle load is never offered.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validate import DfmInputError

__all__ = ["CheckpointError", "read_torch_weights"]


class CheckpointError(DfmInputError):
    """A checkpoint file cannot be used as given (format, content or consistency).

    A :class:`~diffbio_sc._validate.DfmInputError` (and so a ``ValueError``): the
    message names the file and, for a bad field or tensor, that field or tensor.
    """


# ------------------------------------------------------------------ torch pickles

#: PyTorch storage class name -> NumPy dtype (bfloat16 through ml_dtypes, a JAX dependency).
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class seen in a pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _np_dtype(_STORAGE_DTYPES[self.name])


class _Storage:
    """A flat typed buffer (a torch storage) as a 1-D NumPy array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it; turned into an array once storages are read."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _tensor_ref(storage, offset, size, stride, where: str) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointError(
            f"{where}: a tensor refers to {type(storage).__name__}, not a storage."
        )
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
        offset = int(offset)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: a tensor has a malformed size or stride.") from None
    if len(size) != len(stride) or any(s < 0 for s in (*size, *stride)) or offset < 0:
        raise CheckpointError(f"{where}: a tensor has an invalid size {size} / stride {stride}.")
    return _TensorRef(storage, offset, size, stride)


def _materialise(ref: _TensorRef, where: str) -> np.ndarray:
    buf = ref.storage.array
    numel = int(np.prod(ref.size, dtype=np.float64))
    if numel == 0:
        return np.zeros(ref.size, dtype=buf.dtype)
    if numel > buf.size:  # only expanded (stride-0) views hold more elements than storage
        raise CheckpointError(
            f"{where}: a tensor of size {ref.size} has more elements than its storage "
            f"({buf.size}); expanded views are not read. Save contiguous tensors."
        )
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= buf.size:
        raise CheckpointError(
            f"{where}: a tensor of size {ref.size} (offset {ref.offset}, stride {ref.stride}) "
            f"reads past the end of its storage ({buf.size} elements); the file is truncated "
            "or corrupt."
        )
    item = buf.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        buf[ref.offset :],
        shape=ref.size,
        strides=tuple(s * item for s in ref.stride),
        writeable=False,
    )
    return np.array(view)  # own, contiguous copy


def _make_rebuilders(where: str) -> dict[tuple[str, str], object]:
    """Return the only callables a checkpoint pickle may reach, each rebuilding an array."""

    def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
        return _tensor_ref(storage, offset, size, stride, where)

    def rebuild_tensor(storage, offset, size, stride):
        return _tensor_ref(storage, offset, size, stride, where)

    def rebuild_parameter(data, requires_grad=False, hooks=None, *_):
        if not isinstance(data, _TensorRef):
            raise CheckpointError(
                f"{where}: a parameter wraps {type(data).__name__}, not a tensor."
            )
        return data

    out: dict[tuple[str, str], object] = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
    }
    for name in _STORAGE_DTYPES:
        out[("torch", name)] = _StorageType(name)
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only tensor-rebuild globals; storages come from ``load_storage``.

    :meth:`load` turns every failure of a malformed pickle into a :class:`CheckpointError`.
    """

    def __init__(self, fh, *, where: str, load_storage, legacy: bool = False) -> None:
        super().__init__(fh)
        self._where = where
        self._allowed = _make_rebuilders(where)
        self._load_storage = load_storage
        self._legacy = legacy

    def load(self):  # noqa: D102 - pickle API
        try:
            return super().load()
        except CheckpointError:
            raise
        except Exception as err:  # a malformed pickle fails in many ways
            raise CheckpointError(
                f"{self._where} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})."
            ) from None

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        raise CheckpointError(
            f"{self._where} refers to the Python global '{module}.{name}', which is not a "
            "tensor-rebuild function, storage class or plain container. Refusing to load it: "
            "unpickling it could run arbitrary code. A weights file should hold only a state "
            "dict of tensors; re-save it with torch.save(model.state_dict(), path) or as "
            "safetensors in a session where you trust the file."
        )

    def persistent_load(self, pid):  # noqa: D102 - pickle hook
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(
                f"{self._where} holds a persistent reference {str(pid)[:80]!r} that is not a "
                "tensor storage; refusing it."
            )
        if self._legacy:
            if len(pid) != 6:
                raise CheckpointError(f"{self._where}: malformed legacy storage record {pid!r}.")
            _, stype, key, _location, numel, view = pid
            if view is not None:
                raise CheckpointError(
                    f"{self._where} uses storage views (a pre-1.0 PyTorch format); re-save it "
                    "with a recent torch in a session where you trust the file."
                )
        else:
            if len(pid) != 5:
                raise CheckpointError(f"{self._where}: malformed storage record {pid!r}.")
            _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"{self._where}: storage of unknown type {stype!r}.")
        return self._load_storage(str(key), stype.dtype, int(numel))


def _read_zip_pickle(path: Path) -> object:
    where = str(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(
                f"{where} is a zip archive but not a PyTorch checkpoint (expected one "
                f"'<name>/data.pkl', found {len(pkl)})."
            )
        prefix = pkl[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in names:
            big_endian = zf.read(f"{prefix}byteorder").strip() == b"big"
        cache: dict[str, _Storage] = {}

        def load_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
            if key in cache:
                return cache[key]
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise CheckpointError(f"{where}: storage {key!r} is missing from the archive.")
            raw = zf.read(entry)
            if len(raw) < numel * dtype.itemsize:
                raise CheckpointError(
                    f"{where}: storage {key!r} has {len(raw)} bytes, expected "
                    f"{numel * dtype.itemsize}; the file is truncated or corrupt."
                )
            dt = dtype.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype
            arr = np.frombuffer(raw, dtype=dt, count=numel)
            if big_endian and dtype.itemsize > 1:
                arr = arr.astype(dtype)
            cache[key] = _Storage(arr)
            return cache[key]

        with zf.open(pkl[0]) as fh:
            return _RestrictedUnpickler(
                io.BytesIO(fh.read()), where=where, load_storage=load_storage
            ).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _read_legacy_pickle(path: Path) -> object:
    """Read the pre-1.6 format: magic, protocol, sys info, object, storage keys, storages."""
    where = str(path)
    pending: dict[str, tuple[np.dtype, int, _Storage]] = {}

    def load_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
        if key not in pending:
            pending[key] = (dtype, numel, _Storage(np.empty(0, dtype=dtype)))
        return pending[key][2]

    def plain(fh):  # the header pickles hold only ints, bools and dicts
        return _RestrictedUnpickler(fh, where=where, load_storage=None).load()

    with open(path, "rb") as fh:
        try:
            magic = plain(fh)
            protocol = plain(fh)
            sys_info = plain(fh)
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{where} is not a PyTorch checkpoint ({err}).") from None
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{where} is not a PyTorch checkpoint (bad magic number).")
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
            raise CheckpointError(f"{where} was written on a big-endian machine; unsupported.")
        # The main object: storages are placeholders filled from the records below.
        obj = _RestrictedUnpickler(fh, where=where, load_storage=load_storage, legacy=True).load()
        keys = plain(fh)
        if not isinstance(keys, list):
            raise CheckpointError(f"{where}: malformed storage key list.")
        # Views in the object may share a storage object: fill the placeholders in place.
        for key in keys:
            if key not in pending:
                raise CheckpointError(f"{where}: unexpected storage record {key!r}.")
            dtype, numel, storage = pending[key]
            head = fh.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{where} is truncated (storage {key!r}).")
            (n,) = struct.unpack("<q", head)
            if n != numel:
                raise CheckpointError(
                    f"{where}: storage {key!r} holds {n} elements, expected {numel}."
                )
            raw = fh.read(n * dtype.itemsize)
            if len(raw) != n * dtype.itemsize:
                raise CheckpointError(f"{where} is truncated (storage {key!r}).")
            storage.array = np.frombuffer(raw, dtype=dtype)
    return obj


def _flatten_state(obj, where: str) -> dict[str, np.ndarray]:
    """Return the name -> array mapping of a loaded state dict (plain containers only)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{where} holds a {type(obj).__name__}, not a state dict (a mapping name -> tensor)."
        )
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{where}: state dict key {k!r} is not a string.")
        if not isinstance(v, _TensorRef):
            raise CheckpointError(
                f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor; only tensors are read."
            )
        out[k] = _materialise(v, where)
    return out


def read_torch_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch ``state_dict`` file (``.bin``/``.pt``/``.pth``) without torch.

    Both the zip format (PyTorch >= 1.6) and the legacy format are read. Only
    tensors and plain containers are accepted (see the module docstring); any
    other global in the pickle raises :class:`CheckpointError` before anything
    is built or run.

    Parameters
    ----------
    path
        The weights file.

    Returns
    -------
    A dict parameter name -> NumPy array, in PyTorch's layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: {path}")
    where = str(path)
    if zipfile.is_zipfile(path):
        obj = _read_zip_pickle(path)
    else:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if not head or head[0] != 0x80:
            raise CheckpointError(
                f"{where} is neither a PyTorch zip checkpoint nor a pickle; check the file."
            )
        obj = _read_legacy_pickle(path)
    return _flatten_state(obj, where)
