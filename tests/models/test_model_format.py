"""One model format: registry, atomic save, old-format reading, loud failures on tampering."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")

from diffbio_sc.models import (  # noqa: E402
    MaskedExpressionConfig,
    MaskedExpressionModel,
    ModelConfig,
    ModelFormatError,
    SavedModel,
    load,
    register_model,
)
from diffbio_sc.models._base import registered_models, weights_sha256  # noqa: E402

DATA = Path(__file__).parent / "data"
IDS = np.array([[4, 7, 5, 0], [9, 4, 0, 0]], np.int32)
VALS = np.array([[5.0, 3.0, 1.0, 0], [2.0, 1.0, 0, 0]], np.float32)


def _tiny(seed=0):
    cfg = MaskedExpressionConfig(
        vocab_size=10, hidden_dim=8, n_layers=1, n_heads=2, max_tokens=4, n_profile_genes=3
    )
    m = MaskedExpressionModel(cfg, rngs=nnx.Rngs(params=jax.random.key(seed)))
    m.metadata = {
        "genes": ["g0", "g1", "g2", "g3", "g4", "g5"],
        "medians": [1.0, 2.0, 0.5, 1.5, 3.0, 1.0],
        "tokenizer": {"recipe": "geneformer_v1", "target_sum": 1e4, "max_tokens": 4},
        "profile_mean": [0.1, 0.2, 0.3],
    }
    return m


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model saved once in each weights format: ``{fmt: (model, dir)}``."""
    pytest.importorskip("safetensors")
    root = tmp_path_factory.mktemp("models")
    m = _tiny()
    return {fmt: (m, m.save(root / fmt, weights_format=fmt)) for fmt in ("npz", "safetensors")}


def _copy(saved, fmt, tmp_path):
    model, src = saved[fmt]
    dst = tmp_path / f"copy_{fmt}"
    shutil.copytree(src, dst)
    return model, dst


def _doc(d):
    return json.loads((d / "config.json").read_text())


def _write_doc(d, doc):
    (d / "config.json").write_text(json.dumps(doc))


# ---------------------------------------------------------------- format and registry
def test_save_writes_format_2_with_type_and_checksum(saved):
    model, d = saved["npz"]
    doc = _doc(d)
    assert (doc["format"], doc["format_version"]) == ("diffbio_sc.model", 2)
    assert doc["model_type"] == "masked_expression"
    assert doc["model_module"] == "diffbio_sc.models._masked"
    # The checksum is an independent sha256 over the stored arrays.
    with np.load(d / "weights.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert doc["weights_sha256"] == weights_sha256(arrays) == model.weights_sha256()
    assert sorted(os.listdir(d.parent)) == ["npz", "safetensors"]  # no temp dirs left


def test_version_1_directory_saved_by_the_previous_code_still_loads():
    ref = json.loads((DATA / "masked_v1_expected.json").read_text())
    m = load(DATA / "masked_v1_npz")
    assert isinstance(m, MaskedExpressionModel) and m.config.hidden_dim == 8
    assert m.metadata["genes"][:2] == ["g0", "g1"] and m.history["train_loss"] == [1.0]
    emb = np.asarray(m.embed(np.asarray(ref["ids"], np.int32), np.asarray(ref["vals"], np.float32)))
    np.testing.assert_allclose(emb, np.asarray(ref["embedding"]), rtol=1e-5, atol=1e-6)


def test_fresh_process_loads_through_the_registry(saved):
    _, d = saved["safetensors"]
    code = textwrap.dedent(
        f"""
        import sys
        from diffbio_sc.models._io import load
        assert "diffbio_sc.models._masked" not in sys.modules
        m = load({str(d)!r})
        print(type(m).__name__, m.config.hidden_dim)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["MaskedExpressionModel", "8"]


@dataclass(frozen=True)
class _ToyConfig(ModelConfig):
    dim: int = 3
    scale: float = 1.0
    name: str | None = None

    def validate(self) -> None:
        if self.dim < 1:
            raise ValueError("_ToyConfig: dim must be >= 1.")


@register_model("test_toy")
class _Toy(SavedModel):
    config_class = _ToyConfig

    def __init__(self, config, *, rngs):
        super().__init__(config)
        self.lin = nnx.Linear(config.dim, 2, rngs=rngs)


def test_any_registered_model_saves_and_loads(tmp_path):
    toy = _Toy(_ToyConfig(dim=4, scale=2), rngs=nnx.Rngs(0))
    toy.metadata = {"note": "x"}
    d = toy.save(tmp_path / "toy", weights_format="npz")
    assert _doc(d)["model_type"] == "test_toy" and registered_models()["test_toy"] is _Toy
    back = load(d)
    assert isinstance(back, _Toy) and back.config == _ToyConfig(dim=4, scale=2.0)
    assert back.metadata == {"note": "x"}
    np.testing.assert_array_equal(back.lin.kernel[...], toy.lin.kernel[...])
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_toy")(type("_Other", (SavedModel,), {"config_class": _ToyConfig}))
    with pytest.raises(TypeError, match="SavedModel"):
        register_model("test_other")(dict)
    with pytest.raises(TypeError, match="_ToyConfig"):
        _Toy(MaskedExpressionConfig(vocab_size=10), rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dim=True), "dim must be int"),
        (dict(dim=2.5), "dim must be int"),
        (dict(dim="3"), "dim must be int"),
        (dict(scale=float("nan")), "finite"),
        (dict(name=3), "name must be str"),
        (dict(dim=0), "dim must be >= 1"),
    ],
)
def test_config_fields_are_type_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        _ToyConfig(**kw)
    assert _ToyConfig(scale=2).scale == 2.0 and isinstance(_ToyConfig(scale=2).scale, float)
    with pytest.raises(ValueError, match="Unknown _ToyConfig fields"):
        _ToyConfig.from_dict({"dim": 2, "bogus": 1})


# ---------------------------------------------------------------- atomic save
def test_failed_save_leaves_previous_model_loadable(saved, tmp_path, monkeypatch):
    model, d = _copy(saved, "npz", tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    other = _tiny(seed=1)

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space"):
        other.save(d, weights_format="npz")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == [d.name]  # no temporary directory left behind
    np.testing.assert_array_equal(load(d).embed(IDS, VALS), model.embed(IDS, VALS))
    # Unserialisable metadata fails before anything is written.
    other.metadata = {"bad": object()}
    with pytest.raises(TypeError, match="config.json"):
        other.save(d, weights_format="npz")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    # A successful save replaces the whole directory (no stale weights file).
    other.metadata = {}
    other.save(d, weights_format="safetensors")
    assert sorted(os.listdir(d)) == ["config.json", "weights.safetensors"]
    np.testing.assert_array_equal(load(d).embed(IDS, VALS), other.embed(IDS, VALS))


def test_save_refuses_to_replace_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a saved diffbio_sc model"):
        _tiny().save(tmp_path / "results")
    assert (tmp_path / "results" / "keep.txt").read_text() == "user data"
    out = _tiny().save(tmp_path / "new" / "nested" / "m", weights_format="npz")
    assert (out / "config.json").is_file()


# ---------------------------------------------------------------- tampering
def _edit_doc(fn):
    def f(d):
        doc = _doc(d)
        fn(doc)
        _write_doc(d, doc)

    return f


def _set_doc(key, value):
    return _edit_doc(lambda doc: doc.__setitem__(key, value))


def _del_doc(key):
    return _edit_doc(lambda doc: doc.pop(key))


def _set_config(key, value):
    return _edit_doc(lambda doc: doc["config"].__setitem__(key, value))


def _set_meta(key, value):
    return _edit_doc(lambda doc: doc["metadata"].__setitem__(key, value))


def _edit_npz(fn):
    def f(d):
        with np.load(d / "weights.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        fn(arrays)
        with open(d / "weights.npz", "wb") as fh:
            np.savez(fh, **arrays)

    return f


def _truncate(name):
    def f(d):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])

    return f


def _write(name, content: bytes):
    def f(d):
        (d / name).write_bytes(content)

    return f


def _meds(value):
    return _edit_doc(lambda doc: doc["metadata"]["medians"].__setitem__(2, value))


def _pickle_weights(d):
    with open(d / "weights.npz", "wb") as fh:
        pickle.dump({"gene_embed.embedding": np.zeros((10, 8))}, fh)


def _config_dir(d):
    (d / "config.json").unlink()
    (d / "config.json").mkdir()


CASES = {
    "invalid JSON": ("npz", _write("config.json", b'{"format": "diffbio_sc.model",'), "JSON"),
    "binary config": ("npz", _write("config.json", b"\x89PNG\x00\xff\xfe"), "binary"),
    "config is a directory": ("npz", _config_dir, "not a regular file"),
    "JSON list": ("npz", _write("config.json", b"[1, 2]"), "JSON list"),
    "no config section": ("npz", _del_doc("config"), "'config'"),
    "no checksum": ("npz", _del_doc("weights_sha256"), "'weights_sha256'"),
    "no model type": ("npz", _del_doc("model_type"), "'model_type'"),
    "no weights file entry": ("npz", _del_doc("weights_file"), "'weights_file'"),
    "unknown model type": ("npz", _set_doc("model_type", "nope"), "'nope'"),
    "foreign module ignored": (
        "npz",
        lambda d: (_set_doc("model_type", "os_model")(d), _set_doc("model_module", "os")(d)),
        "os_model",
    ),
    "future version": ("npz", _set_doc("format_version", 99), "format_version 99"),
    "other format": ("npz", _set_doc("format", "something"), "not a diffbio_sc model"),
    "weights path escapes": ("npz", _set_doc("weights_file", "../w.npz"), "unknown weights"),
    "config wrong type": ("npz", _set_config("hidden_dim", "8"), "hidden_dim must be int"),
    "config unknown field": ("npz", _set_config("bogus", 1), "bogus"),
    "config invalid value": ("npz", _set_config("n_heads", 3), "multiple of n_heads"),
    "config shape mismatch": ("npz", _set_config("hidden_dim", 16), "shape"),
    "weights file missing": ("npz", lambda d: (d / "weights.npz").unlink(), "is missing"),
    "npz not a zip": ("npz", _write("weights.npz", b"x" + os.urandom(300)), "not an .npz"),
    "npz truncated": ("npz", _truncate("weights.npz"), "weights.npz"),
    "npz holds a pickle": ("npz", _pickle_weights, "pickles are never loaded"),
    "npz object array": (
        "npz",
        _edit_npz(lambda a: a.update({"value_in.bias": np.array([None] * 8, dtype=object)})),
        "pickled",
    ),
    "safetensors truncated": ("safetensors", _truncate("weights.safetensors"), "safetensors"),
    "safetensors garbage": (
        "safetensors",
        _write("weights.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"),
        "safetensors",
    ),
    "weights cast to int8": (
        "npz",
        _edit_npz(lambda a: a.update({k: v.astype(np.int8) for k, v in a.items()})),
        "dtype int8",
    ),
    "weight missing": ("npz", _edit_npz(lambda a: a.pop("value_head.bias")), "missing weights"),
    "weight extra": ("npz", _edit_npz(lambda a: a.update(extra=np.zeros(3))), "unexpected"),
    "weight wrong shape": (
        "npz",
        _edit_npz(lambda a: a.update({"value_head.bias": np.zeros(2, np.float32)})),
        "shape",
    ),
    "weight NaN": (
        "npz",
        _edit_npz(lambda a: a["value_head.bias"].__setitem__(0, np.nan)),
        "NaN",
    ),
    "weights changed": (
        "npz",
        _edit_npz(lambda a: a["value_head.bias"].__iadd__(1e-3)),
        "weights_sha256",
    ),
    "median zero": ("npz", _meds(0.0), "positive"),
    "median negative": ("npz", _meds(-1.0), "positive"),
    "median null": ("npz", _meds(None), "NaN"),
    "medians missing": ("npz", _set_meta("medians", None), "'medians'"),
    "genes repeated": ("npz", _set_meta("genes", ["g0"] * 6), "repeated"),
    "target_sum zero": ("npz", _set_meta("tokenizer", {"target_sum": 0}), "target_sum"),
    "profile mean length": ("npz", _set_meta("profile_mean", [0.0]), "profile_mean"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_model_fails_loudly_with_one_error_class(saved, tmp_path, case):
    fmt, tamper, match = CASES[case]
    _, d = _copy(saved, fmt, tmp_path)
    tamper(d)
    with pytest.raises(ModelFormatError, match=match) as err:
        load(d)
    msg = str(err.value)
    assert str(d) in msg  # names the model directory
    assert "allow_pickle" not in msg
    assert "Re-save" in msg or "Upgrade" in msg or "Use the diffbio_sc" in msg or "Pass" in msg


def test_missing_paths_are_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load(tmp_path / "empty")


def test_checkpoint_configs_refuse_non_positive_sizes_naming_class_and_field():
    """The shared ``ModelConfig._require_positive`` check, in every checkpoint config."""
    import dataclasses

    from diffbio_sc.models._bert import BertConfig
    from diffbio_sc.models._dnabert2 import Dnabert2Config
    from diffbio_sc.models._esm import EsmConfig
    from diffbio_sc.models._llama import LlamaConfig

    sizes = dict(
        vocab_size=16,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        num_key_value_heads=2,
        head_dim=4,
    )
    for cls in (BertConfig, EsmConfig, LlamaConfig, Dnabert2Config):
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in sizes.items() if k in names}
        if "pad_token_id" in names:
            kwargs["pad_token_id"] = 0
        cls(**kwargs)  # valid
        with pytest.raises(
            ValueError, match=rf"{cls.__name__}\.intermediate_size must be a positive"
        ):
            cls(**{**kwargs, "intermediate_size": 0})
