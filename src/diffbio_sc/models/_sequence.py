"""A BERT-style DNA/RNA sequence encoder with reverse-complement handling (Flax NNX).

Input. With the single-nucleotide tokenizer (``tokenizer='char'``, the
default) a sequence enters as per-position base probabilities ``(B, L, 4)`` in
``ACGT`` (``ACGU``) order, through a linear projection: hard one-hot codes,
IUPAC codes spread over their bases (``N`` = 0.25 each) and *soft* one-hot
probabilities all take the same path, so gradients reach the input (sequence
design). Token ids of that tokenizer are accepted too and mapped to the same
probabilities first, so ids and one-hot give identical outputs. With k-mer
tokenizers (``'kmer'``, ``'nt6'``) token ids go through an embedding table.
Sinusoidal positions are added; an optional learned ``<cls>`` state is put
first; padding is removed exactly from attention (key bias ``-1e9``, whose
softmax weight underflows to 0) and from pooling (a masked mean).

Reverse complement (``config.reverse_complement``):

* ``None``: strand-specific (RNA default).
* ``'average'``: post-hoc conjoining. The pooled embeddings of the sequence
  and of its reverse complement are averaged (for k-mer tokenizers the caller
  passes the tokenized reverse complement, see :meth:`SequenceEncoder.embed`).
* ``'equivariant'``: parameter sharing in the Caduceus-PS manner. The
  reverse-complement strand runs through the same weights; its per-position
  outputs are flipped back along the length axis and combined with the
  forward ones, so per-position masked-base logits are RC-equivariant
  (``logits(rc(x)) = flip(complement(logits(x)))``) and the pooled embedding
  is exactly RC-invariant. Training (masked-language modelling, fine-tuning)
  runs through both strands. Needs ``tokenizer='char'`` (a k-mer
  tokenization of the reverse strand is not the reverse of the forward one).

With mean pooling and the same weights, ``'average'`` and ``'equivariant'``
give the same pooled vector; they differ in the per-position outputs and so in
what masked-language pretraining and fine-tuning learn.

Dropout is active in training mode (``model.train()``) when a PRNG key is
passed, off in evaluation mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..ops._sequence import CharTokenizer, flip_valid, reverse_complement_one_hot
from ._base import SavedModel, register_model
from ._layers import (
    TransformerBlock,
    cls_pool,
    masked_mean_pool,
    random_token_mask,
    sinusoidal_encoding,
    weights_to_bias,
)
from ._sequence_config import RC_MODES, SequenceClassifierConfig, SequenceEncoderConfig

__all__ = [
    "SequenceEncoderConfig",
    "SequenceEncoder",
    "SequenceClassifierConfig",
    "SequenceClassifier",
    "create_dna_encoder",
    "create_rna_encoder",
    "RC_MODES",
]


@functools.lru_cache(maxsize=4)
def _char_tables(alphabet: str) -> tuple[np.ndarray, np.ndarray]:
    """``(vocab, 4)`` base probabilities and ``(vocab,)`` base-index targets (-1: none)."""
    tok = CharTokenizer(alphabet)
    probs = tok.one_hot_table()
    target = np.where(probs.max(axis=1) == 1.0, probs.argmax(axis=1), -1).astype(np.int32)
    return probs, target


@register_model("sequence_encoder")
class SequenceEncoder(SavedModel):
    """Transformer encoder over nucleotide sequences.

    Parameters
    ----------
    config
        A :class:`SequenceEncoderConfig`.
    rngs
        ``nnx.Rngs`` for parameter initialisation.

    Notes
    -----
    Inputs are ``(inputs, valid)``: ``inputs`` is ``(B, L)`` int token ids or,
    with the ``char`` tokenizer, ``(B, L, 4)`` float base probabilities; ``valid``
    ``(B, L)`` bool marks real positions and must be a prefix of each row (right
    padding, as the tokenizers produce). ``<cls>`` is added inside the model.
    """

    config_class = SequenceEncoderConfig

    def __init__(self, config: SequenceEncoderConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        h = cfg.hidden_dim
        init = nnx.initializers.normal(0.02)
        if cfg.tokenizer == "char":
            self.base_proj = nnx.Linear(4, h, rngs=rngs)
            self.token_embed = None
        else:
            self.base_proj = None
            self.token_embed = nnx.Embed(cfg.vocab_size, h, embedding_init=init, rngs=rngs)
        self.mask_embed = nnx.Param(init(rngs.params(), (h,)))
        self.cls_embed = nnx.Param(init(rngs.params(), (h,))) if cfg.use_cls else None
        self.embed_norm = nnx.LayerNorm(h, rngs=rngs)
        self.embed_drop = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List(
            [
                TransformerBlock(h, cfg.num_heads, cfg.intermediate_dim, cfg.dropout, rngs=rngs)
                for _ in range(cfg.num_layers)
            ]
        )
        self.final_norm = nnx.LayerNorm(h, rngs=rngs)
        self.mlm_head = nnx.Linear(h, cfg.n_targets, rngs=rngs)
        self.eval()

    # ------------------------------------------------------------------ inputs
    def _features(self, inputs: jax.Array) -> jax.Array:
        """Per-position base probabilities (``char``) or token ids, as given."""
        inputs = jnp.asarray(inputs)
        if self.config.tokenizer == "char" and jnp.issubdtype(inputs.dtype, jnp.integer):
            probs, _ = _char_tables(self.config.alphabet)
            return jnp.asarray(probs)[inputs]
        if self.config.tokenizer == "char":
            if inputs.ndim != 3 or inputs.shape[-1] != 4:
                raise ValueError(
                    f"Base probabilities must be (batch, length, 4), got {inputs.shape}."
                )
            return inputs.astype(jnp.float32)
        if not jnp.issubdtype(inputs.dtype, jnp.integer) or inputs.ndim != 2:
            raise ValueError(
                f"A {self.config.tokenizer!r} encoder takes (batch, length) int token ids, got "
                f"{inputs.dtype} {inputs.shape}."
            )
        return inputs

    def targets(self, inputs: jax.Array, valid: jax.Array) -> jax.Array:
        """Masked-token targets ``(B, L)`` int: base index (``char``) or token id; -1: none.

        Positions without a single identity (ambiguity codes, ``<unk>``, padding)
        get -1 and are never masked.
        """
        inputs = jnp.asarray(inputs)
        if self.config.tokenizer == "char":
            if jnp.issubdtype(inputs.dtype, jnp.integer):
                _, target = _char_tables(self.config.alphabet)
                t = jnp.asarray(target)[inputs]
            else:
                t = jnp.where(inputs.max(axis=-1) >= 1.0, inputs.argmax(axis=-1), -1)
        else:
            tok = self.config.get_tokenizer()
            t = jnp.where(inputs >= len(tok.specials), inputs, -1)
        return jnp.where(valid, t, -1).astype(jnp.int32)

    # ------------------------------------------------------------------ one strand
    def _encode_strand(
        self,
        feat: jax.Array,
        valid: jax.Array,
        masked: jax.Array | None,
        key: jax.Array | None,
    ) -> jax.Array:
        """Token states ``(B, T, H)`` of one strand (``<cls>`` first when used)."""
        cfg = self.config
        if cfg.tokenizer == "char":
            x = self.base_proj(feat)
        else:
            x = self.token_embed(feat)
        if masked is not None:
            x = jnp.where(masked[..., None], self.mask_embed[...], x)
        b, t = valid.shape
        offset = int(cfg.use_cls)
        x = x + sinusoidal_encoding(jnp.arange(offset, t + offset), cfg.hidden_dim)
        weights = valid.astype(jnp.float32)
        if cfg.use_cls:
            cls = jnp.broadcast_to(
                self.cls_embed[...] + sinusoidal_encoding(jnp.zeros(()), cfg.hidden_dim),
                (b, 1, cfg.hidden_dim),
            )
            x = jnp.concatenate([cls, x], axis=1)
            weights = jnp.concatenate([jnp.ones((b, 1), jnp.float32), weights], axis=1)
        k0 = None
        keys: list = [None] * len(self.blocks)
        if key is not None and not self.embed_drop.deterministic:
            k0, *keys = jax.random.split(key, len(self.blocks) + 1)
        x = self.embed_drop(self.embed_norm(x), rngs=k0)
        bias = weights_to_bias(weights)
        for block, kb in zip(self.blocks, keys, strict=True):
            x = block(x, bias, kb)
        return self.final_norm(x)

    def _strands(self, inputs, valid, masked, key, mode):
        """Run the forward (and reverse) strand; return per-strand token states."""
        cfg = self.config
        valid = jnp.asarray(valid, bool)
        feat = self._features(inputs)
        if valid.shape != feat.shape[:2]:
            raise ValueError(f"valid has shape {valid.shape}, expected {feat.shape[:2]}.")
        kf = kr = None
        if key is not None:
            kf, kr = jax.random.split(key)
        fwd = self._encode_strand(feat, valid, masked, kf)
        if mode is None or (mode == "average" and cfg.tokenizer != "char"):
            return fwd, None
        lengths = valid.sum(axis=1)
        rc_feat = reverse_complement_one_hot(feat, lengths)
        rc_masked = None if masked is None else flip_valid(masked, lengths)
        rev = self._encode_strand(rc_feat, valid, rc_masked, kr)
        return fwd, rev

    def _pool(self, states: jax.Array, valid: jax.Array) -> jax.Array:
        if self.config.pooling == "cls":
            return cls_pool(states)
        seq = states[:, int(self.config.use_cls) :]
        return masked_mean_pool(seq, valid)

    # ------------------------------------------------------------------ public
    def __call__(
        self,
        inputs: jax.Array,
        valid: jax.Array,
        *,
        masked: jax.Array | None = None,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Per-position states and pooled embedding under ``config.reverse_complement``.

        Parameters
        ----------
        inputs, valid
            See the class notes.
        masked
            ``(B, L)`` bool, positions replaced by the mask state (training).
        key
            PRNG key for dropout (used in training mode only).

        Returns
        -------
        ``(states, pooled)``: ``(B, L, H)`` per-position states of the sequence
        (``<cls>`` excluded; for ``'equivariant'`` the mean of the forward and the
        flipped-back reverse strand) and the ``(B, H)`` pooled embedding.
        """
        mode = self.config.reverse_complement
        valid = jnp.asarray(valid, bool)
        fwd, rev = self._strands(inputs, valid, masked, key, mode)
        c = int(self.config.use_cls)
        if rev is None:
            return fwd[:, c:], self._pool(fwd, valid)
        pooled = 0.5 * (self._pool(fwd, valid) + self._pool(rev, valid))
        if mode == "equivariant":
            back = flip_valid(rev[:, c:], valid.sum(axis=1))
            return 0.5 * (fwd[:, c:] + back), pooled
        return fwd[:, c:], pooled

    def pooled_token_average(self, inputs, valid, rc_inputs, rc_valid, *, key=None) -> jax.Array:
        """Mean of the pooled forward and reverse-strand embeddings, k-mer tokenizers.

        The reverse strand is given already tokenized (``rc_inputs``,
        ``rc_valid``): k-mer tokens of the reverse complement are not the
        reversed forward tokens. ``key`` drives dropout in training mode.
        """
        kf = kr = None
        if key is not None:
            kf, kr = jax.random.split(key)
        valid = jnp.asarray(valid, bool)
        rc_valid = jnp.asarray(rc_valid, bool)
        fwd = self._encode_strand(self._features(inputs), valid, None, kf)
        rev = self._encode_strand(self._features(rc_inputs), rc_valid, None, kr)
        return 0.5 * (self._pool(fwd, valid) + self._pool(rev, rc_valid))

    def embed(
        self,
        inputs: jax.Array,
        valid: jax.Array,
        *,
        reverse_complement: str | None | bool = True,
        rc_inputs: jax.Array | None = None,
        rc_valid: jax.Array | None = None,
    ) -> jax.Array:
        """Pooled ``(B, H)`` embeddings (current mode: no dropout in eval mode).

        Parameters
        ----------
        inputs, valid
            See the class notes.
        reverse_complement
            ``True`` (default) uses ``config.reverse_complement``; or ``None`` /
            ``'average'`` / ``'equivariant'`` for this call. An equivariant model
            is RC-invariant whatever is asked here; ``'average'`` on top of it
            changes nothing.
        rc_inputs, rc_valid
            The tokenized reverse complements, needed for ``'average'`` with
            k-mer tokenizers (the ``char`` path computes them itself).
        """
        cfg = self.config
        mode = cfg.reverse_complement if reverse_complement is True else reverse_complement
        if mode not in RC_MODES:
            raise ValueError(
                f"reverse_complement must be None, 'average' or 'equivariant', got {mode!r}."
            )
        if mode == "equivariant" and cfg.reverse_complement != "equivariant":
            raise ValueError(
                "reverse_complement='equivariant' needs an encoder built with it (the "
                "strands share weights at training time); use 'average' with this one."
            )
        if cfg.reverse_complement == "equivariant":
            mode = "equivariant"
        valid = jnp.asarray(valid, bool)
        if mode == "average" and cfg.tokenizer != "char":
            if rc_inputs is None or rc_valid is None:
                raise ValueError(
                    f"reverse_complement='average' with the {cfg.tokenizer!r} tokenizer needs "
                    "rc_inputs= and rc_valid= (the tokenized reverse complements)."
                )
            return self.pooled_token_average(inputs, valid, rc_inputs, rc_valid)
        fwd, rev = self._strands(inputs, valid, None, None, mode)
        if rev is None:
            return self._pool(fwd, valid)
        return 0.5 * (self._pool(fwd, valid) + self._pool(rev, valid))

    def mlm_logits(
        self,
        inputs: jax.Array,
        valid: jax.Array,
        *,
        masked: jax.Array | None = None,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """Masked-token logits ``(B, L, n_targets)``.

        For ``'equivariant'`` the two strands' logits are combined so that the
        output is RC-equivariant: the reverse strand's base logits are flipped
        back along the length and complemented (``ACGT`` -> ``TGCA``).
        """
        mode = self.config.reverse_complement
        valid = jnp.asarray(valid, bool)
        c = int(self.config.use_cls)
        if mode != "equivariant":
            fwd, _ = self._strands(inputs, valid, masked, key, None)
            return self.mlm_head(fwd[:, c:])
        fwd, rev = self._strands(inputs, valid, masked, key, mode)
        back = flip_valid(self.mlm_head(rev[:, c:]), valid.sum(axis=1))
        return 0.5 * (self.mlm_head(fwd[:, c:]) + back[..., ::-1])

    def loss(
        self,
        inputs: jax.Array,
        valid: jax.Array,
        *,
        key: jax.Array,
        weight: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked-language-model loss for one batch.

        Each row hides ``max(1, round(mask_ratio * n))`` of its ``n`` maskable
        positions (a single identity: a base, or a k-mer token other than
        ``<unk>``), replaced by a learned mask state; the loss is the mean
        cross-entropy of their identities. ``weight`` ``(B,)`` weights rows
        (0 for padding rows).

        Returns
        -------
        ``(loss, {'accuracy': ...})``.
        """
        mkey, dkey = jax.random.split(key)
        valid = jnp.asarray(valid, bool)
        target = self.targets(inputs, valid)
        maskable = target >= 0
        masked = random_token_mask(mkey, maskable, self.config.mask_ratio)
        logits = self.mlm_logits(inputs, valid, masked=masked, key=dkey)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, jnp.maximum(target, 0)[..., None], axis=-1)[..., 0]
        m = masked.astype(jnp.float32)
        if weight is not None:
            m = m * jnp.asarray(weight, jnp.float32)[:, None]
        denom = jnp.maximum(m.sum(), 1.0)
        correct = (logits.argmax(axis=-1) == target).astype(jnp.float32)
        return jnp.sum(m * nll) / denom, {"accuracy": jnp.sum(m * correct) / denom}


@register_model("sequence_classifier")
class SequenceClassifier(SavedModel):
    """A :class:`SequenceEncoder` with a linear head on its pooled embedding (fine-tuning)."""

    config_class = SequenceClassifierConfig

    def __init__(self, config: SequenceClassifierConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        self.encoder = SequenceEncoder(config.encoder_config(), rngs=rngs)
        self.head = nnx.Linear(config.hidden_dim, config.n_classes, rngs=rngs)
        self.eval()

    @property
    def needs_rc_tokens(self) -> bool:
        """True for ``'average'`` with a k-mer tokenizer: calls need ``rc_inputs``/``rc_valid``."""
        cfg = self.config
        return cfg.reverse_complement == "average" and cfg.tokenizer != "char"

    def __call__(self, inputs, valid, *, key=None, rc_inputs=None, rc_valid=None) -> jax.Array:
        """Class logits ``(B, n_classes)`` (RC handling as the encoder's config).

        With ``reverse_complement='average'`` and a k-mer tokenizer, pass the
        tokenized reverse complements as ``rc_inputs``/``rc_valid``; the head
        then sees the mean of both strands' pooled vectors (a strand-symmetric
        classifier), as for ``char`` tokens.
        """
        if self.needs_rc_tokens:
            if rc_inputs is None or rc_valid is None:
                raise ValueError(
                    f"reverse_complement='average' with the {self.config.tokenizer!r} "
                    "tokenizer needs rc_inputs= and rc_valid= (the tokenized reverse complements)."
                )
            pooled = self.encoder.pooled_token_average(inputs, valid, rc_inputs, rc_valid, key=key)
            return self.head(pooled)
        return self.head(self.encoder(inputs, valid, key=key)[1])

    def loss(self, inputs, valid, labels, *, key, weight=None, rc_inputs=None, rc_valid=None):
        """Mean cross-entropy over rows (``weight`` 0 drops padding rows)."""
        logits = self(inputs, valid, key=key, rc_inputs=rc_inputs, rc_valid=rc_valid)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, jnp.asarray(labels)[:, None], axis=-1)[:, 0]
        w = jnp.ones_like(nll) if weight is None else jnp.asarray(weight, jnp.float32)
        return jnp.sum(w * nll) / jnp.maximum(w.sum(), 1.0), {}


def _factory(alphabet: str, doc: str):
    """Return an encoder factory for ``alphabet`` (one signature for DNA and RNA)."""

    def create(
        *,
        hidden_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_dim: int = 1024,
        max_length: int = 512,
        dropout: float = 0.1,
        pooling: str = "mean",
        use_cls: bool | None = None,
        tokenizer: str = "char",
        k: int = 6,
        reverse_complement: str | None = None,
        seed: int = 0,
    ) -> SequenceEncoder:
        config = SequenceEncoderConfig(
            alphabet=alphabet,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            max_length=max_length,
            dropout=dropout,
            pooling=pooling,
            use_cls=(pooling == "cls") if use_cls is None else use_cls,
            tokenizer=tokenizer,
            k=k,
            reverse_complement=reverse_complement,
        )
        return SequenceEncoder(config, rngs=nnx.Rngs(params=int(seed)))

    create.__name__ = create.__qualname__ = f"create_{alphabet}_encoder"
    create.__doc__ = doc
    return create


_FACTORY_DOC = """Build a{n} {name} :class:`SequenceEncoder` ({bases}) with the documented defaults.

    The model is in eval mode.

    Parameters
    ----------
    hidden_dim, num_layers, num_heads, intermediate_dim, max_length, dropout, pooling
        The :class:`SequenceEncoderConfig` fields of the same names.
    use_cls
        Prepend a ``<cls>`` token; ``None`` means ``pooling == 'cls'``.
    tokenizer, k
        Tokenizer name (see :func:`diffbio_sc.ops.get_tokenizer`) and k-mer size.
    reverse_complement
        ``None`` (strand-specific), ``'average'`` or ``'equivariant'``.
    seed
        Seed of the initialisation.

    Returns
    -------
    SequenceEncoder
        The new model, in eval mode.
    """
create_dna_encoder = _factory("dna", _FACTORY_DOC.format(n="", name="DNA", bases="``ACGT``"))
create_rna_encoder = _factory("rna", _FACTORY_DOC.format(n="n", name="RNA", bases="``ACGU``"))
