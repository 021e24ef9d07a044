"""``dfm.tl.embed_sequences``: sequence embeddings into a MuData modality or an AnnData."""

from __future__ import annotations

import os

import numpy as np

from ... import _keys, _uns
from ..._logging import timed
from ..._settings import settings
from ..._validate import DfmInputError, check_bool, check_choice, check_int, check_key
from .._target import check_mod, writable_target
from ._common import (
    average_windows,
    check_lengths,
    check_sequences,
    resolve_encoder,
    resolve_target,
    run_with_bar,
    sequence_embedder,
    tile_sequences,
)

#: Sequences per forward pass.
DEFAULT_BATCH_SIZE = 64


def embed_sequences(
    data,
    *,
    mod: str | None = "dna",
    encoder=None,
    reverse_complement: str | None = "average",
    key_added: str = _keys.SEQ_EMBEDDING_KEY,
    batch_size: int = DEFAULT_BATCH_SIZE,
    window: int | None = None,
    stride: int | None = None,
    sequence_key: str = _keys.SEQUENCE_KEY,
    alphabet: str = "dna",
    pooling: str | None = None,
    save_model: str | None = None,
    copy: bool = False,
    progress_bar: bool | None = None,
    **pretrain_kwargs,
):
    """Embed nucleotide sequences with a sequence encoder.

    Sequences are tokenized with the encoder's own tokenizer, grouped by length
    into fixed-width buckets (powers of two up to ``max_length``) and embedded
    in fixed-shape batches by a jit-compiled forward pass in eval mode (no
    dropout), through the package's one batched runner; the last batch of a
    bucket is filled up with copies of its first row (discarded). A
    sequence's embedding depends on that sequence alone: its padded width is
    set by its own length and padding is removed exactly from attention and
    pooling, so neither the other sequences in its batch nor their order
    change it.

    Parameters
    ----------
    data
        A MuData (the sequences are the observations of ``data[mod]``) or an
        AnnData of sequences, as :func:`diffbio_sc.io.read_fasta` returns.
    mod
        Modality holding the sequences in a MuData (default ``'dna'``); with an
        AnnData, a value other than the default is an error.
    encoder
        A :class:`~diffbio_sc.models.SequenceEncoder`; a published DNA
        checkpoint loaded by :func:`diffbio_sc.models.load_checkpoint` or
        :func:`diffbio_sc.models.from_pretrained` (Nucleotide Transformer
        v1/v2, GENERator: a
        :class:`~diffbio_sc.models._dna_checkpoints.DnaCheckpointModel`,
        ``adapter_mode='checkpoint'``); a directory, told apart by its
        ``config.json``: diffbio_sc's own model format (a ``format`` field; a
        saved ``SequenceEncoder``, or a DNA checkpoint saved with ``save``) or
        a Hugging Face checkpoint (``model_type``, or NT v2's ``auto_map``; its
        ``vocab.txt`` beside it); a frozen in-process encoder, any
        callable mapping a list of sequences to an ``(n, d)`` array
        (``adapter_mode='frozen_encoder'``); or ``None``, which pretrains an
        encoder on these sequences with the default budget
        (:func:`diffbio_sc.tl.pretrain_sequences` with ``**pretrain_kwargs``).
        A checkpoint reads only its own alphabet (``ACGTN`` for NT, ``ACGT``
        for GENERator and DNABERT-2, upper case): other symbols are an error
        naming the sequence and position. Its context is ``model.max_tokens``
        tokens (k-mers, single-base leftovers, byte-pair pieces and special
        tokens; see ``window``).
    reverse_complement
        ``'average'`` (default; embed both strands and average the pooled
        vectors), ``'equivariant'`` (needs an encoder built with it; refused
        for checkpoints, which are not strand-equivariant) or ``None``
        (forward strand only, for strand-specific data). An equivariant
        encoder is strand-invariant whatever is asked.
    key_added
        ``.obsm`` key of the embedding and ``.uns['dfm']['embeddings']`` entry.
    batch_size
        Sequences per forward pass.
    window
        Long sequences: ``None`` (default) makes a sequence with more tokens
        than the encoder's ``max_length`` an error naming it; an int tiles every
        sequence longer than ``window`` bases into windows of exactly
        ``window`` bases, the first at the start and the last at the end,
        evenly spread with consecutive starts at most ``stride`` apart
        (:func:`~diffbio_sc.ops._sequence.tile_sequences`, the window rule
        :func:`~diffbio_sc.tl.embed_genes` uses too). Each window is
        embedded on its own (same reverse-complement mode) and the sequence's
        embedding is the mean of its windows' pooled vectors weighted by
        window length. Sequences of at most ``window`` bases are embedded
        whole, exactly as without windowing. The layout is mirror-symmetric,
        so an RC-invariant mode (``'average'``, ``'equivariant'``) stays
        RC-invariant (up to float summation order). Each window must fit the
        encoder (``char``: ``window <= max_length``; ``kmer``:
        ``window - k + 1 <= max_length``). For a DNA checkpoint ``window`` is
        in bases and its context in tokens: a window of ``w`` bases of
        ``ACGT`` gives at most ``s + ceil(w / 6)`` tokens (GENERator, ``s = 2``
        specials) or ``s + w // 6 + max(w % 6, 4)`` (Nucleotide Transformer,
        ``w >= 6``, shorter leftovers included; every ``N`` adds one) or
        ``w + 2`` (DNABERT-2: each window tokenised on its own as ``[CLS] ...
        [SEP]``, every byte-pair token covers at least one base), and a
        window whose bound exceeds ``max_tokens`` is an error naming the
        largest window that fits (recorded as ``max_window``).
    stride
        Largest step between window starts, ``1 <= stride <= window``;
        ``None``: ``window // 2`` (half-overlapping windows).
    sequence_key
        ``.obs`` column with the sequences.
    alphabet
        Alphabet of a frozen callable's input (a native encoder uses its own).
    pooling
        DNA checkpoints only: ``None`` (the model's own: ``'mean'`` for NT,
        ``'last'`` token for GENERator) or, for GENERator, ``'mean'``.
    save_model
        With ``encoder=None``: a directory to save the trained encoder to
        (recorded as ``model_path``), so that new sequences can later be
        embedded in the same space.
    copy
        Return a copy of ``data`` instead of writing into it.
    progress_bar
        Show a tqdm bar over the sequences (windows) embedded, advanced per
        batch (twice per sequence when a checkpoint runs both strands); with
        ``encoder=None`` also the pretraining bar. ``None`` follows
        ``dfm.settings.progress_bar``.
    **pretrain_kwargs
        Passed to :func:`~diffbio_sc.tl.pretrain_sequences` with ``encoder=None``.

    Returns
    -------
    ``None``, or the new MuData / AnnData when ``copy=True``. Writes, on the
    AnnData of sequences (``data[mod]`` for a MuData):

    ``.obsm[key_added]``
        float32 ``(n_sequences, n_dims)`` embeddings in ``obs`` order.
    ``.uns['dfm']['embeddings'][key_added]``
        ``source`` ('dfm' or 'frozen_encoder'), ``model_family``
        ('sequence_transformer'), ``adapter_mode`` ('native_trainable' or
        'frozen_encoder'), ``artifact_id``, ``preprocessing_version``,
        ``pooling_strategy``, ``reverse_complement`` (``None`` when off),
        ``tokenizer`` (name, alphabet, vocabulary size, k),
        ``weights_sha256``, ``n_dims``, ``config``, ``model_path``,
        ``weights_retrievable``, ``batch_size``, ``bucket_widths``,
        ``n_sequences``, ``window``, ``stride``, ``n_windows`` (pieces
        embedded), ``mod`` and ``created_by``. For a DNA checkpoint:
        ``source`` (``'nucleotide_transformer'``, ``'generator'``,
        ``'dnabert2'`` ...), ``model_family`` (``'nucleotide_transformer_v1'``,
        ``'nucleotide_transformer_v2'``, ``'generator'``, ``'dnabert2'`` ...), ``adapter_mode``
        ``'checkpoint'``, ``artifact_sha256`` and ``checkpoint_sha256``
        (the weight file(s)), ``vocab_sha256``, ``checkpoint_path``,
        ``tokenizer`` (name, alphabet, k (``None`` for BPE), vocabulary size, special tokens,
        vocabulary file), ``pooling``, ``layer_index`` and ``n_layers`` (the
        last layer), ``max_tokens``, ``max_window``, ``max_piece_tokens``
        (largest token count of an embedded piece, either strand), ``hub`` (``repo_id``,
        ``revision``, ... for a model from
        :func:`~diffbio_sc.models.from_pretrained`, else ``None``) instead
        of ``weights_sha256`` and ``training``.

    Raises
    ------
    DfmInputError
        For a MuData without ``mod``, a missing ``.obs`` column, invalid bases
        (naming the sequence and position), ``U`` in DNA, empty sequences,
        duplicate ids, or sequences (windows) longer than the encoder's
        ``max_length``; for a DNA checkpoint also symbols outside its
        alphabet, ``reverse_complement='equivariant'``, a ``pooling`` it does
        not have and a ``window`` beyond its context.
        ``data`` is unchanged after any error.
    """
    from ...models._runner import weights_digest
    from ...models._sequence import RC_MODES, SequenceEncoder
    from ._dna_checkpoint import check_model_alphabet, check_window, is_dna_checkpoint

    # ---------------------------------------------------------------- validate
    check_mod(data, mod, _keys.SEQUENCE_MOD)
    tgt = resolve_target(data, mod)
    target, is_mudata = tgt.adata, tgt.mod is not None
    check_key("key_added", key_added)
    check_key("sequence_key", sequence_key)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("reverse_complement", reverse_complement, RC_MODES)
    check_choice("alphabet", alphabet, ("dna", "rna"))
    check_choice("pooling", pooling, (None, "mean", "last"))
    check_bool("copy", copy)
    show_bar = (
        settings.progress_bar if progress_bar is None else check_bool("progress_bar", progress_bar)
    )
    window = check_int("window", window, minimum=1, allow_none=True)
    if window is None and stride is not None:
        raise DfmInputError("stride= needs window= (the window length in bases).")
    if window is not None:
        stride = check_int(
            "stride", max(1, window // 2) if stride is None else stride, minimum=1, maximum=window
        )
    if encoder is not None and (pretrain_kwargs or save_model is not None):
        raise TypeError(
            "save_model= and pretraining options are only used with encoder=None; got "
            f"{sorted(pretrain_kwargs) + (['save_model'] if save_model else [])}."
        )
    encoder, model_path = resolve_encoder(encoder)
    checkpoint = is_dna_checkpoint(encoder)
    if pooling is not None and not checkpoint:
        raise DfmInputError(
            "pooling= applies to DNA checkpoints (Nucleotide Transformer, GENERator); a "
            "SequenceEncoder pools as its config says and a callable as it is written."
        )
    if checkpoint:
        from ._dna_checkpoint import family_name

        alphabet = "dna"
        if reverse_complement == "equivariant" and not encoder.rc_equivariant:
            raise DfmInputError(
                f"The {family_name(encoder)} checkpoint is not reverse-complement equivariant "
                "(of the checkpoints only Caduceus-PS is): "
                "pass reverse_complement='average' (embed both strands and average) or None."
            )
        allowed = ("last", "mean") if encoder.family == "generator" else ("mean",)
        if pooling is not None and pooling not in allowed:
            raise DfmInputError(
                f"{family_name(encoder)} pooling must be one of {allowed}, got {pooling!r}."
            )
        if window is not None:
            check_window(encoder, window)
    elif isinstance(encoder, SequenceEncoder):
        alphabet = encoder.config.alphabet
        if reverse_complement == "equivariant" and encoder.config.reverse_complement != (
            "equivariant"
        ):
            raise DfmInputError(
                "reverse_complement='equivariant' needs an encoder built with "
                "reverse_complement='equivariant'; pass 'average' for this one."
            )
    elif encoder is not None and not callable(encoder):
        raise TypeError(
            "encoder must be None, a SequenceEncoder, a saved-model path or a callable; got "
            f"{type(encoder).__name__}."
        )
    elif encoder is not None and reverse_complement == "equivariant":
        raise DfmInputError("A frozen callable encoder has no 'equivariant' mode; use 'average'.")
    seqs = check_sequences(target, alphabet=alphabet, sequence_key=sequence_key)
    if checkpoint:
        check_model_alphabet(encoder, seqs, target.obs_names)
    pieces, names = seqs, target.obs_names
    if window is not None and not checkpoint:  # a checkpoint tiles in embed_with_checkpoint
        pieces, owner, weight = tile_sequences(seqs, window, stride)
        # owner is in sequence order: a window's number within its own sequence
        local = np.arange(owner.size) - np.searchsorted(owner, owner)
        names = [f"{target.obs_names[o]}[window {j}]" for o, j in zip(owner, local, strict=True)]

    with timed(f"embedding sequences into .obsm[{key_added!r}]") as info:
        if encoder is None:
            from ._pretrain import pretrain_sequences

            encoder = pretrain_sequences(
                target, sequence_key=sequence_key, progress_bar=progress_bar, **pretrain_kwargs
            )
            if save_model is not None:
                model_path = str(encoder.save(save_model))
        if checkpoint:
            from ._dna_checkpoint import embed_with_checkpoint

            emb, runner, n_pieces = embed_with_checkpoint(
                encoder,
                seqs,
                target.obs_names,
                reverse_complement=reverse_complement,
                batch_size=batch_size,
                pooling=pooling,
                window=window,
                stride=stride,
                progress_bar=show_bar,
            )
        else:
            runner = sequence_embedder(
                encoder,
                reverse_complement=reverse_complement,
                batch_size=batch_size,
                alphabet=alphabet,
            )
            counts = None
            if runner.native:
                counts = runner.counts(pieces)
                check_lengths(
                    counts,
                    runner.max_tokens,
                    names,
                    hint="Embed them in windows (window=, stride=)"
                    if window is None
                    else "Use a smaller window=",
                )
            emb = run_with_bar(runner, pieces, counts, show=show_bar, desc="embed_sequences")
            if window is not None:
                emb = average_windows(emb, owner, weight, len(seqs))
            n_pieces = len(pieces)
        if not np.isfinite(emb).all():
            raise FloatingPointError("The encoder produced non-finite embeddings.")

        if checkpoint:
            entry = _checkpoint_entry(
                encoder, runner, reverse_complement=reverse_complement, model_path=model_path
            )
        elif runner.native:
            cfg = encoder.config
            wdigest = weights_digest(encoder)
            tok = runner.tokenizer.describe()
            effective = (
                "equivariant" if cfg.reverse_complement == "equivariant" else reverse_complement
            )
            entry = {
                "source": "dfm",
                "model_family": _keys.MODEL_FAMILIES[1],
                "adapter_mode": "native_trainable",
                "artifact_id": f"dfm-sequence-encoder-{wdigest[:16]}",
                "preprocessing_version": f"{tok['name']};alphabet={cfg.alphabet};"
                f"max_length={cfg.max_length}",
                "pooling_strategy": cfg.pooling,
                "reverse_complement": effective,
                "tokenizer": tok,
                "artifact_sha256": wdigest,
                "weights_sha256": wdigest,
                "config": cfg.to_dict(),
                "model_path": model_path,
                "weights_retrievable": model_path is not None,
                "bucket_widths": list(runner.edges),
                "training": encoder.metadata.get("training", {}),
            }
        else:
            entry = {
                "source": "frozen_encoder",
                "model_family": _keys.MODEL_FAMILIES[1],
                "adapter_mode": "frozen_encoder",
                "artifact_id": f"frozen-{getattr(encoder, '__qualname__', type(encoder).__name__)}",
                "preprocessing_version": f"raw sequences;alphabet={alphabet}",
                "pooling_strategy": "encoder-defined",
                "artifact_sha256": None,  # a function: no artifact diffbio_sc can digest
                "reverse_complement": reverse_complement,
                "weights_retrievable": False,
            }
        entry.update(
            {
                "n_dims": int(emb.shape[1]),
                "n_sequences": int(emb.shape[0]),
                "window": window,
                "stride": stride,
                "n_windows": n_pieces,
                "batch_size": int(batch_size),
                "sequence_key": sequence_key,
                "mod": mod if is_mudata else None,
                "created_by": _uns.provenance("tl.embed_sequences"),
            }
        )
        # ------------------------------------------------------------ write last
        out = writable_target(tgt, copy)
        out_target = out.adata
        out_target.obsm[key_added] = emb
        _uns.set_entry(out_target, _keys.UNS_EMBEDDINGS, key_added, entry)
        info["added"] = [f".obsm[{key_added!r}]", f".uns['dfm']['embeddings'][{key_added!r}]"]
    return out.root if copy else None


def _checkpoint_entry(model, runner, *, reverse_complement, model_path) -> dict:
    """Return the ``.uns`` fields of a DNA checkpoint (the shared ones are added by the caller)."""
    from ... import _keys
    from ._dna_checkpoint import family_name, kmer_size, max_window, n_special_tokens

    family = family_name(model)
    tok = model.tokenizer
    k = kmer_size(model)
    tokenizer = {
        "name": tok.name,
        "alphabet": tok.alphabet,
        "k": k,
        "vocab_size": int(tok.vocab_size),
        "n_special_tokens": n_special_tokens(model),
        "add_eos": bool(getattr(tok, "add_eos", True)),
        "source": str(model.sources.get("vocab", tok.source)),
    }
    return {
        "source": model.family,
        "model_family": family,
        "adapter_mode": _keys.ADAPTER_MODES[3],
        "artifact_id": f"{family}-{model.sha256[:16]}",
        "artifact_sha256": model.sha256,
        **model.digests(),
        "checkpoint_path": os.fspath(model.path),
        "preprocessing_version": f"{family} tokens;{'BPE' if k is None else f'k={k}'};"
        f"max_tokens={runner.max_tokens}",
        "pooling_strategy": runner.pooling,
        "pooling": runner.pooling,
        "layer_index": int(model.n_layers),
        "n_layers": int(model.n_layers),
        "reverse_complement": reverse_complement,
        "tokenizer": tokenizer,
        "max_tokens": int(runner.max_tokens),
        "max_window": int(max_window(model)),
        "max_piece_tokens": int(getattr(runner, "max_piece_tokens", 0)),
        "config": model.config.to_dict(),
        "model_path": model_path,
        # the weights are the checkpoint's files (digest above), on disk or on the Hub
        "weights_retrievable": bool(model.hub) or os.path.isdir(model.path),
        "bucket_widths": list(runner.edges),
        "hub": dict(model.hub) if model.hub else None,
    }
