"""``dfm.tl.embed``: cell embeddings from the native masked-expression model."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .. import _keys, _uns
from .._logging import logger, timed
from .._validate import (
    DfmInputError,
    _preview,
    check_adata,
    check_bool,
    check_copy,
    check_float,
    check_int,
    check_key,
    get_matrix,
)

#: Default cells per forward pass.
DEFAULT_BATCH_SIZE = 256


def config_digest(model) -> str:
    """sha256 of the model's architecture config (canonical JSON)."""
    doc = json.dumps(model.config.to_dict(), sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def weights_digest(model) -> str:
    """sha256 over the model's parameters (the checksum ``model.save`` writes), cached."""
    from ..models._runner import weights_digest as cached

    return cached(model)


def _resolve_model(model):
    """Return the model object for ``model`` (an object, or a saved-model path: loaded)."""
    from ..models._io import load
    from ..models._masked import MaskedExpressionModel

    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    if isinstance(model, MaskedExpressionModel):
        return model
    raise TypeError(
        "model must be None (pretrain on adata), a MaskedExpressionModel or the path of a "
        f"saved model directory; got {type(model).__name__}."
    )


def _tokenizer_settings(model) -> dict:
    """Return the model's ``tokenizer`` metadata, checked: a clear error where it is unusable.

    A model saved by hand (or whose ``config.json`` was edited) may lack the section
    or its ``target_sum``; without them its genes cannot be tokenized as in training.
    """
    meta = model.metadata
    saved = model.saved_as
    where = f" ({saved[0]}/config.json)" if saved is not None else ""
    fix = (
        "Use a model trained with dfm.tl.pretrain (or saved from one); the tokenizer settings "
        "it was trained with cannot be guessed."
    )
    try:  # medians, genes and the settings themselves, as load checks them
        type(model).check_metadata(model.config, meta)
    except (TypeError, ValueError) as err:
        raise DfmInputError(f"The model's metadata{where} is not usable: {err} {fix}") from None
    tok = meta.get("tokenizer")
    if not isinstance(tok, dict):
        raise DfmInputError(
            f"The model's metadata{where} has no 'tokenizer' section (target_sum, max_tokens): "
            f"its genes cannot be tokenized the way it was trained. {fix}"
        )
    if "target_sum" not in tok:
        raise DfmInputError(
            f"The model's 'tokenizer' metadata{where} has no 'target_sum' (the normalisation "
            f"total of each cell). {fix}"
        )
    return tok


def embed(
    adata,
    model=None,
    *,
    key_added: str = _keys.EMBEDDING_KEY,
    batch_size: int | None = None,
    layer: str | None = None,
    min_gene_coverage: float | None = None,
    chunk_size: int | None = None,
    progress_bar: bool | None = None,
    save_model: str | os.PathLike | None = None,
    copy: bool = False,
    **pretrain_kwargs,
):
    """Embed cells with the native masked-expression transformer.

    Cells are tokenized chunk by chunk with the model's own gene vocabulary,
    gene medians and tokenizer settings (the top ``max_tokens`` genes of the
    rank-value encoding), and embedded by the package's one batched runner:
    cells grouped by token count into length buckets, fixed-shape batches of
    a jit-compiled forward pass in eval mode (no dropout, no masking), each
    bucket's last batch filled up with copies of its first cell (discarded).
    A cell's embedding depends on that cell alone, not on the
    other cells in its batch or their order. With several JAX devices (GPUs, or
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on CPU) batches are
    split across them (data parallel, ``jax.sharding``). Backed AnnData is
    streamed. Every argument is checked before any work; the AnnData is written
    last, so it is unchanged after an error.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X`` or ``layer`` (whole numbers; float16 is
        read as float32).
    model
        ``None``: pretrain a model on ``adata`` with the default budget
        (:func:`diffbio_sc.tl.pretrain`, taking ``**pretrain_kwargs``) and embed
        with it; pass ``save_model=`` to keep it, so that new cells can later be
        embedded in the same space. Or a
        :class:`~diffbio_sc.models.MaskedExpressionModel`, or the path of a
        directory written by ``model.save``. A Geneformer or scGPT
        checkpoint (directory or :func:`~diffbio_sc.models.load_checkpoint`)
        is run by :func:`~diffbio_sc.tl.embed_checkpoint` (its options as
        keywords; ``key_added`` defaults to ``X_geneformer``/``X_scgpt``);
        ``batch_size`` and ``min_gene_coverage``, which mean something else
        there, are then refused rather than dropped.
    key_added
        ``.obsm`` key of the embedding and ``.uns['dfm']['embeddings']`` entry
        (a non-empty string without ``'/'``).
    batch_size
        Cells of the model's full length (``max_tokens``) per forward pass
        (rounded up to a multiple of the device count); batches of shorter
        cells hold proportionally more (the same number of tokens). ``None``: 256.
        A checkpoint batches by tokens (``max_batch_tokens``).
    layer
        Layer with the counts; ``None`` uses ``adata.X``.
    min_gene_coverage
        Smallest fraction of the model's genes that must be in
        ``adata.var_names`` (``None``: 0.5); below it the call fails naming the
        missing genes. A checkpoint takes ``min_vocab_coverage`` instead (a
        fraction of the AnnData's genes).
        Genes the model does not know are ignored (they still count in each
        cell's normalisation total).
    chunk_size
        Cells tokenized at a time (bounds memory); ``None`` follows
        ``dfm.settings.chunk_size``.
    progress_bar
        Show a tqdm bar; ``None`` follows ``dfm.settings.progress_bar``.
    save_model
        Directory to save the model to (atomically, with ``model.save``), before
        the AnnData is written; recorded as ``model_path``. Most useful with
        ``model=None``, where the trained model is otherwise discarded.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **pretrain_kwargs
        Passed to :func:`~diffbio_sc.tl.pretrain` when ``model`` is ``None``
        (e.g. ``batch_key``, ``epochs``, ``seed``); its minibatch size is
        ``pretrain_batch_size`` here, as ``batch_size`` is the embedding batch.

    Returns
    -------
    ``None``, or the new AnnData when ``copy=True``. Writes

    ``.obsm[key_added]``
        float32 ``(n_cells, hidden_dim)`` cell embeddings.
    ``.uns['dfm']['embeddings'][key_added]``
        ``source`` ('dfm'), ``model_family`` ('single_cell_transformer'),
        ``adapter_mode`` ('native_trainable'), ``artifact_id``,
        ``preprocessing_version``, ``pooling_strategy``, ``config_sha256``,
        ``n_dims``, ``created_by``, ``config`` (the architecture), ``tokenizer``
        settings, ``gene_coverage``, ``n_model_genes``, ``n_genes_found``,
        ``weights_retrievable`` (whether the weights can be retrieved from
        disk; ``model_saved`` before 0.3),
        ``model_path`` (where: the directory the model was loaded from or saved
        to, when its weights are unchanged since; else None),
        ``artifact_sha256`` and ``weights_sha256`` (the checksum in the saved
        ``config.json``; ``None`` and omitted, with a ``model_note`` saying why,
        when the model was trained by this call and not saved), ``layer``,
        ``n_devices``, ``n_cells_without_gene_tokens`` (``n_cells_without_tokens``
        before 0.3)
        (cells that express none of the model's genes: their embedding holds no
        information about them, the zero vector with mean pooling; a warning
        names them) and ``training`` (the training summary).
    """
    from .._settings import settings
    from ..models._io import check_save_target
    from ._checkpoint import embed_checkpoint, is_checkpoint
    from ._model_data import gene_mapping, iter_token_chunks

    if is_checkpoint(model):  # published Geneformer / scGPT checkpoints (issue 13)
        if save_model is not None:
            raise TypeError("save_model= keeps a native model; a checkpoint is already on disk.")
        key = None if key_added == _keys.EMBEDDING_KEY else key_added
        for name, value, instead in (
            ("batch_size", batch_size, "max_batch_tokens= (cells x padded length per batch)"),
            ("min_gene_coverage", min_gene_coverage, "min_vocab_coverage= (a fraction of "
             "the AnnData's genes that must be in the checkpoint's vocabulary)"),
        ):  # fmt: skip
            if value is not None:
                raise DfmInputError(
                    f"{name}= applies to native models; for a checkpoint pass {instead}."
                )
        kw = dict(layer=layer, chunk_size=chunk_size, progress_bar=progress_bar, copy=copy)
        return embed_checkpoint(adata, model, key_added=key, **kw, **pretrain_kwargs)

    # ---------------------------------------------------------------- validate
    check_adata(adata)
    get_matrix(adata, layer)
    check_key("key_added", key_added)
    batch_size = check_int(
        "batch_size", DEFAULT_BATCH_SIZE if batch_size is None else batch_size, minimum=1
    )
    min_gene_coverage = check_float(
        "min_gene_coverage",
        0.5 if min_gene_coverage is None else min_gene_coverage,
        minimum=0.0,
        maximum=1.0,
    )
    chunk_size = check_int("chunk_size", chunk_size, minimum=1, allow_none=True)
    if chunk_size is None:
        chunk_size = check_int("dfm.settings.chunk_size", settings.chunk_size, minimum=1)
    if progress_bar is not None:
        check_bool("progress_bar", progress_bar)
    copy = check_copy(adata, copy)
    if model is not None and pretrain_kwargs:
        raise TypeError(
            f"Unexpected arguments {sorted(pretrain_kwargs)}: pretraining options are only "
            "used with model=None."
        )
    if save_model is not None:
        check_save_target(save_model)
    show_bar = settings.progress_bar if progress_bar is None else bool(progress_bar)
    trained_here = model is None
    if not trained_here:
        model = _resolve_model(model)  # a path is loaded (and checked) before any work

    with timed(f"embedding cells into .obsm[{key_added!r}]") as info:
        if trained_here:
            from ._pretrain import pretrain

            kwargs = dict(pretrain_kwargs)
            if "pretrain_batch_size" in kwargs:
                kwargs["batch_size"] = kwargs.pop("pretrain_batch_size")
            model = pretrain(
                adata, layer=layer, progress_bar=progress_bar, chunk_size=chunk_size, **kwargs
            )
        meta = model.metadata
        if not meta.get("genes"):
            raise DfmInputError(
                "This model has no gene vocabulary (it was not trained with "
                "dfm.tl.pretrain or loaded with dfm.models.load); it cannot tokenize data."
            )
        tok = _tokenizer_settings(model)
        gene_scale, col_to_token, coverage = gene_mapping(
            meta["genes"],
            np.asarray(meta["medians"], dtype=np.float64),
            adata.var_names,
            min_gene_coverage=float(min_gene_coverage),
        )
        from ..models._adapters import masked_expression_runner

        embedder = masked_expression_runner(model, int(batch_size))
        n = adata.n_obs
        result = np.empty((n, model.config.hidden_dim), dtype=np.float32)
        from .._logging import tqdm

        bar = tqdm(total=n, desc="embed", unit="cells", disable=not show_bar, leave=False)
        empty = np.zeros(n, dtype=bool)
        try:
            for start, stop, ids, vals in iter_token_chunks(
                adata,
                layer,
                gene_scale,
                col_to_token,
                target_sum=float(tok["target_sum"]),
                max_tokens=int(model.config.max_tokens),
                chunk_size=chunk_size,
            ):
                lengths = (ids != _keys.PAD_ID).sum(axis=1)
                result[start:stop] = embedder(lengths, ids, vals)
                empty[start:stop] = ids[:, 0] == _keys.PAD_ID
                bar.update(stop - start)
        finally:
            bar.close()
        bad_rows = ~np.isfinite(result).all(axis=1)
        if bad_rows.any():
            raise FloatingPointError(
                f"The model produced non-finite embeddings for {int(bad_rows.sum())} of {n} "
                f"cells (e.g. {_preview(adata.obs_names[np.flatnonzero(bad_rows)], 3)}): its "
                "weights hold NaN/inf or values that overflow float32 (a saved model's are "
                "checked finite at load). Inspect model.get_weights(); re-train the model."
            )
        n_empty = int(empty.sum())
        if n_empty:
            logger.warning(
                "%d of %d cells express none of the model's genes, so their embedding holds "
                "no information about them (the zero vector with mean pooling), e.g. %s",
                n_empty,
                n,
                _preview(adata.obs_names[np.flatnonzero(empty)]),
            )

        if save_model is not None:  # before the AnnData is touched
            model.save(save_model)
        wdigest = weights_digest(model)
        saved = model.saved_as
        model_path = saved[0] if saved is not None and saved[1] == wdigest else None
        entry = {
            "source": "dfm",
            "model_family": _keys.MODEL_FAMILIES[0],
            "adapter_mode": _keys.ADAPTER_MODES[0],
            "artifact_id": f"dfm-masked-expression-{wdigest[:16]}",
            "preprocessing_version": (
                f"{tok.get('recipe', 'geneformer_v1')};max_tokens={model.config.max_tokens};"
                f"target_sum={float(tok['target_sum']):g}"
            ),
            "pooling_strategy": model.config.pooling,
            "config_sha256": config_digest(model),
            "artifact_sha256": wdigest,
            "weights_sha256": wdigest,
            "n_dims": int(model.config.hidden_dim),
            "created_by": _uns.provenance("tl.embed"),
            "config": model.config.to_dict(),
            "tokenizer": dict(tok),
            **coverage,
            "weights_retrievable": model_path is not None,
            "model_path": model_path,
            "layer": layer,
            "n_devices": int(embedder.n_devices),
            "n_cells_without_gene_tokens": n_empty,
            "training": meta.get("training", {}),
        }
        if trained_here and model_path is None:
            del entry["weights_sha256"]
            entry["artifact_sha256"] = None
            entry["artifact_id"] = "dfm-masked-expression-unsaved"
            entry["model_note"] = (
                "The model was trained by dfm.tl.embed and not saved: its weights cannot be "
                "retrieved. Pass save_model=<directory> to keep it and embed new cells in the "
                "same space."
            )
        entry = _uns.to_h5ad_safe(entry)  # fails here, before anything is written
        # ------------------------------------------------------------ write last
        out = adata.copy() if copy else adata
        out.obsm[key_added] = result
        _uns.set_entry(out, _keys.UNS_EMBEDDINGS, key_added, entry)
        info["added"] = [f".obsm[{key_added!r}]", f".uns['dfm']['embeddings'][{key_added!r}]"]
    return out if copy else None
