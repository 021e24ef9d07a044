"""One vocabulary of arguments: renamed arguments keep working with a FutureWarning."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import diffbio_sc as dfm
from diffbio_sc._validate import DfmInputError

FIX = Path(__file__).parent / "checkpoints" / "fixtures"


@pytest.fixture
def cells(checkpoint_cells):
    return checkpoint_cells


def test_embed_checkpoint_old_names_warn_and_mean_the_same(cells):
    ckpt = FIX / "geneformer_v2"
    new = dfm.tl.embed_checkpoint(
        cells, ckpt, layer_index=0, max_tokens=16, min_vocab_coverage=0.2, copy=True
    )
    with pytest.warns(FutureWarning, match=r"emb_layer=\) is deprecated.*use layer_index="):
        old = dfm.tl.embed_checkpoint(cells, ckpt, emb_layer=0, max_tokens=16, copy=True)
    np.testing.assert_array_equal(old.obsm["X_geneformer"], new.obsm["X_geneformer"])
    with pytest.warns(FutureWarning, match="use max_tokens="):
        old = dfm.tl.embed_checkpoint(cells, ckpt, layer_index=0, max_length=16, copy=True)
    np.testing.assert_array_equal(old.obsm["X_geneformer"], new.obsm["X_geneformer"])
    rec = new.uns["dfm"]["embeddings"]["X_geneformer"]
    assert rec["layer_index"] == 0 and rec["max_tokens"] == 16
    with pytest.warns(FutureWarning, match="use min_vocab_coverage="):
        with pytest.raises(DfmInputError, match="vocabulary"):  # the old meaning, enforced
            dfm.tl.embed_checkpoint(cells, ckpt, min_gene_coverage=1.0, copy=True)
    with pytest.raises(DfmInputError, match="Pass layer_index= only"):
        dfm.tl.embed_checkpoint(cells, ckpt, layer_index=-1, emb_layer=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        dfm.tl.embed_checkpoint(cells, ckpt, emb_layr=0)


def test_embed_refuses_native_options_for_a_checkpoint(cells):
    before = set(cells.obsm)
    for kw, instead in (
        ({"batch_size": 8}, "max_batch_tokens"),
        ({"min_gene_coverage": 0.3}, "min_vocab_coverage"),
    ):
        with pytest.raises(DfmInputError, match=f"applies to native models.*{instead}="):
            dfm.tl.embed(cells, str(FIX / "geneformer_v1"), **kw)
    assert set(cells.obsm) == before
    # the checkpoint's own options pass through
    dfm.tl.embed(cells, str(FIX / "geneformer_v1"), min_vocab_coverage=0.2, max_batch_tokens=256)
    assert "X_geneformer" in cells.obsm


def test_cli_old_emb_layer_option_warns(tmp_path, cells):
    from diffbio_sc._cli import main

    cells.write_h5ad(tmp_path / "cells.h5ad")
    args = ["embed", str(tmp_path / "cells.h5ad"), "-o", str(tmp_path / "o.h5ad")]
    args += ["--model", str(FIX / "geneformer_v2"), "--quiet"]
    with pytest.warns(FutureWarning, match="--emb-layer is deprecated.*--layer-index"):
        assert main([*args, "--emb-layer", "0"]) == 0
    rec = ad.read_h5ad(tmp_path / "o.h5ad").uns["dfm"]["embeddings"]["X_geneformer"]
    assert rec["layer_index"] == 0
    assert main([*args, "--layer-index", "0", "--force"]) == 0
    assert main([*args, "--batch-size", "8", "--force"]) != 0  # checkpoints batch by tokens


def test_long_running_tools_take_progress_bar():
    import inspect

    long_running = (
        "pretrain", "embed", "embed_checkpoint", "pretrain_sequences", "genomics_tasks",
        "benchmark", "embed_genes", "logo_attribution", "embed_sequences",
    )  # fmt: skip
    for name in long_running:
        params = inspect.signature(getattr(dfm.tl, name)).parameters
        assert "progress_bar" in params and params["progress_bar"].default is None, name


def test_mod_with_an_anndata_follows_one_rule():
    """mod left at the tool's default is not used with an AnnData; another value is refused."""
    seqs = dfm.io.sequences_to_adata(["ACGTACGT", "TTGACCAA"])
    enc = lambda s: np.ones((len(s), 2), np.float32)  # noqa: E731
    assert dfm.tl.embed_sequences(seqs, encoder=enc, mod="dna") is None  # the default
    with pytest.raises(DfmInputError, match="mod='rna' applies to a MuData"):
        dfm.tl.embed_sequences(seqs, encoder=enc, mod="rna", key_added="other")
    assert "other" not in seqs.obsm
    with pytest.raises(DfmInputError, match="mod='x' applies to a MuData"):
        dfm.tl.pretrain_sequences(seqs, mod="x")
    genetics = ad.AnnData(np.zeros((4, 2), np.int32))
    with pytest.raises(DfmInputError, match="mod='dna' applies to a MuData"):
        dfm.tl.logo_attribution(genetics, np.array([0, 1, 0, 1]), mod="dna")
    with pytest.raises(DfmInputError, match="mod='x' applies to a MuData"):
        dfm.tl.load_embeddings(genetics, "missing.npz", mod="x")


def _toy_gene(tmp_path):
    """A 60-base contig, one 36-base gene on it, two subjects with one SNV."""
    seq = "ACGTACGGTTCAGATCCATGAAATTTGGGCCCAAACCCGGGTTTACGATCGATGCATGCA"
    (tmp_path / "g.fa").write_text(f">c1\n{seq}\n")
    (tmp_path / "g.gtf").write_text('c1\tt\tgene\t5\t40\t.\t+\t.\tgene_id "P"; gene_name "PLUS";\n')
    (tmp_path / "g.vcf").write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=c1,length=60>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\n"
        f"c1\t8\t.\t{seq[7]}\tT\t.\tPASS\t.\tGT\t0|1\t0|0\n"
    )
    return tmp_path / "g.fa", tmp_path / "g.gtf", tmp_path / "g.vcf"


def test_embed_genes_old_window_stride_warns_and_means_stride(tmp_path):
    fa, gtf, vcf = _toy_gene(tmp_path)
    kw = {"genes": ["PLUS"], "feature": "gene", "projection": None, "window": 8}
    kw["encoder"] = dfm.tl.KmerEncoder(2)
    new = dfm.tl.embed_genes(fa, gtf, vcf, stride=3, **kw)["genetics"]
    default = dfm.tl.embed_genes(fa, gtf, vcf, **kw)["genetics"]  # stride = window
    # the stride is used: a smaller one gives other windows, hence another vector
    assert not np.allclose(new.obsm["X_dfm_genes"], default.obsm["X_dfm_genes"])
    with pytest.warns(FutureWarning, match=r"embed_genes\(window_stride=\).*use stride="):
        old = dfm.tl.embed_genes(fa, gtf, vcf, window_stride=3, **kw)["genetics"]
    np.testing.assert_array_equal(old.obsm["X_dfm_genes"], new.obsm["X_dfm_genes"])
    # the record keeps its released field name
    strat = new.uns["dfm"]["genetics"]["strategy"]
    assert strat["window"] == 8 and strat["window_stride"] == 3
    gid = "embedding_strategy_id"
    assert old.uns["dfm"]["genetics"][gid] == new.uns["dfm"]["genetics"][gid]
    with pytest.raises(DfmInputError, match="Pass stride= only"):
        dfm.tl.embed_genes(fa, gtf, vcf, stride=3, window_stride=4, **kw)
    with pytest.raises(TypeError, match="unexpected keyword"):
        dfm.tl.embed_genes(fa, gtf, vcf, windowstride=3, **kw)
    # export_gene_sequences: the same windows under either name
    args = (fa, gtf, vcf)
    ex = {"genes": ["PLUS"], "feature": "gene", "window": 8}
    a = dfm.tl.export_gene_sequences(*args, tmp_path / "a.fa", stride=3, **ex)
    with pytest.warns(FutureWarning, match=r"export_gene_sequences\(window_stride=\)"):
        b = dfm.tl.export_gene_sequences(*args, tmp_path / "b.fa", window_stride=3, **ex)
    assert (tmp_path / "a.fa").read_text() == (tmp_path / "b.fa").read_text()
    assert list(a["sequence_id"]) == list(b["sequence_id"]) and (a["length"] == 8).all()
