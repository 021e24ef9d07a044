"""``dfm.tl.pretrain``: train the native masked-expression model on an AnnData."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time

import numpy as np
import pandas as pd

from .. import _keys
from .._logging import logger, timed
from .._validate import (
    DfmInputError,
    check_adata,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_obs_key,
    check_seed,
    get_matrix,
    is_backed,
)

#: Default training budget (``epochs=None``, see :func:`auto_epochs`): about
#: ``DEFAULT_STEPS`` optimizer steps, at most ``MAX_AUTO_EPOCHS`` and at least
#: ``MIN_AUTO_EPOCHS`` epochs (issue 26: the cap was 200 epochs).
DEFAULT_STEPS = 600
#: Scale of the random embeddings of genes outside the HVG set under ``init='pca'``.
_OTHER_GENE_SCALE = 0.25
#: Bounds on the automatic number of epochs.
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 5, 40
#: Validation cells (at most) whose kNN graph is compared between epochs, and its k.
MONITOR_CELLS, MONITOR_K = 500, 10
#: Epochs in a row at or above ``stop_agreement`` before training stops.
MONITOR_STREAK = 2


def pretrain(
    adata,
    *,
    config=None,
    layer: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int = 64,
    max_tokens: int | None = None,
    learning_rate: float = 3e-3,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.05,
    grad_clip: float = 1.0,
    validation_fraction: float = 0.1,
    early_stopping_patience: int | None = 10,
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_vocab_genes: int | None = None,
    target_sum: float = 10_000,
    seed: int = 0,
    progress_bar: bool | None = None,
    chunk_size: int | None = None,
    init: str = "pca",
    stream: bool = False,
    stream_dir: str | os.PathLike | None = None,
    stop_agreement: float | None = None,
    ema: float | None = None,
    average_checkpoints=None,
):
    """Pretrain a :class:`~diffbio_sc.models.MaskedExpressionModel` on ``adata``.

    The cells are tokenized once, chunk by chunk, into compact arrays (the top
    ``max_tokens`` genes of the Geneformer-style rank-value encoding that
    :func:`diffbio_sc.pp.tokenize` writes: counts normalised to ``target_sum``,
    divided by the gene's nonzero median, ranked descending, ties by gene
    order). Training uses AdamW with linear warmup and cosine decay, global-norm
    gradient clipping, per-cell random masking and, on a held-out fraction of
    cells, early stopping that restores the best weights.

    Parameters
    ----------
    adata
        AnnData with raw counts (whole numbers; float16 is read as float32) in
        ``.X`` or ``layer`` (in memory or backed). Gene medians are taken from
        ``.var['dfm_median']`` (:func:`diffbio_sc.pp.gene_medians`; it must be
        numeric) when present, else computed on the fly. Not modified. The
        matrix is read twice: statistics (medians, expressing cells, the HVG
        sample), then tokens and bottleneck targets together. Every argument is
        checked before it is read.
    config
        A :class:`~diffbio_sc.models.MaskedExpressionConfig`; ``None`` uses the
        defaults. ``vocab_size``, ``max_tokens``, ``n_batches`` and
        ``n_profile_genes`` are set from the data and arguments, so e.g.
        ``MaskedExpressionConfig(hidden_dim=64)`` is enough
        (``profile_weight=0`` turns the bottleneck objective off). The
        cell-level objective follows ``config.profile_likelihood``: ``'nb'``, a
        negative-binomial likelihood of the raw HVG counts with mean = the
        cell's HVG library size x softmax(decoder(embedding [+ batch])) and a
        per-gene inverse dispersion (scVI's parameterisation); ``'mse'``, a
        linear map to the centred log-normalised HVG profile.
    layer
        Layer with the counts; ``None`` uses ``adata.X``.
    epochs
        Passes over the training cells. ``None`` (the default budget,
        :func:`auto_epochs`) chooses it from the data's size:
        ``ceil(600 / steps_per_epoch)`` epochs clipped to [5, 40], where
        ``steps_per_epoch = n_train // batch_size``. That is about 600 optimizer
        steps from ~1,000 to ~7,700 training cells, 40 epochs below (fewer
        steps, so the cost per cell stays bounded) and 5 epochs above. At
        about 0.33 CPU-s per step of 64 cells (64 tokens) on a 2-core CPU, the
        default costs about 200 CPU-s for 1,200 cells. Half the steps lost
        0.05 kNN macro-F1 on PBMC; ``max_tokens=32`` halves the cost for
        -0.011 there (``docs/notes/native_model.md``, issue 26). With
        ``max_steps`` and ``epochs=None``: enough epochs for ``max_steps`` steps.
    max_steps
        A fixed budget of optimizer steps (``None``: no cap): training stops
        after ``max_steps`` steps, in the middle of an epoch if need be (that
        partial epoch is still validated), and the learning-rate schedule spans
        those steps. For atlases, where one pass over every cell is more than a
        model needs (with ``stream=True`` the steps still draw their cells from
        chunks in a seeded random order, so they sample the whole dataset).
    batch_size
        Cells per optimizer step (capped at the number of training cells).
    max_tokens
        Context length; ``None`` uses ``config.max_tokens`` (default 64).
    learning_rate, weight_decay
        AdamW peak learning rate and decoupled weight decay (matrices only).
    warmup_fraction
        Fraction of the steps with linear warmup before cosine decay to 0.
    grad_clip
        Global gradient-norm clip.
    validation_fraction
        Fraction of cells held out for the validation loss and early stopping;
        0 disables both.
    early_stopping_patience
        Stop after this many epochs without a better validation loss; ``None``
        trains all epochs (still restoring the best weights).
    batch_key
        ``.obs`` column of batch labels; a learned batch embedding is added to
        the decoders' inputs (never the encoder's), so the embedding need not
        encode the batch. With two or more batches and the config's defaults
        (``None``), the model is also made to integrate them:
        ``config.variational`` becomes ``True`` (a variational bottleneck, as in
        scVI: the decoder reads a sample around the embedding and a KL term to
        ``N(0, I)`` makes carrying the batch costly) and
        ``config.batch_adversary_weight`` becomes 0.1 (an adversarial batch
        classifier on the embedding, trained through gradient reversal). Set
        either explicitly to override (``variational=False,
        batch_adversary_weight=0`` is a decoder-only conditioning). A cell's embedding never
        depends on its batch label. ``dfm.tl.embed(adata, batch_key=...)``
        passes it here.
    n_top_genes
        Highly variable genes in the cell-level bottleneck target, chosen with
        ``scanpy.pp.highly_variable_genes(flavor='seurat')`` on the log-normalised
        counts of at most 10,000 cells (a seeded sample in larger data).
    n_vocab_genes
        ``None``: the vocabulary is every gene with a positive median. An
        integer restricts it to that many most variable genes (faster and
        smaller for data with tens of thousands of genes); the other genes
        still count in each cell's normalisation total.
    target_sum
        Normalisation target of the tokenizer.
    seed
        Seed for initialisation, the train/validation split, shuffling, masking
        and dropout: the same seed gives identical weights.
    progress_bar
        Show a tqdm bar with the loss; ``None`` follows ``dfm.settings.progress_bar``.
    chunk_size
        Cells per chunk when tokenizing; ``None`` follows ``dfm.settings.chunk_size``.
    init
        Gene-embedding initialisation: ``'pca'`` (default) sets the embeddings of
        the bottleneck genes to their loadings on the top principal components
        of the training cells' log-normalised profiles (other genes start small
        and random); ``'random'`` draws all of them from N(0, 1).
    stream
        Out of core, for data larger than memory (e.g. a backed atlas): the
        tokens and bottleneck targets are written chunk by chunk (``chunk_size``
        cells) to temporary files and read back one chunk at a time, so memory
        is bounded by two chunks and the model, not by the number of cells.
        Each epoch visits the chunks in a seeded random order and shuffles the
        cells within each chunk (a chunk-level shuffle), so the weights differ
        from ``stream=False`` (a shuffle over all cells) but are reproducible
        with the seed and identical for backed and in-memory input. Without
        ``.var['dfm_median']`` the medians are computed with the histogram
        method of :func:`diffbio_sc.pp.gene_medians` (flat memory, relative
        error below 2.2%); run ``dfm.pp.gene_medians`` first for exact ones.
    stop_agreement
        Label-free early stop on the representation itself. After every epoch
        the embeddings of a fixed subsample of at most 500 validation cells are
        compared with the previous epoch's: ``val_knn_agreement`` (recorded in
        the history from the second epoch, when set) is the mean fraction of each cell's
        10 nearest neighbours that are still its neighbours. With a threshold
        in [0, 1], training stops once the agreement has been at least that for
        two epochs in a row (never before 5 epochs, or ``epochs`` when smaller).
        ``None`` (default): not computed (it costs an embedding pass of the
        subsample per epoch, ~3% of a default run); training runs the budget,
        stopped by ``early_stopping_patience`` on the validation loss, and
        ``val_knn_agreement`` stays empty. Needs ``validation_fraction > 0``
        and more than 10 validation cells.
    ema
        Decay in (0, 1) of an exponential moving average of the weights
        (Polyak averaging, ``TrainConfig.ema`` of :func:`diffbio_sc.models.fit`):
        the averaged weights are validated, monitored and returned. ``None``
        (default): the raw weights (issue 26 screened ``ema=0.99``; see
        ``docs/notes/native_model.md``).
    average_checkpoints
        Fractions of the step budget in (0, 1], e.g. ``(0.75, 0.9, 1.0)``: the
        weights are copied at the end of the epochs where those fractions of
        the steps are done, and the model returned holds **the mean of those
        copies** instead of the best-validation weights (``TrainConfig.
        average_checkpoints`` of :func:`diffbio_sc.models.fit`; no extra
        training, one model that saves and reloads as any other). The epochs
        averaged and the average's validation loss are recorded in
        ``metadata['training']`` (``checkpoint_epochs``, ``average_val_loss``).
        ``None`` (default): the best-validation weights (issue 26 screened
        ``(0.75, 0.9, 1.0)`` against the training-seed spread; see
        ``docs/notes/native_model.md``).
    stream_dir
        Directory for the temporary files of ``stream=True`` (default: the
        system temporary directory); they take about
        ``n_cells * max_tokens * 8`` bytes plus the sparse targets and are
        deleted when training ends.

    Returns
    -------
    The trained model (eval mode) with ``model.history`` (per-epoch
    ``train_loss``, ``val_loss``, ``train_value_loss``, ``train_profile_loss``,
    ``train_adversary_loss``: the batch classifier's cross-entropy, 0 without one;
    ``train_kl_loss``: the variational bottleneck's KL, 0 unless ``config.variational``;
    ``val_knn_agreement``: empty unless ``stop_agreement`` is set)
    and ``model.metadata`` (``genes``, ``medians``, ``tokenizer``,
    ``profile_genes``, ``profile_mean``, ``batch_key``, ``batch_categories``,
    ``training`` summary). Save it with ``model.save(path)``.
    """
    from .._settings import settings
    from ..models._masked import MaskedExpressionConfig
    from ..models._train import TrainConfig, check_average_checkpoints, check_ema
    from . import _model_data as md

    # ---------------------------------------------------------------- validate
    # Every argument is checked before the matrix is read.
    check_adata(adata)
    get_matrix(adata, layer)
    if config is None:
        config = MaskedExpressionConfig()
    elif not isinstance(config, MaskedExpressionConfig):
        raise TypeError(
            f"config must be a MaskedExpressionConfig or None, got {type(config).__name__}."
        )
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seed = check_seed(seed)
    epochs = check_int("epochs", epochs, minimum=1, allow_none=True)
    max_steps = check_int("max_steps", max_steps, minimum=1, allow_none=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
    if max_tokens is None:
        max_tokens = config.max_tokens
    n_top_genes = check_int("n_top_genes", n_top_genes, minimum=1)
    n_vocab_genes = check_int("n_vocab_genes", n_vocab_genes, minimum=1, allow_none=True)
    early_stopping_patience = check_int(
        "early_stopping_patience", early_stopping_patience, minimum=1, allow_none=True
    )
    validation_fraction = check_float("validation_fraction", validation_fraction, minimum=0.0)
    if validation_fraction >= 1.0:
        raise DfmInputError(f"validation_fraction must be < 1, got {validation_fraction!r}.")
    learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, strict_min=True)
    target_sum = check_float("target_sum", target_sum, minimum=0.0, strict_min=True)
    warmup_fraction = check_float("warmup_fraction", warmup_fraction, minimum=0.0)
    if warmup_fraction >= 1.0:
        raise DfmInputError(f"warmup_fraction must be < 1, got {warmup_fraction!r}.")
    weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
    grad_clip = check_float("grad_clip", grad_clip, minimum=0.0, strict_min=True)
    check_choice("init", init, ("pca", "random"))
    stream = check_bool("stream", stream)
    if stream_dir is not None and not os.path.isdir(stream_dir):
        raise DfmInputError(
            f"stream_dir={stream_dir!r} is not an existing directory; create it or pass None."
        )
    if progress_bar is not None:
        check_bool("progress_bar", progress_bar)
    if stop_agreement is not None:
        stop_agreement = check_float("stop_agreement", stop_agreement, minimum=0.0)
        if stop_agreement > 1.0:
            raise DfmInputError(
                f"stop_agreement is a fraction of shared neighbours in [0, 1], got {stop_agreement!r}."
            )
    ema = check_ema(ema)
    average_checkpoints = check_average_checkpoints(average_checkpoints)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    if chunk_size is None:
        chunk_size = check_int("dfm.settings.chunk_size", settings.chunk_size, minimum=1)
    batch_codes = None
    batch_categories: list[str] = []
    if batch_key is not None:
        col = check_obs_key(adata, batch_key)
        cat = pd.Categorical(col)
        batch_categories = [str(c) for c in cat.categories]
        batch_codes = np.asarray(cat.codes, dtype=np.int32)
    medians = md.var_medians(adata)
    if medians is not None and medians.shape != (adata.n_vars,):
        raise DfmInputError(
            f".var[{_keys.MEDIAN_KEY!r}] has shape {medians.shape}, expected ({adata.n_vars},)."
        )
    show_bar = settings.progress_bar if progress_bar is None else bool(progress_bar)
    # The train/validation split depends on the cell count and seed only.
    n = adata.n_obs
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise DfmInputError(
            f"Too few cells ({n}) for validation_fraction={validation_fraction}; "
            "lower it or pass validation_fraction=0."
        )
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    del perm  # (n,) int64: not kept through training

    with timed("pretraining the masked-expression model") as info:
        start_time = time.perf_counter()
        cpu_start = time.process_time()
        # ------------------------------------------------- pass 1: statistics
        scan = md.scan(
            adata,
            layer,
            target_sum=target_sum,
            chunk_size=chunk_size,
            need_medians=medians is None,
            cells=md.sample_cells(n, seed),
            median_method="histogram" if stream else "exact",
        )
        if medians is None:
            medians = scan.medians
        expressed = np.flatnonzero(
            np.isfinite(medians) & (medians > 0) & (scan.n_cells_expressed > 0)
        )
        if expressed.size == 0:
            raise DfmInputError(
                "No gene has a positive median and nonzero counts; nothing to train on."
            )
        if n_vocab_genes is not None and n_vocab_genes < expressed.size:
            vocab_cols = md.select_hvg(scan.sample, expressed, n_vocab_genes)
        else:
            vocab_cols = expressed
        n_profile = min(n_top_genes, vocab_cols.size) if config.profile_weight > 0 else 0
        hvg_cols = md.select_hvg(scan.sample, vocab_cols, n_top_genes) if n_profile else None
        del scan
        genes = [str(g) for g in adata.var_names[vocab_cols]]
        vocab_medians = medians[vocab_cols]
        gene_scale = np.zeros(adata.n_vars)
        gene_scale[vocab_cols] = 1.0 / vocab_medians
        col_to_token = np.zeros(adata.n_vars, dtype=np.int32)
        col_to_token[vocab_cols] = np.arange(vocab_cols.size, dtype=np.int32) + md.N_SPECIAL
        config = dataclasses.replace(
            config,
            vocab_size=int(vocab_cols.size + md.N_SPECIAL),
            max_tokens=max_tokens,
            n_batches=len(batch_categories),
            n_profile_genes=int(n_profile),
            batch_adversary_weight=_adversary_weight(config, batch_categories),
            variational=(
                len(batch_categories) > 1 if config.variational is None else config.variational
            ),
        )

        # ------------------------------------------- pass 2: tokens and targets
        use_counts = bool(n_profile) and config.profile_likelihood == "nb"
        bs = min(batch_size, train_idx.size)
        if epochs is None and max_steps is not None:
            epochs = math.ceil(max_steps / max(train_idx.size // bs, 1))
        elif epochs is None:
            epochs = auto_epochs(train_idx.size, bs)
        pca_cells = _pca_cells(train_idx, seed) if init == "pca" and n_profile else None
        pass2_args = (adata, layer, gene_scale, col_to_token)
        pass2 = {
            "target_sum": target_sum,
            "max_tokens": max_tokens,
            "chunk_size": chunk_size,
            "hvg_cols": hvg_cols,
            "with_counts": use_counts,
        }
        tmp_dir = None
        if stream:
            from ._stream import ChunkStore, chunk_order, write_chunks

            tmp_dir = tempfile.TemporaryDirectory(prefix="dfm-pretrain-", dir=stream_dir)
            bounds = np.append(np.arange(0, n, chunk_size), n)
            store = ChunkStore(tmp_dir.name, bounds)
            store.batch_codes = batch_codes
            try:
                profile_mean, pca_rows = write_chunks(
                    *pass2_args, store=store, train_idx=train_idx, pca_cells=pca_cells, **pass2
                )
            except BaseException:
                tmp_dir.cleanup()
                raise
            if profile_mean is None:
                profile_mean = np.zeros(0, np.float32)
            data, epoch_order = store.get_batch, chunk_order(bounds)
        else:
            token_ids, token_vals, profile, counts = md.tokens_and_targets(*pass2_args, **pass2)
            profile_mean = (
                md.profile_mean(profile, train_idx) if n_profile else np.zeros(0, np.float32)
            )
            pca_rows = profile[pca_cells] if pca_cells is not None else None
            data = _in_memory_batches(
                token_ids, token_vals, profile, profile_mean, counts, batch_codes
            )
            epoch_order = None

        gene_init = None
        if pca_rows is not None:
            vec = _pca_gene_init(pca_rows, profile_mean, config.hidden_dim, seed)
            if vec is not None:
                rows = col_to_token[hvg_cols]
                gene_init = (rows, vec, _OTHER_GENE_SCALE)
        train_config = TrainConfig(
            epochs=epochs,
            max_steps=max_steps,
            batch_size=bs,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup_fraction=warmup_fraction,
            grad_clip=grad_clip,
            patience=early_stopping_patience,
            seed=seed,
            progress_bar=show_bar,
            desc="pretrain",
            ema=ema,
            average_checkpoints=average_checkpoints,
        )
        try:
            model, history, summary = _train(
                config,
                data=data,
                epoch_order=epoch_order,
                train_idx=train_idx,
                val_idx=val_idx,
                train_config=train_config,
                gene_init=gene_init,
                stop_agreement=stop_agreement,
                min_epochs=min(MIN_AUTO_EPOCHS, epochs),
            )
        finally:
            if tmp_dir is not None:
                tmp_dir.cleanup()
        summary.update(
            {
                "n_cells": int(n),
                "n_train": int(train_idx.size),
                "n_val": int(val_idx.size),
                "batch_size": int(bs),
                "epochs": int(epochs),
                "max_steps": max_steps,
                "learning_rate": float(learning_rate),
                "weight_decay": float(weight_decay),
                "warmup_fraction": float(warmup_fraction),
                "grad_clip": float(grad_clip),
                "validation_fraction": float(validation_fraction),
                "early_stopping_patience": early_stopping_patience,
                "seed": int(seed),
                "init": init,
                "layer": layer,
                "stream": stream,
                "ema": ema,
                "average_checkpoints": (
                    None if average_checkpoints is None else list(average_checkpoints)
                ),
                "shuffle": "chunk-level" if stream else "all cells",
                "n_vocab_genes": int(vocab_cols.size),
                "wall_s": round(time.perf_counter() - start_time, 3),
                "process_cpu_s": round(time.process_time() - cpu_start, 3),
            }
        )
        from .._version import __version__

        model.history = history
        model.metadata = {
            "genes": genes,
            "medians": [float(m) for m in vocab_medians],
            "tokenizer": {
                "recipe": "geneformer_v1",
                "target_sum": float(target_sum),
                "max_tokens": int(max_tokens),
                "special_tokens": list(_keys.SPECIAL_TOKENS),
                "pad_id": _keys.PAD_ID,
                "vocabulary_source": "training data var_names"
                + ("" if n_vocab_genes is None else f" (top {vocab_cols.size} variable)"),
                "vocab_size": int(config.vocab_size),
                "median_source": _keys.MEDIAN_KEY
                if _keys.MEDIAN_KEY in adata.var.columns
                else "computed on training data" + (" (histogram approximation)" if stream else ""),
            },
            "profile_genes": [str(g) for g in adata.var_names[hvg_cols]] if n_profile else [],
            "profile_mean": [float(x) for x in profile_mean],
            "batch_key": batch_key,
            "batch_categories": batch_categories,
            "training": summary,
            "package_version": __version__,
            "backed": bool(is_backed(adata)),
        }
        info["added"] = []
        logger.info(
            "    trained %d epochs (%d steps), best val loss %s",
            summary["epochs_run"],
            summary["steps"],
            summary.get("best_val_loss"),
        )
    return model


def auto_epochs(n_train: int, batch_size: int) -> int:
    """Return the default budget: epochs for ``n_train`` training cells in batches of ``batch_size``.

    ``ceil(DEFAULT_STEPS / steps_per_epoch)`` clipped to
    ``[MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS]`` = [5, 40]: about 600 optimizer steps
    from about 1,000 to 7,700 training cells, 40 epochs below (so the cost
    per cell stays bounded on small data), 5 epochs above (so an atlas
    is still seen five times).
    """
    steps_per_epoch = max(n_train // max(min(batch_size, n_train), 1), 1)
    return int(
        np.clip(math.ceil(DEFAULT_STEPS / steps_per_epoch), MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS)
    )


def _adversary_weight(config, batch_categories) -> float:
    """Return the config's ``batch_adversary_weight`` with ``None`` resolved (on with batches)."""
    from ..models._masked_config import DEFAULT_BATCH_ADVERSARY

    if config.batch_adversary_weight is not None:
        return float(config.batch_adversary_weight)
    return DEFAULT_BATCH_ADVERSARY if len(batch_categories) > 1 else 0.0


def _pca_cells(train_idx, seed, max_cells=10_000) -> np.ndarray:
    """Return the (sorted) training cells whose profiles feed :func:`_pca_gene_init`."""
    cells = np.sort(train_idx)
    if cells.size > max_cells:
        rng = np.random.default_rng(seed + 2)
        cells = np.sort(rng.choice(np.asarray(train_idx), max_cells, replace=False))
    return cells


def _pca_gene_init(rows, profile_mean, hidden_dim, seed):
    """Gene-embedding rows from a PCA of the bottleneck targets.

    Row ``g`` is gene ``g``'s loadings on the top ``hidden_dim`` principal
    components of the centred log-normalised HVG profiles ``rows`` (those of at
    most 10,000 training cells, :func:`_pca_cells`), weighted by the singular
    values and scaled so that the rows have the RMS norm of the random
    initialisation. Mean pooling over a cell's genes then starts close to a PCA
    projection of the cell's top-gene set, instead of from a random code.
    """
    from sklearn.utils.extmath import randomized_svd

    X = rows.toarray() - profile_mean[None, :]
    k = int(min(hidden_dim, min(X.shape) - 1))
    if k < 1:
        return None
    _u, sv, vt = randomized_svd(X, k, random_state=seed)
    vec = np.zeros((X.shape[1], hidden_dim), np.float32)
    vec[:, :k] = (vt.T * (sv / sv[0])).astype(np.float32)
    rms = np.sqrt(np.mean(np.sum(vec**2, axis=1)))
    from ..models._masked import GENE_INIT_STD

    return vec * (GENE_INIT_STD * np.sqrt(hidden_dim) / max(rms, 1e-12))


def _masked_loss(model, batch, key):
    """Loss of :class:`MaskedExpressionModel` on one batch, in the trainer's convention."""
    loss, parts = model.loss(
        batch["ids"],
        batch["vals"],
        key=key,
        profile=batch["profile"],
        batch=batch["batch_codes"],
        cell_weight=batch["weight"],
    )
    return loss, {
        "value_loss": parts["value"],
        "profile_loss": parts["profile"],
        "adversary_loss": parts["adversary"],
        "kl_loss": parts["kl"],
    }


def _in_memory_batches(token_ids, token_vals, profile, profile_mean, counts, batch_codes):
    """``get_batch(idx)`` over whole-dataset arrays (``stream=False``)."""

    def get_batch(idx):
        prof = None
        if counts is not None:
            prof = counts[idx].toarray()
        elif profile is not None:
            prof = profile[idx].toarray() - profile_mean[None, :]
        return {
            "ids": token_ids[idx],
            "vals": token_vals[idx],
            "profile": prof,
            "batch_codes": None if batch_codes is None else batch_codes[idx],
        }

    return get_batch


_EMBED_STEP: list = []


def _embed_step():
    """Return the jitted eval-mode ``model.embed`` of the agreement monitor (built once)."""
    if not _EMBED_STEP:
        from flax import nnx

        @nnx.jit
        def step(model, ids, vals):
            return model.embed(ids, vals)

        _EMBED_STEP.append(step)
    return _EMBED_STEP[0]


def _agreement_monitor(data, val_idx, seed, stop_agreement, min_epochs, *, record=False):
    """``epoch_end`` hook for :func:`~diffbio_sc.models.fit`: kNN agreement of a fixed subsample.

    ``None`` (no hook) when ``stop_agreement`` is ``None`` and ``record`` is false:
    the agreement is then not computed at all.

    After each epoch, the (at most :data:`MONITOR_CELLS`) monitored validation
    cells are embedded in eval mode, their :data:`MONITOR_K` nearest neighbours
    found, and ``val_knn_agreement`` = the mean fraction of neighbours shared
    with the previous epoch's graph is recorded (from the second epoch on). With ``stop_agreement`` set, training stops once it is at least
    that for :data:`MONITOR_STREAK` epochs in a row, not before ``min_epochs``.
    """
    from ..ops._knn_agreement import knn_agreement, knn_indices

    if stop_agreement is None and not record:
        return None
    cells = np.asarray(val_idx)
    if cells.size > MONITOR_CELLS:
        rng = np.random.default_rng(seed + 3)
        cells = np.sort(rng.choice(cells, MONITOR_CELLS, replace=False))
    if cells.size <= MONITOR_K:
        return None
    batch = data(cells)
    ids, vals = np.asarray(batch["ids"]), np.asarray(batch["vals"])
    state = {"prev": None, "streak": 0}
    step = _embed_step()

    def epoch_end(model, epoch):
        import jax

        z = np.asarray(jax.device_get(step(model, ids, vals)))
        nbrs = knn_indices(z, MONITOR_K)
        prev, state["prev"] = state["prev"], nbrs
        if prev is None:  # first epoch: nothing to compare with yet
            return {}, False
        agree = knn_agreement(prev, nbrs)
        stop = False
        if stop_agreement is not None and agree >= stop_agreement:
            state["streak"] += 1
            stop = state["streak"] >= MONITOR_STREAK and epoch + 1 >= min_epochs
        else:
            state["streak"] = 0
        return {"val_knn_agreement": agree}, stop

    return epoch_end


def _train(
    config,
    *,
    data,
    train_idx,
    val_idx,
    train_config,
    gene_init=None,
    epoch_order=None,
    stop_agreement=None,
    min_epochs=1,
):
    """Build the model and run the shared trainer; return ``(model, history, summary)``."""
    import jax

    from ..models._masked import create_model
    from ..models._train import fit

    init_key = jax.random.split(jax.random.key(train_config.seed), 3)[0]
    model = create_model(config, init_key)
    if gene_init is not None:
        rows, vectors, other_scale = gene_init
        model.init_gene_embeddings(rows, vectors, other_scale=other_scale)

    monitor = _agreement_monitor(data, val_idx, train_config.seed, stop_agreement, min_epochs)
    result = fit(
        model,
        _masked_loss,
        data,
        train_idx=train_idx,
        val_idx=val_idx,
        config=train_config,
        epoch_order=epoch_order,
        epoch_end=None if monitor is None else (lambda epoch: monitor(model, epoch)),
    )
    summary = dict(result.summary)
    summary["objective"] = "masked value regression"
    if config.n_profile_genes and config.profile_likelihood == "nb":
        summary["objective"] += " + negative-binomial decoder of HVG counts from the embedding"
    elif config.n_profile_genes:
        summary["objective"] += " + cell-level HVG-profile bottleneck"
    history = {k: list(v) for k, v in result.history.items()}
    if config.adversary_weight > 0:
        summary["objective"] += " + adversarial batch classifier (gradient reversal)"
    if config.is_variational:
        summary["objective"] += " (variational bottleneck, KL to N(0, I))"
    for k in (
        "train_value_loss",
        "train_profile_loss",
        "train_adversary_loss",
        "train_kl_loss",
        "val_knn_agreement",
    ):
        history.setdefault(k, [])
    return model, history, summary
