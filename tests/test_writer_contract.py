"""The writer contract, checked for every public ``dfm.pp`` / ``dfm.tl`` writer.

Every function in ``dfm.pp.__all__`` and ``dfm.tl.__all__`` is either a writer
with a case below or listed in ``EXEMPT`` with the reason, so a new public
function fails :func:`test_every_public_function_is_classified` until it is
given one. For each writer, on small data:

* ``copy=True`` returns a new object and leaves the input unchanged (deep
  snapshot); ``copy=False`` returns ``None`` and writes in place;
* ``key_added=`` decides where the result lands;
* a bad argument raises before anything is written (input unchanged);
* the ``.uns['dfm']`` record carries the shared core fields
  (``docs/architecture.md``), holds no JSON strings, and survives an
  ``.h5ad`` round trip unchanged.
"""

from __future__ import annotations

import copy as _copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc import _keys

FIX = Path(__file__).parent / "checkpoints" / "fixtures"

#: Public pp/tl functions that are not AnnData writers, with the reason.
EXEMPT = {
    "pretrain": "returns a model; writes nothing to the AnnData",
    "pretrain_sequences": "returns a model; writes nothing to the data",
    "score_annotation": "returns a dict of scores; reads only",
    "score_integration": "returns a dict of scores; reads only",
    "benchmark": "returns a results table (recorded under .uns['dfm']['benchmarks'][name])",
    "compare_to_baseline": "compares two result tables; no AnnData",
    "save_baseline": "writes a result table to a file; no AnnData",
    "pca_baseline": "returns an array; reads only",
    "harmony_baseline": "returns an array; reads only",
    "genomics_tasks": "returns a results table; reads only",
    "embedding_lookup": "returns a sequence -> vector lookup; reads only",
    "export_gene_sequences": "writes a FASTA file; no AnnData",
    "KmerEncoder": "an encoder class",
    "FunctionEncoder": "an encoder class",
    "PrecomputedEncoder": "an encoder class",
    "logo_attribution": "returns a results table; reads only (input unchanged: tested below)",
}

#: Fields every ``.uns['dfm']['embeddings'][key]`` record has (docs/architecture.md).
CORE_EMBEDDING_FIELDS = {
    "source",
    "model_family",
    "adapter_mode",
    "artifact_id",
    "artifact_sha256",
    "preprocessing_version",
    "pooling_strategy",
    "n_dims",
    "created_by",
}
CREATED_BY_FIELDS = {"function", "package", "version", "created_at"}


@dataclass
class Case:
    """How to run one writer on small data."""

    make: Callable[[Any], Any]  # pytest request -> data
    call: Callable[..., Any]  # (data, tmp_path, **kw) -> return value
    where: str  # 'obsm' | 'layers' | 'var'
    section: str  # .uns['dfm'][section][key]
    bad: dict = field(default_factory=dict)  # an argument that must be refused
    target: Callable[[Any], Any] = lambda d: d  # the AnnData inside (a MuData's modality)


def _counts(request=None):
    return dfm.datasets.synthetic_counts(60, 40, n_cell_types=2, n_batches=2, seed=0)


def _cells(request):
    return request.getfixturevalue("checkpoint_cells")


def _sequences(request):
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), rng.integers(8, 20))) for _ in range(12)]
    return dfm.io.sequences_to_adata(seqs)


def _counting_encoder(seqs):
    return np.stack([[s.count(b) / len(s) for b in "ACGT"] for s in seqs]).astype(np.float32)


SAVED_MODEL = Path(__file__).parent / "models" / "data" / "masked_v2_dd6d1e5"  # genes g0..g9


def _model_counts(request):
    data = dfm.datasets.synthetic_counts(40, 10, n_cell_types=2, n_batches=2, seed=0)
    data.var_names = [f"g{i}" for i in range(10)]
    return data


def _loaded_file(tmp_path):
    data = _counts()
    emb = np.random.default_rng(1).normal(size=(data.n_obs, 3))
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=emb, cell_ids=np.asarray(data.obs_names, dtype=str))
    return path


_GENETICS_VCF = (
    "##fileformat=VCFv4.2\n##contig=<ID=c1,length=60>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC\n"
    "c1\t8\t.\tG\tT\t.\tPASS\t.\tGT\t0|1\t0|0\t1|1\n"
)


def _genetics_inputs(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_toy", Path(__file__).parent / "genetics" / "conftest.py"
    )
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    TOY_SEQ, TOY_GTF = toy.TOY_SEQ, toy.TOY_GTF
    (tmp_path / "toy.fa").write_text(f">c1\n{TOY_SEQ}\n")
    (tmp_path / "toy.gtf").write_text(TOY_GTF)
    (tmp_path / "toy.vcf").write_text(_GENETICS_VCF)
    return [tmp_path / n for n in ("toy.fa", "toy.gtf", "toy.vcf")]


def _embed_genes(mdata, tmp_path, **kw):
    kw.setdefault("encoder", dfm.tl.KmerEncoder(2))
    kw.setdefault("n_components", 2)
    kw.setdefault("mod", "genetics2")
    return dfm.tl.embed_genes(
        *_genetics_inputs(tmp_path), genes=["PLUS", "MINUS"], mdata=mdata, **kw
    )


def _genetics_mudata(request):
    return dfm.tl.embed_genes(
        *_genetics_inputs(request.getfixturevalue("tmp_path")), genes=["PLUS", "MINUS"], encoder=dfm.tl.KmerEncoder(2),
        n_components=2,
    )  # fmt: skip


CASES = {
    "gene_medians": Case(
        _counts, lambda d, t, **kw: dfm.pp.gene_medians(d, **kw), "var", _keys.UNS_MEDIANS,
        bad={"target_sum": -1.0},
    ),
    "tokenize": Case(
        _counts, lambda d, t, **kw: dfm.pp.tokenize(d, max_tokens=8, **kw), "obsm",
        _keys.UNS_TOKENIZER, bad={"recipe": "no_such_recipe"},
    ),
    "bin_expression": Case(
        _counts, lambda d, t, **kw: dfm.pp.bin_expression(d, n_bins=5, **kw), "layers",
        _keys.UNS_BINS, bad={"seed": -3},
    ),
    "soft_rank": Case(
        _counts, lambda d, t, **kw: dfm.pp.soft_rank(d, **kw), "layers", _keys.UNS_SOFT_RANK,
        bad={"temperature": 0.0},
    ),
    "embed": Case(
        _model_counts,
        lambda d, t, **kw: dfm.tl.embed(d, dfm.models.load(SAVED_MODEL), progress_bar=False, **kw),
        "obsm", _keys.UNS_EMBEDDINGS, bad={"batch_size": 0},
    ),
    "embed_checkpoint": Case(
        _cells,
        lambda d, t, **kw: dfm.tl.embed_checkpoint(d, FIX / "geneformer_v1", **kw),
        "obsm", _keys.UNS_EMBEDDINGS, bad={"pooling": "median"},
    ),
    "load_embeddings": Case(
        _counts, lambda d, t, **kw: dfm.tl.load_embeddings(d, _loaded_file(t), **kw), "obsm",
        _keys.UNS_EMBEDDINGS, bad={"source": "no_such_source"},
    ),
    "embed_sequences": Case(
        _sequences,
        lambda d, t, **kw: dfm.tl.embed_sequences(d, encoder=_counting_encoder, **kw),
        "obsm", _keys.UNS_EMBEDDINGS, bad={"reverse_complement": "both"},
    ),
    "embed_genes": Case(
        _genetics_mudata, _embed_genes, "obsm", _keys.UNS_EMBEDDINGS,
        bad={"projection": "umap"}, target=lambda m: m["genetics2"],
    ),
}  # fmt: skip

WRITERS = sorted(CASES)


def test_every_public_function_is_classified():
    public = set(dfm.pp.__all__) | set(dfm.tl.__all__)
    assert set(CASES) | set(EXEMPT) == public, (
        "a public pp/tl function is neither a writer case here nor exempt: "
        f"{sorted(public - set(CASES) - set(EXEMPT))}; stale: "
        f"{sorted((set(CASES) | set(EXEMPT)) - public)}"
    )
    assert not set(CASES) & set(EXEMPT)


# ---------------------------------------------------------------- helpers


def _snapshot(data):
    """A deep, independent copy of everything a writer could change."""
    if hasattr(data, "mod"):
        return {"mod": {k: _snapshot(v) for k, v in data.mod.items()}}
    import scipy.sparse as sp

    X = data.X
    return {
        "X": X.copy() if sp.issparse(X) else np.array(X, copy=True),
        "obs": data.obs.copy(),
        "var": data.var.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in data.obsm.items()},
        "varm": {k: np.array(v, copy=True) for k, v in data.varm.items()},
        "layers": {k: v.copy() for k, v in data.layers.items()},
        "uns": _copy.deepcopy(dict(data.uns)),
    }


def _equal(a, b, path="") -> None:
    import scipy.sparse as sp

    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), (
            f"{path}: keys {sorted(a)} != {sorted(b)}"
        )
        for k in a:
            _equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=path)
    elif sp.issparse(a):
        assert sp.issparse(b) and (a != b).nnz == 0, path
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


def _assert_unchanged(data, snap) -> None:
    _equal(snap, _snapshot(data), "data")


def _run(name, case, data, tmp_path, **kw):
    return case.call(data, tmp_path, **kw)


def _stored(target, case, key):
    return getattr(target, case.where)[key]


def _json_strings(value, path="") -> list[str]:
    """Paths of string values that are JSON objects or arrays (not allowed in records)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _json_strings(v, f"{path}[{k!r}]")
    elif isinstance(value, str) and value[:1] in "{[":
        try:
            if isinstance(json.loads(value), (dict, list)):
                found.append(path)
        except ValueError:
            pass
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _json_strings(v, f"{path}[{i}]")
    return found


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", WRITERS)
def test_copy_true_returns_a_new_object_and_leaves_the_input(name, tmp_path, request):
    case = CASES[name]
    data = case.make(request)
    snap = _snapshot(data)
    out = _run(name, case, data, tmp_path, copy=True)
    assert out is not None and out is not data and type(out) is type(data)
    _assert_unchanged(data, snap)
    record_keys = list(case.target(out).uns["dfm"][case.section])
    assert record_keys, f"{name} wrote no .uns['dfm'][{case.section!r}] record"


@pytest.mark.parametrize("name", WRITERS)
def test_copy_false_writes_in_place_under_key_added(name, tmp_path, request):
    case = CASES[name]
    data = case.make(request)
    assert _run(name, case, data, tmp_path, key_added="my_key") is None
    target = case.target(data)
    stored = _stored(target, case, "my_key")
    assert stored.shape[0] == (target.n_vars if case.where == "var" else target.n_obs)
    assert "my_key" in target.uns["dfm"][case.section]


@pytest.mark.parametrize("name", WRITERS)
def test_bad_argument_is_refused_before_anything_is_written(name, tmp_path, request):
    case = CASES[name]
    data = case.make(request)
    snap = _snapshot(data)
    with pytest.raises((ValueError, TypeError)):  # DfmInputError is a ValueError
        _run(name, case, data, tmp_path, **case.bad)
    _assert_unchanged(data, snap)


@pytest.mark.parametrize("name", WRITERS)
def test_record_has_the_core_fields_and_round_trips_through_h5ad(name, tmp_path, request):
    import anndata as ad

    case = CASES[name]
    data = case.make(request)
    _run(name, case, data, tmp_path, key_added="res")
    target = case.target(data)
    record = target.uns["dfm"][case.section]["res"]
    if case.section == _keys.UNS_EMBEDDINGS:
        missing = CORE_EMBEDDING_FIELDS - set(record)
        assert not missing, f"{name}: record lacks {sorted(missing)}"
        assert record["adapter_mode"] in _keys.ADAPTER_MODES
        assert record["model_family"] in _keys.MODEL_FAMILIES
        assert record["n_dims"] == _stored(target, case, "res").shape[1]
    assert CREATED_BY_FIELDS <= set(record["created_by"])
    assert record["created_by"]["function"].startswith("diffbio_sc.")
    assert not _json_strings(dict(target.uns)), f"{name}: JSON strings in .uns"
    assert not {"gene_list", "reference_version", "embedding_strategy_id"} & set(target.uns)
    path = tmp_path / "out.h5ad"
    target.write_h5ad(path)
    back = ad.read_h5ad(path)
    _equal(_copy.deepcopy(dict(target.uns["dfm"])), dict(back.uns["dfm"]), ".uns['dfm']")


def test_logo_attribution_reads_only(request):
    mdata = _genetics_mudata(request)
    labels = np.array([0, 1, 1])
    snap = _snapshot(mdata)
    with pytest.raises(ValueError, match="rarer class"):
        dfm.tl.logo_attribution(mdata, labels, n_folds=2, n_repeats=2)
    _assert_unchanged(mdata, snap)
