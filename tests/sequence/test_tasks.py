"""Genomics tasks: split rules, baseline features, scores, the tidy report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.tl._sequence._task_data import (
    classification_scores,
    grouped_stratified_split,
    kmer_features,
    load_task,
    positional_one_hot,
)

DNA = Path("..") / "shared" / "data" / "dna"
needs_data = pytest.mark.skipif(
    not DNA.is_dir(), reason="../shared/data/dna (the shared real DNA sets) is not present"
)


def test_split_keeps_identical_sequences_together_and_stratifies():
    rng = np.random.default_rng(0)
    base = ["".join(rng.choice(list("ACGT"), 8)) for _ in range(60)]
    seqs = base + base[:20] + base[:5]  # 25 repeats
    labels = np.array(["a"] * 30 + ["b"] * 30 + ["a"] * 20 + ["a"] * 5)
    tr, te = grouped_stratified_split(seqs, labels, test_fraction=0.25, seed=1)
    assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == len(seqs)
    assert not {seqs[i] for i in tr} & {seqs[i] for i in te}
    # 30 distinct sequences per class, 25 % of them in the test part
    assert len({seqs[i] for i in te if labels[i] == "a"}) == 8
    assert len({seqs[i] for i in te if labels[i] == "b"}) == 8
    tr2, te2 = grouped_stratified_split(seqs, labels, test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(te, te2)
    _, te3 = grouped_stratified_split(seqs, labels, test_fraction=0.25, seed=2)
    assert not np.array_equal(te, te3)
    with pytest.raises(DfmInputError, match="too few"):
        grouped_stratified_split(
            ["AC", "GT", "GT"], np.array(["a", "b", "b"]), test_fraction=0.5, seed=0
        )


def test_kmer_features_hand_case():
    X = kmer_features(["AAAC", "ANAA"], ks=(2, 3)).toarray()
    assert X.shape == (2, 16 + 64)
    # AAAC: 2-mers AA, AA, AC -> AA 2/3, AC 1/3; 3-mers AAA, AAC -> 1/2 each
    want0 = np.zeros(80)
    want0[0], want0[1] = 2 / 3, 1 / 3
    want0[16 + 0], want0[16 + 1] = 0.5, 0.5
    np.testing.assert_allclose(X[0], want0, rtol=1e-6)
    # ANAA: only AA counts among 2-mers; no clean 3-mer
    want1 = np.zeros(80)
    want1[0] = 1.0
    np.testing.assert_allclose(X[1], want1)


def test_positional_one_hot():
    X = positional_one_hot(["AC", "G"], 3)
    np.testing.assert_array_equal(
        X, [[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    )


def test_classification_scores_hand_cases():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    s = classification_scores(y, p)
    # predictions 0,1,1,1: TP=2 TN=1 FP=1 FN=0
    assert s["accuracy"] == 0.75
    np.testing.assert_allclose(s["mcc"], (2 * 1 - 1 * 0) / np.sqrt(3 * 2 * 1 * 2))
    np.testing.assert_allclose(s["macro_f1"], (2 / 3 + 0.8) / 2)
    assert s["auroc"] == 1.0  # the positive scores rank every positive first
    y3 = np.array([0, 1, 2])
    s3 = classification_scores(y3, np.eye(3))
    assert s3["mcc"] == 1.0 and s3["auroc"] == 1.0


@needs_data
def test_load_tasks_real_data():
    seqs, labels, info = load_task("splice_junctions", DNA)
    assert len(seqs) == 3190 and set(map(len, seqs)) == {60}
    assert info["class_counts"] == {"EI": 767, "IE": 768, "N": 1655}
    assert info["data"] == "real" and "UCI" in info["source"]
    seqs, labels, info = load_task("promoters_ecoli", DNA)
    assert info["class_counts"] == {"non_promoter": 3000, "promoter": 839}
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_task("promoters_ecoli", DNA / "nowhere")
    with pytest.raises(DfmInputError, match="Unknown task"):
        load_task("tfbs", DNA)


@needs_data
def test_baselines_on_splice_junctions_table_and_plot():
    def junction_bases(seqs):  # a frozen encoder: the bases around the junction, one-hot
        return dfm.ops.one_hot([s[27:33] for s in seqs])[0].reshape(len(seqs), -1)

    df = dfm.tl.genomics_tasks(
        "splice_junctions",
        methods=("kmer_logreg", "onehot_logreg"),
        data_dir=DNA,
        max_per_class=150,
        frozen_encoders={"junction_window": junction_bases},
    )
    assert list(df.columns) == ["embedding", "metric", "group", "value", "sd"]
    assert set(df["embedding"]) == {"kmer_logreg", "onehot_logreg", "junction_window"}
    assert set(df["metric"]) == {
        f"splice_junctions_{s}" for s in ("accuracy", "macro_f1", "mcc", "auroc")
    }
    mcc = df[df["metric"] == "splice_junctions_mcc"].set_index("embedding")["value"]
    # positional information decides splice junctions: one-hot clearly beats k-mer bags,
    # and the six bases around the junction alone carry much of it
    assert mcc["onehot_logreg"] > mcc["kmer_logreg"] + 0.1
    assert mcc["junction_window"] > mcc["kmer_logreg"]
    rep = df.attrs["report"]["tasks"]["splice_junctions"]
    assert rep["data"] == "real" and rep["n_train"] + rep["n_test"] == rep["n_used"]
    fig = dfm.pl.benchmark(df)
    assert fig.axes
    fig2 = dfm.pl.benchmark(df.attrs["report"])
    assert fig2.axes
    # the report holds plain lists, so frames carrying it concatenate and print
    both = pd.concat([df, df])
    assert len(both) == 2 * len(df) and str(both)


@needs_data
def test_too_long_for_the_encoder_fails_before_training():
    from diffbio_sc.models import SequenceEncoderConfig

    cfg = SequenceEncoderConfig(
        hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=8, max_length=64
    )
    with pytest.raises(
        DfmInputError, match=r"max_length=64 tokens of the encoder \(task 'promoters_ecoli'\)"
    ):
        dfm.tl.genomics_tasks("promoters_ecoli", methods="fine_tuned", config=cfg, data_dir=DNA)


def test_bad_arguments():
    with pytest.raises(DfmInputError, match="Unknown task"):
        dfm.tl.genomics_tasks("tfbs")
    with pytest.raises(DfmInputError, match="Unknown method"):
        dfm.tl.genomics_tasks("splice_junctions", methods="svm")
    with pytest.raises(DfmInputError, match="test_fraction"):
        dfm.tl.genomics_tasks("splice_junctions", test_fraction=0.9)


@pytest.mark.slow
@needs_data
def test_encoder_methods_run_end_to_end():
    from diffbio_sc.models import SequenceEncoderConfig

    cfg = SequenceEncoderConfig(
        hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, max_length=96, dropout=0.0
    )
    df = dfm.tl.genomics_tasks(
        "promoters_ecoli",
        methods=("frozen_probe", "fine_tuned"),
        config=cfg,
        data_dir=DNA,
        max_per_class=60,
        pretrain_epochs=1,
        finetune_epochs=2,
        progress_bar=False,
    )
    assert set(df["embedding"]) == {"frozen_probe", "fine_tuned"}
    assert np.isfinite(df["value"]).all()
    enc = df.attrs["report"]["tasks"]["promoters_ecoli"]["encoder"]
    assert "training sequences" in enc["how"] and enc["config"]["hidden_dim"] == 16


@needs_data
def test_imported_embeddings_scored_through_the_same_tasks(tmp_path):
    # a DNABERT-2-style export (ids + vectors) loaded onto the task's sequences,
    # then scored by the same probe as a native encoder
    seqs, _, _ = load_task("promoters_ecoli", DNA)
    seqs = sorted(set(seqs))
    a = dfm.io.sequences_to_adata(seqs)
    vec = dfm.ops.one_hot([s[-40:] for s in seqs])[0].reshape(len(seqs), -1)
    perm = np.random.default_rng(0).permutation(len(seqs))
    path = dfm.io.write_embeddings(
        tmp_path / "dnabert2.npz", vec[perm], np.asarray(a.obs_names)[perm], id_key="sequence_id"
    )
    dfm.tl.load_embeddings(a, path, source="dnabert2")
    assert a.uns["dfm"]["embeddings"]["X_dnabert2"]["model_family"] == "sequence_transformer"
    lookup = dfm.tl.embedding_lookup(a, "X_dnabert2")
    np.testing.assert_array_equal(lookup([seqs[3], seqs[0]]), vec[[3, 0]])
    df = dfm.tl.genomics_tasks(
        "promoters_ecoli",
        methods="onehot_logreg",
        data_dir=DNA,
        max_per_class=100,
        frozen_encoders={"dnabert2": lookup},
    )
    assert set(df["embedding"]) == {"onehot_logreg", "dnabert2"}
    with pytest.raises(DfmInputError, match="no vector"):
        lookup(["ACGT"])


@pytest.mark.slow
@needs_data
def test_kmer_strand_average_from_random_init_end_to_end():
    from flax import nnx

    from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig

    cfg = SequenceEncoderConfig(
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        max_length=96,
        tokenizer="kmer",
        k=3,
        reverse_complement="average",
    )
    df = dfm.tl.genomics_tasks(
        "promoters_ecoli",
        methods=("frozen_probe", "fine_tuned"),
        config=cfg,
        data_dir=DNA,
        max_per_class=40,
        pretrain_epochs=0,
        finetune_epochs=1,
        seed=3,
        progress_bar=False,
    )
    assert np.isfinite(df["value"]).all()
    enc = df.attrs["report"]["tasks"]["promoters_ecoli"]["encoder"]
    assert enc["how"] == "random initialisation (seed 3), no pretraining"
    fresh = SequenceEncoder(cfg, rngs=nnx.Rngs(params=3))
    assert enc["weights_sha256"] == fresh.weights_sha256()


def test_finetune_split_and_validation_scores_hand_case():
    from diffbio_sc.tl._sequence._finetune import finetune_split, validation_scores

    train = np.arange(5, 105, 2)  # 50 training rows
    fit_idx, val_idx = finetune_split(train, seed=4)
    assert val_idx.size == 5 and fit_idx.size == 45
    np.testing.assert_array_equal(np.sort(np.concatenate([fit_idx, val_idx])), train)
    np.testing.assert_array_equal(finetune_split(train, seed=4)[1], val_idx)  # seeded
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    s = validation_scores(np.array([0, 1, 1]), p)
    assert s["loss"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)
    assert s["accuracy"] == pytest.approx(2 / 3) and s["auroc"] == pytest.approx(1.0)
    one = validation_scores(np.array([1, 1]), p[1:])  # a single class: no MCC / AUROC
    assert one["accuracy"] == 0.5 and np.isnan(one["mcc"]) and np.isnan(one["auroc"])
    q = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    two = validation_scores(np.array([0, 2, 2]), q)  # 2 of 3 classes: MCC yes, AUROC no
    assert two["accuracy"] == pytest.approx(2 / 3) and np.isnan(two["auroc"])
    # confusion [[1, 0], [1, 1]]: MCC = (1*1 - 0*1) / sqrt(1 * 2 * 2 * 1) = 0.5
    assert two["mcc"] == pytest.approx(0.5)


@pytest.mark.slow
@needs_data
def test_seed_ensemble_of_fine_tuned_encoders():
    from diffbio_sc.models import SequenceEncoderConfig

    cfg = SequenceEncoderConfig(
        hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, max_length=64
    )
    kw = dict(
        methods="fine_tuned",
        config=cfg,
        data_dir=DNA,
        max_per_class=16,
        pretrain_epochs=0,
        finetune_epochs=1,
        batch_size=16,
        progress_bar=False,
    )
    df = dfm.tl.genomics_tasks("splice_junctions", finetune_seeds=2, **kw)
    assert set(df["embedding"]) == {"fine_tuned", "fine_tuned_ensemble"}
    assert np.isfinite(df["value"]).all()
    rep = df.attrs["report"]["tasks"]["splice_junctions"]
    members = rep["fine_tuning_members"]
    assert [m["seed"] for m in members] == [0, 1] == rep["fine_tuned_ensemble"]["seeds"]
    assert members[0]["history"]["train_loss"] != members[1]["history"]["train_loss"]
    # cross-entropy is convex: the averaged probabilities' validation loss is at most
    # the members' mean loss (equality only if the members agree everywhere)
    ens_loss = rep["fine_tuned_ensemble"]["validation_scores"]["loss"]
    assert ens_loss < np.mean([m["validation_scores"]["loss"] for m in members])
    # the single-model row is the first member, unchanged by the ensemble option
    single = dfm.tl.genomics_tasks("splice_junctions", **kw)
    assert set(single["embedding"]) == {"fine_tuned"}
    np.testing.assert_allclose(
        single["value"].to_numpy(), df[df["embedding"] == "fine_tuned"]["value"].to_numpy()
    )
    one = single.attrs["report"]["tasks"]["splice_junctions"]["fine_tuning"]
    np.testing.assert_equal(one["validation_scores"], members[0]["validation_scores"])
    with pytest.raises(DfmInputError, match="add 'fine_tuned'"):
        dfm.tl.genomics_tasks("splice_junctions", methods="kmer_logreg", finetune_seeds=2)
    with pytest.raises(DfmInputError, match="new names"):
        dfm.tl.genomics_tasks(
            "splice_junctions", frozen_encoders={"fine_tuned_ensemble": lambda s: s}
        )


@pytest.mark.parametrize(
    ("frozen", "match"),
    [
        ([lambda s: s], r"must be a mapping name -> callable or DNA checkpoint.*got a list"),
        (
            {"dnabert2": "X_dnabert2"},
            r"frozen_encoders\['dnabert2'\] = 'X_dnabert2' is not a checkpoint",
        ),
        ({"dnabert2": 3}, r"frozen_encoders\['dnabert2'\] is a int, not a callable or a DNA"),
        ({"": lambda s: s}, "must be a non-empty string"),
        ({3: lambda s: s}, "the name 3 must be a non-empty string"),
        ({"kmer_logreg": lambda s: s}, "taken by a built-in method; use new names"),
    ],
)
def test_genomics_tasks_names_a_bad_frozen_encoder(frozen, match):
    """A bad entry is refused up front with the entry named (not Python's dict() error)."""
    with pytest.raises(DfmInputError, match=match):
        dfm.tl.genomics_tasks("splice_junctions", frozen_encoders=frozen)
