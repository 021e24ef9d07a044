"""One base for every saved diffbio_sc model: config, weights, metadata, registry.

A saveable model is an ``nnx.Module`` that subclasses :class:`SavedModel`, has
a frozen :class:`ModelConfig` dataclass, and is registered under a stable name::

    from diffbio_sc.models._base import ModelConfig, SavedModel, register_model

    @dataclass(frozen=True)
    class MyConfig(ModelConfig):
        hidden_dim: int = 64
        n_layers: int = 2

        def validate(self) -> None:          # called on construction and on load
            if self.hidden_dim < 1:
                raise ValueError("MyConfig: hidden_dim must be >= 1.")

    @register_model("my_model")              # stored in config.json as model_type
    class MyModel(SavedModel):
        config_class = MyConfig

        def __init__(self, config: MyConfig, *, rngs: nnx.Rngs):
            super().__init__(config)         # checks the type, sets .config, .metadata, .history
            self.dense = nnx.Linear(config.hidden_dim, config.hidden_dim, rngs=rngs)

Then ``model.save(path)`` writes the directory and :func:`diffbio_sc.models.load`
rebuilds it in any process: ``load`` reads ``model_type`` from ``config.json``,
imports the module that registered it (the one named in ``config.json``, only
if it lies inside ``diffbio_sc``, else the modules in :data:`MODEL_MODULES`),
rebuilds the architecture from the config with shape-only parameters, checks
the stored weights against it (names, shapes, floating dtype, finite values,
sha256) and fills them in. See :mod:`diffbio_sc.models._io` for the files.

Hooks a subclass may override:

* :meth:`ModelConfig.validate` -- raise ``ValueError`` on invalid fields;
* :meth:`SavedModel.check_metadata` -- raise ``ValueError`` when the metadata a
  loaded model depends on is inconsistent (e.g. non-positive gene medians);
* :meth:`SavedModel.expected_weights` -- names and shapes of the weights; the
  default traces the constructor with ``nnx.eval_shape`` (no computation).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import math
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
from flax import nnx

from .._validate import DfmInputError

__all__ = [
    "MODEL_MODULES",
    "ModelConfig",
    "ModelFormatError",
    "SavedModel",
    "check_weights",
    "get_model_class",
    "register_model",
    "registered_models",
    "weights_sha256",
]


class ModelFormatError(DfmInputError):
    """A saved model (or imported checkpoint) cannot be read as it is on disk.

    The message names the model directory, the offending file and what to do
    (re-save the model, or re-export / re-import the checkpoint).
    """


# ---------------------------------------------------------------------- configs
_SCALARS: dict[str, tuple[type, ...]] = {
    "int": (int, np.integer),
    "float": (int, float, np.integer, np.floating),
    "bool": (bool, np.bool_),
    "str": (str,),
}


def _check_field(cls_name: str, name: str, annotation: str, value: Any) -> Any:
    """Check ``value`` against a simple string annotation; return it (floats as float)."""
    parts = [p.strip() for p in str(annotation).split("|")]
    if value is None:
        if "None" in parts:
            return None
        raise ValueError(f"{cls_name}: {name} must not be None.")
    known = [p for p in parts if p in _SCALARS]
    if not known or len(known) != len([p for p in parts if p != "None"]):
        return value  # a type this checker does not know (tuples, ...): the class validates
    for p in known:
        types = _SCALARS[p]
        if p in ("int", "float") and isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, types):
            if p == "float":
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"{cls_name}: {name} must be finite, got {value!r}.")
            elif p == "int":
                value = int(value)
            elif p == "bool":
                value = bool(value)
            return value
    want = " or ".join(parts)
    raise ValueError(f"{cls_name}: {name} must be {want}, got {value!r} ({type(value).__name__}).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of model configs: a frozen dataclass with typed fields, validation and dict form.

    On construction each field is checked against its annotation when that is a
    plain ``int``, ``float``, ``bool`` or ``str`` (optionally ``| None``):
    booleans are not integers, floats must be finite, ints given for float
    fields become floats. Then :meth:`validate` runs. Configs compare and hash
    by value (usable as static jit arguments).
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _check_field(type(self).__name__, f.name, f.type, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the config is invalid (override)."""

    def _require_positive(self, *names: str) -> None:
        """Raise ``ValueError`` naming the first of the int fields ``names`` that is below 1."""
        for name in names:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be a positive integer, got {v!r}."
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable: tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown fields are an error, missing ones take defaults."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict needs a dict, got {type(d).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(
                f"Unknown {cls.__name__} fields {unknown}; the model was saved by a newer "
                "diffbio_sc. Upgrade diffbio_sc to load it."
            )
        kwargs = {}
        for k, v in d.items():
            if isinstance(v, list) and "tuple" in str(fields[k].type):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)


def token_id_map(vocab: Mapping, source: str) -> dict[str, int]:
    """Return ``token -> id`` with every id checked: unique non-negative integers.

    Integral floats (``5.0``, as a CSV column may hold) are taken; strings,
    booleans and fractional numbers are refused, not converted, with a
    :class:`DfmInputError` naming ``source`` and the tokens.
    """
    out: dict[str, int] = {}
    bad = []
    for k, v in vocab.items():
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
        if not ok and isinstance(v, (float, np.floating)) and float(v).is_integer():
            ok = True
        if ok:
            out[str(k)] = int(v)
        else:
            bad.append(f"{k!r}: {v!r}")
    if bad:
        raise DfmInputError(
            f"{source}: token ids must be integers; {len(bad)} are not ({', '.join(bad[:5])})."
        )
    if not out:
        raise DfmInputError(f"{source} is empty.")
    ids = np.fromiter(out.values(), dtype=np.int64, count=len(out))
    if ids.min() < 0 or np.unique(ids).size != ids.size:
        raise DfmInputError(f"{source}: token ids must be unique non-negative integers.")
    return out


# ---------------------------------------------------------------------- registry
#: Modules that register saveable models. :func:`get_model_class` imports them (those
#: that exist) when a ``model_type`` is not registered yet, so a fresh process can
#: load any saved model. A new model module adds itself here.
MODEL_MODULES: tuple[str, ...] = (
    "diffbio_sc.models._masked",
    "diffbio_sc.models._sequence",
    "diffbio_sc.models._bert",
    "diffbio_sc.models._scgpt",
)

_REGISTRY: dict[str, type] = {}

M = TypeVar("M")


def register_model(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: register a :class:`SavedModel` subclass under ``name``.

    ``name`` is written to ``config.json`` as ``model_type``; keep it stable.
    Registering a second, different class under a taken name is an error.

    Parameters
    ----------
    name
        The model type, non-empty and without ``/``.

    Returns
    -------
    Callable
        The decorator; it returns the class unchanged after registering it.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"register_model needs a non-empty name without '/', got {name!r}.")

    def deco(cls: type[M]) -> type[M]:
        if not (isinstance(cls, type) and issubclass(cls, SavedModel)):
            raise TypeError(f"register_model({name!r}) decorates SavedModel subclasses only.")
        cfg = getattr(cls, "config_class", None)
        if not (isinstance(cfg, type) and issubclass(cfg, ModelConfig)):
            raise TypeError(
                f"{cls.__name__}.config_class must be a ModelConfig subclass to register it."
            )
        old = _REGISTRY.get(name)
        # The same class defined again (a module reload) may replace itself.
        same = old is not None and (old.__module__, old.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )
        if old is not None and not same:
            raise ValueError(f"Model type {name!r} is already registered to {old.__qualname__}.")
        cls.model_type = name
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_models() -> dict[str, type]:
    """Return a copy of the registry: ``model_type -> class``."""
    return dict(_REGISTRY)


def _import_if_present(module: str) -> None:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is not None:
        importlib.import_module(module)


def get_model_class(name: str, module: str | None = None) -> type:
    """Return the class registered under ``name``, importing its module when needed.

    ``module`` (as stored in ``config.json``) is imported first when it lies inside
    ``diffbio_sc``; nothing outside the package is ever imported from a file's say-so.

    Raises
    ------
    KeyError
        When no module registers ``name``.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(module, str) and module.startswith("diffbio_sc.") and module.isascii():
        _import_if_present(module)
    for mod in MODEL_MODULES:
        if name in _REGISTRY:
            break
        _import_if_present(mod)
    if name not in _REGISTRY:
        raise KeyError(name)
    return _REGISTRY[name]


# ---------------------------------------------------------------------- weights
def weights_sha256(weights: Mapping[str, Any]) -> str:
    """sha256 over weights in name order: each name, its shape and its float32 bytes.

    The same digest is written at save, checked at load and recorded by
    ``dfm.tl.embed`` (``weights_sha256``), so an embedding's provenance can be
    matched to a saved model's ``config.json``.
    """
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.asarray(weights[name])
        h.update(name.encode())
        h.update(str(tuple(arr.shape)).encode())
        h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


def check_weights(expected: Mapping[str, tuple[int, ...]], arrays: Mapping[str, Any]) -> list[str]:
    """Problems (empty list: none) of ``arrays`` against the expected ``name -> shape``.

    Checks the names (missing and unexpected named), shapes, a floating-point
    dtype and finite values.
    """
    problems = []
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing:
        problems.append(f"missing weights {_few(missing)}")
    if extra:
        problems.append(f"unexpected weights {_few(extra)}")
    for name in sorted(set(expected) & set(arrays)):
        arr = arrays[name]
        shape = tuple(getattr(arr, "shape", ()))
        if shape != tuple(expected[name]):
            problems.append(f"weight {name!r} has shape {shape}, expected {tuple(expected[name])}")
            continue
        dtype = np.dtype(getattr(arr, "dtype", object))
        if dtype.kind != "f":
            problems.append(f"weight {name!r} has dtype {dtype}, expected floating point")
            continue
        if not np.isfinite(np.asarray(arr)).all():
            problems.append(f"weight {name!r} holds NaN or infinite values")
    return problems


def _few(names: list[str], n: int = 5) -> str:
    more = f" (and {len(names) - n} more)" if len(names) > n else ""
    return "[" + ", ".join(repr(x) for x in names[:n]) + "]" + more


# ---------------------------------------------------------------------- models
class _ModelInfo:
    """Holder of one model's metadata, history and save record, outside the computation."""

    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {}
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        #: ``(directory, weights_sha256)`` of the last save or load, else None.
        self.saved: tuple[str, str] | None = None


#: Each model's :class:`_ModelInfo`, keyed (weakly) by the model object itself. The holder is
#: deliberately not an attribute of the module: every attribute of an ``nnx.Module`` that is
#: not a variable is static data of its ``GraphDef``, and ``nnx.jit`` writes the static data
#: of its *cached* trace back onto the module it is called with. Two models of the same
#: architecture then ended up sharing the first one's metadata (issue 24: a second
#: ``tl.pretrain`` rewrote the first model's ``genes``). Kept here, the holder follows the
#: object's identity, and the graph definition (and with it the jit cache) does not depend
#: on it. A module rebuilt by ``nnx.merge``/``nnx.clone`` starts with empty metadata.
_INFO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _info_of(model) -> _ModelInfo:
    info = _INFO.get(model)
    if info is None:
        info = _INFO[model] = _ModelInfo()
    return info


def _device_weight(value, dtype, *, adopt: bool):
    """``value`` as a JAX array of ``dtype``, its host copy released before the next one.

    A NumPy array given up by the caller (``adopt``) that is C-contiguous, of the
    right dtype and 64-byte aligned (as the checkpoint readers return them) is
    adopted by JAX's CPU backend without a copy (made read-only here, since the
    JAX array now shares its memory); any other value is copied. The transfer is
    waited for, so that a host array nobody else holds is freed at once: without
    that, the asynchronous copies of a whole model queue up and the NumPy and the
    JAX weights are alive together (measured 1.7x the weights for NT v1 500M).
    """
    import jax
    import jax.numpy as jnp

    if not isinstance(value, np.ndarray):
        return jnp.asarray(value, dtype=dtype)
    from ..io._checkpoints import ALIGNMENT

    a = value.astype(dtype, copy=False)
    adopt = adopt and a is value and a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0
    if adopt:
        a.flags.writeable = False
        arr = jax.device_put(a)
    else:  # a private copy (jax.device_put(may_alias=False) still aliases on CPU, jax
        # 0.10.2), made by NumPy: jnp.array(copy=True) compiles one XLA program per shape
        arr = jax.device_put(np.array(a, order="C", copy=True))
    arr.block_until_ready()
    return arr


class SavedModel(nnx.Module):
    """Base of saveable models: ``config``, ``metadata``, ``history``, ``save``.

    Subclasses set ``config_class``, call ``super().__init__(config)`` first in
    their ``__init__(config, *, rngs)``, and are registered with
    :func:`register_model`.

    ``metadata`` and ``history`` belong to the Python object, not to its nnx graph:
    no two models share them (whatever ``nnx.jit`` caches), ``copy.deepcopy`` and
    pickling copy them, and a module rebuilt from its graph (``nnx.merge``,
    ``nnx.clone``) starts without them. ``repr(model)`` is a short summary; the
    module tree is ``flax.nnx.reprlib.get_repr(model)``.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    model_type: ClassVar[str] = ""

    def __init__(self, config: ModelConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config must be a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config
        # Metadata and history live outside the module's graph (see _INFO): a fresh holder.
        _INFO[self] = _ModelInfo()

    @property
    def _info(self) -> _ModelInfo:
        """Metadata, history and save record of this object (see :data:`_INFO`)."""
        return _info_of(self)

    def __deepcopy__(self, memo=None):
        new = super().__deepcopy__(memo)
        _INFO[new] = copy.deepcopy(self._info, memo)  # an independent copy of the metadata
        return new

    def __getstate__(self):
        # A pickled model carries its metadata and history.
        state = super().__getstate__()
        state["_dfm_info"] = self._info
        return state

    def __setstate__(self, state):
        state = dict(state)
        info = state.pop("_dfm_info", None)
        super().__setstate__(state)
        _INFO[self] = info if isinstance(info, _ModelInfo) else _ModelInfo()

    # ------------------------------------------------------------ summary
    #: Config fields shown by ``repr`` (empty: every int/str/bool field, at most 8).
    _repr_fields: ClassVar[tuple[str, ...]] = ()
    #: What the model is, in words, for ``repr`` (default: the class name).
    _repr_family: ClassVar[str] = ""

    def n_params(self) -> int:
        """Return the number of parameters (elements of every ``nnx.Param``)."""
        flat = nnx.to_flat_state(nnx.state(self, nnx.Param))
        return int(sum(math.prod(v.get_value().shape) for _, v in flat))

    def _summary_lines(self) -> list[str]:
        cfg = self.config
        names = (
            self._repr_fields
            or tuple(
                f.name
                for f in dataclasses.fields(cfg)
                if isinstance(getattr(cfg, f.name), (int, str, bool))
            )[:8]
        )
        sizes = ", ".join(f"{n}={getattr(cfg, n)!r}" for n in names if hasattr(cfg, n))
        lines = [f"architecture: {sizes}", f"parameters: {self.n_params():,}"]
        md = self.metadata
        genes = md.get("genes")
        vocab = md.get("vocab")
        if isinstance(genes, list):
            shown = ", ".join(map(str, genes[:3])) + (", ..." if len(genes) > 3 else "")
            lines.append(f"genes: {len(genes):,} ({shown})")
        elif isinstance(vocab, dict):
            lines.append(f"vocabulary: {len(vocab):,} tokens")
        tr = md.get("training")
        if isinstance(tr, dict) and tr:
            parts = []
            for key, label in (("n_cells", "cells"), ("n_sequences", "sequences")):
                if isinstance(tr.get(key), int):
                    parts.append(f"{tr[key]:,} {label}")
            if md.get("batch_key"):
                cats = md.get("batch_categories") or []
                parts.append(f"batch_key {md['batch_key']!r} ({len(cats)} batches)")
            if tr.get("epochs_run") is not None:
                parts.append(f"{tr['epochs_run']} epochs")
            if isinstance(tr.get("best_val_loss"), (int, float)):
                parts.append(f"best val loss {tr['best_val_loss']:.4g}")
            if parts:
                lines.append("trained on: " + ", ".join(parts))
        elif md.get("checkpoint_path"):
            lines.append(f"checkpoint: {md['checkpoint_path']}")
        saved = self.saved_as
        lines.append(f"saved at: {saved[0]}" if saved is not None else "saved at: (not saved)")
        return lines

    def __repr__(self) -> str:
        """Return a short summary (family, sizes, parameters, genes, training), not the tree.

        The full ``nnx`` module tree is ``flax.nnx.reprlib.get_repr(model)``, or
        ``nnx.display(model)`` in a notebook.
        """
        head = type(self).__name__
        try:
            family = self.metadata.get("family") or self._repr_family
            head += f" ({family})" if family else ""
            lines = self._summary_lines()
        except Exception:  # a summary must never fail (e.g. on a half-built module)
            return f"<{head}>"
        return head + "\n" + "\n".join("  " + line for line in lines)

    __str__ = __repr__

    # ------------------------------------------------------------ metadata
    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable facts the model needs beyond its weights (vocabulary, ...)."""
        return self._info.metadata

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(value).__name__}.")
        # A deep copy: later changes to the caller's dict (or lists in it) do not reach the model.
        self._info.metadata = copy.deepcopy(dict(value))

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch training history (``train_loss``, ``val_loss``, ...)."""
        return self._info.history

    @history.setter
    def history(self, value: Mapping[str, list[float]]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"history must be a dict, got {type(value).__name__}.")
        self._info.history = copy.deepcopy(dict(value))

    @property
    def saved_as(self) -> tuple[str, str] | None:
        """``(directory, weights_sha256)`` of the last ``save`` or ``load`` of this object.

        ``None`` when it was never saved or loaded. Compare the digest with
        :meth:`weights_sha256` to know whether the weights changed since.
        """
        return self._info.saved

    @classmethod
    def check_metadata(cls, config: ModelConfig, metadata: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` when ``metadata`` is inconsistent with ``config`` (override)."""

    # ------------------------------------------------------------ weights
    def get_weights(self) -> dict[str, np.ndarray]:
        """Return the parameters as ``dotted.name -> NumPy array`` (the saved layout)."""
        flat = nnx.to_flat_state(nnx.state(self, nnx.Param))
        return {".".join(map(str, path)): np.asarray(var[...]) for path, var in flat}

    def weights_sha256(self) -> str:
        """:func:`weights_sha256` of :meth:`get_weights`."""
        return weights_sha256(self.get_weights())

    @classmethod
    def abstract(cls, config: ModelConfig):
        """Build the model's structure with shape-only parameters (no computation)."""
        return nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))

    @classmethod
    def expected_weights(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """``name -> shape`` of every parameter the config implies."""
        flat = nnx.to_flat_state(nnx.state(cls.abstract(config), nnx.Param))
        return {".".join(map(str, p)): tuple(v.get_value().shape) for p, v in flat}

    @classmethod
    def from_weights(
        cls,
        config: ModelConfig,
        weights: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
        history: Mapping[str, list[float]] | None = None,
        consume: bool = False,
    ):
        """Build a model (eval mode) from ``config`` and flat weights, checking them first.

        With ``consume=True`` (``weights`` a dict the caller gives up) each array
        is popped from ``weights`` once it is a JAX array, so the NumPy copy can
        be freed as the model fills: peak memory stays near one copy of the weights.

        Raises
        ------
        ModelFormatError
            When names, shapes or dtypes do not match the config, or values are not finite.
        """
        graphdef, state = nnx.split(cls.abstract(config))
        flat = nnx.to_flat_state(state)
        expected = {}
        for path, var in flat:
            name = ".".join(map(str, path))
            if not isinstance(var, nnx.Param):  # a developer error, not a user one
                raise TypeError(
                    f"{cls.__name__}: state {name!r} is a {type(var).__name__}; only nnx.Param "
                    "variables are saved, so a SavedModel may hold no other state."
                )
            expected[name] = tuple(var.get_value().shape)
        problems = check_weights(expected, weights)
        if problems:
            raise ModelFormatError(
                f"The weights do not match the {cls.__name__} architecture: "
                + "; ".join(problems)
                + "."
            )
        leaves = []
        for path, var in flat:
            want = var.get_value()
            name = ".".join(map(str, path))
            value = weights.pop(name) if consume else weights[name]  # type: ignore[attr-defined]
            leaves.append((path, var.replace(_device_weight(value, want.dtype, adopt=consume))))
        model = nnx.merge(graphdef, nnx.from_flat_state(leaves))
        if metadata is not None:
            model.metadata = metadata
        if history is not None:
            model.history = history
        model.eval()
        return model

    # ------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, weights_format: str | None = None):
        """Save to the directory ``path`` atomically: ``config.json`` plus non-pickle weights.

        ``weights_format`` is ``'safetensors'`` (default when the optional package is
        importable) or ``'npz'``. The directory is written beside the target and
        swapped in only when complete, so an error or a crash leaves any previous
        model at ``path`` loadable. Read back with :func:`diffbio_sc.models.load`.

        Returns
        -------
        The directory as a :class:`pathlib.Path`.
        """
        from ._io import save_model

        return save_model(self, path, weights_format=weights_format)
