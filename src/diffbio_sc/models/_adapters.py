"""Forward adapters: the model-specific part of :class:`~diffbio_sc.models._runner.BucketedRunner`.

Each adapter is a module-level function ``fn(static, params, *arrays)`` (so its
compiled code is shared by every runner built for the same model and shapes)
that merges an NNX graph with its parameters and returns pooled vectors of a
right-padded batch:

* :func:`masked_expression_forward`: the native single-cell model
  (``tl.embed``), tokens and values.
* :func:`sequence_encoder_forward`: the native :class:`SequenceEncoder`
  (tokens and padding mask; the reverse strand's for ``'average'`` with k-mer
  tokenizers).
* :func:`dna_checkpoint_forward`: every DNA checkpoint family (Nucleotide
  Transformer, GENERator, DNABERT-2, and any other ``DnaCheckpointModel``
  whose module has ``hidden_states(ids)`` and ``pool(ids, states[, pooling=])``).

Geneformer and scGPT have theirs beside ``tl.embed_checkpoint``.

:class:`SequenceAdapter` joins a sequence model to the runner: it counts each
sequence's tokens (its bucket) and tokenizes just one batch at a time, at the
bucket's width.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np

from ..ops._sequence import reverse_complement
from ._runner import SEQUENCE_BUCKETS, BucketedRunner, bucket_edges, eval_split

__all__ = [
    "SequenceAdapter",
    "dna_checkpoint_forward",
    "masked_expression_forward",
    "masked_expression_runner",
    "sequence_encoder_forward",
    "token_counts",
]


def masked_expression_forward(graphdef, params, ids, vals):
    """Pooled cell embeddings of the native model (no masking, eval mode)."""
    from flax import nnx

    return nnx.merge(graphdef, params).embed(ids, vals)


def masked_expression_runner(model, batch_size: int, devices=None) -> BucketedRunner:
    """Return the runner of ``tl.embed``: batches of ``batch_size`` full-length cells' tokens.

    Buckets double in length (``32, 64, ...``, then ``max_tokens``): few
    shapes to compile for a model that is often small and run once.
    """
    graphdef, state = eval_split(model)
    max_tokens = int(model.config.max_tokens)
    return BucketedRunner(
        masked_expression_forward,
        state,
        static=graphdef,
        max_length=max_tokens,
        max_batch_tokens=int(batch_size) * max_tokens,
        edges=bucket_edges(max_tokens, growth=2.0),
        devices=devices,
    )


def sequence_encoder_forward(static, params, ids, valid, *rc):
    """Pooled embeddings of a :class:`SequenceEncoder`; ``static = (graphdef, mode)``."""
    from flax import nnx

    graphdef, mode = static
    rc_ids, rc_valid = rc if rc else (None, None)
    return nnx.merge(graphdef, params).embed(
        ids, valid, reverse_complement=mode, rc_inputs=rc_ids, rc_valid=rc_valid
    )


def dna_checkpoint_forward(static, params, ids):
    """Pooled last hidden layer of a DNA checkpoint; ``static = (graphdef, pooling)``.

    ``pooling`` is ``None`` for a module whose ``pool`` has a single rule.
    """
    from flax import nnx

    graphdef, pooling = static
    m = nnx.merge(graphdef, params)
    last = m.hidden_states(ids)[-1]
    if pooling is None:
        return m.pool(ids, last)
    return m.pool(ids, last, pooling=pooling)


def token_counts(tokenizer, sequences: Sequence[str], *, add_cls: bool) -> np.ndarray:
    """Tokens per sequence of a native tokenizer, ``<cls>`` included (exact for every one)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if tokenizer.name == "nt6":
        out = np.empty(len(sequences), np.int64)
        for start in range(0, len(sequences), 4096):
            part = list(sequences[start : start + 4096])
            out[start : start + len(part)] = tokenizer.n_tokens(
                None, add_cls=add_cls, sequences=part
            )
        return out
    return tokenizer.n_tokens(lengths, add_cls=add_cls)


def _pad_to(arr: np.ndarray, width: int, value) -> np.ndarray:
    """Right-pad the columns of ``arr`` to ``width`` with ``value``."""
    if arr.shape[1] == width:
        return arr
    out = np.full((arr.shape[0], width, *arr.shape[2:]), value, dtype=arr.dtype)
    out[:, : arr.shape[1]] = arr
    return out


class SequenceAdapter:
    """A sequence model on the runner: token counts, per-batch tokenization, pooled vectors.

    Parameters
    ----------
    model
        A :class:`~diffbio_sc.models.SequenceEncoder` (run in eval mode; the
        caller's model is left in its mode) or a
        :class:`~diffbio_sc.models._dna_checkpoints.DnaCheckpointModel`.
    reverse_complement
        ``None``, ``'average'`` or ``'equivariant'`` (a checkpoint: ``None``,
        ``'average'``, the mean of the pooled vectors of both strands, or
        ``'equivariant'``, one pass, for a strand-invariant model: Caduceus-PS).
    batch_size
        Rows per forward pass (a bucket's last batch is filled up with copies
        of its first row, discarded).
    pooling
        A checkpoint's pooling (``None``: the model's own).
    """

    def __init__(self, model, *, reverse_complement, batch_size: int, pooling=None, devices=None):
        from ._sequence import SequenceEncoder

        self.mode = reverse_complement
        self.batch_size = int(batch_size)
        self.native = isinstance(model, SequenceEncoder)
        if self.native:
            cfg = model.config
            self.config = cfg
            self.alphabet = cfg.alphabet
            self.tokenizer = cfg.get_tokenizer()
            self.max_tokens = int(cfg.max_sequence_tokens)
            self.n_dims = int(cfg.hidden_dim)
            self.pooling = cfg.pooling
            self.pad_id = 0
            # k-mer tokens of the reverse strand are not the reversed forward tokens
            self.rc_tokens = (
                self.mode == "average"
                and cfg.tokenizer != "char"
                and cfg.reverse_complement != "equivariant"
            )
            self.two_passes = False
            graphdef, state = eval_split(model)
            fn, static = sequence_encoder_forward, (graphdef, self.mode)
        else:
            self.alphabet = "dna"
            self.tokenizer = model.tokenizer
            self.max_tokens = int(model.max_tokens)
            self.n_dims = int(model.hidden_dim)
            self.pooling = model.pooling if pooling is None else pooling
            self.pad_id = int(self.tokenizer.pad_id)
            self.rc_tokens = False
            self.two_passes = self.mode == "average"
            graphdef, state = eval_split(model.module)
            takes = "pooling" in inspect.signature(model.module.pool).parameters
            fn, static = dna_checkpoint_forward, (graphdef, self.pooling if takes else None)
        self.edges = bucket_edges(self.max_tokens, **SEQUENCE_BUCKETS)
        self.runner = BucketedRunner(
            fn,
            state,
            static=static,
            max_length=self.max_tokens,
            batch_rows=self.batch_size,
            edges=self.edges,
            devices=devices,
        )

    @property
    def n_devices(self) -> int:
        """JAX devices the batches are split across."""
        return self.runner.n_devices

    def _count(self, seqs: list[str]) -> np.ndarray:
        if self.native:
            return token_counts(self.tokenizer, seqs, add_cls=False)
        return np.fromiter((len(self.tokenizer.tokens(s)) for s in seqs), np.int64, len(seqs))

    def counts(self, sequences: Sequence[str]) -> np.ndarray:
        """Tokens per sequence (the larger strand when both strands are tokenized)."""
        seqs = list(sequences)
        c = self._count(seqs)
        if self.rc_tokens or self.two_passes:
            c = np.maximum(c, self._count(reverse_complement(seqs, alphabet=self.alphabet)))
        return c

    def _encode(self, part: list[str], width: int) -> list[np.ndarray]:
        ids, valid = self.tokenizer.encode(part, max_length=width)
        return [_pad_to(np.asarray(ids), width, self.pad_id), _pad_to(np.asarray(valid), width, 0)]

    @property
    def passes(self) -> int:
        """Forward passes per sequence (2: both strands run separately), for progress totals."""
        return 2 if self.two_passes else 1

    def _strand(self, seqs: list[str], counts: np.ndarray, progress=None) -> np.ndarray:
        def make_batch(idx: np.ndarray, width: int) -> list[np.ndarray]:
            part = [seqs[i] for i in idx]
            ids, valid = self._encode(part, width)
            if not self.native:
                return [ids]
            if self.rc_tokens:
                return [
                    ids,
                    valid,
                    *self._encode(reverse_complement(part, alphabet=self.alphabet), width),
                ]
            return [ids, valid]

        return np.asarray(self.runner.run(counts, make_batch, progress=progress), np.float32)

    def __call__(
        self,
        sequences: Sequence[str],
        counts: np.ndarray | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """``(n, d)`` float32 pooled embeddings of ``sequences`` in their order.

        ``progress(k)`` is called after each batch with its number of
        sequences (``passes`` times ``len(sequences)`` in all).
        """
        seqs = list(sequences)
        if not seqs:
            return np.zeros((0, self.n_dims), np.float32)
        if counts is None:
            counts = self.counts(seqs)
        emb = self._strand(seqs, counts, progress)
        if self.two_passes:
            rc = reverse_complement(seqs, alphabet="dna")
            emb = 0.5 * (emb + self._strand(rc, counts, progress))
        return emb.astype(np.float32)
