"""``dfm tokenize``, ``dfm embed`` and ``dfm load-embeddings``.

Each command reads an ``.h5ad`` fully into memory, calls the library function
with the options given, and writes a new file atomically; the input file is
never written.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ._common import (
    EPOCH_BUDGET_CELLS,
    Reporter,
    add_common,
    collect,
    command,
    given,
    input_file,
    output_dir,
    output_file,
    positive_int,
    read_h5ad,
    seed,
    write_h5ad,
)

H5AD = (".h5ad",)


def _add_io(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("input", metavar="IN.h5ad", help="input AnnData (never modified)")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="OUT.h5ad",
        help=f"output AnnData with {what} (required)",
    )
    p.add_argument(
        "--backed",
        action="store_true",
        help="leave the input's matrix on disk (opened read-only) and stream it in chunks, "
        "for inputs larger than memory",
    )


# ---------------------------------------------------------------- tokenize


def _tokenize(args: argparse.Namespace) -> int:
    import diffbio_sc as dfm

    say = Reporter(args)
    src = input_file(args.input, "input AnnData")
    out = output_file(args.out, force=args.force, inputs=[src], suffixes=H5AD)
    for opt, path in (("--medians", args.medians), ("--vocab", args.vocab)):
        if path is not None and Path(path).suffix:  # a file, not a .var column name
            input_file(path, f"{opt} table")
    adata = read_h5ad(src, backed=args.backed)
    say(f"read {adata.n_obs} cells x {adata.n_vars} genes from {src}")
    dfm.pp.tokenize(
        adata,
        recipe=args.recipe,
        layer=args.layer,
        gene_medians=args.medians,
        vocab=args.vocab,
        max_tokens=args.max_tokens,
        target_sum=args.target_sum,
        chunk_size=args.chunk_size,
        key_added=args.key_added,
        n_tokens_key=args.n_tokens_key,
        trust_pickle=args.trust_pickle,
    )
    write_h5ad(adata, out)
    shape = adata.obsm[args.key_added].shape
    say(f"wrote {out}: .obsm[{args.key_added!r}] {shape}, .obs[{args.n_tokens_key!r}]")
    return 0


def _add_tokenize(sub) -> None:
    p = command(
        sub,
        "tokenize",
        _tokenize,
        help="rank-value tokens (Geneformer recipes) into .obsm['dfm_tokens']",
        description="Tokenize cells with a Geneformer rank-value recipe (dfm.pp.tokenize): "
        "normalise each cell, divide by the gene medians, rank the expressed genes and keep "
        "the top ones as token ids. Writes .obsm[KEY] (int32, right-padded), .obs "
        "['dfm_n_tokens'] and .uns['dfm']['tokenizer'].",
    )
    p.set_defaults(library_names={"gene_medians": "medians"})  # Python argument -> option dest
    _add_io(p, "the tokens")
    p.add_argument(
        "--recipe",
        choices=("geneformer_v1", "geneformer_v2"),
        default="geneformer_v1",
        help="geneformer_v1: top 2048 genes, no special tokens; geneformer_v2: <cls>, "
        "4094 genes, <eos>",
    )
    p.add_argument("--layer", help="layer with raw counts (default: .X)")
    p.add_argument(
        "--medians",
        default="dfm_median",
        metavar="FILE_OR_COLUMN",
        help="gene medians: a JSON/CSV/TSV table (gene -> median) or a .var column; when "
        "the default column is absent, medians are computed from this data",
    )
    p.add_argument(
        "--vocab",
        metavar="FILE",
        help="vocabulary table (gene -> token id, JSON/CSV/TSV); default: the special "
        "tokens followed by the var_names",
    )
    p.add_argument(
        "--max-tokens", type=positive_int, help="tokens per cell (default: the recipe's)"
    )
    p.add_argument("--target-sum", type=float, help="normalisation total (default: the recipe's)")
    p.add_argument(
        "--chunk-size", type=positive_int, help="cells per chunk (bounds memory; default 4096)"
    )
    p.add_argument("--key-added", default="dfm_tokens", help=".obsm key of the tokens")
    p.add_argument(
        "--n-tokens-key", default="dfm_n_tokens", help=".obs column with tokens per cell"
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a .pkl/.pickle medians or vocab table (only for files you trust: "
        "unpickling can run code)",
    )
    add_common(p)


# ---------------------------------------------------------------- embed

#: Options that only make sense when ``dfm embed`` trains a native model.
_TRAIN_OPTS = (
    "epochs",
    "batch_key",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "max_tokens",
    "n_top_genes",
    "pretrain_batch_size",
    "learning_rate",
    "save_model",
)
#: Options that only apply to a Geneformer / scGPT checkpoint.
_CKPT_OPTS = ("gene_key", "layer_index", "pooling", "trust_pickle", "min_vocab_coverage")


def _embed(args: argparse.Namespace) -> int:
    import diffbio_sc as dfm

    say = Reporter(args)
    src = input_file(args.input, "input AnnData")
    out = output_file(args.out, force=args.force, inputs=[src], suffixes=H5AD)
    if args.emb_layer is not None:  # the old name of --layer-index
        warnings.warn(
            "--emb-layer is deprecated and will be removed; use --layer-index (same meaning).",
            FutureWarning,
            stacklevel=2,
        )
        if args.layer_index is not None:
            raise ValueError("Pass --layer-index only; --emb-layer is its old name.")
        args.layer_index = args.emb_layer
    kwargs: dict = {"layer": args.layer}
    if args.key_added is not None:
        kwargs["key_added"] = args.key_added
    if args.model is not None:
        model_path = Path(args.model)
        if not model_path.is_dir():
            raise FileNotFoundError(
                f"--model {args.model!r} is not a directory; pass a folder written by "
                "`dfm embed --save-model` (or model.save), or a Geneformer/scGPT checkpoint "
                "folder. Leave --model out to train a model on this data."
            )
        from ..tl._checkpoint_inputs import is_checkpoint

        ckpt = is_checkpoint(str(model_path))
        if given(args, _TRAIN_OPTS):
            raise ValueError(
                f"{', '.join(given(args, _TRAIN_OPTS))} only apply when training a new model; "
                f"--model {args.model!r} is already trained. Drop those options or --model."
            )
        if not ckpt and given(args, _CKPT_OPTS):
            raise ValueError(
                f"{', '.join(given(args, _CKPT_OPTS))} only apply to a Geneformer/scGPT checkpoint; "
                f"--model {args.model!r} is a saved native model. Drop those options."
            )
        if ckpt:
            if args.batch_size is not None:
                raise ValueError(
                    "--batch-size applies to native models; a checkpoint is batched by tokens."
                )
            if args.min_gene_coverage is not None:  # 0.2 passed it on as the vocabulary share
                warnings.warn(
                    "--min-gene-coverage with a checkpoint is deprecated; use "
                    "--min-vocab-coverage (same meaning for checkpoints).",
                    FutureWarning,
                    stacklevel=2,
                )
                if args.min_vocab_coverage is None:
                    args.min_vocab_coverage = args.min_gene_coverage
            kwargs.update(seed=args.seed, trust_pickle=args.trust_pickle)
            kwargs.update(
                collect(args, ("gene_key", "layer_index", "pooling", "min_vocab_coverage"))
            )
        else:
            kwargs.update(collect(args, ("batch_size", "min_gene_coverage")))
        model = str(model_path)
    else:
        wrong = given(args, _CKPT_OPTS)
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} apply to a Geneformer/scGPT checkpoint given with "
                "--model; drop them or pass --model."
            )
        model = None
        kwargs.update(collect(args, ("batch_size", "min_gene_coverage")))
        if args.save_model is not None:
            kwargs["save_model"] = str(
                output_dir(args.save_model, force=args.force, option="--save-model")
            )
        arch = collect(args, ("hidden_dim", "n_layers", "n_heads", "max_tokens"))
        if arch:
            from ..models import MaskedExpressionConfig

            kwargs["config"] = MaskedExpressionConfig(**arch)
        kwargs.update(seed=args.seed, batch_key=args.batch_key)
        kwargs.update(
            collect(args, ("epochs", "n_top_genes", "learning_rate", "pretrain_batch_size"))
        )
    adata = read_h5ad(src, backed=args.backed)
    say(f"read {adata.n_obs} cells x {adata.n_vars} genes from {src}")
    if model is None:
        say("training a native model on these cells, then embedding them")
    else:
        say(f"embedding with the model in {model}")
    before = set(adata.obsm)
    dfm.tl.embed(adata, model, **kwargs)
    added = sorted(set(adata.obsm) - before) or [kwargs.get("key_added", "X_dfm")]
    write_h5ad(adata, out)
    for key in added:
        say(f"wrote {out}: .obsm[{key!r}] {adata.obsm[key].shape}")
    if kwargs.get("save_model"):
        say(f"saved the model to {kwargs['save_model']} (reuse it with --model)")
    return 0


def _add_embed(sub) -> None:
    p = command(
        sub,
        "embed",
        _embed,
        help="cell embeddings: train the native model, or run a saved model or checkpoint",
        description="Embed cells (dfm.tl.embed). Without --model, pretrain the native "
        "masked-expression transformer on these cells (seeded) and embed them; keep the "
        "model with --save-model to embed new cells in the same space later. With --model, "
        "embed with a saved native model, or with a Geneformer/scGPT checkpoint folder "
        "(written to .obsm['X_geneformer'] / .obsm['X_scgpt']). Writes .obsm[KEY] and "
        ".uns['dfm']['embeddings'][KEY].",
    )
    _add_io(p, "the embedding")
    p.add_argument(
        "--model",
        metavar="DIR",
        help="saved native model (dfm embed --save-model) or Geneformer/scGPT checkpoint "
        "folder; default: train a new model on the input",
    )
    p.add_argument(
        "--key-added",
        help=".obsm key (default: X_dfm; X_geneformer / X_scgpt for checkpoints)",
    )
    p.add_argument("--layer", help="layer with raw counts (default: .X)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="cells per forward pass (native models; default: 256)",
    )
    p.add_argument(
        "--min-gene-coverage",
        type=float,
        help="smallest fraction of the model's genes that must be present (native models; "
        "default: 0.5)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of training (and checkpoint runs)")
    train = p.add_argument_group("training (no --model)")
    train.add_argument(
        "--batch-key", help=".obs column with the batch, for batch-aware training (default: none)"
    )
    train.add_argument(
        "--epochs",
        type=positive_int,
        help=f"training epochs (default: the library's budget, {EPOCH_BUDGET_CELLS})",
    )
    train.add_argument(
        "--save-model",
        metavar="DIR",
        help="folder to save the trained model to (atomically; default: not saved)",
    )
    train.add_argument("--hidden-dim", type=positive_int, help="embedding width (default: 128)")
    train.add_argument("--n-layers", type=positive_int, help="transformer layers (default: 2)")
    train.add_argument("--n-heads", type=positive_int, help="attention heads (default: 4)")
    train.add_argument(
        "--max-tokens", type=positive_int, help="genes per cell seen by the model (default: 64)"
    )
    train.add_argument(
        "--n-top-genes",
        type=positive_int,
        help="highly variable genes in the vocabulary (default: 2000)",
    )
    train.add_argument(
        "--pretrain-batch-size", type=positive_int, help="cells per training step (default: 64)"
    )
    train.add_argument("--learning-rate", type=float, help="peak learning rate (default: 0.003)")
    ckpt = p.add_argument_group("checkpoints (--model is a Geneformer/scGPT folder)")
    ckpt.add_argument(
        "--gene-key", help=".var column with the gene ids the checkpoint knows (default: var_names)"
    )
    ckpt.add_argument(
        "--layer-index",
        type=int,
        help="hidden layer to pool, as upstream counts it: from the end (default: -1 for "
        "Geneformer, the second-to-last; 0 for scGPT, the last)",
    )
    ckpt.add_argument("--emb-layer", type=int, help=argparse.SUPPRESS)  # old --layer-index
    ckpt.add_argument(
        "--min-vocab-coverage",
        type=float,
        help="smallest fraction of the AnnData's genes in the checkpoint's vocabulary "
        "(default: 0.1)",
    )
    ckpt.add_argument(
        "--pooling",
        choices=("mean", "cls"),
        help="cell pooling (default: the checkpoint family's usual one)",
    )
    ckpt.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickled dictionaries in the checkpoint (only for files you trust)",
    )
    add_common(p)


# ---------------------------------------------------------------- load-embeddings


def _one_or_list(values: list[str]) -> str | list[str]:
    """One value is a column prefix, several are column names (``dim_columns``)."""
    return values[0] if len(values) == 1 else list(values)


def _load_embeddings(args: argparse.Namespace) -> int:
    import diffbio_sc as dfm

    say = Reporter(args)
    src = input_file(args.input, "input AnnData")
    emb = Path(args.embeddings)
    if not emb.exists():
        input_file(args.embeddings, "embedding file")
    out = output_file(args.out, force=args.force, inputs=[src, emb], suffixes=H5AD)
    adata = read_h5ad(src)
    before = set(adata.obsm)
    dfm.tl.load_embeddings(
        adata,
        emb,
        source=args.source,
        key_added=args.key_added,
        artifact_id=args.artifact_id,
        preprocessing_version=args.preprocessing_version,
        pooling_strategy=args.pooling_strategy,
        id_key=args.id_key,
        obsm_key=args.obsm_key,
        allow_subset=args.allow_subset,
        allow_positional=args.allow_positional,
        format=args.format,
        l2_normalize=args.l2_normalize,
        ids_key=args.ids_key,
        dim_columns=None if args.dim_columns is None else _one_or_list(args.dim_columns),
        layer_index=args.layer_index,
        requires_batch_context=True if args.requires_batch_context else None,
        batch_key=args.batch_key,
        context_version=args.context_version,
    )
    key = (sorted(set(adata.obsm) - before) or [args.key_added or f"X_{args.source}"])[0]
    write_h5ad(adata, out)
    say(f"wrote {out}: .obsm[{key!r}] {adata.obsm[key].shape}")
    return 0


def _add_load_embeddings(sub) -> None:
    from ..io import PRESETS
    from ..io._embeddings._common import FORMATS

    p = command(
        sub,
        "load-embeddings",
        _load_embeddings,
        help="import embeddings computed elsewhere (Geneformer, scGPT, UCE, ...)",
        description="Import a file of cell embeddings (dfm.tl.load_embeddings): .npz "
        "(embeddings, cell_ids), .h5ad (ids = obs_names), .csv/.tsv/.parquet (an id column and "
        "numeric dimension columns) or .npy (with --allow-positional). Rows are aligned to the "
        "cells by id; the file is never unpickled. Writes .obsm[KEY] and "
        ".uns['dfm']['embeddings'][KEY].",
    )
    p.add_argument("input", metavar="IN.h5ad", help="input AnnData (never modified)")
    p.add_argument("embeddings", metavar="EMB_FILE", help="file with the embeddings")
    p.add_argument(
        "-o", "--out", required=True, metavar="OUT.h5ad", help="output AnnData with the embedding"
    )
    p.add_argument(
        "--source",
        choices=sorted(PRESETS),
        default="generic",
        help="the model that wrote the file; sets the layout and metadata defaults",
    )
    p.add_argument("--key-added", help=".obsm key (default: X_<source>)")
    p.add_argument(
        "--id-key",
        help="table column with the cell ids (.csv/.tsv/.parquet; default: the first column)",
    )
    p.add_argument("--ids-key", help="array with the cell ids in an .npz file (default: cell_ids)")
    p.add_argument(
        "--dim-columns",
        nargs="+",
        metavar="NAME",
        help="table columns holding the dimensions: their names, or one prefix "
        "(default: columns named 0 .. d-1)",
    )
    p.add_argument(
        "--obsm-key",
        help=".obsm entry to take from an .h5ad embedding file (default: the only one)",
    )
    p.add_argument(
        "--allow-subset",
        action="store_true",
        help="accept a file with more cells than the AnnData (the extra rows are dropped "
        "and counted in the metadata)",
    )
    p.add_argument(
        "--allow-positional",
        action="store_true",
        help="accept a file without ids (.npy), matched to the cells by row order",
    )
    p.add_argument("--format", choices=FORMATS, help="file format (default: from the suffix)")
    p.add_argument("--l2-normalize", action="store_true", help="scale every row to unit length")
    p.add_argument(
        "--layer-index",
        type=int,
        help="layer the export was taken from, as the upstream tool counts it (recorded; "
        "default: the --source preset's)",
    )
    p.add_argument(
        "--requires-batch-context",
        action="store_true",
        help="the embedding is only meaningful with its batch context (scGPT models that "
        "condition on batch); needs --batch-key",
    )
    p.add_argument(
        "--batch-key", help=".obs column with the batch labels the model used (default: none)"
    )
    p.add_argument(
        "--context-version", help="version of the batch context (recorded; default: none)"
    )
    p.add_argument(
        "--artifact-id", help="name of the model artifact, recorded (default: the preset's)"
    )
    p.add_argument(
        "--preprocessing-version", help="preprocessing label, recorded (default: the preset's)"
    )
    p.add_argument(
        "--pooling-strategy",
        help="how cells were pooled upstream, recorded (default: the preset's)",
    )
    add_common(p)


def add_parsers(sub) -> None:
    """Register the AnnData subcommands (``benchmark`` lives in ``_benchmark.py``)."""
    _add_tokenize(sub)
    _add_embed(sub)
    _add_load_embeddings(sub)
