"""Caduceus Ph / PS checkpoints: equality with upstream, strand invariance, padding, errors.

The fixtures were built by scripts/make_caduceus_fixture.py with the upstream
code (kuleshov-group/caduceus, mamba_ssm 1.2.2's selective_scan_ref and
rms_norm_ref; commits in each meta.json). No torch is needed here.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc.io._checkpoints import CheckpointError
from diffbio_sc.models import _caduceus
from diffbio_sc.models._base import ModelFormatError
from diffbio_sc.models._caduceus import row_reverse_index, selective_scan
from diffbio_sc.ops._dna_checkpoint_tokenizers import CaduceusTokenizer, DnaTokenizerError

FIX = Path(__file__).parent / "fixtures"
NAMES = ("caduceus_ph", "caduceus_ps", "caduceus_ps_fused")
TOL = 1e-5
_COMP = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def _rc(seq: str) -> str:
    return seq.translate(_COMP)[::-1]


@functools.cache
def loaded(name):
    """Each fixture checkpoint loaded once per session."""
    return dfm.models.load_checkpoint(FIX / name)


@pytest.mark.parametrize(
    "name",  # the fused variant's compile runs in the slow CI step (fast-suite budget)
    [*NAMES[:2], pytest.param(NAMES[2], marks=pytest.mark.slow)],
)
def test_ids_layers_and_pooled_equal_upstream(name):
    """Upstream ran each sequence alone; here all run in one right-padded batch."""
    m = loaded(name)
    e = np.load(FIX / name / "expected.npz")
    assert m.family == "caduceus"
    assert m.settings["variant"] == ("ph" if name == "caduceus_ph" else "ps")
    tok = CaduceusTokenizer(add_sep=True)  # upstream's tokenizer(seq) appends [SEP]
    seqs = [str(s) for s in e["sequences"]]
    inside = [i for i, s in enumerate(seqs) if e[f"ids_{i}"].size <= m.max_tokens]
    assert len(inside) == 4
    for i, seq in enumerate(seqs):
        if i not in inside:
            with pytest.raises(
                DnaTokenizerError, match=rf"Sequence 0 .* context of {m.max_tokens}"
            ):
                tok.encode([seq], max_length=m.max_tokens, unknown="token")
    ids, mask = tok.encode([seqs[i] for i in inside], max_length=m.max_tokens, unknown="token")
    states = [np.asarray(s) for s in m.hidden_states(ids)]
    pooled = np.asarray(m.module.pool(ids, states[-1]))
    n_layers = m.module.config.n_layers
    assert len(states) == n_layers + 1
    for row, i in enumerate(inside):
        n = int(mask[row].sum())
        np.testing.assert_array_equal(ids[row, :n], e[f"ids_{i}"])
        for j in range(n_layers):
            np.testing.assert_allclose(states[j][row, :n], e[f"hidden_{i}_{j}"], atol=TOL)
        np.testing.assert_allclose(states[-1][row, :n], e[f"last_{i}"], atol=TOL)
        np.testing.assert_allclose(pooled[row], e[f"pooled_{i}"], atol=TOL)


def test_tokenizer_rules():
    m = loaded("caduceus_ph")
    ids, _ = m.tokenize(["acgtN"])  # upstream upper-cases: lower case is no error
    np.testing.assert_array_equal(ids[0], [7, 8, 9, 10, 11])  # no [SEP] (authors' pipelines)
    with pytest.raises(DnaTokenizerError, match=r"'X' at position 2"):
        m.tokenize(["ACXGT"])
    ids, _ = m.tokenize(["ACXGT"], unknown="token")
    np.testing.assert_array_equal(ids[0], [7, 8, 6, 9, 10])  # [UNK] is 6


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("caduceus_ph", marks=pytest.mark.slow),  # fast-suite budget: slow CI step
        "caduceus_ps",
        pytest.param("caduceus_ps_fused", marks=pytest.mark.slow),
    ],
)
def test_padding_does_not_change_a_sequence(name):
    """A sequence's states are the same in batches of other widths and batch-mates."""
    m = loaded(name)
    seqs = ["ACGTTGCAGT", "GATTACA", "CCGGTTAACGTAGCTAGGCATTA", "TTGA"]  # even and odd
    ids, mask = m.tokenize(seqs)
    a = np.asarray(m.hidden_states(ids)[-1])
    wide = np.full((2, ids.shape[1] + 5), m.tokenizer.pad_id, np.int32)
    for pair in ((1, 3), (0, 2)):
        wide[:] = m.tokenizer.pad_id
        for r, i in enumerate(pair):
            wide[r, : ids.shape[1]] = ids[i]
        b = np.asarray(m.hidden_states(wide)[-1])
        for r, i in enumerate(pair):
            n = int(mask[i].sum())
            np.testing.assert_allclose(b[r, :n], a[i, :n], atol=1e-6)


@pytest.mark.parametrize(
    "name", ["caduceus_ps", pytest.param("caduceus_ps_fused", marks=pytest.mark.slow)]
)
def test_ps_pooled_embedding_is_strand_invariant(name):
    m = loaded(name)
    seqs = ["ACGTTGCAGTA", "GATTACAGGC", "CCGGTTAACGTAGCTAGGCATTAC", "TTGAN"]  # odd and even
    batch = seqs + [_rc(s) for s in seqs]
    ids, mask = m.tokenize(batch)  # one right-padded batch, rows of different lengths
    last = m.hidden_states(ids)[-1]
    emb = np.asarray(m.module.pool(ids, last))
    np.testing.assert_allclose(emb[: len(seqs)], emb[len(seqs) :], atol=1e-6, rtol=0)
    # and the hidden states are equivariant: h(rc x) = rc(h(x)) position by position
    last = np.asarray(last)
    for i in range(len(seqs)):
        n = int(mask[i].sum())
        np.testing.assert_allclose(
            last[len(seqs) + i, :n], last[i, :n][::-1, ::-1], atol=1e-6, rtol=0
        )


def test_ph_is_not_strand_invariant():
    m = loaded("caduceus_ph")
    s = "ACGTTGCAGTA"
    a, b = m.embed([s, _rc(s)])
    assert np.abs(a - b).max() > 1e-3  # so the PS test above can fail


def test_chunked_scan_equals_sequential_recurrence():
    rng = np.random.default_rng(0)
    n, length, d, k = 2, 37, 3, 4
    u = rng.normal(size=(n, length, d)).astype(np.float32)
    dt = rng.uniform(0.01, 0.5, size=(n, length, d)).astype(np.float32)
    a = -rng.uniform(0.5, 2.0, size=(d, k)).astype(np.float32)
    b = rng.normal(size=(n, length, k)).astype(np.float32)
    c = rng.normal(size=(n, length, k)).astype(np.float32)
    dd = rng.normal(size=d).astype(np.float32)
    h = np.zeros((n, d, k))
    want = np.zeros((n, length, d))
    for t in range(length):  # mamba_ssm's selective_scan_ref loop, in float64
        h = np.exp(dt[:, t, :, None] * a) * h + (dt[:, t] * u[:, t])[..., None] * b[:, t, None]
        want[:, t] = np.einsum("ndk,nk->nd", h, c[:, t]) + u[:, t] * dd
    for method in ("parallel", "sequential"):
        for chunk in (8, 64):  # a remainder block (37 = 4 x 8 + 5); one block longer than the input
            got = np.asarray(selective_scan(u, dt, a, b, c, dd, chunk=chunk, method=method))
            np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="scan method"):
        selective_scan(u, dt, a, b, c, dd, method="fast")


@pytest.mark.parametrize("method", ["parallel", "sequential"])
def test_blocked_mixer_equals_upstream_across_block_boundaries(monkeypatch, method):
    """Blocks of 7 positions (convolution tail and scan state carried over) change nothing."""
    monkeypatch.setattr(_caduceus, "SCAN_CHUNK", 7)
    monkeypatch.setattr(_caduceus, "SCAN_METHOD", method)
    m = loaded("caduceus_ps")
    e = np.load(FIX / "caduceus_ps" / "expected.npz")
    tok = CaduceusTokenizer(add_sep=True)
    seqs = [str(s) for s in e["sequences"]]
    inside = [i for i, s in enumerate(seqs) if e[f"ids_{i}"].size <= m.max_tokens]
    ids, mask = tok.encode([seqs[i] for i in inside], max_length=m.max_tokens, unknown="token")
    assert ids.shape[1] > 2 * 7
    last = np.asarray(m.module.hidden_states(ids)[-1])  # eager: traced with the patched block
    for row, i in enumerate(inside):
        n = int(mask[row].sum())
        np.testing.assert_allclose(last[row, :n], e[f"last_{i}"], atol=TOL)


def test_row_reverse_index():
    idx = np.asarray(row_reverse_index(np.array([3, 5, 0]), 5))
    np.testing.assert_array_equal(idx, [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]])


def _copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(FIX / name, dst)
    return dst


def test_missing_and_misshaped_tensors_named_in_one_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _copy(tmp_path, "caduceus_ps")
    w = load_file(str(d / "model.safetensors"))
    drop = "caduceus.backbone.layers.0.mixer.submodule.mamba_rev.A_log"
    bad = "caduceus.backbone.layers.1.mixer.submodule.mamba_fwd.x_proj.weight"
    assert drop in w and bad in w
    del w[drop]
    w[bad] = w[bad][:, :-1]
    w["caduceus.backbone.extra.weight"] = np.zeros(3, np.float32)
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ModelFormatError) as err:
        dfm.models.load_checkpoint(d)
    msg = str(err.value)
    assert "layers.0.mixer.mamba_rev.A_log" in msg
    assert "layers.1.mixer.mamba_fwd.x_proj" in msg
    assert "extra.weight" in msg


def test_config_errors(tmp_path):
    d = _copy(tmp_path, "caduceus_ps")
    cfg = json.loads((d / "config.json").read_text())
    cfg["complement_map"]["7"] = 8  # A -> C: not A's complement
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((CheckpointError, ValueError), match="complement"):
        dfm.models.load_checkpoint(d)
    cfg["complement_map"]["7"] = 10
    cfg["bidirectional_strategy"] = "concat"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="bidirectional_strategy"):
        dfm.models.load_checkpoint(d)


def test_evo2_config_is_refused_with_the_reason(tmp_path):
    d = _copy(tmp_path, "caduceus_ph")
    (d / "config.json").write_text(json.dumps({"model_type": "evo2", "hidden_size": 1920}))
    with pytest.raises(CheckpointError, match=r"Evo 2 is not run by diffbio_sc.*CUDA.*FP8"):
        dfm.models.load_checkpoint(d)


def test_hub_and_registry_list_caduceus():
    repos = dfm.models.HUB_REPOSITORIES["caduceus"]["repo_ids"]
    assert "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16" in repos
    assert "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16" in repos
    rows = {r["name"]: r for r in dfm.models.GENOMICS_MODELS}
    assert "load_checkpoint" in rows["Caduceus-PS"]["dfm_loader"]
    assert "CUDA" in rows["Evo 2"]["dfm_loader"]


def test_save_and_reload(tmp_path):
    m = loaded("caduceus_ps")
    m.save(tmp_path / "saved")
    back = dfm.models.load_checkpoint(tmp_path / "saved")
    assert back.family == "caduceus" and back.settings == m.settings
    assert back.max_tokens == m.max_tokens and back.module.config == m.module.config
    seqs = ["ACGTTGCA", "GATTACAN"]
    np.testing.assert_array_equal(back.embed(seqs), m.embed(seqs))
