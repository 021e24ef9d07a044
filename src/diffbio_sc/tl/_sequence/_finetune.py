"""Fine-tuning a sequence encoder with a classification head (``genomics_tasks``).

One fine-tuning split per task: a seeded tenth of the task's *training* part is
held out for early stopping and for the validation scores that choose recipes;
the test part is never seen here. With several seeds (a seed ensemble) every
member uses that same split, so the members' validation probabilities can be
averaged and scored like the ensemble's test probabilities.
"""

from __future__ import annotations

import numpy as np

from ._task_data import classification_scores


def _clf_loss(model, batch, key):
    """Trainer loss of the fine-tuned classifier (module level: compiled once)."""
    return model.loss(
        batch["ids"],
        batch["valid"],
        batch["label"],
        key=key,
        weight=batch["weight"],
        rc_inputs=batch.get("rc_ids"),
        rc_valid=batch.get("rc_valid"),
    )


_PREDICT: dict = {}


def predict_proba(model, tokens: dict, batch_size: int) -> np.ndarray:
    """Class probabilities in fixed-shape batches (eval mode).

    ``tokens``: ``ids``, ``valid`` and, for strand-averaging k-mer models,
    ``rc_ids``/``rc_valid``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ._common import pad_rows

    if "fn" not in _PREDICT:

        def fn(graphdef, state, ids, valid, rc_ids, rc_valid):
            logits = nnx.merge(graphdef, state)(ids, valid, rc_inputs=rc_ids, rc_valid=rc_valid)
            return jax.nn.softmax(logits, axis=-1)

        _PREDICT["fn"] = jax.jit(fn, static_argnums=0)
    model.eval()
    graphdef, state = nnx.split(model)
    n = tokens["ids"].shape[0]
    out = []
    for s in range(0, n, batch_size):
        part = {
            k: jnp.asarray(pad_rows(v[s : s + batch_size], batch_size)) for k, v in tokens.items()
        }
        p = _PREDICT["fn"](
            graphdef,
            state,
            part["ids"],
            part["valid"],
            part.get("rc_ids"),
            part.get("rc_valid"),
        )
        out.append(np.asarray(p, np.float64)[: min(batch_size, n - s)])
    return np.concatenate(out)


def task_tokens(config, seqs: list[str], width: int) -> dict[str, np.ndarray]:
    """Token ids and masks of the task's sequences for fine-tuning.

    Strand-averaging k-mer models (``reverse_complement='average'``) also get
    the tokenized reverse complements (``rc_ids``, ``rc_valid``), at one width
    that holds both strands.
    """
    from ...ops._sequence import reverse_complement
    from ._common import token_counts

    tok = config.get_tokenizer()
    rc = None
    if config.reverse_complement == "average" and config.tokenizer != "char":
        rc = reverse_complement(seqs, alphabet=config.alphabet)
        width = max(width, int(token_counts(tok, rc, add_cls=False).max()))
    ids, valid = tok.encode(seqs, max_length=width)
    out = {"ids": ids, "valid": valid}
    if rc is not None:
        out["rc_ids"], out["rc_valid"] = tok.encode(rc, max_length=width)
    return out


def finetune_split(train_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the training part into (fit, validation): a seeded tenth (at least 1) held out."""
    perm = np.random.default_rng(seed + 3).permutation(train_idx)
    n_val = max(1, int(round(0.1 * perm.size)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def validation_scores(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """:func:`classification_scores` plus ``loss`` (mean cross-entropy) on the validation rows.

    Scores that need more classes than the rows hold are NaN (tiny runs): MCC and
    macro-F1 with a single class present, AUROC unless every class is present.
    """
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(y_true.size), y_true], 1e-12, 1.0))))
    present = np.unique(y_true).size
    if present == proba.shape[1]:
        return {**classification_scores(y_true, proba), "loss": loss}
    from sklearn.metrics import f1_score, matthews_corrcoef

    pred = proba.argmax(axis=1)
    nan = float("nan")
    return {
        "accuracy": float(np.mean(pred == y_true)),
        "macro_f1": float(f1_score(y_true, pred, average="macro")) if present > 1 else nan,
        "mcc": float(matthews_corrcoef(y_true, pred)) if present > 1 else nan,
        "auroc": nan,
        "loss": loss,
    }


def fine_tune(
    encoder,
    tokens,
    y,
    fit_idx,
    val_idx,
    *,
    n_classes,
    epochs,
    batch_size,
    learning_rate,
    seed,
    progress_bar,
):
    """Train a :class:`SequenceClassifier` started from ``encoder``; return it and the result.

    ``seed`` seeds the head, shuffling and dropout; early stopping on ``val_idx``.
    """
    from flax import nnx

    from ...models._sequence import SequenceClassifier, SequenceClassifierConfig
    from ...models._train import TrainConfig, fit

    cfg = SequenceClassifierConfig(**encoder.config.to_dict(), n_classes=n_classes)
    clf = SequenceClassifier(cfg, rngs=nnx.Rngs(params=seed + 11))
    nnx.update(clf.encoder, nnx.state(encoder, nnx.Param))
    result = fit(
        clf,
        _clf_loss,
        {**tokens, "label": y.astype(np.int32)},
        train_idx=fit_idx,
        val_idx=val_idx,
        config=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            patience=max(3, epochs // 4),
            progress_bar=progress_bar,
            desc="fine-tune",
        ),
    )
    return clf, result
