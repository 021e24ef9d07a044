"""``dfm.tl.pretrain_sequences``: masked-language-model pretraining of a sequence encoder."""

from __future__ import annotations

import math
import time

import numpy as np

from ... import _keys
from ..._logging import logger, timed
from ..._validate import check_float, check_int, check_key, check_seed
from .._target import check_mod
from ._common import check_lengths, check_sequences, resolve_target, token_counts

#: Default budget: optimizer steps aimed for when ``epochs=None``.
DEFAULT_STEPS = 300
#: Bounds on the automatic number of epochs.
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 2, 100


def _mlm_loss(model, batch, key):
    """Trainer loss: masked-token cross-entropy (module level, so steps compile once)."""
    return model.loss(batch["ids"], batch["valid"], key=key, weight=batch["weight"])


def tokenize_for_training(config, sequences, names) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``(n, T)`` and validity of ``sequences`` at one fixed width for the trainer.

    ``T`` is the smallest bucket width that holds the longest sequence (so
    repeated runs on similar data reuse the compiled steps).
    """
    from ...models._runner import SEQUENCE_BUCKETS, bucket_edges

    tok = config.get_tokenizer()
    counts = token_counts(tok, sequences, add_cls=False)
    check_lengths(counts, config.max_sequence_tokens, names)
    widths = np.asarray(bucket_edges(config.max_sequence_tokens, **SEQUENCE_BUCKETS))
    width = int(widths[np.searchsorted(widths, counts.max())])
    ids = np.zeros((len(sequences), width), np.int32)
    valid = np.zeros((len(sequences), width), bool)
    for s in range(0, len(sequences), 4096):
        part = list(sequences[s : s + 4096])
        ids[s : s + len(part)], valid[s : s + len(part)] = tok.encode(part, max_length=width)
    return ids, valid


def auto_epochs(n_train: int, batch_size: int, steps: int = DEFAULT_STEPS) -> int:
    """Epochs for about ``steps`` optimizer steps (within the automatic bounds)."""
    per_epoch = max(n_train // max(min(batch_size, n_train), 1), 1)
    return int(np.clip(math.ceil(steps / per_epoch), MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS))


def pretrain_sequences(
    data,
    *,
    mod: str | None = _keys.SEQUENCE_MOD,
    config=None,
    sequence_key: str = _keys.SEQUENCE_KEY,
    epochs: int | None = None,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.05,
    grad_clip: float = 1.0,
    validation_fraction: float = 0.1,
    early_stopping_patience: int | None = 5,
    seed: int = 0,
    progress_bar: bool | None = None,
):
    """Pretrain a :class:`~diffbio_sc.models.SequenceEncoder` by masked-language modelling.

    Each training sequence hides ``config.mask_ratio`` (15 %) of its maskable
    tokens (bases, or k-mer tokens other than ``<unk>``; at least one) behind a
    learned mask state, and the encoder predicts their identities
    (cross-entropy). Training runs on the shared trainer
    (:func:`diffbio_sc.models.fit`): AdamW with warmup and cosine decay,
    gradient clipping, a seeded held-out fraction for early stopping that
    restores the best weights, a tqdm bar, data parallelism over the JAX
    devices. With ``reverse_complement='equivariant'`` both strands are
    trained through the shared weights.

    Parameters
    ----------
    data
        An AnnData of sequences (:func:`diffbio_sc.io.read_fasta`) or a MuData
        with ``mod``. Not modified.
    mod
        Modality of a MuData (default ``'dna'``, as in
        :func:`~diffbio_sc.tl.embed_sequences`); with an AnnData, a value other
        than the default is an error.
    config
        A :class:`~diffbio_sc.models.SequenceEncoderConfig`; ``None`` uses the
        defaults (DNA, single-nucleotide tokens, 256 wide, 4 layers).
    sequence_key
        ``.obs`` column with the sequences.
    epochs
        Passes over the training sequences; ``None`` aims for about 300
        optimizer steps (2 to 100 epochs).
    batch_size
        Sequences per optimizer step.
    learning_rate, weight_decay, warmup_fraction, grad_clip
        Optimizer settings (see :class:`diffbio_sc.models.TrainConfig`).
    validation_fraction
        Held-out fraction for the validation loss and early stopping (0: none).
    early_stopping_patience
        Epochs without a better validation loss before stopping; ``None``
        runs every epoch.
    seed
        Seeds initialisation, the split, shuffling, masking and dropout: the
        same seed gives the same weights.
    progress_bar
        Show a tqdm bar; ``None`` follows ``dfm.settings.progress_bar``.

    Returns
    -------
    The trained encoder (eval mode) with ``history`` (``train_loss``,
    ``val_loss``, ``train_accuracy``) and ``metadata`` (``tokenizer``,
    ``training`` summary, ``n_sequences``). Save it with ``encoder.save(path)``
    and reload it with :func:`diffbio_sc.models.load`.
    """
    from flax import nnx

    from ..._validate import DfmInputError
    from ...models._sequence import SequenceEncoder, SequenceEncoderConfig
    from ...models._train import TrainConfig, fit

    # ---------------------------------------------------------------- validate
    check_mod(data, mod, _keys.SEQUENCE_MOD)
    target = resolve_target(data, mod).adata
    if config is None:
        config = SequenceEncoderConfig()
    elif not isinstance(config, SequenceEncoderConfig):
        raise TypeError(
            f"config must be a SequenceEncoderConfig or None, got {type(config).__name__}."
        )
    check_key("sequence_key", sequence_key)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1, allow_none=True)
    seed = check_seed(seed)
    validation_fraction = check_float(
        "validation_fraction", validation_fraction, minimum=0.0, maximum=0.9
    )
    seqs = check_sequences(target, alphabet=config.alphabet, sequence_key=sequence_key)
    n = len(seqs)
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise DfmInputError(
            f"Too few sequences ({n}) for validation_fraction={validation_fraction}; lower it."
        )

    with timed("pretraining the sequence encoder (masked-language model)") as info:
        start = time.perf_counter()
        ids, valid = tokenize_for_training(config, seqs, target.obs_names)
        perm = np.random.default_rng(seed).permutation(n)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        if epochs is None:
            epochs = auto_epochs(train_idx.size, batch_size)
        tcfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup_fraction=warmup_fraction,
            grad_clip=grad_clip,
            patience=early_stopping_patience,
            seed=seed,
            progress_bar=progress_bar,
            desc="pretrain_sequences",
        )
        model = SequenceEncoder(config, rngs=nnx.Rngs(params=seed))
        result = fit(
            model,
            _mlm_loss,
            {"ids": ids, "valid": valid},
            train_idx=train_idx,
            val_idx=val_idx if n_val else None,
            config=tcfg,
        )
        summary = dict(result.summary)
        summary.update(
            {
                "objective": "masked language model (masked-token cross-entropy)",
                "mask_ratio": float(config.mask_ratio),
                "n_sequences": int(n),
                "n_train": int(train_idx.size),
                "n_val": int(val_idx.size),
                "token_width": int(ids.shape[1]),
                "epochs": int(epochs),
                "learning_rate": float(learning_rate),
                "weight_decay": float(weight_decay),
                "validation_fraction": float(validation_fraction),
                "early_stopping_patience": early_stopping_patience,
                "seed": int(seed),
                "wall_s": round(time.perf_counter() - start, 3),
            }
        )
        model.history = result.history
        model.metadata = {
            "tokenizer": config.get_tokenizer().describe(),
            "training": summary,
            "sequence_key": sequence_key,
        }
        info["added"] = []
        logger.info(
            "    trained %d epochs (%d steps), best val loss %s",
            summary.get("epochs_run", epochs),
            summary.get("steps", 0),
            summary.get("best_val_loss"),
        )
    return model
