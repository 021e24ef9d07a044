"""``.uns['dfm']`` helpers: values stored as given or refused by name, records keyed like the data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from diffbio_sc import _uns


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": object()}, r"\['a'\]"),  # main stored str(value)
        ({"runs": [{"x": 1}, {"x": 2}]}, r"\['runs'\].*list of records"),  # main flattened
        ({"mixed": [1, "a"]}, r"\['mixed'\].*one kind"),  # main stored ['1', 'a']
        ({"holes": [1.0, None]}, r"\['holes'\]"),  # main dropped the None
        ({"a/b": 1}, r"'/'"),
        ({3: 1}, "keys must be"),
        ({"ragged": [np.zeros(2), np.zeros(3)]}, "different shapes"),
        ({"cplx": np.array([1j])}, "complex"),
        ({"obj": np.array([1, "a"], dtype=object)}, "strings"),
    ],
)
def test_unstorable_values_are_refused_by_path(value, where):
    with pytest.raises(_uns.UnsValueError, match=f"value.*{where}"):
        _uns.to_h5ad_safe(value)


def test_storable_values_round_trip_through_h5ad(tmp_path):
    value = {
        "none": None,  # kept (main dropped it)
        "path": tmp_path,
        "tuple": (1, 2),
        "strs": ["a", "b"],
        "bools": [True, False],
        "np_scalar": np.float32(1.5),
        "nested": {"empty": [], "arr": np.arange(3)},
        "stack": [np.zeros(2), np.ones(2)],
    }
    safe = _uns.to_h5ad_safe(value)
    assert safe["none"] is None and safe["path"] == str(tmp_path)
    adata = ad.AnnData(np.zeros((2, 2), np.float32))
    _uns.set_section(adata, "x", value)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["dfm"]["x"]
    assert back["none"] is None and back["path"] == str(tmp_path)
    np.testing.assert_array_equal(back["tuple"], [1, 2])
    assert list(back["strs"]) == ["a", "b"] and list(back["bools"]) == [True, False]
    assert back["np_scalar"] == 1.5
    np.testing.assert_array_equal(back["nested"]["arr"], [0, 1, 2])
    np.testing.assert_array_equal(back["stack"], [[0, 0], [1, 1]])


def test_a_refused_entry_changes_nothing():
    adata = ad.AnnData(np.zeros((2, 2), np.float32))
    adata.uns["dfm"] = {"tokenizer": {"old": {"recipe": "x"}}}
    with pytest.raises(_uns.UnsValueError):
        _uns.set_record(adata, "tokenizer", "new", {"bad": object()})
    with pytest.raises(_uns.UnsValueError):
        _uns.set_entry(adata, "embeddings", "X_a", {"bad": object()})
    assert adata.uns["dfm"] == {"tokenizer": {"old": {"recipe": "x"}}}


def test_set_record_moves_a_flat_record_under_its_key():
    adata = ad.AnnData(np.zeros((2, 2), np.float32))
    adata.uns["dfm"] = {"soft_rank": {"temperature": 1.0, "key_added": "sr"}}
    assert _uns.is_flat_record(adata.uns["dfm"]["soft_rank"])
    _uns.set_record(adata, "soft_rank", "dfm_soft_rank", {"temperature": 0.1})
    assert adata.uns["dfm"]["soft_rank"] == {
        "sr": {"temperature": 1.0, "key_added": "sr"},
        "dfm_soft_rank": {"temperature": 0.1},
    }
    assert _uns.get_record(adata, "soft_rank", "sr")["temperature"] == 1.0
    assert _uns.get_record(adata.uns, "soft_rank")["temperature"] == 0.1
    assert _uns.get_record(adata, "bins") is None
