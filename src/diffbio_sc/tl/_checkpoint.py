"""``dfm.tl.embed_checkpoint``: cell embeddings from published Geneformer / scGPT checkpoints."""

from __future__ import annotations

import os

import numpy as np

from .. import _keys, _uns
from .._deprecate import renamed_arguments
from .._logging import logger, timed
from .._validate import (
    DfmInputError,
    _preview,
    check_adata,
    check_bool,
    check_choice,
    check_copy,
    check_float,
    check_int,
    check_key,
    check_seed,
    get_matrix,
    resolve_copy,
)
from ._checkpoint_inputs import (
    coverage_error,
    gene_ids_of,
    geneformer_chunks,
    in_vocab,
    is_checkpoint,
    resolve_checkpoint,
    scgpt_chunks,
)

__all__ = ["embed_checkpoint", "is_checkpoint"]

#: Default obsm keys per checkpoint family (the API contract).
DEFAULT_KEYS = {"geneformer": "X_geneformer", "scgpt": "X_scgpt"}
#: Cells tokenized and run per chunk (bounds the token arrays' memory).
DEFAULT_CHUNK = 2048
#: Cells per packed row at most (Geneformer packing).
MAX_SEGMENTS = 32


def _geneformer_apply(static, params, tokens):
    """Pooled embedding (and, when asked, token states) of one batch; ``static`` hashable.

    ``static[0]``: the model's graph definition (layers unrolled), or a
    :class:`~diffbio_sc.models._bert.StackedLayers` (``params`` from
    :func:`~diffbio_sc.models._bert.stack_layers`: the layers run as one scan).
    """
    from flax import nnx

    from ..models._bert import StackedLayers, pool_tokens, stacked_states

    graphdef, layer_index, pooling, specials_ids, want_genes, dtype = static
    if isinstance(graphdef, StackedLayers):
        x = stacked_states(graphdef, params, tokens, dtype=dtype)
        pooled = pool_tokens(
            tokens, x, pad_id=graphdef.pad_id, pooling=pooling, exclude_ids=specials_ids
        )
        return (pooled, x) if want_genes else pooled
    m = nnx.merge(graphdef, params)
    x = m.layer_states(tokens, layer_index, dtype=dtype)
    pooled = m.pool(tokens, x, pooling=pooling, exclude_ids=specials_ids)
    return (pooled, x) if want_genes else pooled


def _geneformer_packed_apply(static, params, ids, segment_ids, positions, slots):
    """Pooled embeddings of packed cells, one per segment.

    ``rows * max_segments`` of them for packed rows (``slots`` ``None``), else one per
    slot of the runner's slot layout. ``static[0]`` as in :func:`_geneformer_apply`.
    """
    from flax import nnx

    from ..models._bert import StackedLayers, pool_segments, stacked_states

    graphdef, layer_index, pooling, specials_ids, max_segments, dtype = static
    if isinstance(graphdef, StackedLayers):
        x = stacked_states(
            graphdef,
            params,
            ids,
            segment_ids=segment_ids,
            positions=positions,
            slots=slots,
            dtype=dtype,
        )
    else:
        m = nnx.merge(graphdef, params)
        x = m.packed_states(
            ids, segment_ids, positions, n_layers=layer_index, dtype=dtype, slots=slots
        )[layer_index]
    return pool_segments(
        ids,
        segment_ids,
        x,
        n_cells=ids.shape[0] * max_segments if slots is None else slots.shape[0],
        pooling=pooling,
        exclude_ids=specials_ids,
    )


def _scgpt_apply(graphdef, params, tokens, values):
    """Return scGPT's L2-normalised ``<cls>`` embedding of one batch."""
    from flax import nnx

    return nnx.merge(graphdef, params).cell_embedding(tokens, values)


#: Old argument names of :func:`embed_checkpoint` (deprecated) -> the names shared with the
#: rest of the package (docs/architecture.md, "One vocabulary of arguments").
RENAMED = {
    "emb_layer": "layer_index",
    "max_length": "max_tokens",
    "min_gene_coverage": "min_vocab_coverage",
}


def embed_checkpoint(
    adata,
    checkpoint,
    *,
    key_added: str | None = None,
    layer: str | None = None,
    gene_key: str | None = None,
    layer_index: int | None = None,
    pooling: str | None = None,
    token_dictionary=None,
    gene_median_dictionary=None,
    vocab=None,
    max_tokens: int | None = None,
    seed: int = 0,
    min_vocab_coverage: float = 0.1,
    max_batch_tokens: int | None = None,
    bucketing: bool = True,
    packing: bool | None = None,
    dtype: str = "float32",
    gene_embeddings_key: str | None = None,
    chunk_size: int | None = None,
    trust_pickle: bool = False,
    progress_bar: bool | None = None,
    copy: bool = False,
    **renamed,
):
    """Embed cells with a published Geneformer or scGPT checkpoint, in JAX, in cell order.

    The checkpoint is read without torch (safetensors, or ``.bin``/``.pt`` through
    a restricted unpickler that rebuilds tensors only) and run by a Flax NNX
    encoder equal to the reference implementation (tested layer by layer
    against ``transformers`` and scGPT's own module to 1e-5 in float32).

    Geneformer
        Cells are tokenized with :func:`diffbio_sc.pp.tokenize` using the
        model's own token and gene-median dictionaries (V1: 2,048 genes, no
        special tokens; V2: ``<cls>`` + 4,094 genes + ``<eos>``; capped at the
        model's ``max_position_embeddings``). The embedding is taken from layer
        ``layer_index`` as Geneformer's ``EmbExtractor`` does: ``pooling='mean'``
        averages the non-padding tokens excluding ``<cls>``/``<eos>``;
        ``'cls'`` takes the ``<cls>`` token (V2 models).
    scGPT
        The in-vocabulary genes with nonzero values of each cell get per-cell
        bins from :func:`diffbio_sc.pp.bin_expression` (deterministic ties,
        ``seed``); ``<cls>`` comes first with ``pad_value``. A cell with more
        than ``max_tokens - 1`` such genes keeps a subset chosen by a hash of
        (``seed``, cell name, gene), not a global random state, so its embedding
        does not depend on the other cells. The embedding is the last layer's
        ``<cls>`` state, L2-normalised, as scGPT's ``embed_data``.

    Cells are grouped by token count into length buckets, each padded to its
    own length (attention cost follows the cell's real length) and run in
    fixed-shape batches, data-parallel over the JAX devices; results are
    written back in the AnnData's cell order. A cell's embedding depends on
    that cell alone.

    Geneformer cells much shorter than the rows they would be padded to are
    packed instead: several cells side by side in one row, attending only to
    their own tokens (block-diagonal attention, positions restarting per
    cell), so no attention or feed-forward work is spent on padding. Equal to
    the unpacked result to float rounding (tested to 1e-5).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X`` or ``layer`` (dense, sparse or backed;
        streamed in chunks).
    checkpoint
        Checkpoint directory (Hugging Face ``config.json`` + ``model.safetensors``
        / ``pytorch_model.bin``, or scGPT ``args.json`` + ``vocab.json`` +
        ``best_model.pt``), or a model from :func:`diffbio_sc.models.load_checkpoint`.
    key_added
        ``.obsm`` key; default ``'X_geneformer'`` or ``'X_scgpt'``.
    layer
        Layer with the counts instead of ``.X``.
    gene_key
        ``.var`` column with the gene IDs to match (default ``var_names``);
        Ensembl version suffixes are ignored. Geneformer uses Ensembl IDs,
        scGPT gene symbols.
    layer_index
        The layer to pool, as the upstream tool counts it (and as
        :func:`~diffbio_sc.tl.load_embeddings` records it). Geneformer counts
        from the top, as its ``emb_layer``: ``-1`` (default) the second-to-last
        layer, ``0`` the last, ``-n_layers`` the embedding output. scGPT: the
        last layer (``0``, the default). Was ``emb_layer`` (deprecated alias).
    pooling
        Geneformer: ``'mean'`` (default) or ``'cls'``. scGPT: ``'cls'`` only.
    token_dictionary, gene_median_dictionary
        Geneformer dictionaries (mapping or JSON/CSV/TSV path; pickles need
        ``trust_pickle=True``); default: the JSON files in the checkpoint directory.
    vocab
        scGPT vocabulary (mapping or path); default ``vocab.json`` of the checkpoint.
    max_tokens
        Longest input in tokens, as in :func:`~diffbio_sc.pp.tokenize`; default
        the model's (Geneformer's input size; scGPT 1,200 or ``max_seq_len`` of
        ``args.json``). Was ``max_length`` (deprecated alias).
    seed
        scGPT: seed of the bin tie-breaking and gene sub-sampling hashes.
    min_vocab_coverage
        Smallest fraction of the AnnData's genes that must be in the checkpoint's
        vocabulary. (Not :func:`~diffbio_sc.tl.embed`'s ``min_gene_coverage``,
        a fraction of the model's genes; this was ``min_gene_coverage`` here
        before 0.3, a deprecated alias.)
    max_batch_tokens
        Cells x padded length per forward batch (bounds memory). ``None``
        (default): 32,768 for models up to 512 wide (Geneformer V1, scGPT), fewer
        for wider ones so one batch's feed-forward activations stay near 64 MiB
        (5,120 for Geneformer V2-104M's 3,072-wide intermediate;
        ``models._runner.default_batch_tokens``). The value used is
        recorded.
    bucketing
        Group cells by length (default); ``False`` pads every cell to ``max_tokens``.
    packing
        Geneformer: pack several cells per input row. ``None`` (default) packs
        a chunk of cells when its median token count is below half the packed
        row width (its longest cell rounded up to 64 tokens), i.e. when a row
        holds two or more typical cells, and never with ``bucketing=False`` or
        ``gene_embeddings_key``; ``True`` always packs; ``False`` never does.
        Packed chunks of a job of 512 cells or more use the slot layout
        where it computes less attention (each token attends over about its
        own cell's length, not a whole row's; one compiled shape per slot
        width); jobs of 4,096 cells or more use its finer form (slot widths
        in multiples of 32, a slot count per call: less attention work, more
        compiled shapes, amortised over the job); smaller jobs keep the rows
        (one compiled shape, quicker to a first embedding in a fresh
        process). The choice follows the job's size only, and every layout
        gives a cell the embedding it gets alone (to float rounding). scGPT
        cells are not packed.
    dtype
        Geneformer: ``'float32'`` (default; every product in float32, equal to
        the reference to 1e-5) or ``'bfloat16'`` (opt-in): the layers' matrix
        products take bfloat16 inputs and accumulate in float32, while the
        embeddings, softmax, LayerNorm, activations, residuals and pooling stay
        float32. On a CPU with AVX512-BF16 the user path ran 1.3-1.7x faster
        than float32 (GPUs with bfloat16 units should gain more; not measured);
        the embeddings differ from float32 at the level of bfloat16 rounding
        (V1 size, real PBMC cells: max difference 1.6e-3 at values up to 1.6,
        99.8% of each cell's 15 nearest neighbours kept; V2-104M size: max
        difference 9e-3; cosine > 0.99999 in both; see ``docs/benchmarks.md``).
        scGPT: float32 only.
    gene_embeddings_key
        Geneformer: also write per-gene contextual embeddings (the mean, over the
        cells where a gene is tokenized, of its state at ``layer_index``) to
        ``.varm[gene_embeddings_key]`` (NaN for genes never tokenized).
    chunk_size
        Cells tokenized at a time (default 2,048).
    trust_pickle
        Allow pickled dictionaries (unpickling can run code).
    progress_bar
        Show a progress bar; ``None`` follows ``dfm.settings.progress_bar``.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **renamed
        The old names ``emb_layer``, ``max_length`` and ``min_gene_coverage``
        (``FutureWarning``).

    Returns
    -------
    ``None``, or the new AnnData when ``copy=True``. Writes

    ``.obsm[key_added]``
        float32 ``(n_cells, hidden_size)`` cell embeddings, in cell order.
    ``.varm[gene_embeddings_key]``
        float32 ``(n_genes, hidden_size)``, when asked (Geneformer).
    ``.uns['dfm']['embeddings'][key_added]``
        ``source`` (``'geneformer'``/``'scgpt'``), ``model_family``,
        ``adapter_mode`` (``'checkpoint'``), ``artifact_id``,
        ``artifact_sha256`` (weights), ``vocab_sha256``, ``gene_medians_sha256``,
        dictionary sources, ``checkpoint_path``, ``preprocessing_version``,
        ``pooling_strategy``, ``layer_index`` (as upstream counts it) and
        ``layer_from_input`` (``0`` = embedding output), ``max_tokens``, ``n_dims``,
        ``config``, gene coverage (``n_genes``, ``n_genes_in_vocab``,
        ``frac_genes_in_vocab``, ``frac_counts_in_vocab``, ``gene_key``),
        ``n_cells_without_gene_tokens``, ``n_cells_subsampled`` (scGPT),
        ``bucketing``, ``packing`` (the argument), ``dtype``, ``packed`` (whether any
        cell was run packed) and ``n_cells_packed``, ``max_batch_tokens``,
        ``n_devices``, ``created_by``.
    """
    from .._logging import tqdm
    from .._settings import settings
    from ..models import _runner as runner_module
    from ..models._bert import inference_split
    from ..models._runner import BucketedRunner, default_batch_tokens, eval_split

    # ---------------------------------------------------------------- validate
    new = renamed_arguments(
        "embed_checkpoint",
        renamed,
        RENAMED,
        {
            "layer_index": layer_index,
            "max_tokens": max_tokens,
            "min_vocab_coverage": min_vocab_coverage,
        },
        {"layer_index": None, "max_tokens": None, "min_vocab_coverage": 0.1},
    )
    layer_index, max_tokens, min_vocab_coverage = (
        new["layer_index"], new["max_tokens"], new["min_vocab_coverage"]
    )  # fmt: skip
    check_adata(adata)
    get_matrix(adata, layer)
    check_key("key_added", key_added, allow_none=True)
    check_key("gene_embeddings_key", gene_embeddings_key, allow_none=True)
    emb_layer = check_int("layer_index", layer_index, maximum=0, allow_none=True)
    check_choice("pooling", pooling, (None, "mean", "cls"))
    max_length = check_int("max_tokens", max_tokens, minimum=2, allow_none=True)
    seed = check_seed(seed)
    min_gene_coverage = check_float("min_vocab_coverage", min_vocab_coverage, minimum=0, maximum=1)
    max_batch_tokens = check_int("max_batch_tokens", max_batch_tokens, minimum=1, allow_none=True)
    bucketing = check_bool("bucketing", bucketing)
    if packing is not None:
        packing = check_bool("packing", packing)
    check_choice("dtype", dtype, ("float32", "bfloat16"))
    chunk_size = check_int("chunk_size", chunk_size, minimum=1, allow_none=True) or DEFAULT_CHUNK
    trust_pickle = check_bool("trust_pickle", trust_pickle)
    copy = check_copy(adata, copy)
    show_bar = settings.progress_bar if progress_bar is None else bool(progress_bar)

    model = resolve_checkpoint(
        checkpoint, token_dictionary, gene_median_dictionary, vocab, trust_pickle
    )
    family = model.family
    key_added = key_added or DEFAULT_KEYS[family]
    cfg = model.config
    n_layers = model.n_layers
    if family == "scgpt":
        if pooling not in (None, "cls"):
            raise DfmInputError("scGPT cell embeddings are the <cls> token: pooling='cls' only.")
        if emb_layer not in (None, 0):
            raise DfmInputError("scGPT cell embeddings come from the last layer: layer_index=0.")
        emb_layer = 0
        if gene_embeddings_key is not None:
            raise DfmInputError("gene_embeddings_key is available for Geneformer checkpoints.")
        if packing:
            raise DfmInputError(
                "packing=True is available for Geneformer checkpoints; scGPT cells are run "
                "in length buckets. Use packing=None or False."
            )
        if dtype != "float32":
            raise DfmInputError(
                f"dtype={dtype!r} is available for Geneformer checkpoints; scGPT runs in "
                "float32. Use dtype='float32'."
            )
        pooling = "cls"
        from_input = n_layers
    else:
        pooling = pooling or "mean"
        emb_layer = -1 if emb_layer is None else emb_layer
        if pooling == "cls" and model.recipe != "geneformer_v2":
            raise DfmInputError(
                "pooling='cls' needs a V2 Geneformer (a token dictionary with <cls>); this "
                "checkpoint's dictionary has none. Use pooling='mean'."
            )
        if emb_layer < -n_layers:
            raise DfmInputError(
                f"layer_index={emb_layer} is below -{n_layers} (the model has {n_layers} layers)."
            )
        from_input = n_layers + emb_layer
        if packing and gene_embeddings_key is not None:
            raise DfmInputError(
                "gene_embeddings_key needs each cell's token states, which packed rows do not "
                "return: use packing=None or False."
            )
    max_len = int(max_length or model.max_tokens)
    if max_batch_tokens is None:
        widest = getattr(cfg, "intermediate_size", None) or getattr(cfg, "d_hid", None) or 0
        max_batch_tokens = default_batch_tokens(max(int(widest), int(model.hidden_dim)))
    if family == "geneformer" and max_len > model.max_tokens:
        raise DfmInputError(
            f"max_tokens={max_len} exceeds the model's input size {model.max_tokens}."
        )

    ids = gene_ids_of(adata, gene_key)
    specials = set(_keys.SPECIAL_TOKENS) | {"<eoc>"}
    genes = {g for g in model.vocab if g not in specials}
    found = in_vocab(ids, genes)
    if family == "geneformer":
        has_median = np.asarray(
            [g in model.medians and float(model.medians[g]) > 0 for g in ids], dtype=bool
        )
        usable = found & has_median
    else:
        usable = found
    if found.mean() < min_gene_coverage or not usable.any():
        coverage_error(adata, ids, genes, gene_key, max(min_gene_coverage, 1e-9), found)

    with timed(f"embedding cells with the {family} checkpoint into .obsm[{key_added!r}]") as info:
        want_genes = gene_embeddings_key is not None
        if family == "geneformer":
            # the layers as one scanned layer where their stacked copy is small (cached on
            # the model), else unrolled: the model layer decides (models._bert)
            graphdef, state = inference_split(model.module, from_input)
        else:
            graphdef, state = eval_split(model.module)
        if family == "geneformer":
            specials_ids = tuple(
                model.vocab[t] for t in (_keys.CLS_TOKEN, _keys.EOS_TOKEN) if t in model.vocab
            )
            fn = _geneformer_apply
            compute = None if dtype == "float32" else dtype
            static = (graphdef, from_input, pooling, specials_ids, want_genes, compute)
            packs = (
                packing
                if packing is not None
                else (None if bucketing and not want_genes else False)
            )
            packed_static = (graphdef, from_input, pooling, specials_ids, MAX_SEGMENTS, compute)
        else:
            fn = _scgpt_apply
            static = graphdef
            packs, packed_static = False, None
        runner = BucketedRunner(
            fn,
            state,
            static=static,
            max_length=max_len,
            max_batch_tokens=max_batch_tokens,
            bucketing=bucketing,
            packed_fn=None if packs is False else _geneformer_packed_apply,
            packed_static=packed_static,
            packing=packs,
            slot_layout=runner_module.slot_layout_for(adata.n_obs),
            pad_id=int(cfg.pad_token_id) if family == "geneformer" else 0,
            max_segments=MAX_SEGMENTS,
        )
        n = adata.n_obs
        result = np.empty((n, model.hidden_dim), dtype=np.float32)
        no_genes = np.zeros(n, dtype=bool)
        total_counts = 0.0
        vocab_counts = 0.0
        n_sub = 0
        found_f = found.astype(np.float64)
        gsum = gcount = None
        if want_genes:
            gsum = np.zeros((cfg.vocab_size, model.hidden_dim), dtype=np.float64)
            gcount = np.zeros(cfg.vocab_size, dtype=np.int64)
            excluded = np.asarray([cfg.pad_token_id, *specials_ids])
        bar = tqdm(total=n, desc=family, unit="cells", disable=not show_bar, leave=False)
        try:
            if family == "geneformer":
                chunks = (
                    (s, e, c, (t,), ln, 0)
                    for s, e, c, t, ln in geneformer_chunks(
                        adata, model, ids, layer, chunk_size, max_len
                    )
                )
            else:
                chunks = (
                    (s, e, c, (g, v), ln, ns)
                    for s, e, c, g, v, ln, ns in scgpt_chunks(
                        adata, model, ids, found, layer, chunk_size, seed, max_len
                    )
                )
            for start, stop, chunk, arrays, lengths, ns in chunks:
                n_sub += ns
                for idx, outs in runner.iter_batches(lengths, *arrays):
                    result[start + idx] = outs[0]
                    if want_genes:
                        tok = arrays[0][idx, : outs[1].shape[1]]
                        sel = ~np.isin(tok, excluded)
                        t, x = tok[sel], outs[1][sel]
                        order = np.argsort(t, kind="stable")
                        t, x = t[order], x[order]
                        uniq, first = np.unique(t, return_index=True)
                        if uniq.size:
                            gsum[uniq] += np.add.reduceat(x.astype(np.float64), first, axis=0)
                            gcount[uniq] += np.diff(np.append(first, t.size))
                n_special = (
                    2 if model.recipe == "geneformer_v2" else (1 if family == "scgpt" else 0)
                )
                no_genes[start:stop] = lengths <= n_special
                tot = np.asarray(chunk.sum(axis=1)).ravel()
                total_counts += float(tot.sum())
                vocab_counts += float((chunk @ found_f).sum())
                bar.update(stop - start)
        finally:
            bar.close()
        bad_rows = ~np.isfinite(result).all(axis=1)
        if bad_rows.any():
            raise FloatingPointError(
                f"The {family} checkpoint at {model.path} produced non-finite embeddings for "
                f"{int(bad_rows.sum())} of {n} cells (e.g. "
                f"{_preview(adata.obs_names[np.flatnonzero(bad_rows)], 3)}). Its configuration "
                "and weights passed every check, so the weights themselves hold values that "
                "overflow float32; re-export the checkpoint."
            )
        n_empty = int(no_genes.sum())
        if n_empty:
            logger.warning(
                "%d of %d cells express none of the checkpoint's genes; their embedding holds no "
                "information about them, e.g. %s",
                n_empty,
                n,
                _preview(adata.obs_names[np.flatnonzero(no_genes)]),
            )
        gene_emb = None
        if want_genes:
            tok_of_var = np.asarray([model.vocab.get(g, -1) for g in ids], dtype=np.int64)
            gene_emb = np.full((adata.n_vars, model.hidden_dim), np.nan, dtype=np.float32)
            ok = (tok_of_var >= 0) & (gcount[np.maximum(tok_of_var, 0)] > 0)
            t = tok_of_var[ok]
            gene_emb[ok] = (gsum[t] / gcount[t][:, None]).astype(np.float32)

        if family == "geneformer":
            prep = f"{model.recipe};max_tokens={max_len};target_sum=10000;dictionaries=checkpoint"
            pooling_strategy = f"{pooling}@layer{from_input}of{n_layers}"
        else:
            prep = f"scgpt_bins;n_bins={cfg.n_bins};max_length={max_len};seed={seed}"
            pooling_strategy = "cls_l2"
        entry = {
            "source": family,
            "model_family": _keys.MODEL_FAMILIES[0],
            "adapter_mode": "checkpoint",
            "artifact_id": f"{family}-{model.sha256[:16]}",
            "artifact_sha256": model.sha256,
            **model.digests(),
            "dictionary_sources": dict(model.sources),
            "checkpoint_path": os.fspath(model.path),
            "preprocessing_version": prep,
            "pooling_strategy": pooling_strategy,
            "pooling": pooling,
            "layer_index": int(emb_layer),  # as upstream counts it (Geneformer: from the top)
            "layer_from_input": int(from_input),  # 0 = embedding output
            "n_layers": int(n_layers),
            "n_dims": int(model.hidden_dim),
            "config": cfg.to_dict(),
            "layer": layer if layer is not None else "X",
            "gene_key": gene_key if gene_key is not None else "var_names",
            "n_genes": int(adata.n_vars),
            "n_genes_in_vocab": int(found.sum()),
            "n_genes_used": int(usable.sum()),
            "frac_genes_in_vocab": float(found.mean()),
            "frac_counts_in_vocab": float(vocab_counts / total_counts) if total_counts else 0.0,
            "max_tokens": max_len,
            "seed": seed if family == "scgpt" else None,
            "n_cells_without_gene_tokens": n_empty,
            "n_cells_subsampled": n_sub if family == "scgpt" else None,
            "bucketing": bucketing,
            "packing": packing,
            "dtype": dtype,
            "packed": runner.n_packed > 0,
            "n_cells_packed": int(runner.n_packed),
            "max_batch_tokens": max_batch_tokens,
            "n_devices": int(runner.n_devices),
            "n_compiled_shapes": len(runner.shapes),
            "gene_embeddings_key": gene_embeddings_key,
            "created_by": _uns.provenance("tl.embed_checkpoint"),
        }
        # ------------------------------------------------------------ write last
        out = resolve_copy(adata, copy)
        out.obsm[key_added] = result
        if gene_emb is not None:
            out.varm[gene_embeddings_key] = gene_emb
        _uns.set_entry(out, _keys.UNS_EMBEDDINGS, key_added, entry)
        info["added"] = [f".obsm[{key_added!r}]", f".uns['dfm']['embeddings'][{key_added!r}]"]
    return out if copy else None
