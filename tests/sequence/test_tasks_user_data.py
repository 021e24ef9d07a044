"""dfm.tl.genomics_tasks on the user's own labelled sequences, with DNA checkpoints as encoders.

The data set is synthetic and decidable from the sequence (a 12-bp motif in
one class), so the k-mer baseline must score well. Expectations are written
independently of the function: split sizes counted from the split column or
from the documented rounding rule, the largest Nucleotide Transformer window
from its token bound worked by hand, and the checkpoint's embeddings taken
from ``embed_sequences`` itself and fed back as a plain callable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

NT1 = Path(__file__).parents[1] / "checkpoints" / "fixtures" / "nucleotide_transformer_v1"
MOTIF = "TATAATGCGCAT"
SCORES = ("accuracy", "macro_f1", "mcc", "auroc")


def _motif_set(n=120, seed=0):
    """Random 60-159 bp sequences; odd rows carry the motif twice (class 'motif')."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        length = int(rng.integers(60, 160))
        s = "".join(rng.choice(list("ACGT"), length))
        if i % 2:
            for p in rng.integers(0, length - len(MOTIF), 2).tolist():
                s = s[:p] + MOTIF + s[p + len(MOTIF) :]
        seqs.append(s)
        labels.append("motif" if i % 2 else "none")
    a = dfm.io.sequences_to_adata(seqs, ids=[f"s{i}" for i in range(n)])
    a.obs["label"] = labels
    return a


@pytest.fixture(scope="module")
def nt1():
    return dfm.models.load_checkpoint(NT1)


def _snapshot(a):
    return a.obs.copy(), dict(a.obsm), {k: v for k, v in a.uns.items()}


def _unchanged(a, snap) -> bool:
    obs, obsm, uns = snap
    return (
        a.obs.equals(obs)
        and list(a.obs.columns) == list(obs.columns)
        and (set(a.obsm) == set(obsm) and set(a.uns) == set(uns))
    )


def test_user_task_report_with_checkpoint_and_kmer_baseline(nt1):
    a = _motif_set()
    snap = _snapshot(a)
    df = dfm.tl.genomics_tasks(
        data=a, methods="kmer_logreg", frozen_encoders={"nt1": nt1}, task_name="motif"
    )
    assert _unchanged(a, snap)
    assert list(df.columns) == ["embedding", "metric", "group", "value", "sd"]
    assert len(df) == 2 * len(SCORES)
    assert set(df["embedding"]) == {"kmer_logreg", "nt1"}
    assert set(df["metric"]) == {f"motif_{s}" for s in SCORES}
    assert (df["group"] == "annotation").all() and df["sd"].isna().all()
    assert np.isfinite(df["value"]).all()
    acc = df.set_index(["embedding", "metric"])["value"]
    assert acc[("kmer_logreg", "motif_accuracy")] >= 0.9  # the motif decides the class

    report = df.attrs["report"]
    task = report["tasks"]["motif"]
    assert task["data"] == "user" and task["class_counts"] == {"motif": 60, "none": 60}
    # seeded split, documented rule: round(0.2 * distinct sequences) per class to test
    assert (task["n_train"], task["n_test"]) == (96, 24)
    rec = report["frozen_encoders"]["nt1"]
    assert rec["checkpoint_sha256"] == nt1.digests()["checkpoint_sha256"]
    assert rec["vocab_sha256"] == nt1.digests()["vocab_sha256"]
    assert rec["model_family"] == "nucleotide_transformer_v1"
    assert rec["model"] == "nucleotide_transformer_v1 nucleotide_transformer_v1"
    assert rec["adapter_mode"] == "checkpoint" and rec["reverse_complement"] == "average"
    # context 24 tokens, 1 special (<cls>, no <eos>): 1 + w // 6 + max(w % 6, 4) <= 24
    # holds for w = 118 (1 + 19 + 4) and fails for w = 119 (1 + 19 + 5)
    assert nt1.max_tokens == 24
    used = task["frozen_encoders"]["nt1"]
    assert (used["window"], used["stride"]) == (118, 59)
    lengths = a.obs["sequence"].str.len()
    assert used["n_windows"] > len(a) and (lengths > 118).any()


def test_checkpoint_entry_embeds_as_embed_sequences_does(nt1):
    """A checkpoint (or its directory) scores exactly as embed_sequences' vectors fed back."""
    a = _motif_set(n=40, seed=1)
    ref = a.copy()
    dfm.tl.embed_sequences(
        ref, encoder=nt1, reverse_complement="average", window=118, stride=59, key_added="X_nt"
    )
    lookup = dfm.tl.embedding_lookup(ref, "X_nt")
    df = dfm.tl.genomics_tasks(
        data=a,
        methods="kmer_logreg",
        frozen_encoders={"nt_dir": str(NT1), "nt_lookup": lookup},
    )
    v = df.set_index(["metric", "embedding"])["value"].unstack()
    np.testing.assert_allclose(v["nt_dir"], v["nt_lookup"], atol=1e-6)
    rec = df.attrs["report"]["frozen_encoders"]
    assert rec["nt_dir"]["checkpoint_sha256"] == nt1.digests()["checkpoint_sha256"]
    assert rec["nt_lookup"] == "embedding_lookup('X_nt')"


def test_given_split_is_used_exactly():
    a = _motif_set(n=60)
    # a lopsided split the seeded rule would never make: the last 12 rows are the test part
    a.obs["part"] = ["train"] * 48 + ["test"] * 12
    a.obs.loc["s0", "sequence"] = a.obs.loc["s59", "sequence"]  # one identical pair across
    a.obs.loc["s0", "label"] = a.obs.loc["s59", "label"]
    df = dfm.tl.genomics_tasks(data=a, methods="kmer_logreg", split_key="part")
    task = df.attrs["report"]["tasks"]["user"]
    assert (task["n_train"], task["n_test"]) == (48, 12)
    assert task["split"] == "given by .obs['part']"
    assert task["n_identical_across_split"] == 1


def test_seeded_split_is_reproducible_and_follows_test_fraction():
    a = _motif_set(n=60)
    kw = {"data": a, "methods": "kmer_logreg", "test_fraction": 0.25}
    one = dfm.tl.genomics_tasks(seed=3, **kw)
    two = dfm.tl.genomics_tasks(seed=3, **kw)
    pd.testing.assert_frame_equal(one, two)
    task = one.attrs["report"]["tasks"]["user"]
    # 30 distinct sequences per class: round(0.25 * 30) = 8 (banker's rounding of 7.5)
    assert task["n_test"] == 2 * 8 and task["n_train"] == 60 - 16
    assert task["split"].startswith("seeded")


def test_mudata_modality():
    md = pytest.importorskip("mudata")
    a = _motif_set(n=40)
    m = md.MuData({"dna": a})
    df = dfm.tl.genomics_tasks(data=m, mod="dna", methods="kmer_logreg")
    assert df.attrs["report"]["tasks"]["user"]["mod"] == "dna"
    assert set(df["embedding"]) == {"kmer_logreg"}


def _bad(kind):
    a = _motif_set(n=20)
    kw = {}
    if kind == "no_label":
        kw["label_key"] = "cell_type"
    elif kind == "one_class":
        a.obs["label"] = "motif"
    elif kind == "missing_label":
        a.obs["label"] = a.obs["label"].astype(object)
        a.obs.loc["s3", "label"] = np.nan
    elif kind == "bad_split":
        a.obs["part"] = ["train"] * 15 + ["test"] * 3 + ["valid", "Test"]
        kw["split_key"] = "part"
    elif kind == "no_split_col":
        kw["split_key"] = "part"
    elif kind == "class_not_in_test":
        a.obs["part"] = [
            "train" if lab == "none" or i < 18 else "test" for i, lab in enumerate(a.obs["label"])
        ]
        kw["split_key"] = "part"
    elif kind == "too_few":
        a.obs["label"] = ["rare"] + ["none"] * 19
    elif kind == "non_dna":
        a.obs.loc["s4", "sequence"] = "ACGTJACGT"
    elif kind == "model_alphabet":  # IUPAC R is DNA, but NT reads only ACGTN
        a.obs.loc["s5", "sequence"] = "ACGTACRGT"
        kw["frozen_encoders"] = {"nt1": NT1}
    elif kind == "tasks_and_data":
        kw["tasks"] = "splice_junctions"
    elif kind == "not_a_dir":
        kw["frozen_encoders"] = {"nt": "no/such/checkpoint"}
    return a, kw


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("no_label", r"\.obs\['cell_type'\] \(the labels\) not found; available columns"),
        ("one_class", r"single class \{'motif': 20\}.*at least two"),
        ("missing_label", r"1 missing label\(s\), e.g. sequence 's3'"),
        ("bad_split", r"only 'train' or 'test'; 2 row\(s\) hold 'Test', 'valid'"),
        ("no_split_col", r"\.obs\['part'\] \(the train/test split\) not found"),
        (
            "class_not_in_test",
            r"class\(es\) \['none'\] without training or test rows.*"
            r"test counts \{'motif': 1, 'none': 0\}",
        ),
        ("too_few", r"\['rare'\] have fewer than 2 distinct sequences.*'rare': 1"),
        ("non_dna", r"Invalid character 'J' in sequence 's4' at position 5"),
        ("model_alphabet", r"Invalid character 'R' in sequence 's5' at position 7"),
        ("tasks_and_data", "either tasks="),
        ("not_a_dir", r"frozen_encoders\['nt'\] = 'no/such/checkpoint' is not a checkpoint"),
    ],
)
def test_bad_user_data_named_and_data_unchanged(kind, match):
    a, kw = _bad(kind)
    snap = _snapshot(a)
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.genomics_tasks(data=a, methods="kmer_logreg", **kw)
    assert _unchanged(a, snap)


def test_saved_sequence_encoder_is_not_a_frozen_checkpoint(tmp_path):
    from flax import nnx

    from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig

    cfg = SequenceEncoderConfig(
        hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, max_length=40, dropout=0.0
    )
    SequenceEncoder(cfg, rngs=nnx.Rngs(params=0)).save(tmp_path / "enc")
    a = _motif_set(n=20)
    with pytest.raises(DfmInputError, match=r"is a saved SequenceEncoder, not a DNA checkpoint"):
        dfm.tl.genomics_tasks(
            data=a, methods="kmer_logreg", frozen_encoders={"mine": tmp_path / "enc"}
        )


DNA = Path("..") / "shared" / "data" / "dna"


@pytest.mark.skipif(not DNA.is_dir(), reason="../shared/data/dna is not present")
def test_bundled_task_with_a_checkpoint_directory(nt1):
    """The bundled tasks (the default) take a checkpoint too; 81 bp fit without windows."""
    df = dfm.tl.genomics_tasks(
        "promoters_ecoli",
        methods="kmer_logreg",
        data_dir=DNA,
        max_per_class=40,
        frozen_encoders={"nt1": NT1},
    )
    assert set(df["embedding"]) == {"kmer_logreg", "nt1"}
    report = df.attrs["report"]
    used = report["tasks"]["promoters_ecoli"]["frozen_encoders"]["nt1"]
    assert used["window"] is None and used["n_windows"] == 80
    assert report["frozen_encoders"]["nt1"]["checkpoint_sha256"] == nt1.sha256
