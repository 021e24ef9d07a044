"""The ``dfm`` command line: every subcommand run in-process on tiny inputs.

Each command's output is compared with the library function it wraps, called
directly on the same input; bad input must give exit status 2 and one line on
stderr (no traceback), and a failed run must leave no partial output and any
previous output intact. Heavier runs (training a model) are marked ``slow``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
from diffbio_sc._cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "tests" / "checkpoints" / "fixtures"


# ---------------------------------------------------------------- helpers


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``dfm *argv`` in-process; return (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_user_error(rc: int, err: str, command: str, *needles: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert_one_line(rc, err, command, 2, *needles)


def assert_one_line(rc: int, err: str, command: str, status: int, *needles: str) -> None:
    """Exit ``status``, one line on stderr naming the problem, no traceback."""
    assert rc == status, (rc, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dfm {command}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def no_leftovers(folder: Path, allowed: set[str]) -> None:
    """Only ``allowed`` names in ``folder``: no partial outputs or temporary files."""
    assert {p.name for p in folder.iterdir()} <= allowed, sorted(p.name for p in folder.iterdir())


def same_uns(a, b) -> None:
    """The ``.uns['dfm']`` entries of two AnnData match (``created_by`` times aside)."""
    assert set(a.uns["dfm"]) == set(b.uns["dfm"])


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """A small AnnData of counts (60 cells x 40 genes, 3 types, 2 batches) on disk."""
    adata = dfm.datasets.synthetic_counts(60, 40, n_cell_types=3, n_batches=2, seed=0)
    adata.layers["counts"] = adata.X.copy()
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def work(tmp_path, cells) -> Path:
    """A fresh folder holding a copy of the input AnnData."""
    shutil.copy(cells, tmp_path / "cells.h5ad")
    return tmp_path


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("fasta") / "seqs.fa"
    with path.open("w") as fh:
        for i in range(8):
            seq = "".join(rng.choice(list("ACGT"), 24))
            fh.write(f">s{i} record {i}\n{seq[:12]}\n{seq[12:]}\n")
    return path


@pytest.fixture(scope="session")
def genome(shared_data) -> Path:
    """The real MT genome, GTF and VCF in ../shared/data/genome (skips where absent)."""
    if not (shared_data / "genome" / "MT-human.fa").is_file():
        pytest.skip(f"real genome files not found at {shared_data / 'genome'}")
    return shared_data / "genome"


# ---------------------------------------------------------------- help


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_option_is_explained():
    subs = _subparsers()
    assert set(subs) == {
        "demo",
        "tokenize",
        "embed",
        "load-embeddings",
        "benchmark",
        "embed-sequences",
        "embed-genes",
    }
    for name, sub in subs.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help and len(action.help) > 8, (name, action.dest)


def test_help_shows_defaults_and_exits_zero(capsys):
    rc, out, _ = cli(capsys, "embed-genes", "--help")
    assert rc == 0
    assert "--n-components" in out and "(default: 512)" in out
    assert "(default: kmer)" in out
    # a flag or an unset option shows no default
    assert "(default: False)" not in out and "(default: None)" not in out
    rc, out, _ = cli(capsys, "--help")
    assert rc == 0 and "embed-sequences" in out and "examples:" in out
    rc, out, _ = cli(capsys, "embed", "--help")
    assert "(default: 0)" in out  # --seed: a zero default is still shown


def test_no_command_prints_help_and_fails(capsys):
    rc, out, _ = cli(capsys)
    assert rc == 1 and "COMMAND" in out


def _doc_commands() -> list[list[str]]:
    """Every ``dfm ...`` line in the bash blocks of docs/cli.md and README.md, shell-split."""
    import re
    import shlex

    text = (REPO / "docs" / "cli.md").read_text() + (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("#")[0].strip()
            if cmd.startswith("dfm "):
                lines.append(shlex.split(cmd)[1:])
    return lines


def test_docs_cover_every_command_and_their_examples_parse():
    text = (REPO / "docs" / "cli.md").read_text()
    commands = _doc_commands()
    assert len(commands) >= 20  # docs/cli.md's examples and the README's
    for name in _subparsers():
        assert f"## `dfm {name}`" in text, name
        assert any(c[0] == name for c in commands), f"no example for dfm {name}"
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # an option renamed in the code fails here
        assert args.command == argv[0]


# ---------------------------------------------------------------- tokenize


@pytest.mark.parametrize(
    "extra, kwargs",
    [
        ([], {}),
        (
            ["--recipe", "geneformer_v2", "--max-tokens", "12", "--layer", "counts"],
            {"recipe": "geneformer_v2", "max_tokens": 12, "layer": "counts"},
        ),
        (["--backed"], {}),  # streamed from the read-only input file: same tokens
    ],
)
def test_tokenize_matches_library(capsys, work, extra, kwargs):
    before = sha(work / "cells.h5ad")
    rc, out, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", work / "tok.h5ad", *extra)
    assert rc == 0, err
    assert "wrote" in out and "dfm_tokens" in out
    got = ad.read_h5ad(work / "tok.h5ad")
    want = ad.read_h5ad(work / "cells.h5ad")
    dfm.pp.tokenize(want, **kwargs)
    np.testing.assert_array_equal(got.obsm["dfm_tokens"], want.obsm["dfm_tokens"])
    np.testing.assert_array_equal(got.obs["dfm_n_tokens"], want.obs["dfm_n_tokens"])
    got_tok, want_tok = (x.uns["dfm"]["tokenizer"]["dfm_tokens"] for x in (got, want))
    for field in ("recipe", "max_tokens", "layer", "median_source", "vocab_size"):
        assert got_tok.get(field) == want_tok.get(field), field
    assert sha(work / "cells.h5ad") == before  # the input is never written
    no_leftovers(work, {"cells.h5ad", "tok.h5ad"})


def test_tokenize_medians_table(capsys, work):
    adata = ad.read_h5ad(work / "cells.h5ad")
    medians = pd.DataFrame({"gene": adata.var_names, "median": np.linspace(1.0, 5.0, 40)})
    medians.to_csv(work / "medians.csv", index=False)
    rc, _, err = cli(
        capsys, "tokenize", work / "cells.h5ad", "-o", work / "t.h5ad", "--medians",
        work / "medians.csv", "--key-added", "tok", "--n-tokens-key", "ntok",
    )  # fmt: skip
    assert rc == 0, err
    got = ad.read_h5ad(work / "t.h5ad")
    dfm.pp.tokenize(adata, gene_medians=str(work / "medians.csv"))
    np.testing.assert_array_equal(got.obsm["tok"], adata.obsm["dfm_tokens"])
    np.testing.assert_array_equal(got.obs["ntok"], adata.obs["dfm_n_tokens"])
    # medians differ from the data's own, so the tokens are not the default ones
    default = ad.read_h5ad(work / "cells.h5ad")
    dfm.pp.tokenize(default)
    assert not np.array_equal(got.obsm["tok"], default.obsm["dfm_tokens"])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["tokenize", "{w}/missing.h5ad", "-o", "{w}/o.h5ad"], ["missing.h5ad", "does not exist"]),
        (["tokenize", "{w}/cells.h5ad", "-o", "{w}/cells.h5ad"], ["is the input file"]),
        (["tokenize", "{w}/cells.h5ad", "-o", "{w}/o.csv"], ["must end in .h5ad"]),
        (["tokenize", "{w}/cells.h5ad", "-o", "{w}/nodir/o.h5ad"], ["does not exist"]),
        (["tokenize", "{w}/cells.h5ad", "-o", "{w}/o.h5ad", "--layer", "nope"], ["'nope'"]),
        (["tokenize", "{w}/cells.h5ad", "-o", "{w}/o.h5ad", "--medians", "{w}/m.json"], ["m.json"]),
        (["tokenize", "{w}/notes.txt", "-o", "{w}/o.h5ad"], ["cannot read", "as an .h5ad"]),
        (["embed", "{w}/cells.h5ad", "-o", "{w}/o.h5ad", "--model", "{w}/nomodel"], ["--model"]),
        (
            [
                "embed",
                "{w}/cells.h5ad",
                "-o",
                "{w}/o.h5ad",
                "--model",
                str(CKPT / "geneformer_v1"),
                "--epochs",
                "2",
            ],
            ["--epochs", "training a new model"],
        ),  # fmt: skip
        (["embed", "{w}/cells.h5ad", "-o", "{w}/o.h5ad", "--layer-index", "1"], ["--layer-index"]),
        (
            ["embed", "{w}/cells.h5ad", "-o", "{w}/o.h5ad", "--save-model", "{w}"],
            ["--save-model", "already exists", "--force"],
        ),
        (["load-embeddings", "{w}/cells.h5ad", "{w}/none.npz", "-o", "{w}/o.h5ad"], ["none.npz"]),
        (["load-embeddings", "{w}/cells.h5ad", "{w}/notes.txt", "-o", "{w}/o.h5ad"], ["notes.txt"]),
        (
            [
                "benchmark",
                "{w}/cells.h5ad",
                "--use-rep",
                "X_nope",
                "--batch-key",
                "batch",
                "--label-key",
                "cell_type",
                "-o",
                "{w}/report",
            ],
            ["X_nope"],
        ),  # fmt: skip
        (
            [
                "benchmark",
                "{w}/cells.h5ad",
                "--use-rep",
                "X_a",
                "--batch-key",
                "batch",
                "--label-key",
                "cell_type",
                "-o",
                "{w}/notes.txt",
            ],
            ["is a file"],
        ),  # fmt: skip
        (["embed-sequences", "{w}/notes.txt", "-o", "{w}/o.h5ad"], ["must end in .h5mu"]),
        (
            [
                "embed-sequences",
                "{w}/notes.txt",
                "-o",
                "{w}/o.h5mu",
                "--encoder",
                "{w}",
                "--hidden-dim",
                "8",
            ],
            ["--hidden-dim", "--encoder"],
        ),  # fmt: skip
        (
            [
                "embed-genes",
                "--reference",
                "{w}/r.fa",
                "--gtf",
                "{w}/g.gtf",
                "--vcf",
                "{w}/c.vcf",
                "-o",
                "{w}/o.h5mu",
            ],
            ["--reference FASTA", "r.fa"],
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, work, argv, needles):
    (work / "notes.txt").write_text("not a data file\n")
    before = sha(work / "cells.h5ad")
    argv = [a.format(w=work) for a in argv]
    rc, _, err = cli(capsys, *argv)
    assert_user_error(rc, err, argv[0], *needles)
    assert sha(work / "cells.h5ad") == before
    no_leftovers(work, {"cells.h5ad", "notes.txt"})


def test_argparse_errors_exit_2(capsys, work):
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", work / "o.h5ad",
                     "--recipe", "bert")  # fmt: skip
    assert rc == 2 and "invalid choice" in err and "Traceback" not in err
    rc, _, err = cli(capsys, "embed", work / "cells.h5ad", "-o", work / "o.h5ad", "--seed", "-1")
    assert rc == 2 and "seed >= 0" in err
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad")  # -o is required
    assert rc == 2 and "-o/--out" in err
    no_leftovers(work, {"cells.h5ad"})


def test_existing_output_needs_force_and_survives_a_failed_run(capsys, work):
    out = work / "tok.h5ad"
    out.write_bytes(b"previous result")
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", out)
    assert_user_error(rc, err, "tokenize", "already exists", "--force")
    assert out.read_bytes() == b"previous result"
    # with --force, a run that fails (bad layer) still leaves the previous file
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", out, "--force",
                     "--layer", "nope")  # fmt: skip
    assert_user_error(rc, err, "tokenize", "nope")
    assert out.read_bytes() == b"previous result"
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", out, "--force", "--quiet")
    assert rc == 0 and err == ""
    assert ad.read_h5ad(out).obsm["dfm_tokens"].shape[0] == 60


def test_crash_while_writing_keeps_previous_output(capsys, work, monkeypatch):
    out = work / "tok.h5ad"
    out.write_bytes(b"previous result")

    def half_write(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", half_write)
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", out, "--force")
    # a full disk is a runtime failure: exit 1, one line, no traceback (issue 24)
    assert_one_line(rc, err, "tokenize", 1, "no space left", "no output was written")
    assert out.read_bytes() == b"previous result"
    no_leftovers(work, {"cells.h5ad", "tok.h5ad"})


def test_interrupt_while_writing_keeps_previous_output(capsys, work, monkeypatch):
    out = work / "tok.h5ad"
    out.write_bytes(b"previous result")

    def interrupted(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_h5ad", interrupted)
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", out, "--force")
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert out.read_bytes() == b"previous result"
    no_leftovers(work, {"cells.h5ad", "tok.h5ad"})


def test_traceback_flag_reraises(capsys, work):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["tokenize", str(work / "missing.h5ad"), "-o", str(work / "o.h5ad"), "--traceback"])


def test_settings_are_restored_and_verbose_logs(capsys, work, dfm_log):
    saved = dfm.settings.progress_bar, dfm.settings.verbosity
    try:
        dfm.settings.progress_bar, dfm.settings.verbosity = True, "warning"
        rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", work / "t.h5ad",
                         "--no-progress", "--verbose")  # fmt: skip
        assert rc == 0, err
        assert "tokenizing with recipe" in dfm_log.text and "finished" in dfm_log.text
        assert dfm.settings.progress_bar is True and dfm.settings.verbosity == "warning"
    finally:
        dfm.settings.progress_bar, dfm.settings.verbosity = saved


# ---------------------------------------------------------------- load-embeddings


def test_load_embeddings_aligns_like_library(capsys, work):
    adata = ad.read_h5ad(work / "cells.h5ad")
    rng = np.random.default_rng(1)
    order = rng.permutation(adata.n_obs)
    emb = rng.normal(size=(adata.n_obs, 6)).astype(np.float32)
    ids = np.asarray(adata.obs_names[order], dtype=str)
    np.savez(work / "emb.npz", embeddings=emb, cell_ids=ids)
    rc, out, err = cli(capsys, "load-embeddings", work / "cells.h5ad", work / "emb.npz",
                       "-o", work / "le.h5ad", "--source", "geneformer")  # fmt: skip
    assert rc == 0, err
    assert "X_geneformer" in out
    got = ad.read_h5ad(work / "le.h5ad")
    # independent expectation: row i of the file belongs to cell ids[i]
    want = np.empty_like(emb)
    want[order] = emb
    np.testing.assert_array_equal(got.obsm["X_geneformer"], want)
    ref = adata.copy()
    dfm.tl.load_embeddings(ref, work / "emb.npz", source="geneformer")
    np.testing.assert_array_equal(got.obsm["X_geneformer"], ref.obsm["X_geneformer"])
    entry = got.uns["dfm"]["embeddings"]["X_geneformer"]
    assert entry["source"] == "geneformer" and entry["adapter_mode"] == "precomputed"


def test_load_embeddings_table_with_id_column_and_prefix(capsys, work):
    adata = ad.read_h5ad(work / "cells.h5ad")
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(adata.n_obs, 4))
    table = pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(4)])
    table.insert(0, "barcode", adata.obs_names[::-1])  # reversed order
    table["n_counts"] = 1.0  # a numeric column that is not a dimension
    table.to_csv(work / "emb.csv", index=False)
    rc, _, err = cli(capsys, "load-embeddings", work / "cells.h5ad", work / "emb.csv", "-o",
                     work / "le.h5ad", "--id-key", "barcode", "--dim-columns", "emb_",
                     "--layer-index", "-1", "--source", "uce")  # fmt: skip
    assert rc == 0, err
    got = ad.read_h5ad(work / "le.h5ad").obsm["X_uce"]
    np.testing.assert_allclose(got, emb[::-1].astype(np.float32))


def test_load_embeddings_extra_rows_need_allow_subset(capsys, work):
    adata = ad.read_h5ad(work / "cells.h5ad")
    ids = np.asarray([*adata.obs_names, "other_1", "other_2"], dtype=str)
    emb = np.arange(62 * 3, dtype=np.float32).reshape(62, 3)
    np.savez(work / "more.npz", embeddings=emb, cell_ids=ids)
    rc, _, err = cli(capsys, "load-embeddings", work / "cells.h5ad", work / "more.npz",
                     "-o", work / "le.h5ad")  # fmt: skip
    assert_user_error(rc, err, "load-embeddings", "other_1")
    assert not (work / "le.h5ad").exists()
    rc, _, err = cli(capsys, "load-embeddings", work / "cells.h5ad", work / "more.npz",
                     "-o", work / "le.h5ad", "--allow-subset", "--key-added", "X_part")  # fmt: skip
    assert rc == 0, err
    np.testing.assert_array_equal(ad.read_h5ad(work / "le.h5ad").obsm["X_part"], emb[:60])
    # cells missing from the file are an error even with --allow-subset
    np.savez(work / "less.npz", embeddings=emb[:50], cell_ids=ids[:50])
    rc, _, err = cli(capsys, "load-embeddings", work / "cells.h5ad", work / "less.npz",
                     "-o", work / "le2.h5ad", "--allow-subset")  # fmt: skip
    assert_user_error(rc, err, "load-embeddings", "10 of 60", "cell_50")
    assert not (work / "le2.h5ad").exists()


# ---------------------------------------------------------------- embed (checkpoint)


def _checkpoint_cells(path: Path) -> Path:
    c = np.load(CKPT / "cells.npz")
    adata = ad.AnnData(
        X=sp.csr_matrix(c["counts"].astype(np.float32)),
        obs=pd.DataFrame(index=c["obs"]),
        var=pd.DataFrame({"symbol": c["symbols"]}, index=c["ensembl"]),
    )
    adata.write_h5ad(path)
    return path


def test_embed_with_checkpoint_matches_library(capsys, tmp_path):
    if not (CKPT / "geneformer_v1" / "config.json").is_file():
        pytest.skip("checkpoint fixtures not found (tests/checkpoints/fixtures)")
    src = _checkpoint_cells(tmp_path / "cells.h5ad")
    rc, out, err = cli(capsys, "embed", src, "-o", tmp_path / "gf.h5ad", "--model",
                       CKPT / "geneformer_v1", "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "X_geneformer" in out
    got = ad.read_h5ad(tmp_path / "gf.h5ad")
    want = ad.read_h5ad(src)
    dfm.tl.embed(want, str(CKPT / "geneformer_v1"), progress_bar=False)
    np.testing.assert_allclose(got.obsm["X_geneformer"], want.obsm["X_geneformer"], rtol=1e-6)
    expected = np.load(CKPT / "expected_geneformer_v1.npz")
    key = "embeddings" if "embeddings" in expected else expected.files[0]
    if expected[key].shape == got.obsm["X_geneformer"].shape:  # the upstream reference
        np.testing.assert_allclose(got.obsm["X_geneformer"], expected[key], atol=1e-4)
    assert got.uns["dfm"]["embeddings"]["X_geneformer"]["source"] == "geneformer"
    # --backed streams the counts from the read-only input: same embedding, same matrix
    before = sha(src)
    rc, _, err = cli(capsys, "embed", src, "-o", tmp_path / "gf_backed.h5ad", "--model",
                     CKPT / "geneformer_v1", "--backed", "--no-progress")  # fmt: skip
    assert rc == 0, err
    backed = ad.read_h5ad(tmp_path / "gf_backed.h5ad")
    np.testing.assert_array_equal(backed.obsm["X_geneformer"], got.obsm["X_geneformer"])
    assert (backed.X != want.X).nnz == 0
    assert sha(src) == before


# ---------------------------------------------------------------- benchmark


@pytest.mark.slow  # fast-suite budget: scores two embeddings with scib-metrics (~20 s)
def test_benchmark_report_matches_library(capsys, work):
    adata = ad.read_h5ad(work / "cells.h5ad")
    rng = np.random.default_rng(0)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    adata.obsm["X_good"] = (np.eye(3)[codes] * 3 + rng.normal(size=(60, 3))).astype(np.float32)
    adata.obsm["X_noise"] = rng.normal(size=(60, 3)).astype(np.float32)
    adata.write_h5ad(work / "emb.h5ad")
    args = ["--batch-key", "batch", "--label-key", "cell_type", "--n-splits", "2",
            "--no-integration", "--annotation-methods", "knn", "--baselines"]  # fmt: skip
    rc, out, err = cli(capsys, "benchmark", work / "emb.h5ad", "--use-rep", "X_good", "X_noise",
                       "-o", work / "report", *args)  # fmt: skip
    assert rc == 0, err
    assert "annotation probes" in err  # progress bars are on by default
    assert "Best on classification" in out and "kNN macro F1" in out  # verdict, then scores
    got = pd.read_csv(work / "report" / "scores.csv")
    want = dfm.tl.benchmark(
        adata, ["X_good", "X_noise"], "batch", "cell_type", baselines=(), integration=False,
        n_splits=2, annotation_methods="knn",
    )  # fmt: skip
    cols = ["embedding", "metric", "value"]
    pd.testing.assert_frame_equal(
        got[cols].sort_values(cols[:2]).reset_index(drop=True),
        want[cols].sort_values(cols[:2]).reset_index(drop=True),
        check_dtype=False,
    )
    f1 = got[got.metric == "knn_macro_f1"].set_index("embedding")["value"]
    assert f1["X_good"] > f1["X_noise"]
    png = (work / "report" / "scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert 0 < width <= 1600
    capsys.readouterr()  # drop the library call's progress bars
    # the report folder now exists: a second run needs --force
    rc, _, err = cli(capsys, "benchmark", work / "emb.h5ad", "--use-rep", "X_good",
                     "-o", work / "report", *args)  # fmt: skip
    assert_user_error(rc, err, "benchmark", "scores.csv", "--force")


# ---------------------------------------------------------------- embed-sequences


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """An untrained tiny DNA encoder saved to disk (random weights are enough to compare)."""
    enc = dfm.models.create_dna_encoder(hidden_dim=8, num_layers=1, num_heads=2, max_length=32)
    return enc.save(tmp_path_factory.mktemp("enc") / "encoder")


@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_embed_sequences_with_encoder_matches_library(capsys, tmp_path, fasta, tiny_encoder):
    import mudata as md

    before = sha(fasta)
    out = tmp_path / "seqs.h5mu"
    rc, stdout, err = cli(capsys, "embed-sequences", fasta, "-o", out, "--encoder",
                          tiny_encoder, "--mod", "promoters", "--key-added", "X_seq")  # fmt: skip
    assert rc == 0, err
    assert "(8, 8)" in stdout
    got = md.read_h5mu(out)["promoters"]
    want = dfm.io.read_fasta(fasta)
    dfm.tl.embed_sequences(want, encoder=str(tiny_encoder), key_added="X_seq")
    assert list(got.obs_names) == [f"s{i}" for i in range(8)]
    assert list(got.obs["sequence"]) == list(want.obs["sequence"])
    np.testing.assert_allclose(got.obsm["X_seq"], want.obsm["X_seq"], rtol=1e-6, atol=1e-7)
    entry = got.uns["dfm"]["embeddings"]["X_seq"]
    assert (
        entry["reverse_complement"] == "average" and entry["model_family"] == "sequence_transformer"
    )
    assert sha(fasta) == before
    # forward strand only gives a different vector for (almost) every sequence
    rc, _, err = cli(capsys, "embed-sequences", fasta, "-o", tmp_path / "fwd.h5mu", "--encoder",
                     tiny_encoder, "--reverse-complement", "none", "--key-added", "X_seq")  # fmt: skip
    assert rc == 0, err
    fwd = md.read_h5mu(tmp_path / "fwd.h5mu")["dna"].obsm["X_seq"]
    assert not np.allclose(fwd, got.obsm["X_seq"])
    no_leftovers(tmp_path, {"seqs.h5mu", "fwd.h5mu"})


def test_embed_sequences_too_long_for_encoder(capsys, tmp_path, tiny_encoder):
    (tmp_path / "long.fa").write_text(">long\n" + "ACGT" * 20 + "\n")
    rc, _, err = cli(capsys, "embed-sequences", tmp_path / "long.fa", "-o",
                     tmp_path / "o.h5mu", "--encoder", tiny_encoder)  # fmt: skip
    assert_user_error(rc, err, "embed-sequences", "'long'", "max_length")
    no_leftovers(tmp_path, {"long.fa"})
    # --window/--stride tile it, exactly as the library does
    rc, _, err = cli(capsys, "embed-sequences", tmp_path / "long.fa", "-o", tmp_path / "w.h5mu",
                     "--encoder", tiny_encoder, "--window", "32", "--stride", "12")  # fmt: skip
    assert rc == 0, err
    import mudata as md

    got = md.read_h5mu(tmp_path / "w.h5mu")["dna"]
    want = dfm.io.read_fasta(tmp_path / "long.fa")
    dfm.tl.embed_sequences(want, encoder=str(tiny_encoder), window=32, stride=12)
    np.testing.assert_allclose(got.obsm["X_dfm_seq"], want.obsm["X_dfm_seq"], rtol=1e-6, atol=1e-7)
    assert got.uns["dfm"]["embeddings"]["X_dfm_seq"]["window"] == 32


# ---------------------------------------------------------------- embed-genes


@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_embed_genes_matches_library(capsys, tmp_path, genome):
    import mudata as md

    fa, gtf, vcf = genome / "MT-human.fa", genome / "MT-genes_rCRS.gtf", genome / "testMT.vcf"
    out = tmp_path / "g.h5mu"
    rc, stdout, err = cli(
        capsys, "embed-genes", "--reference", fa, "--gtf", gtf, "--vcf", vcf,
        "--contig-map", "MT=MT_human", "--genes", "MT-ND2", "MT-ND6", "--k", "3",
        "--projection", "none", "-o", out, "--log", tmp_path / "run.json",
    )  # fmt: skip
    assert rc == 0, err
    assert "1 subjects x 2 genes" in stdout
    got = md.read_h5mu(out)["genetics"]
    want = dfm.tl.embed_genes(
        fa, gtf, vcf, genes=["MT-ND2", "MT-ND6"], encoder=dfm.tl.KmerEncoder(3),
        contig_map={"MT": "MT_human"}, projection=None,
    )["genetics"]  # fmt: skip
    assert list(got.uns["dfm"]["genetics"]["gene_list"]) == ["MT-ND2", "MT-ND6"]
    sid = "embedding_strategy_id"
    assert got.uns["dfm"]["genetics"][sid] == want.uns["dfm"]["genetics"][sid]
    np.testing.assert_array_equal(got.obsm["X_dfm_genes"], want.obsm["X_dfm_genes"])
    np.testing.assert_array_equal(got.X, want.X)
    assert int(got.X[0, 0]) == 1 and int(got.X[0, 1]) == 0  # the one variant is in MT-ND2
    assert (tmp_path / "run.json").is_file()


@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_embed_genes_stride_and_its_old_name(capsys, tmp_path, genome):
    import mudata as md

    fa, gtf, vcf = genome / "MT-human.fa", genome / "MT-genes_rCRS.gtf", genome / "testMT.vcf"
    args = ["embed-genes", "--reference", fa, "--gtf", gtf, "--vcf", vcf, "--contig-map",
            "MT=MT_human", "--genes", "MT-ND6", "--k", "2", "--projection", "none",
            "--window", "100", "--quiet"]  # fmt: skip
    rc, _, err = cli(capsys, *args, "--stride", "40", "-o", tmp_path / "new.h5mu")
    assert rc == 0, err
    rc, _, err = cli(capsys, *args, "--window-stride", "40", "-o", tmp_path / "old.h5mu")
    assert rc == 0, err
    assert "--window-stride is deprecated; use --stride" in err
    new, old = (md.read_h5mu(tmp_path / f"{n}.h5mu")["genetics"] for n in ("new", "old"))
    want = dfm.tl.embed_genes(
        fa, gtf, vcf, genes=["MT-ND6"], encoder=dfm.tl.KmerEncoder(2),
        contig_map={"MT": "MT_human"}, projection=None, window=100, stride=40,
    )["genetics"]  # fmt: skip
    assert new.uns["dfm"]["genetics"]["strategy"]["window_stride"] == 40
    np.testing.assert_array_equal(new.obsm["X_dfm_genes"], want.obsm["X_dfm_genes"])
    np.testing.assert_array_equal(old.obsm["X_dfm_genes"], want.obsm["X_dfm_genes"])


@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_embed_genes_defaults_to_every_gtf_gene(capsys, tmp_path, genome):
    import mudata as md

    rc, _, err = cli(
        capsys, "embed-genes", "--reference", genome / "MT-human.fa", "--gtf",
        genome / "MT-genes_rCRS.gtf", "--vcf", genome / "testMT.vcf", "--contig-map",
        "MT=MT_human", "--projection", "none", "--k", "2", "-o", tmp_path / "g.h5mu",
        "--quiet", "--log", tmp_path / "run.json",
    )  # fmt: skip
    assert rc == 0, err
    got = md.read_h5mu(tmp_path / "g.h5mu")["genetics"]
    genes = dfm.io.read_gtf(genome / "MT-genes_rCRS.gtf")["gene_name"].dropna().unique()
    assert list(got.uns["dfm"]["genetics"]["gene_list"]) == list(genes) and len(genes) == 15
    assert got.obsm["X_dfm_subject"].shape == (1, 15 * 16)
    # the run log names the GTF file and its digest (it used to say '<DataFrame>')
    inputs = json.loads((tmp_path / "run.json").read_text())["inputs"]
    assert inputs["gtf"] == str(genome / "MT-genes_rCRS.gtf")
    assert (
        inputs["gtf_sha256"]
        == hashlib.sha256((genome / "MT-genes_rCRS.gtf").read_bytes()).hexdigest()
    )


def test_embed_genes_one_subject_refuses_a_projection(capsys, tmp_path, genome):
    rc, _, err = cli(
        capsys, "embed-genes", "--reference", genome / "MT-human.fa", "--gtf",
        genome / "MT-genes_rCRS.gtf", "--vcf", genome / "testMT.vcf", "--contig-map",
        "MT=MT_human", "--genes", "MT-ND2", "-o", tmp_path / "g.h5mu",
    )  # fmt: skip
    assert_user_error(rc, err, "embed-genes", "--projection none")
    assert not (tmp_path / "g.h5mu").exists()


@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_embed_genes_with_saved_encoder(capsys, tmp_path, genome, tiny_encoder):
    import mudata as md

    fa, gtf, vcf = genome / "MT-human.fa", genome / "MT-genes_rCRS.gtf", genome / "testMT.vcf"
    rc, _, err = cli(
        capsys, "embed-genes", "--reference", fa, "--gtf", gtf, "--vcf", vcf, "--contig-map",
        "MT=MT_human", "--genes", "MT-ND2", "--encoder", tiny_encoder, "--projection", "none",
        "-o", tmp_path / "g.h5mu",
    )  # fmt: skip
    assert rc == 0, err
    got = md.read_h5mu(tmp_path / "g.h5mu")["genetics"]
    want = dfm.tl.embed_genes(
        fa, gtf, vcf, genes=["MT-ND2"], encoder=dfm.models.load(tiny_encoder),
        contig_map={"MT": "MT_human"}, projection=None,
    )["genetics"]  # fmt: skip
    assert got.obsm["X_dfm_genes"].shape == (1, 8)
    np.testing.assert_allclose(got.obsm["X_dfm_genes"], want.obsm["X_dfm_genes"], rtol=1e-6)
    sid = "embedding_strategy_id"
    assert got.uns["dfm"]["genetics"][sid] == want.uns["dfm"]["genetics"][sid]


def test_embed_genes_unknown_transcript(capsys, tmp_path, genome):
    rc, _, err = cli(
        capsys, "embed-genes", "--reference", genome / "MT-human.fa", "--gtf",
        genome / "MT-genes_rCRS.gtf", "--vcf", genome / "testMT.vcf", "--contig-map",
        "MT=MT_human", "--genes", "MT-ND2", "--transcripts", "MT-ND2=MT-ND2-999",
        "-o", tmp_path / "g.h5mu",
    )  # fmt: skip
    assert_user_error(rc, err, "embed-genes", "MT-ND2-999")
    assert not (tmp_path / "g.h5mu").exists()


def test_embed_genes_bad_contig_map(capsys, tmp_path, genome):
    rc, _, err = cli(
        capsys, "embed-genes", "--reference", genome / "MT-human.fa", "--gtf",
        genome / "MT-genes_rCRS.gtf", "--vcf", genome / "testMT.vcf", "--contig-map", "MT",
        "-o", tmp_path / "g.h5mu",
    )  # fmt: skip
    assert_user_error(rc, err, "embed-genes", "NAME=OTHER_NAME")
    assert not (tmp_path / "g.h5mu").exists()


# ---------------------------------------------------------------- the real entry point


def _dfm_executable() -> str | None:
    here = Path(sys.executable).parent / "dfm"
    return str(here) if here.is_file() else shutil.which("dfm")


def test_dfm_entry_point_subprocess(tmp_path, cells):
    exe = _dfm_executable()
    if exe is None:
        pytest.skip("the dfm entry point is not installed (pip install -e .)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "load-embeddings" in res.stdout
    res = subprocess.run(
        [exe, "tokenize", str(cells), "-o", str(tmp_path / "t.h5ad"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert ad.read_h5ad(tmp_path / "t.h5ad").obsm["dfm_tokens"].shape[0] == 60


# ---------------------------------------------------------------- slow: training runs

TINY_CELLS = ["--hidden-dim", "8", "--n-layers", "1", "--n-heads", "2", "--max-tokens", "8",
              "--n-top-genes", "20", "--pretrain-batch-size", "32", "--epochs", "1"]  # fmt: skip


@pytest.mark.slow
def test_embed_trains_saves_and_reuses_a_native_model(capsys, work):
    from diffbio_sc.models import MaskedExpressionConfig

    rc, stdout, err = cli(capsys, "embed", work / "cells.h5ad", "-o", work / "e.h5ad",
                          *TINY_CELLS, "--seed", "3", "--batch-key", "batch", "--save-model",
                          work / "model", "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "saved the model" in stdout
    got = ad.read_h5ad(work / "e.h5ad")
    want = ad.read_h5ad(work / "cells.h5ad")
    cfg = MaskedExpressionConfig(hidden_dim=8, n_layers=1, n_heads=2, max_tokens=8)
    dfm.tl.embed(want, None, config=cfg, epochs=1, n_top_genes=20, pretrain_batch_size=32,
                 seed=3, batch_key="batch", progress_bar=False)  # fmt: skip
    np.testing.assert_allclose(got.obsm["X_dfm"], want.obsm["X_dfm"], rtol=1e-5, atol=1e-6)
    entry = got.uns["dfm"]["embeddings"]["X_dfm"]
    assert entry["weights_retrievable"] and entry["weights_sha256"]
    # the saved model embeds the same cells to the same vectors
    rc, _, err = cli(capsys, "embed", work / "cells.h5ad", "-o", work / "again.h5ad", "--model",
                     work / "model", "--key-added", "X_again", "--no-progress")  # fmt: skip
    assert rc == 0, err
    again = ad.read_h5ad(work / "again.h5ad").obsm["X_again"]
    np.testing.assert_allclose(again, got.obsm["X_dfm"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*pull_on_update:FutureWarning")
def test_embed_sequences_pretrains_a_seeded_encoder(capsys, tmp_path, fasta):
    import mudata as md

    from diffbio_sc.models import SequenceEncoderConfig

    arch = ["--hidden-dim", "8", "--num-layers", "1", "--num-heads", "2",
            "--intermediate-dim", "16", "--max-length", "32"]  # fmt: skip
    rc, stdout, err = cli(capsys, "embed-sequences", fasta, "-o", tmp_path / "a.h5mu", *arch,
                          "--pretrain-epochs", "2", "--seed", "1", "--save-model",
                          tmp_path / "enc", "--no-progress")  # fmt: skip
    assert rc == 0, err
    got = md.read_h5mu(tmp_path / "a.h5mu")["dna"].obsm["X_dfm_seq"]
    want = dfm.io.read_fasta(fasta)
    cfg = SequenceEncoderConfig(hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16,
                                max_length=32)  # fmt: skip
    dfm.tl.embed_sequences(want, config=cfg, epochs=2, seed=1, progress_bar=False)
    np.testing.assert_allclose(got, want.obsm["X_dfm_seq"], rtol=1e-5, atol=1e-6)
    # the saved encoder reproduces the embedding
    rc, _, err = cli(capsys, "embed-sequences", fasta, "-o", tmp_path / "b.h5mu", "--encoder",
                     tmp_path / "enc")  # fmt: skip
    assert rc == 0, err
    again = md.read_h5mu(tmp_path / "b.h5mu")["dna"].obsm["X_dfm_seq"]
    np.testing.assert_allclose(again, got, rtol=1e-5, atol=1e-6)


METRICS = ["silhouette_label", "silhouette_batch", "graph_connectivity", "kmeans_nmi"]


@pytest.mark.slow
def test_benchmark_with_integration_metrics(capsys, tmp_path):
    adata = dfm.datasets.synthetic_counts(120, 40, n_cell_types=3, n_batches=2, seed=0)
    rng = np.random.default_rng(0)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    adata.obsm["X_good"] = (np.eye(3)[codes] * 3 + rng.normal(size=(120, 3))).astype(np.float32)
    adata.write_h5ad(tmp_path / "emb.h5ad")
    rc, _, err = cli(capsys, "benchmark", tmp_path / "emb.h5ad", "--use-rep", "X_good",
                     "--batch-key", "batch", "--label-key", "cell_type", "-o", tmp_path / "rep2",
                     "--n-splits", "2", "--annotation-methods", "knn", "--no-progress",
                     "--metrics", *METRICS)  # fmt: skip
    assert rc == 0, err
    got = pd.read_csv(tmp_path / "rep2" / "scores.csv")
    want = dfm.tl.benchmark(
        adata, ["X_good"], "batch", "cell_type", n_splits=2, annotation_methods="knn",
        metrics=METRICS,
    )  # fmt: skip
    assert set(got.embedding) == {"X_good", "X_pca_baseline"}
    cols = ["embedding", "metric", "value"]
    pd.testing.assert_frame_equal(
        got[cols].sort_values(cols[:2]).reset_index(drop=True),
        want[cols].sort_values(cols[:2]).reset_index(drop=True),
        check_dtype=False,
    )
    assert set(METRICS) <= set(got.metric) and "kbet" not in set(got.metric)
    assert not any(m.startswith("logreg") for m in got.metric)


# ---------------------------------------------------------------- issue 24: exit codes, words, modes


def test_unexpected_error_is_exit_1_with_a_hint(capsys, work, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(dfm.pp, "tokenize", broken)
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", work / "t.h5ad")
    assert_one_line(rc, err, "tokenize", 1, "RuntimeError", "something inside broke",
                    "--traceback", "no output was written")  # fmt: skip
    no_leftovers(work, {"cells.h5ad"})


def test_full_disk_in_a_library_writer_is_exit_1(capsys, work, monkeypatch):
    """safetensors and h5py report a full disk as text, not as OSError(ENOSPC)."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
            '"No space left on device" })'
        )

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full)
    rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", work / "t.h5ad")
    assert_one_line(rc, err, "tokenize", 1, "no space left", "no output was written")
    assert "SafetensorError" not in err
    no_leftovers(work, {"cells.h5ad"})


def test_benchmark_full_disk_leaves_no_results_folder(capsys, work, monkeypatch):
    import errno

    import matplotlib.figure
    import matplotlib.pyplot as plt

    table = pd.DataFrame({"embedding": ["X"], "metric": ["knn_macro_f1"], "value": [0.5]})
    monkeypatch.setattr(dfm.tl, "benchmark", lambda *a, **k: table)
    monkeypatch.setattr(dfm.pl, "benchmark", lambda *a, **k: plt.figure())

    def full(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    rc, _, err = cli(capsys, "benchmark", work / "cells.h5ad", "--use-rep", "X_pca",
                     "--batch-key", "batch", "--label-key", "cell_type", "-o", work / "report")  # fmt: skip
    assert_one_line(rc, err, "benchmark", 1, "no space left", "no output was written")
    no_leftovers(work, {"cells.h5ad"})  # no empty report folder, no temporary file
    # into an existing folder with an old report: both old files survive, nothing else
    (work / "report").mkdir()
    for name in ("scores.csv", "scores.png"):
        (work / "report" / name).write_text("old")
    rc, _, err = cli(capsys, "benchmark", work / "cells.h5ad", "--use-rep", "X_pca", "--force",
                     "--batch-key", "batch", "--label-key", "cell_type", "-o", work / "report")  # fmt: skip
    assert rc == 1, err
    assert {p.name: p.read_text() for p in (work / "report").iterdir()} == {
        "scores.csv": "old",
        "scores.png": "old",
    }


def test_library_advice_is_given_as_options(capsys, work):
    """The library says allow_positional=True; the command line says --allow-positional."""
    np.save(work / "emb.npy", np.zeros((60, 4), np.float32))
    rc, _, err = cli(capsys, "load-embeddings", work / "cells.h5ad", work / "emb.npy",
                     "-o", work / "o.h5ad")  # fmt: skip
    assert_user_error(rc, err, "load-embeddings", "--allow-positional")
    assert "allow_positional" not in err
    no_leftovers(work, {"cells.h5ad", "emb.npy"})


def test_library_advice_is_given_as_options_contig_map(capsys, tmp_path, genome):
    rc, _, err = cli(
        capsys, "embed-genes", "--reference", genome / "MT-human.fa", "--gtf",
        genome / "MT-genes_rCRS.gtf", "--vcf", genome / "testMT.vcf", "--genes", "MT-ND2",
        "-o", tmp_path / "g.h5mu",
    )  # fmt: skip
    assert_user_error(rc, err, "embed-genes", "--contig-map MT=")
    assert "contig_map" not in err
    assert not (tmp_path / "g.h5mu").exists()


def test_cli_language_rewrites_only_known_options():
    from diffbio_sc._cli._common import cli_language

    tokenize = _subparsers()["tokenize"]
    text = "pass layer= (e.g. layer='counts'); adata.layers['x'] and k=3; gene_medians=\"m\""
    assert cli_language(text, tokenize) == (
        "pass --layer (e.g. --layer counts); adata.layers['x'] and k=3; --medians m"
    )
    genes = _subparsers()["embed-genes"]
    assert cli_language("use contig_map={'MT': 'chrM'}, vcf_contig_map={}", genes) == (
        "use --contig-map MT=chrM, --vcf-contig-map NAME=OTHER_NAME"
    )


def test_option_names_agree_across_commands(capsys):
    subs = _subparsers()
    for name in ("embed", "embed-sequences"):
        shown = subs[name].format_help()
        assert "--n-layers" in shown and "--n-heads" in shown, name
        assert "--num-layers" not in shown and "--num-heads" not in shown, name
    # the old spelling still works, into the same setting, with a warning
    args = build_parser().parse_args(["embed-sequences", "x.fa", "-o", "y.h5mu", "--num-layers",
                                      "3", "--num-heads", "2"])  # fmt: skip
    assert (args.num_layers, args.num_heads) == (3, 2)
    err = capsys.readouterr().err
    assert "--num-layers is deprecated; use --n-layers" in err
    assert "--num-heads is deprecated; use --n-heads" in err
    args = build_parser().parse_args(["embed-sequences", "x.fa", "-o", "y.h5mu", "--n-layers", "3"])
    assert args.num_layers == 3 and capsys.readouterr().err == ""


def test_options_given_with_an_encoder_are_named_as_typed(capsys, tmp_path, fasta, tiny_encoder):
    rc, _, err = cli(capsys, "embed-sequences", fasta, "-o", tmp_path / "o.h5mu",
                     "--encoder", tiny_encoder, "--n-layers", "2")  # fmt: skip
    assert_user_error(rc, err, "embed-sequences", "--n-layers")
    assert "--num-layers" not in err


def test_help_shows_every_default_and_the_training_budget(capsys):
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            if action.nargs == 0 or action.required:  # flags: off unless given
                continue
            text = sub.formatter_class(prog="dfm")._get_help_string(action)
            assert "default" in text, (name, action.option_strings, text)
    for name in ("embed", "demo"):
        rc, out, _ = cli(capsys, name, "--help")
        flat = " ".join(out.split())
        assert rc == 0 and "600 training steps" in flat and "CPU-s" in flat, name
        assert "chosen from the data's size" in flat, name
    rc, out, _ = cli(capsys, "embed-sequences", "--help")
    flat = " ".join(out.split())
    assert "300 training steps" in flat and "minutes" in flat
    rc, out, _ = cli(capsys, "--help")
    flat = " ".join(out.split())
    for needle in ("0 success", "1 runtime failure", "2 bad input", "130 interrupted"):
        assert needle in flat, needle


@pytest.mark.parametrize("mask", [0o022, 0o077])
@pytest.mark.parametrize("backed", [False, True])
def test_outputs_get_the_umask_permissions(capsys, work, mask, backed):
    old = os.umask(mask)
    try:
        rc, _, err = cli(capsys, "tokenize", work / "cells.h5ad", "-o", work / "t.h5ad",
                         *(["--backed"] if backed else []))  # fmt: skip
    finally:
        os.umask(old)
    assert rc == 0, err
    assert os.stat(work / "t.h5ad").st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.slow  # two subprocess runs of `dfm tokenize` (~10 s)
@pytest.mark.parametrize("backed", [False, True])
def test_file_size_limit_while_writing_is_exit_1_not_a_crash(tmp_path, backed):
    """A real write failure inside HDF5 (RLIMIT_FSIZE, the closest to a full disk).

    Releasing the error used to close the half-written HDF5 file and crash the process
    (a segfault, status -11) after the message.
    """
    import resource
    import signal

    adata = dfm.datasets.synthetic_counts(400, 300, seed=0)
    adata.write_h5ad(tmp_path / "cells.h5ad")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(
        [sys.executable, "-m", "diffbio_sc._cli", "tokenize", "cells.h5ad", "-o", "t.h5ad",
         "--no-progress", *(["--backed"] if backed else [])],
        cwd=tmp_path, env=env, preexec_fn=limit, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    last = res.stderr.strip().splitlines()[-1]  # after the library's warnings, if any
    assert last.startswith("dfm tokenize: error: ") and "File too large" in last, res.stderr
    assert "no output was written" in last
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr
    assert sorted(os.listdir(tmp_path)) == ["cells.h5ad"]


@pytest.mark.slow  # trains a tiny model (~15 s)
def test_save_model_on_a_full_disk_is_exit_1(capsys, work, monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
            '"No space left on device" })'
        )

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    rc, _, err = cli(capsys, "embed", work / "cells.h5ad", "-o", work / "e.h5ad",
                     "--save-model", work / "model", "--no-progress", *TINY_CELLS)  # fmt: skip
    assert_one_line(rc, err, "embed", 1, "no space left", "no output was written")
    no_leftovers(work, {"cells.h5ad"})


@pytest.mark.slow  # the demo on 150 cells, 1 epoch (~80 s)
def test_demo_on_a_full_disk_writes_nothing(tmp_path, capsys, monkeypatch):
    import errno

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full)
    out = tmp_path / "deeper" / "results"
    rc = main(["demo", "--out", str(out), "--n-cells", "150", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("dfm demo: error: no space left"), err
    # no traceback of the error (a logging handler bound to an earlier test's closed
    # stream may print "--- Logging error ---" under pytest; not the command's output)
    assert "[Errno 28]" not in err, err
    assert "was written (complete)" not in err  # the model inside the discarded folder
    assert not out.exists()  # no results folder, no model, no temporary folder
    assert [p.name for p in tmp_path.iterdir()] in ([], ["deeper"])
    assert not any((tmp_path / "deeper").iterdir()) if (tmp_path / "deeper").exists() else True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked writes on Linux only")
def test_isolated_writer_survives_a_crash_and_passes_errors_back(tmp_path, capsys):
    import errno
    import faulthandler
    import signal

    from diffbio_sc._cli._common import isolated

    target = tmp_path / "x.bin"
    isolated(lambda: target.write_bytes(b"from the child"))
    assert target.read_bytes() == b"from the child"  # the child's write is there

    def segfault():
        faulthandler.disable()  # pytest's fault handler would print the child's stack
        os.kill(os.getpid(), signal.SIGSEGV)

    def crash():
        print("h5py noise ... errno = 28, error message = 'No space left on device'",
              file=sys.stderr, flush=True)  # fmt: skip
        segfault()

    with pytest.raises(OSError) as info:
        isolated(crash)  # this process goes on; the failure HDF5 reported is raised
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(RuntimeError, match="HDF5 writer crashed"):
        isolated(segfault)

    def fails():
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(OSError) as info:
        isolated(fails)
    assert info.value.errno == errno.EFBIG
    with pytest.raises(KeyboardInterrupt):
        isolated(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(RuntimeError, match="broken") as info:
        isolated(lambda: (_ for _ in ()).throw(ValueError("broken")))
    assert info.value.child_type == "ValueError"
    assert "noise" not in capsys.readouterr().err  # the child's stderr is not replayed on failure
