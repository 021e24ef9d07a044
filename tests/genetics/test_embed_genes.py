"""embed_genes: haplotype cache, RC modes, windows, projection, MuData layout, encoders, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError
from diffbio_sc.ops._projection import project_subjects
from diffbio_sc.tl._genetics._embed_genes import _encoder_inputs, genetics_record
from diffbio_sc.tl._genetics._encoders import strategy_digest

HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=c1,length=60>\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC\tD\n"
)


@pytest.fixture
def toyvcf(toy):
    s = toy["seq"]
    rows = [
        (8, s[7], "T", ["0|1", "0|0", "1|1", "0|0"]),
        (33, s[32:35], s[32], ["1|0", "0|0", "0|0", "0|0"]),
        (45, s[44], "G", ["0|0", "0|1", "0|0", "0|0"]),
    ]
    text = HEADER + "".join(
        f"c1\t{p}\t.\t{r}\t{a}\t.\tPASS\t.\tGT\t" + "\t".join(g) + "\n" for p, r, a, g in rows
    )
    return toy["write"](toy["dir"] / "toy.vcf", text)


def run(toy, vcf, **kw):
    kw.setdefault("genes", ["PLUS", "MINUS"])
    kw.setdefault("n_components", 3)
    return dfm.tl.embed_genes(toy["fasta"], toy["gtf"], vcf, **kw)


def test_kmer_encoder_hand_computed_and_canonical():
    enc = dfm.tl.KmerEncoder(2)
    x = enc.embed(["ACGT", "AANAA", "A"])
    want = np.zeros(16)
    want[[1, 6, 11]] = 1 / 3  # AC=0*4+1, CG=1*4+2, GT=2*4+3
    np.testing.assert_allclose(x[0], want)
    assert x[1][0] == 1.0 and x[1].sum() == 1.0  # AA twice; k-mers with N skipped
    assert not x[2].any()  # shorter than k
    # rows do not depend on what else is in the call
    np.testing.assert_array_equal(enc.embed(["AANAA"])[0], x[1])
    canon = dfm.tl.KmerEncoder(3, canonical=True)
    assert canon.dim == 32 and canon.rc_equivariant
    rng = np.random.default_rng(0)
    for n in (5, 50, 333):
        s = "".join(rng.choice(list("ACGT"), n))
        r = s.translate(str.maketrans("ACGT", "TGCA"))[::-1]
        np.testing.assert_array_equal(canon.embed([s]), canon.embed([r]))


def _rc(s):
    return s.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def test_gene_windows_follow_the_one_mirror_symmetric_rule():
    from types import SimpleNamespace

    from diffbio_sc.ops._sequence import window_starts

    rng = np.random.default_rng(5)
    seq = "".join(rng.choice(list("ACGT"), 25))
    inputs, avg = _encoder_inputs([SimpleNamespace(sequences=[seq])], 10, 10, None)
    # D = 15, n = 3 -> 4 (odd D): starts 0, 5, 10, 15 (the stride-10 layout of embed_sequences)
    assert inputs == [seq[a : a + 10] for a in (0, 5, 10, 15)]
    assert window_starts(25, 10, 10).tolist() == [0, 5, 10, 15]
    np.testing.assert_allclose(avg.toarray(), [[0.25] * 4])
    whole, avg1 = _encoder_inputs([SimpleNamespace(sequences=[seq])], None, None, "average")
    assert whole == [seq, _rc(seq)] and np.allclose(avg1.toarray(), [[0.5, 0.5]])


@pytest.mark.parametrize(("length", "window", "stride"), [(437, 200, 200), (1001, 200, 77)])
def test_windowed_average_is_strand_invariant(length, window, stride):
    """A gene and its reverse complement get the same vector (was 4e-3..8e-3 apart)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(length)
    seq = "".join(rng.choice(list("ACGT"), length))
    enc = dfm.tl.KmerEncoder(3)  # not RC-invariant on its own
    genes = [SimpleNamespace(sequences=[seq]), SimpleNamespace(sequences=[_rc(seq)])]
    inputs, avg = _encoder_inputs(genes, window, stride, "average")
    vec = avg @ enc.embed(inputs).astype(np.float64)
    np.testing.assert_allclose(vec[0], vec[1], atol=1e-6)
    if stride == window:  # the former layout (last window at the end) was not invariant

        def old(s):
            starts = [*range(0, len(s) - window, stride), len(s) - window]
            pieces = [s[a : a + window] for a in starts]
            return enc.embed(pieces + [_rc(p) for p in pieces]).mean(axis=0)

        assert np.abs(old(seq) - old(_rc(seq))).max() > 1e-4


def test_gene_vectors_match_independent_computation(toy, toyvcf):
    rc, s = toy["rc"], toy["seq"]
    md = run(toy, toyvcf, reverse_complement="average")
    a = md["genetics"]
    enc = dfm.tl.KmerEncoder(4)
    avg = lambda q: 0.5 * (enc.embed([q])[0] + enc.embed([rc(q)])[0])  # noqa: E731
    plus_ref = s[4:14] + s[30:40]
    plus_snv = s[4:7] + "T" + s[8:14] + s[30:40]
    plus_del = s[4:14] + s[30:33] + s[35:40]
    d = a.uns["dfm"]["genetics"]["gene_dim"]
    X = a.obsm["X_dfm_genes"]
    np.testing.assert_allclose(X[0, :d], 0.5 * (avg(plus_del) + avg(plus_snv)), atol=1e-6)
    np.testing.assert_allclose(X[1, :d], avg(plus_ref), atol=1e-6)
    np.testing.assert_allclose(X[2, :d], avg(plus_snv), atol=1e-6)
    np.testing.assert_allclose(a.varm["dfm_reference_embedding"][0], avg(plus_ref), atol=1e-6)
    minus_ref = rc(s[41:47] + s[51:58])
    minus_alt = rc(s[41:44] + "G" + s[45:47] + s[51:58])
    np.testing.assert_allclose(X[1, d:], 0.5 * (avg(minus_ref) + avg(minus_alt)), atol=1e-6)
    np.testing.assert_allclose(X[3, d:], avg(minus_ref), atol=1e-6)
    assert a.X.tolist() == [[2, 0], [0, 1], [2, 0], [0, 0]]
    assert a.var["n_unique_haplotypes"].tolist() == [3, 2]


def test_haplotype_cache_same_result_fewer_encoder_calls(toy, toyvcf):
    calls = []

    def fn(seqs):
        calls.append(len(seqs))
        return dfm.tl.KmerEncoder(3).embed(seqs)

    enc = dfm.tl.FunctionEncoder(fn, {"name": "kmer3-wrapped"})
    cached = run(toy, toyvcf, encoder=enc)["genetics"]
    n_cached = sum(calls)
    calls.clear()
    plain = run(toy, toyvcf, encoder=enc, haplotype_cache=False)["genetics"]
    n_plain = sum(calls)
    np.testing.assert_allclose(cached.obsm["X_dfm_genes"], plain.obsm["X_dfm_genes"], atol=1e-6)
    np.testing.assert_allclose(
        cached.obsm["X_dfm_genetics"], plain.obsm["X_dfm_genetics"], atol=1e-5
    )
    # cached: distinct sequences x 2 strands; plain: (1 + 2 x 4 subjects) x 2 genes x 2 strands
    assert n_cached == 2 * (3 + 2) and n_plain == 2 * 2 * 9
    assert cached.uns["dfm"]["genetics"]["counts"]["n_encoder_calls_sequences"] == n_cached


def test_rc_modes_and_equivariance(toy, toyvcf):
    canon = dfm.tl.KmerEncoder(3, canonical=True)
    avg = run(toy, toyvcf, encoder=canon, reverse_complement="average")["genetics"]
    eqv = run(toy, toyvcf, encoder=canon, reverse_complement="equivariant")["genetics"]
    np.testing.assert_allclose(avg.obsm["X_dfm_genes"], eqv.obsm["X_dfm_genes"], atol=1e-6)
    sid = "embedding_strategy_id"
    assert genetics_record(avg)[sid] != genetics_record(eqv)[sid]
    fwd = run(toy, toyvcf, reverse_complement=None)["genetics"]
    both = run(toy, toyvcf, reverse_complement="average")["genetics"]
    assert not np.allclose(fwd.obsm["X_dfm_genes"], both.obsm["X_dfm_genes"])
    with pytest.raises(DfmInputError, match="RC-invariant by construction"):
        run(toy, toyvcf, reverse_complement="equivariant")


def test_windows_for_long_genes(toy, toyvcf):
    seen = []

    def fn(seqs):
        seen.extend(seqs)
        return dfm.tl.KmerEncoder(2).embed(seqs)

    enc = dfm.tl.FunctionEncoder(fn, {"name": "k2"}, max_length=8)
    a = run(toy, toyvcf, encoder=enc, reverse_complement=None)["genetics"]
    assert max(map(len, seen)) == 8
    ref = toy["seq"][4:14] + toy["seq"][30:40]  # 20 bases -> windows at 0, 6, 12 (mirror rule)
    k2 = dfm.tl.KmerEncoder(2)
    want = np.mean([k2.embed([ref[i : i + 8]])[0] for i in (0, 6, 12)], axis=0)
    np.testing.assert_allclose(a.varm["dfm_reference_embedding"][0], want, atol=1e-6)
    strat = genetics_record(a)["strategy"]
    assert strat["window"] == 8 and strat["window_stride"] == 8
    with pytest.raises(DfmInputError, match="exceeds the encoder's max_length 8"):
        run(toy, toyvcf, encoder=enc, window=9)


def test_projection_fitted_on_training_subjects_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 12))
    train = np.arange(30) < 20
    Z, info = project_subjects(X, train, method="pca", n_components=16, seed=0)
    assert Z.shape == (30, 16) and info["n_informative"] == 12
    # reference: SVD of the centred training rows; axes equal up to sign
    Xt = X[train] - X[train].mean(0)
    _, _, vt = np.linalg.svd(Xt, full_matrices=False)
    C = info["components"][:, :12]
    np.testing.assert_allclose(np.abs(np.sum(C * vt.T, axis=0)), 1.0, atol=1e-5)
    # moving the held-out subjects changes nothing fitted
    X2 = X.copy()
    X2[~train] += 100.0
    Z2, info2 = project_subjects(X2, train, method="pca", n_components=16, seed=0)
    np.testing.assert_allclose(info2["components"], info["components"], atol=1e-6)
    np.testing.assert_allclose(Z2[train], Z[train], atol=1e-5)
    # wide data (Gram path) and too few subjects: trailing columns are zero
    W = rng.normal(size=(8, 50))
    Zw, iw = project_subjects(W, np.ones(8, bool), method="pca", n_components=10, seed=0)
    assert iw["n_informative"] == 7 and not Zw[:, 7:].any()
    np.testing.assert_allclose(
        Zw[:, :7].T @ Zw[:, :7], np.diag(np.diag(Zw[:, :7].T @ Zw[:, :7])), atol=1e-4
    )
    R1, _ = project_subjects(X, train, method="random", n_components=5, seed=3)
    R2, _ = project_subjects(X, train, method="random", n_components=5, seed=3)
    np.testing.assert_array_equal(R1, R2)


# mudata 0.3 itself warns on every write/read while its pull_on_update option is unset
@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_mudata_layout_h5mu_round_trip_and_log(toy, toyvcf, tmp_path):
    import mudata

    log = tmp_path / "run.json"
    md = run(toy, toyvcf, train_subjects=["A", "B", "C"], log_path=log, reference_version="toy-v1")
    a = md["genetics"]
    assert list(a.obs_names) == ["A", "B", "C", "D"] and list(a.var_names) == ["PLUS", "MINUS"]
    assert a.obs["dfm_train"].tolist() == [True, True, True, False]
    rec = a.uns["dfm"]["genetics"]
    assert list(rec["gene_list"]) == ["PLUS", "MINUS"]
    assert rec["reference_version"] == "toy-v1"
    sid = rec["embedding_strategy_id"]
    assert sid == strategy_digest(genetics_record(a)["strategy"])
    assert not {"gene_list", "reference_version", "embedding_strategy_id"} & set(a.uns)
    assert a.obsm["X_dfm_genetics"].shape == (4, 3)
    assert a.obsm["X_dfm_subject"].shape == a.obsm["X_dfm_genes"].shape == (4, 2 * 256)
    logged = json.loads(log.read_text())
    assert logged["gene_list"] == ["PLUS", "MINUS"] and logged["embedding_strategy_id"] == sid
    assert logged["reference_version"] == "toy-v1" and logged["counts"]["n_subjects"] == 4
    path = tmp_path / "x.h5mu"
    md.write(path)
    b = mudata.read_h5mu(path)["genetics"]
    for k in a.obsm:
        np.testing.assert_array_equal(b.obsm[k], a.obsm[k])
    np.testing.assert_array_equal(
        b.varm["dfm_reference_embedding"], a.varm["dfm_reference_embedding"]
    )
    np.testing.assert_array_equal(b.X, a.X)
    brec = genetics_record(b)
    assert brec["embedding_strategy_id"] == sid and brec["gene_list"] == ["PLUS", "MINUS"]
    assert brec["strategy"] == genetics_record(a)["strategy"]
    assert brec["run_log"]["counts"]["n_subjects"] == 4
    np.testing.assert_array_equal(
        b.uns["dfm"]["genetics"]["projection"]["components"],
        a.uns["dfm"]["genetics"]["projection"]["components"],
    )
    # same inputs, same strategy id; another strategy, another id
    again = run(toy, toyvcf, train_subjects=["A", "B", "C"])["genetics"]
    assert genetics_record(again)["embedding_strategy_id"] == sid
    other = run(toy, toyvcf, subject_pooling="mean")["genetics"]
    assert genetics_record(other)["embedding_strategy_id"] != sid
    # adding to an existing MuData: a copy, or in place
    md2 = run(toy, toyvcf, mdata=md, mod="genetics2", projection=None, copy=True)
    assert set(md.mod) == {"genetics"} and set(md2.mod) == {"genetics", "genetics2"}
    assert run(toy, toyvcf, mdata=md, mod="genetics2", projection=None) is None
    assert {"genetics", "genetics2"} <= set(md.mod)
    assert "X_dfm_genetics" not in md["genetics2"].obsm


def test_existing_modality_is_replaced_only_with_overwrite(toy, toyvcf):
    md = run(toy, toyvcf)
    before = md["genetics"].obsm["X_dfm_genes"].copy()
    with pytest.raises(DfmInputError, match="already has a modality 'genetics'; pass overwrite"):
        run(toy, toyvcf, mdata=md, encoder=dfm.tl.KmerEncoder(2))
    np.testing.assert_array_equal(md["genetics"].obsm["X_dfm_genes"], before)
    assert run(toy, toyvcf, mdata=md, encoder=dfm.tl.KmerEncoder(2), overwrite=True) is None
    assert md["genetics"].obsm["X_dfm_genes"].shape == (4, 2 * 16)


def test_reads_the_old_uns_layout(toy, toyvcf):
    """Files of 0.2: gene list etc. at the top of .uns, strategy and run log as JSON strings."""
    md = run(toy, toyvcf)
    a = md["genetics"]
    rec = genetics_record(a)
    old = a.uns["dfm"]["genetics"]
    a.uns = {
        "gene_list": list(rec["gene_list"]),
        "reference_version": rec["reference_version"],
        "embedding_strategy_id": rec["embedding_strategy_id"],
        "dfm": {
            "genetics": {
                "strategy": json.dumps(rec["strategy"], sort_keys=True),
                "run_log": json.dumps(rec["run_log"], sort_keys=True),
                "gene_dim": old["gene_dim"],
            }
        },
    }
    got = genetics_record(a)
    assert got["gene_list"] == ["PLUS", "MINUS"] and got["strategy"] == rec["strategy"]
    assert got["embedding_strategy_id"] == rec["embedding_strategy_id"]
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(DfmInputError, match="rarer class"):  # read the gene list, then checked
        dfm.tl.logo_attribution(md, labels, n_folds=3, n_repeats=2)


def test_precomputed_embeddings_round_trip(toy, toyvcf, tmp_path):
    from diffbio_sc.io._genome import sequence_digest

    fa = tmp_path / "export.fa"
    table = dfm.tl.export_gene_sequences(
        toy["fasta"], toy["gtf"], toyvcf, fa, genes=["PLUS", "MINUS"], reverse_complement="average"
    )
    seqs = {}
    for line in fa.read_text().splitlines():
        if line.startswith(">"):
            cur = line[1:]
            seqs[cur] = ""
        else:
            seqs[cur] += line
    assert list(seqs) == table["sequence_id"].tolist()
    assert all(sequence_digest(v) == k for k, v in seqs.items())
    # the "upstream model": k-mer frequencies, saved as an .npz keyed by the ids
    emb = dfm.tl.KmerEncoder(4).embed(list(seqs.values()))
    npz = tmp_path / "emb.npz"
    np.savez(npz, embeddings=emb, sequence_ids=np.array(list(seqs)))
    pre = run(toy, toyvcf, encoder=dfm.tl.PrecomputedEncoder(npz, source="kmer4-offline"))
    nat = run(toy, toyvcf)
    np.testing.assert_allclose(
        pre["genetics"].obsm["X_dfm_genes"], nat["genetics"].obsm["X_dfm_genes"], atol=1e-6
    )
    np.savez(npz, embeddings=emb[:-1], sequence_ids=np.array(list(seqs)[:-1]))
    with pytest.raises(DfmInputError, match="1 of .* sequences are not in"):
        run(toy, toyvcf, encoder=dfm.tl.PrecomputedEncoder(npz))
    with pytest.raises(TypeError, match=r"unexpected options \['windw'\]"):
        dfm.tl.export_gene_sequences(toy["fasta"], toy["gtf"], toyvcf, fa, genes=["PLUS"], windw=3)


@pytest.mark.slow
def test_native_sequence_encoder(toy, toyvcf):
    try:
        from diffbio_sc.models import create_dna_encoder
    except (ImportError, AttributeError) as err:
        pytest.skip(f"dfm.models.SequenceEncoder is not available on this branch yet ({err})")
    rc = toy["rc"]
    small = dict(
        hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, max_length=16, seed=0
    )
    enc = create_dna_encoder(**small)
    a = run(toy, toyvcf, encoder=enc)["genetics"]
    assert a.uns["dfm"]["genetics"]["gene_dim"] == 16
    strat = genetics_record(a)["strategy"]
    assert strat["encoder"]["kind"] == "dfm_sequence_encoder" and strat["window"] == 16
    eq = create_dna_encoder(**small, reverse_complement="equivariant")
    from diffbio_sc.tl._genetics._encoders import as_encoder

    ge = as_encoder(eq)
    s = "ACGTTGCAAGGCTTA"
    np.testing.assert_allclose(ge.embed([s]), ge.embed([rc(s)]), atol=1e-5)
    run(toy, toyvcf, encoder=eq, reverse_complement="equivariant")


def test_bad_input_leaves_nothing_behind(toy, toyvcf, tmp_path):
    import mudata

    md = run(toy, toyvcf)
    before = set(md.mod)
    log = tmp_path / "log.json"
    with pytest.raises(DfmInputError, match="not found in .*'PLUSX'"):
        run(toy, toyvcf, genes=["PLUSX"], mdata=md, mod="new", log_path=log)
    with pytest.raises(DfmInputError, match="Contig 'c1' is not in the FASTA"):
        other = toy["write"](tmp_path / "other.fa", ">c2\nACGT\n")
        dfm.tl.embed_genes(
            other, toy["gtf"], toyvcf, genes=["PLUS"], mdata=md, mod="new", log_path=log
        )
    with pytest.raises(DfmInputError, match="projection must be one of"):
        run(toy, toyvcf, projection="umap", mdata=md, mod="new")
    with pytest.raises(TypeError, match="mdata must be a MuData"):
        run(toy, toyvcf, mdata=md["genetics"])
    with pytest.raises(DfmInputError, match="train_subjects names 1 subjects not in the VCF"):
        run(toy, toyvcf, train_subjects=["A", "Z"], mdata=md, mod="new", log_path=log)
    assert set(md.mod) == before and not log.exists()
    assert isinstance(md, mudata.MuData)


@pytest.mark.parametrize(
    "name, family, window",
    [
        # window = the largest that fits the 24-token context: 118 bases
        ("nucleotide_transformer_v1", "nucleotide_transformer_v1", 118),
        # one token per base + [SEP]: the 1,026-token context holds 1,025 bases
        ("hyenadna", "hyenadna", 1025),
        # BPE: at most one token per base + [CLS], [SEP]: the 24-token context holds 22 bases
        ("dnabert2", "dnabert2", 22),
    ],
)
def test_dna_checkpoint_encoder(toy, toyvcf, name, family, window):
    from pathlib import Path

    fix = Path(__file__).parents[1] / "checkpoints" / "fixtures" / name
    m = dfm.models.load_checkpoint(fix)
    rc, s = toy["rc"], toy["seq"]
    a = run(toy, toyvcf, encoder=m, reverse_complement="average")["genetics"]
    d = a.uns["dfm"]["genetics"]["gene_dim"]
    assert d == m.hidden_dim
    # whole genes, both strands averaged, against the model's own embed
    avg = lambda q: 0.5 * (m.embed([q])[0] + m.embed([rc(q)])[0])  # noqa: E731
    plus_ref, plus_snv = s[4:14] + s[30:40], s[4:7] + "T" + s[8:14] + s[30:40]
    X = a.obsm["X_dfm_genes"]
    np.testing.assert_allclose(X[1, :d], avg(plus_ref), atol=1e-5)
    np.testing.assert_allclose(X[2, :d], avg(plus_snv), atol=1e-5)
    np.testing.assert_allclose(X[3, d:], avg(rc(s[41:47] + s[51:58])), atol=1e-5)
    strat = genetics_record(a)["strategy"]
    assert strat["encoder"]["kind"] == "dna_checkpoint" and strat["window"] == window
    assert strat["encoder"]["model_family"] == family
    assert strat["encoder"]["checkpoint_sha256"] == m.sha256
    with pytest.raises(DfmInputError, match="RC-invariant by construction"):
        run(toy, toyvcf, encoder=m, reverse_complement="equivariant")


@pytest.mark.slow  # pretrains / compiles a long model: the slow step runs it
def test_caduceus_ps_checkpoint_equivariant_one_pass(toy, toyvcf):
    """Caduceus-PS: reverse_complement='equivariant' runs one strand; the gene vector is the
    model's own pooled embedding and equals that of the reverse complement."""
    from pathlib import Path

    fix = Path(__file__).parents[1] / "checkpoints" / "fixtures"
    m = dfm.models.load_checkpoint(fix / "caduceus_ps")
    assert m.rc_equivariant
    rc, s = toy["rc"], toy["seq"]
    a = run(toy, toyvcf, encoder=m, reverse_complement="equivariant")["genetics"]
    d = a.uns["dfm"]["genetics"]["gene_dim"]
    assert d == m.hidden_dim
    plus_ref = s[4:14] + s[30:40]  # whole gene: fits the 32-token context, no windows
    X = a.obsm["X_dfm_genes"]
    one, other = m.embed([plus_ref, rc(plus_ref)])
    np.testing.assert_allclose(X[1, :d], one, atol=1e-5)
    np.testing.assert_allclose(one, other, atol=1e-6)
    strat = genetics_record(a)["strategy"]
    assert strat["encoder"]["model_family"] == "caduceus" and strat["encoder"]["k"] == 1
    ph = dfm.models.load_checkpoint(fix / "caduceus_ph")
    with pytest.raises(DfmInputError, match="RC-invariant by construction"):
        run(toy, toyvcf, encoder=ph, reverse_complement="equivariant")
