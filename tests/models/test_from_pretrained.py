"""dfm.models.from_pretrained: checkpoints from a Hugging Face cache, offline.

Every test builds a cache in huggingface_hub's layout under tmp_path
(``models--{org}--{name}/refs/<ref>`` holding a commit hash,
``snapshots/<commit>/...`` the files) from the tiny fixtures in
tests/checkpoints/fixtures, and runs with ``HF_HUB_OFFLINE=1``: no test touches
the network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.io._checkpoints import CheckpointError

hub = pytest.importorskip("huggingface_hub")
hub_constants = pytest.importorskip("huggingface_hub.constants")

FIX = Path(__file__).parents[1] / "checkpoints" / "fixtures"
TOL = 1e-5


def _commit(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


def _make_repo(cache: Path, repo_id: str, refs: dict[str, dict[str, object]]) -> dict[str, str]:
    """Write ``repo_id`` into ``cache``: per ref, {path in repo: fixture dir or bytes}.

    Returns ref -> commit hash.
    """
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    commits = {}
    for ref, files in refs.items():
        commit = _commit(repo_id + ref)
        snap = repo / "snapshots" / commit
        for rel, src in files.items():
            dest = snap / rel if rel else snap
            if isinstance(src, bytes):
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(src)
            else:
                shutil.copytree(src, dest, dirs_exist_ok=True)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
        commits[ref] = commit
    return commits


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Offline for every test: the env variable and huggingface_hub's copy read at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def cells():
    c = np.load(FIX / "cells.npz")
    return ad.AnnData(
        X=sp.csr_matrix(c["counts"].astype(np.float32)),
        obs=pd.DataFrame(index=c["obs"]),
        var=pd.DataFrame({"symbol": c["symbols"]}, index=c["ensembl"]),
    )


def _cell_embedding(cells, model) -> np.ndarray:
    gene_key = "symbol" if model.family == "scgpt" else None
    out = dfm.tl.embed_checkpoint(cells, model, gene_key=gene_key, copy=True)
    key = "X_scgpt" if model.family == "scgpt" else "X_geneformer"
    return np.asarray(out.obsm[key])


def _sequences(name: str) -> list[str]:
    return [str(s) for s in np.load(FIX / name / "expected.npz")["sequences"]]


# ------------------------------------------------------------------ each family


@pytest.mark.parametrize(
    "name",
    ["nucleotide_transformer_v1", "nucleotide_transformer_v1_bin", "generator", "hyenadna"],
)
def test_dna_checkpoint_from_cache_embeds_as_the_local_one(tmp_path, name):
    repo_id = f"SomeOrg/{name}"
    commits = _make_repo(tmp_path, repo_id, {"main": {"": FIX / name}})
    m = dfm.models.from_pretrained(repo_id, cache_dir=tmp_path)
    ref = dfm.models.load_checkpoint(FIX / name)
    assert m.family == ref.family and m.sha256 == ref.sha256
    seqs = _sequences(name)
    got = m.embed(seqs, unknown="token")
    np.testing.assert_array_equal(got, ref.embed(seqs, unknown="token"))
    if not name.endswith("_bin"):  # and the upstream reference the fixture was made with
        np.testing.assert_allclose(got, np.load(FIX / name / "expected.npz")["pooled"], atol=TOL)
    assert m.hub == {
        "repo_id": repo_id,
        "revision": commits["main"],
        "requested_revision": "main",
        "subfolder": None,
    }
    assert m.path == tmp_path / f"models--SomeOrg--{name}" / "snapshots" / commits["main"]


@pytest.mark.parametrize(
    ("name", "expected_key"),
    [("scgpt", "cls_embedding"), ("geneformer_v1", "mean_embedding")],
)
def test_cell_checkpoint_from_cache_embeds_as_the_local_one(tmp_path, cells, name, expected_key):
    _make_repo(tmp_path, "Org/cellmodel", {"main": {"": FIX / name}})
    m = dfm.models.from_pretrained("Org/cellmodel", cache_dir=tmp_path)
    got = _cell_embedding(cells, m)
    np.testing.assert_array_equal(
        got, _cell_embedding(cells, dfm.models.load_checkpoint(FIX / name))
    )
    np.testing.assert_allclose(
        got, np.load(FIX / f"expected_{name}.npz")[expected_key], atol=TOL, rtol=0
    )


# ------------------------------------------------------------------ subfolder, revision


@pytest.fixture
def geneformer_like(tmp_path):
    """A repository holding two models in subfolders, as ctheodoris/Geneformer does."""
    commits = _make_repo(
        tmp_path,
        "lab/Geneformer",
        {"main": {"gf-v1": FIX / "geneformer_v1", "gf-v2": FIX / "geneformer_v2"}},
    )
    return tmp_path, commits


@pytest.mark.parametrize(
    ("sub", "recipe"), [("gf-v1", "geneformer_v1"), ("gf-v2", "geneformer_v2")]
)
def test_subfolder_selects_the_model(geneformer_like, cells, sub, recipe):
    cache, commits = geneformer_like
    m = dfm.models.from_pretrained("lab/Geneformer", subfolder=sub, cache_dir=cache)
    ref = dfm.models.load_checkpoint(FIX / recipe)
    assert m.recipe == recipe and m.sha256 == ref.sha256
    assert m.path.name == sub
    assert m.hub["subfolder"] == sub and m.hub["revision"] == commits["main"]
    np.testing.assert_array_equal(_cell_embedding(cells, m), _cell_embedding(cells, ref))


def test_several_models_without_subfolder_is_an_error_listing_them(geneformer_like):
    cache, _ = geneformer_like
    with pytest.raises(CheckpointError, match="several models") as err:
        dfm.models.from_pretrained("lab/Geneformer", cache_dir=cache)
    assert "'gf-v1'" in str(err.value) and "'gf-v2'" in str(err.value)
    assert isinstance(err.value, DfmInputError)


def test_missing_subfolder_is_an_error_listing_those_that_hold_models(geneformer_like):
    cache, _ = geneformer_like
    with pytest.raises(CheckpointError, match="subfolder 'gf-v3'") as err:
        dfm.models.from_pretrained("lab/Geneformer", subfolder="gf-v3", cache_dir=cache)
    assert "'gf-v1', 'gf-v2'" in str(err.value)


def test_subfolder_dot_picks_the_root_when_subfolders_hold_models_too(tmp_path):
    _make_repo(
        tmp_path,
        "lab/mixed",
        {"main": {"": FIX / "geneformer_v2", "old": FIX / "geneformer_v1"}},
    )
    with pytest.raises(CheckpointError, match=r"'\.' \(the repository root\), 'old'"):
        dfm.models.from_pretrained("lab/mixed", cache_dir=tmp_path)
    m = dfm.models.from_pretrained("lab/mixed", subfolder=".", cache_dir=tmp_path)
    assert m.recipe == "geneformer_v2" and m.hub["subfolder"] is None


@pytest.mark.parametrize("bad", ["../other", "/abs", "a/../../b"])
def test_subfolder_outside_the_repository_is_refused(geneformer_like, bad):
    cache, _ = geneformer_like
    with pytest.raises(DfmInputError, match="relative path"):
        dfm.models.from_pretrained("lab/Geneformer", subfolder=bad, cache_dir=cache)


def test_revision_selects_the_snapshot_of_a_named_ref_or_commit(tmp_path):
    commits = _make_repo(
        tmp_path,
        "InstaDeepAI/nt",
        {
            "main": {"": FIX / "nucleotide_transformer_v2"},
            "v1": {"": FIX / "nucleotide_transformer_v1"},
        },
    )
    assert commits["main"] != commits["v1"]
    main = dfm.models.from_pretrained("InstaDeepAI/nt", cache_dir=tmp_path)
    old = dfm.models.from_pretrained("InstaDeepAI/nt", revision="v1", cache_dir=tmp_path)
    want_main = dfm.models.load_checkpoint(FIX / "nucleotide_transformer_v2")
    want_old = dfm.models.load_checkpoint(FIX / "nucleotide_transformer_v1")
    assert main.sha256 == want_main.sha256 and old.sha256 == want_old.sha256
    assert old.hub["revision"] == commits["v1"] and old.hub["requested_revision"] == "v1"
    assert main.hub["revision"] == commits["main"]
    by_hash = dfm.models.from_pretrained(
        "InstaDeepAI/nt", revision=commits["v1"], cache_dir=tmp_path
    )
    assert by_hash.sha256 == want_old.sha256 and by_hash.hub["revision"] == commits["v1"]
    assert commits["v1"] in repr(old)


@pytest.mark.parametrize("name", ["generator", "geneformer_v1"])
def test_provenance_survives_save_and_load(tmp_path, name):
    _make_repo(tmp_path / "cache", "Org/model", {"main": {"sub": FIX / name}})
    m = dfm.models.from_pretrained("Org/model", subfolder="sub", cache_dir=tmp_path / "cache")
    m.save(tmp_path / "saved")
    back = dfm.models.load_checkpoint(tmp_path / "saved")
    assert back.family == m.family
    assert back.hub == m.hub and back.hub["repo_id"] == "Org/model"
    assert back.hub["subfolder"] == "sub" and len(back.hub["revision"]) == 40


# ------------------------------------------------------------------ offline and errors


def test_not_cached_while_offline_says_how_to_fill_the_cache(tmp_path):
    with pytest.raises(CheckpointError) as err:
        dfm.models.from_pretrained("Org/absent", revision="v2", cache_dir=tmp_path)
    msg = str(err.value)
    assert "'Org/absent'" in msg and "'v2'" in msg
    assert "hf download Org/absent --revision v2" in msg and str(tmp_path) in msg


def test_unknown_ref_of_a_cached_repo_is_the_same_error(geneformer_like):
    cache, _ = geneformer_like
    with pytest.raises(CheckpointError, match="revision 'nope' is not in the local"):
        dfm.models.from_pretrained("lab/Geneformer", revision="nope", cache_dir=cache)


def test_local_files_only_never_asks_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(hub.HfApi, "repo_info", no_network)
    monkeypatch.setattr(hub.HfApi, "list_repo_tree", no_network)
    _make_repo(tmp_path, "Org/gen", {"main": {"": FIX / "generator"}})
    m = dfm.models.from_pretrained("Org/gen", cache_dir=tmp_path, local_files_only=True)
    assert m.family == "generator"
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        dfm.models.from_pretrained("Org/other", cache_dir=tmp_path, local_files_only=True)


def test_geneformer_pickled_dictionaries_are_never_unpickled(tmp_path, cells):
    weights = tmp_path / "weights"
    weights.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(FIX / "geneformer_v2" / f, weights / f)
    # loading this would raise (it is no pickle): the error below proves it was not read
    junk = b"not a pickle"
    _make_repo(
        tmp_path / "cache",
        "ctheodoris/Geneformer",
        {
            "main": {
                "Geneformer-V2-104M": weights,
                "geneformer/token_dictionary_gc104M.pkl": junk,
                "geneformer/gene_median_dictionary_gc104M.pkl": junk,
            }
        },
    )
    kw = {"subfolder": "Geneformer-V2-104M", "cache_dir": tmp_path / "cache"}
    with pytest.raises(CheckpointError, match="as pickles") as err:
        dfm.models.from_pretrained("ctheodoris/Geneformer", **kw)
    msg = str(err.value)
    assert "geneformer/token_dictionary_gc104M.pkl" in msg and "never unpickles" in msg
    # the dictionaries, converted by the user, are passed through to load_checkpoint
    tok = json.loads((FIX / "geneformer_v2" / "token_dictionary.json").read_text())
    med = json.loads((FIX / "geneformer_v2" / "gene_median_dictionary.json").read_text())
    m = dfm.models.from_pretrained(
        "ctheodoris/Geneformer", token_dictionary=tok, gene_median_dictionary=med, **kw
    )
    ref = dfm.models.load_checkpoint(FIX / "geneformer_v2")
    np.testing.assert_array_equal(_cell_embedding(cells, m), _cell_embedding(cells, ref))


def test_download_patterns_take_one_model_and_the_dictionaries():
    from huggingface_hub.utils import filter_repo_objects

    from diffbio_sc.models._hub import _checkpoint_patterns

    repo = [
        "config.json",
        "model.safetensors",
        "README.md",
        "Geneformer-V1-10M/config.json",
        "Geneformer-V1-10M/model.safetensors",
        "Geneformer-V1-10M/pytorch_model.bin",
        "Geneformer-V1-10M/training_args.bin",
        "Geneformer-V2-104M/config.json",
        "Geneformer-V2-104M/model.safetensors",
        "Geneformer-V2-104M/training_args.bin",
        "Geneformer-V2-104M/generation_config.json",
        "geneformer/token_dictionary_gc104M.pkl",
        "geneformer/gene_median_dictionary_gc104M.pkl",
        "geneformer/ensembl_mapping_dict_gc104M.pkl",
        "geneformer/tokenizer.py",
        "examples/cell_classification.ipynb",
    ]
    dictionaries = {
        "geneformer/token_dictionary_gc104M.pkl",
        "geneformer/gene_median_dictionary_gc104M.pkl",
    }
    got = set(filter_repo_objects(repo, allow_patterns=_checkpoint_patterns("Geneformer-V1-10M")))
    assert (
        got
        == {
            "Geneformer-V1-10M/config.json",
            "Geneformer-V1-10M/model.safetensors",
            "Geneformer-V1-10M/pytorch_model.bin",
        }
        | dictionaries
    )
    root = set(filter_repo_objects(repo, allow_patterns=_checkpoint_patterns("")))
    assert root == {"config.json", "model.safetensors"} | dictionaries
    # a sharded checkpoint with its tokenizer (GENERator-eukaryote-3b-base's file list)
    sharded = [
        *(f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)),
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "special_tokens_map.json",
        "tokenizer.py",
        "tokenizer_config.json",
        "vocab.txt",
        "README.md",
    ]
    got = set(filter_repo_objects(sharded, allow_patterns=_checkpoint_patterns("")))
    assert got == set(sharded) - {"generation_config.json", "tokenizer.py", "README.md"}


@pytest.mark.parametrize("bad", ["no-slash", "a/b/c", "/name", 3])
def test_bad_repo_id_is_refused(tmp_path, bad):
    with pytest.raises(DfmInputError, match="owner/name"):
        dfm.models.from_pretrained(bad, cache_dir=tmp_path)


def test_missing_huggingface_hub_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="pip install huggingface_hub"):
        dfm.models.from_pretrained("Org/gen", cache_dir=tmp_path)


def test_models_import_does_not_import_huggingface_hub():
    code = (
        "import sys, diffbio_sc as dfm; import diffbio_sc.models as m; "
        "assert 'from_pretrained' in m.__all__ and 'HUB_REPOSITORIES' in m.__all__; "
        "m.from_pretrained; print('huggingface_hub' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_registry_names_hub_repositories():
    from diffbio_sc.models._hub import HUB_REPOSITORIES

    gf = HUB_REPOSITORIES["geneformer"]
    assert gf["repo_ids"] == ("ctheodoris/Geneformer",)
    assert "Geneformer-V2-104M" in gf["subfolders"]
    assert HUB_REPOSITORIES["scgpt"]["repo_ids"] == ()  # no official Hub repository
    # every family run in-process has its Hub ids, as in GENOMICS_MODELS
    in_process = {
        r["name"]: tuple(r["checkpoints"])
        for r in dfm.models.GENOMICS_MODELS
        if r.get("dfm_in_process")
    }
    assert HUB_REPOSITORIES["generator"]["repo_ids"] == in_process.pop("GENERator")
    nt = HUB_REPOSITORIES["nucleotide_transformer"]["repo_ids"]
    assert nt == in_process.pop("Nucleotide Transformer")
    assert HUB_REPOSITORIES["dnabert2"]["repo_ids"] == in_process.pop("DNABERT-2")
    caduceus = in_process.pop("Caduceus-Ph") + in_process.pop("Caduceus-PS")
    assert HUB_REPOSITORIES["caduceus"]["repo_ids"] == caduceus
    hyena = HUB_REPOSITORIES["hyenadna"]["repo_ids"]
    assert hyena == in_process.pop("HyenaDNA")
    assert "LongSafari/hyenadna-medium-160k-seqlen-hf" in hyena
    assert not in_process
    assert "InstaDeepAI/nucleotide-transformer-v2-50m-multi-species" in nt


@pytest.mark.parametrize(
    ("error", "match"),
    [
        ("RepositoryNotFoundError", "no Hugging Face Hub repository"),
        ("RevisionNotFoundError", "Revision 'v9'"),
    ],
)
def test_hub_answers_become_checkpoint_errors(monkeypatch, tmp_path, error, match):
    import huggingface_hub.utils as hub_utils

    cls = getattr(hub_utils, error)

    def answer(*args, **kwargs):
        raise cls.__new__(cls)  # as the Hub answers a missing repository / revision

    monkeypatch.setattr(hub, "snapshot_download", answer)
    with pytest.raises(CheckpointError, match=match) as err:
        dfm.models.from_pretrained("Org/absent", revision="v9", cache_dir=tmp_path)
    assert "'Org/absent'" in str(err.value)
