"""``dfm.tl.genomics_tasks``: sequence classification on real data, encoder vs baselines.

Tasks (files under ``../shared/data/dna`` or ``data_dir``):

``splice_junctions``
    UCI primate splice-junction gene sequences: 3,190 x 60 bp, classes EI
    (exon-intron), IE (intron-exon), N (neither).
``promoters_mouse_tata``
    CNNProm: mouse TATA promoters (EPDnew, 251 bp) vs non-promoters (random
    gene fragments after the first exon).
``promoters_ecoli``
    CNNProm: E. coli sigma-70 promoters (RegulonDB, 81 bp) vs non-promoters
    (opposite strands of coding fragments).

Each task is split once, seeded and stratified by class, with identical
sequences grouped so that no sequence is on both sides of the split. Methods,
all fitted on the training part only and scored on the test part:

``frozen_probe``
    Logistic regression on frozen encoder embeddings (standardised).
``fine_tuned``
    The encoder plus a linear classification head, trained end to end with the
    shared trainer (AdamW, optax), early-stopped on a held-out tenth of the
    training part.
``fine_tuned_ensemble``
    With ``finetune_seeds=n > 1``: ``n`` encoders fine-tuned with seeds
    ``seed .. seed + n - 1`` on the same fit/validation partition of the
    training part; their class probabilities are averaged (a seed ensemble,
    reported under its own name beside the single model ``fine_tuned``, which
    is the first member).
``kmer_logreg``
    Bag of k-mer frequencies (k = 3..6, frequencies within each k) + logistic
    regression.
``onehot_logreg``
    Positional one-hot (sequences right-padded to the longest) + logistic
    regression.

With ``encoder=None`` the encoder is pretrained per task by masked-language
modelling on that task's *training* sequences (no test sequence is seen), then
used frozen for the probe and as the starting point of fine-tuning.

``data=`` replaces the bundled tasks by the user's own labelled sequences (one
task named ``task_name``; labels from ``.obs[label_key]``, the split from
``.obs[split_key]`` or the seeded split above). ``frozen_encoders`` may hold
published DNA checkpoints, embedded as :func:`~diffbio_sc.tl.embed_sequences`
embeds them (both strands averaged, windows past the context) and scored by the
same probe.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ... import _keys, _uns
from ..._logging import logger, timed
from ..._validate import DfmInputError, check_float, check_int, check_key, check_seed
from .._target import check_mod
from ._finetune import fine_tune, finetune_split, predict_proba, task_tokens, validation_scores
from ._task_data import (
    SCORES,
    TASKS,
    _fit_predict_logreg,
    check_split_classes,
    check_splittable,
    classification_scores,
    embedding_lookup,
    grouped_stratified_split,
    kmer_features,
    load_task,
    load_user_task,
    positional_one_hot,
    subsample,
)

RESULT_COLUMNS = ("embedding", "metric", "group", "value", "sd")
METHODS = ("frozen_probe", "fine_tuned", "kmer_logreg", "onehot_logreg")
ENSEMBLE = "fine_tuned_ensemble"
__all__ = [
    "genomics_tasks",
    "embedding_lookup",
    "classification_scores",
    "grouped_stratified_split",
    "kmer_features",
    "load_task",
    "positional_one_hot",
]


def _check_frozen_encoders(frozen_encoders) -> dict:
    """Return ``frozen_encoders`` as a dict ``name -> callable | DnaCheckpointModel``.

    A checkpoint directory (``str``/``Path``) is loaded here (validation), so a
    bad entry is refused before any task runs, with the entry named.
    """
    import os
    from collections.abc import Mapping
    from pathlib import Path

    from ._common import resolve_encoder
    from ._dna_checkpoint import is_dna_checkpoint

    reserved = [*METHODS, ENSEMBLE]
    if frozen_encoders is None:
        return {}
    if not isinstance(frozen_encoders, Mapping):
        kind = type(frozen_encoders).__name__
        raise DfmInputError(
            f"frozen_encoders must be a mapping name -> callable or DNA checkpoint, e.g. "
            f"{{'dnabert2': lookup}}, got a {kind}. Give each encoder the name it is to be "
            "reported under (the names are the rows of the results table)."
        )
    out = {}
    for name, fn in frozen_encoders.items():
        if not isinstance(name, str) or not name.strip():
            raise DfmInputError(
                f"frozen_encoders: the name {name!r} must be a non-empty string (the row name "
                "in the results table)."
            )
        if name in reserved:
            raise DfmInputError(
                f"frozen_encoders: the name {name!r} is taken by a built-in method; use "
                f"new names (not one of {reserved})."
            )
        if isinstance(fn, (str, os.PathLike)):
            if not Path(fn).is_dir():
                raise DfmInputError(
                    f"frozen_encoders[{name!r}] = {os.fspath(fn)!r} is not a checkpoint "
                    "directory: pass a DNA checkpoint directory (Nucleotide Transformer, "
                    "GENERator), a model from dfm.models.load_checkpoint, or a callable that "
                    "maps a list of sequences to an (n, d) array (e.g. "
                    "dfm.tl.embedding_lookup(...) over imported embeddings)."
                )
            fn, _ = resolve_encoder(fn)
            if not is_dna_checkpoint(fn):
                raise DfmInputError(
                    f"frozen_encoders[{name!r}] is a saved {type(fn).__name__}, not a DNA "
                    "checkpoint: pass a diffbio_sc SequenceEncoder as encoder= (scored as "
                    "'frozen_probe' and 'fine_tuned')."
                )
        if not is_dna_checkpoint(fn) and not callable(fn):
            raise DfmInputError(
                f"frozen_encoders[{name!r}] is a {type(fn).__name__}, not a callable or a DNA "
                "checkpoint: pass a function that maps a list of sequences to an (n, d) array, "
                "e.g. dfm.tl.embedding_lookup(...) over imported embeddings, a model from "
                "dfm.models.load_checkpoint, or its directory."
            )
        out[name] = fn
    return out


def _frozen_embed(
    enc, seqs, names, batch_size: int, task_info: dict, name: str, show_bar: bool = False
) -> np.ndarray:
    """Embeddings of a frozen encoder (a callable, or a DNA checkpoint as embed_sequences runs it)."""
    from ._common import run_with_bar, sequence_embedder
    from ._dna_checkpoint import embed_with_checkpoint, is_dna_checkpoint, max_window

    if not is_dna_checkpoint(enc):
        embedder = sequence_embedder(enc, reverse_complement=None, batch_size=batch_size)
        return run_with_bar(embedder, seqs, show=show_bar, desc=name)
    largest = max_window(enc)
    window = largest if max(len(s) for s in seqs) > largest else None
    stride = max(1, largest // 2) if window is not None else None
    emb, runner, n_pieces = embed_with_checkpoint(
        enc,
        seqs,
        names,
        reverse_complement="average",
        batch_size=batch_size,
        window=window,
        stride=stride,
        progress_bar=show_bar,
        desc=name,
    )
    if not np.isfinite(emb).all():
        raise FloatingPointError(f"frozen_encoders[{name!r}] produced non-finite embeddings.")
    task_info.setdefault("frozen_encoders", {})[name] = {
        "reverse_complement": "average",
        "window": window,
        "stride": stride,
        "n_windows": int(n_pieces),
        "max_piece_tokens": int(runner.max_piece_tokens),
    }
    return emb


def _model_name(model) -> str:
    """Return the checkpoint's name: its Hub repository (and subfolder), else its folder."""
    hub = model.hub or {}
    if hub.get("repo_id"):
        sub = hub.get("subfolder")
        return f"{hub['repo_id']}/{sub}" if sub else str(hub["repo_id"])
    return Path(model.path).name


def _frozen_record(enc, batch_size: int):
    """Plain-data record of a frozen encoder for the report."""
    from ...models._adapters import SequenceAdapter
    from ._dna_checkpoint import family_name, is_dna_checkpoint
    from ._embed import _checkpoint_entry

    if not is_dna_checkpoint(enc):
        return getattr(enc, "__qualname__", type(enc).__name__)
    runner = SequenceAdapter(enc, reverse_complement="average", batch_size=batch_size)
    entry = _checkpoint_entry(enc, runner, reverse_complement="average", model_path=None)
    name = _model_name(enc)
    return {
        "model": f"{family_name(enc)} {name}",
        "model_name": name,
        **entry,
        "window_rule": "sequences longer than max_window bases are cut into windows of "
        "max_window bases, stride max_window // 2 (length-weighted mean), as in "
        "embed_sequences(window=)",
    }


def genomics_tasks(
    tasks=None,
    *,
    data=None,
    label_key: str = "label",
    split_key: str | None = None,
    mod: str | None = "dna",
    sequence_key: str = "sequence",
    task_name: str = "user",
    methods=METHODS,
    encoder=None,
    config=None,
    data_dir: str | Path | None = None,
    test_fraction: float = 0.2,
    max_per_class: int | None = None,
    pretrain_epochs: int | None = None,
    finetune_epochs: int = 20,
    finetune_seeds: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress_bar: bool | None = None,
    frozen_encoders=None,
) -> pd.DataFrame:
    """Score a sequence encoder and two baselines on real genomics tasks.

    Parameters
    ----------
    tasks
        Task names among ``'splice_junctions'``, ``'promoters_mouse_tata'`` and
        ``'promoters_ecoli'`` (module docstring), or one name; ``None``: all
        three (without ``data``).
    data
        The user's own labelled sequences instead of the bundled tasks: an
        AnnData of sequences (as :func:`diffbio_sc.io.read_fasta` returns,
        sequences in ``.obs[sequence_key]``) or a MuData whose ``mod`` holds
        them. They are checked as :func:`~diffbio_sc.tl.embed_sequences`
        checks them (DNA/IUPAC symbols, upper-cased; non-empty; unique ids)
        and form one task named ``task_name``. ``data`` is only read.
    label_key
        ``.obs`` column of ``data`` with each sequence's class (no missing
        values, at least two classes).
    split_key
        ``.obs`` column of ``data`` with ``'train'`` or ``'test'`` per row,
        used exactly as given (every class needs a row on each side; identical
        sequences on both sides are counted in the report as
        ``n_identical_across_split``). ``None``: the seeded split of the
        bundled tasks (``test_fraction`` of each class's distinct sequences in
        the test part, identical sequences on one side; every class needs at
        least two distinct sequences).
    mod
        Modality of a MuData ``data`` holding the sequences (default ``'dna'``;
        with an AnnData, another value is an error).
    sequence_key
        ``.obs`` column of ``data`` with the sequences.
    task_name
        Name of the user's task: the ``<task>`` of the metric names and the
        key of ``report['tasks']``.
    methods
        Subset of ``'frozen_probe'``, ``'fine_tuned'``, ``'kmer_logreg'``,
        ``'onehot_logreg'``.
    encoder
        A :class:`~diffbio_sc.models.SequenceEncoder` (or a saved-model path)
        used frozen for the probe and as the start of fine-tuning; ``None``
        pretrains one per task on its training sequences (masked-language
        model, :func:`~diffbio_sc.tl.pretrain_sequences`) from ``config``.
    config
        :class:`~diffbio_sc.models.SequenceEncoderConfig` for ``encoder=None``;
        ``None``: a small CPU-sized encoder (hidden 64, 2 layers, 4 heads,
        intermediate 256, ``max_length`` 256, mean pooling, strand-specific;
        the tasks' sequences are oriented).
    data_dir
        Folder with the task files; ``None`` uses ``../shared/data/dna``.
    test_fraction
        Fraction of each class's distinct sequences in the test part of the
        seeded split (default 0.2; not used with ``split_key``).
    max_per_class
        Keep at most this many sequences per class (seeded), for quick runs.
    pretrain_epochs, finetune_epochs
        Epochs of masked-language pretraining (``None``: the default budget;
        ``0``: none, the encoder starts from a seeded random initialisation)
        and of fine-tuning.
    finetune_seeds
        Number of fine-tuned models (seeds ``seed``, ``seed + 1``, ...). With
        more than one, the table gains ``fine_tuned_ensemble`` (the mean of
        the members' class probabilities); ``fine_tuned`` stays the first
        member alone. Every member is early-stopped on the same held-out tenth
        of the training part. From a random start (``pretrain_epochs=0``)
        member ``j`` also starts from its own random encoder (seed ``seed +
        j``); a pretrained or given encoder is the common start. Costs
        ``finetune_seeds`` times the fine-tuning time, so the default is a
        single model; ``finetune_seeds=3`` is the measured recipe (lower
        validation loss than the single model on all three tasks, and the
        default of ``benchmarks/bench_sequence.py``).
    batch_size, learning_rate
        Minibatch size and peak learning rate of pretraining and fine-tuning.
    seed
        Seeds the split, subsampling, pretraining, fine-tuning and the probes.
    progress_bar
        Show training bars and, per batch, the embedding bars of the frozen
        encoders and of ``'frozen_probe'``; ``None`` follows
        ``dfm.settings.progress_bar``.
    frozen_encoders
        Optional mapping ``name -> encoder``, each scored with the same
        logistic-regression probe as ``frozen_probe`` under its own name. An
        encoder is a callable mapping a list of sequences to an ``(n, d)``
        array (a frozen in-process encoder, or a lookup of imported
        embeddings, e.g. DNABERT-2 vectors read with
        :func:`diffbio_sc.tl.load_embeddings`, by sequence;
        ``adapter_mode='frozen_encoder'``), or a published DNA checkpoint
        (Nucleotide Transformer v1/v2, GENERator): a
        :class:`~diffbio_sc.models._dna_checkpoints.DnaCheckpointModel` from
        :func:`~diffbio_sc.models.load_checkpoint` or its directory, loaded
        before any task runs. A checkpoint embeds through the code path of
        :func:`~diffbio_sc.tl.embed_sequences` (``adapter_mode='checkpoint'``)
        with ``reverse_complement='average'``, the model's own pooling and, when
        a task has sequences longer than the largest window that fits the
        context (``max_window`` bases), windows of ``max_window`` bases with
        stride ``max_window // 2``; it reads only its own alphabet (``ACGTN``
        NT, ``ACGT`` GENERator and DNABERT-2), and another symbol is an error naming the
        sequence and position.

    Returns
    -------
    pandas.DataFrame
        The tidy table of :func:`diffbio_sc.tl.benchmark` (columns
        ``embedding`` = method, ``metric`` = ``<task>_<score>`` for the scores
        ``accuracy``, ``macro_f1``, ``mcc``, ``auroc``, ``group`` =
        ``'annotation'``, ``value``, ``sd`` = NaN: one split), plottable with
        :func:`diffbio_sc.pl.benchmark`. ``df.attrs['report']`` holds the
        provenance: per task the dataset source, ``data='real'``, files, class
        counts, split sizes and the number of identical sequences grouped, the
        encoder (config, weights digest, how it was obtained, its training
        summaries), parameters, seeds, timings, and ``scores`` (the table as
        columns, so the report itself can be plotted). Fine-tuning entries
        hold ``validation_scores`` (accuracy, macro-F1, MCC, AUROC and the
        cross-entropy ``loss`` on the held-out tenth of the training part: the
        figures to choose recipes by, never the test part); with
        ``finetune_seeds > 1`` also ``fine_tuning_members`` (per seed) and
        ``fine_tuned_ensemble`` (seeds, validation scores).
        ``report['frozen_encoders'][name]`` is the callable's name, or for a
        checkpoint its record: ``model`` (family and name, e.g.
        ``'nucleotide_transformer_v1 nucleotide-transformer-500m-human-ref'``),
        ``model_name`` (Hub repository or directory name), ``model_family``,
        ``artifact_sha256`` / ``checkpoint_sha256`` (weights), ``vocab_sha256``,
        ``checkpoint_path``, ``hub``, tokenizer, pooling, ``max_tokens``,
        ``max_window`` and the fields of ``embed_sequences``' record; per
        task, ``report['tasks'][task]['frozen_encoders'][name]`` holds the
        ``window``, ``stride`` (``None`` when no sequence needed windows),
        ``n_windows`` and ``max_piece_tokens`` (largest token count of a
        piece). With ``data``, the task entry records
        ``data='user'``, the keys, class counts and ``split`` (how it was made).

    Raises
    ------
    DfmInputError
        For unknown tasks or methods, bad frozen encoders, bad numbers and,
        with ``data``: a missing sequence, label or split column, missing
        labels, a single class, split values other than ``'train'``/``'test'``
        (naming them), a class without rows on one side of the given split or
        with fewer than two distinct sequences for the seeded one (with the
        counts), and invalid sequence symbols (naming the sequence). All are
        raised before any model is trained; ``data`` is never modified.
    """
    from ..._settings import settings
    from ..._validate import check_bool
    from ...models._sequence import SequenceEncoder, SequenceEncoderConfig
    from ._common import check_lengths, resolve_encoder, run_with_bar, token_counts
    from ._dna_checkpoint import check_model_alphabet, is_dna_checkpoint

    # ---------------------------------------------------------------- validate
    show_bar = (
        settings.progress_bar if progress_bar is None else check_bool("progress_bar", progress_bar)
    )
    user = None
    if data is not None:
        if tasks is not None:
            raise DfmInputError(
                f"Pass either tasks={tasks!r} (the bundled tasks) or data= (your own labelled "
                "sequences), not both."
            )
        if data_dir is not None:
            raise DfmInputError("data_dir= locates the bundled tasks; it is unused with data=.")
        check_key("task_name", task_name)
        check_key("label_key", label_key)
        check_key("sequence_key", sequence_key)
        check_key("split_key", split_key, allow_none=True)
        if task_name in TASKS:
            raise DfmInputError(
                f"task_name={task_name!r} is the name of a bundled task; name your task "
                "differently (e.g. the default 'user')."
            )
        check_mod(data, mod, _keys.SEQUENCE_MOD)
        user = load_user_task(
            data,
            mod=mod,
            sequence_key=sequence_key,
            label_key=label_key,
            split_key=split_key,
            task_name=task_name,
        )
        task_list = [task_name]
    else:
        task_list = (
            list(TASKS) if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
        )
        bad = [t for t in task_list if t not in TASKS]
        if bad or not task_list:
            raise DfmInputError(f"Unknown task(s) {bad or task_list}; available: {list(TASKS)}.")
    frozen = _check_frozen_encoders(frozen_encoders)
    method_list = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in method_list if m not in METHODS]
    if bad or not method_list:
        raise DfmInputError(f"Unknown method(s) {bad or method_list}; available: {list(METHODS)}.")
    test_fraction = check_float(
        "test_fraction", test_fraction, minimum=0.0, strict_min=True, maximum=0.5
    )
    max_per_class = check_int("max_per_class", max_per_class, minimum=4, allow_none=True)
    pretrain_epochs = check_int("pretrain_epochs", pretrain_epochs, minimum=0, allow_none=True)
    finetune_epochs = check_int("finetune_epochs", finetune_epochs, minimum=1)
    finetune_seeds = check_int("finetune_seeds", finetune_seeds, minimum=1)
    if finetune_seeds > 1 and "fine_tuned" not in method_list:
        raise DfmInputError(
            f"finetune_seeds={finetune_seeds} asks for a seed ensemble of fine-tuned encoders; "
            "add 'fine_tuned' to methods (or leave finetune_seeds=1)."
        )
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_float("learning_rate", learning_rate, minimum=0.0, strict_min=True)
    seed = check_seed(seed)
    encoder, model_path = resolve_encoder(encoder)
    if encoder is not None and not isinstance(encoder, SequenceEncoder):
        raise TypeError(
            f"encoder must be None, a SequenceEncoder or a saved-model path, got "
            f"{type(encoder).__name__}."
        )
    if config is None:
        config = SequenceEncoderConfig(
            hidden_dim=64,
            num_layers=2,
            num_heads=4,
            intermediate_dim=256,
            max_length=256,
            dropout=0.1,
        )
    elif not isinstance(config, SequenceEncoderConfig):
        raise TypeError(f"config must be a SequenceEncoderConfig, got {type(config).__name__}.")
    needs_encoder = any(m in method_list for m in ("frozen_probe", "fine_tuned"))

    rows = []
    report_tasks = {}
    with timed(f"genomics tasks {task_list}"):
        for task in task_list:
            t0 = time.perf_counter()
            if user is None:
                seqs_all, labels_all, info = load_task(task, data_dir)
                split_all, names_all = None, [f"row{i}" for i in range(len(seqs_all))]
            else:
                seqs_all, labels_all, split_all, names_all, info = user
            keep = subsample(labels_all, max_per_class, seed)
            seqs = [seqs_all[i] for i in keep]
            names = [names_all[i] for i in keep]
            classes, y = np.unique(labels_all[keep], return_inverse=True)
            if split_all is not None:
                check_split_classes(labels_all[keep], split_all[keep], split_key)
                test_idx = np.flatnonzero(split_all[keep])
                train_idx = np.flatnonzero(~split_all[keep])
                split_how = f"given by .obs[{split_key!r}]"
            else:
                if user is not None:
                    check_splittable(seqs, labels_all[keep])
                train_idx, test_idx = grouped_stratified_split(
                    seqs, labels_all[keep], test_fraction=test_fraction, seed=seed
                )
                split_how = "seeded, stratified by class, identical sequences on one side"
            for enc in frozen.values():  # before any work: symbols the model reads
                if is_dna_checkpoint(enc):
                    check_model_alphabet(enc, seqs, names)
            n_distinct = len(set(seqs))
            timings: dict[str, float] = {}
            task_info = {
                **info,
                "classes": [str(c) for c in classes],
                "n_used": len(seqs),
                "n_train": int(train_idx.size),
                "n_test": int(test_idx.size),
                "n_identical_grouped": int(len(seqs) - n_distinct),
                "split": split_how,
            }
            if split_all is not None:
                both = set(seqs[i] for i in train_idx) & set(seqs[i] for i in test_idx)
                task_info["n_identical_across_split"] = int(sum(seqs[i] in both for i in test_idx))
            probas: dict[str, np.ndarray] = {}
            if "kmer_logreg" in method_list:
                t = time.perf_counter()
                X = kmer_features(seqs)
                probas["kmer_logreg"] = _fit_predict_logreg(
                    X[train_idx], y[train_idx], X[test_idx], seed=seed, scale="maxabs"
                )
                timings["kmer_logreg"] = time.perf_counter() - t
            if "onehot_logreg" in method_list:
                t = time.perf_counter()
                X = positional_one_hot(seqs, max(len(s) for s in seqs))
                probas["onehot_logreg"] = _fit_predict_logreg(
                    X[train_idx], y[train_idx], X[test_idx], seed=seed
                )
                timings["onehot_logreg"] = time.perf_counter() - t
            for name, fn in frozen.items():  # before training: their errors come early
                t = time.perf_counter()
                emb = _frozen_embed(fn, seqs, names, batch_size, task_info, name, show_bar)
                probas[name] = _fit_predict_logreg(
                    emb[train_idx], y[train_idx], emb[test_idx], seed=seed
                )
                timings[name] = time.perf_counter() - t
            if needs_encoder:
                # lengths checked before any training
                enc_cfg = encoder.config if encoder is not None else config
                tok = enc_cfg.get_tokenizer()
                counts = token_counts(tok, seqs, add_cls=False)
                check_lengths(
                    counts,
                    enc_cfg.max_sequence_tokens,
                    names,
                    what=f"the encoder (task {task!r})",
                )
                width = int(counts.max())
                enc, how = encoder, ("given" if model_path is None else f"loaded from {model_path}")
                if enc is None and pretrain_epochs == 0:
                    from flax import nnx

                    enc = SequenceEncoder(config, rngs=nnx.Rngs(params=seed))
                    how = f"random initialisation (seed {seed}), no pretraining"
                elif enc is None:
                    from ...io._fasta import sequences_to_adata
                    from ._pretrain import pretrain_sequences

                    t = time.perf_counter()
                    train_ad = sequences_to_adata(
                        [seqs[i] for i in train_idx], ids=[f"s{i}" for i in train_idx]
                    )
                    enc = pretrain_sequences(
                        train_ad,
                        config=config,
                        epochs=pretrain_epochs,
                        batch_size=batch_size,
                        learning_rate=learning_rate,
                        seed=seed,
                        progress_bar=progress_bar,
                    )
                    how = "pretrained (masked-language model) on this task's training sequences"
                    timings["pretrain"] = time.perf_counter() - t
                tokens = task_tokens(enc.config, seqs, width)
                task_info["encoder"] = {
                    "how": how,
                    "config": enc.config.to_dict(),
                    "weights_sha256": enc.weights_sha256(),
                    "training": enc.metadata.get("training", {}),
                }
                if "frozen_probe" in method_list:
                    from ...models._adapters import SequenceAdapter

                    t = time.perf_counter()
                    runner = SequenceAdapter(
                        enc,
                        reverse_complement=enc.config.reverse_complement,
                        batch_size=batch_size,
                    )
                    emb = run_with_bar(runner, seqs, show=show_bar, desc="frozen_probe")
                    probas["frozen_probe"] = _fit_predict_logreg(
                        emb[train_idx], y[train_idx], emb[test_idx], seed=seed
                    )
                    timings["frozen_probe"] = time.perf_counter() - t
                if "fine_tuned" in method_list:
                    t = time.perf_counter()
                    fit_idx, val_idx = finetune_split(train_idx, seed)
                    members, test_p, val_p = [], [], []
                    for j in range(finetune_seeds):
                        start = enc
                        if j and how.startswith("random initialisation"):
                            from flax import nnx

                            start = SequenceEncoder(config, rngs=nnx.Rngs(params=seed + j))
                        clf, res = fine_tune(
                            start,
                            tokens,
                            y,
                            fit_idx,
                            val_idx,
                            n_classes=len(classes),
                            epochs=finetune_epochs,
                            batch_size=batch_size,
                            learning_rate=learning_rate,
                            seed=seed + j,
                            progress_bar=progress_bar,
                        )
                        test_p.append(
                            predict_proba(
                                clf, {k: v[test_idx] for k, v in tokens.items()}, batch_size
                            )
                        )
                        val_p.append(
                            predict_proba(
                                clf, {k: v[val_idx] for k, v in tokens.items()}, batch_size
                            )
                        )
                        members.append(
                            {
                                "seed": seed + j,
                                **res.summary,
                                "history": res.history,
                                "validation_scores": validation_scores(y[val_idx], val_p[-1]),
                            }
                        )
                    probas["fine_tuned"] = test_p[0]
                    task_info["fine_tuning"] = {**members[0], "n_validation": int(val_idx.size)}
                    if finetune_seeds > 1:
                        probas[ENSEMBLE] = np.mean(test_p, axis=0)
                        task_info["fine_tuning_members"] = members
                        task_info[ENSEMBLE] = {
                            "seeds": [m["seed"] for m in members],
                            "combination": "mean of the members' class probabilities",
                            "validation_scores": validation_scores(
                                y[val_idx], np.mean(val_p, axis=0)
                            ),
                        }
                    timings["fine_tuned"] = time.perf_counter() - t
            reported = [*method_list, *([ENSEMBLE] if ENSEMBLE in probas else []), *frozen]
            for method in reported:
                scores = classification_scores(y[test_idx], probas[method])
                for score in SCORES:
                    rows.append((method, f"{task}_{score}", "annotation", scores[score], np.nan))
            timings["total"] = time.perf_counter() - t0
            task_info["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
            report_tasks[task] = task_info
            logger.info("    %s done in %.1fs", task, timings["total"])

    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    df["value"] = df["value"].astype(float)
    df["sd"] = df["sd"].astype(float)
    df.attrs["report"] = {
        "created_by": _uns.provenance("tl.genomics_tasks"),
        "tasks": report_tasks,
        "methods": method_list,
        "frozen_encoders": {k: _frozen_record(v, batch_size) for k, v in frozen.items()},
        "params": {
            "test_fraction": float(test_fraction),
            "max_per_class": max_per_class,
            "pretrain_epochs": pretrain_epochs,
            "finetune_epochs": int(finetune_epochs),
            "finetune_seeds": int(finetune_seeds),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "kmer_ks": [3, 4, 5, 6],
            "probe": "standardised features + sklearn LogisticRegression(C=1, max_iter=3000)",
        },
        "seeds": {"seed": int(seed)},
        # Plain lists, not arrays: pandas compares ``attrs`` when frames are
        # concatenated or printed, and an array there makes that comparison fail.
        "scores": {c: df[c].tolist() for c in RESULT_COLUMNS},
        "higher_is_better": True,
    }
    return df
