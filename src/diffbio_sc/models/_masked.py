"""The native masked-expression transformer (Flax NNX).

A cell enters as a set of tokens, one per gene, each carrying

* the gene's identity (a learned embedding of its token id),
* its expression value (``log1p`` of the tokenizer's normalised, median-scaled
  value, through a small MLP), and
* its rank within the cell (a fixed sinusoidal encoding of a *continuous*
  rank, so the hard tokenization, rank = position ``0 .. L-1``, and the soft
  ranks of :func:`diffbio_sc.ops.soft_rank_value_tokens` share one encoding),

plus a per-token weight in ``[0, 1]``: 1 for a real token and 0 for padding
(hard path), or the soft top-k membership (soft path). The weight enters the
attention as a log-weight key bias (weight 0 = masked out exactly) and the
pooling as a weighted mean, so one set of parameters serves both paths.

Training (see :meth:`MaskedExpressionModel.loss`) masks a random fraction of
each cell's tokens (value and rank hidden, gene identity kept) and combines

* a masked-value loss: regress ``log1p(value)`` at the masked positions only;
* a cell-level bottleneck loss from the pooled embedding alone: by default
  (``profile_likelihood='nb'``) the negative-binomial likelihood of the cell's
  raw counts over highly variable genes, as scVI's decoder models them;
  version-1 models predict the centred log-normalised profile (MSE).

The encoder is self-attention over the tokens (default) or, with
``n_latents > 0``, a few learned latents cross-attending to every token
(:mod:`diffbio_sc.models._latent`).

With a ``batch_key``, a learned batch embedding conditions both decoders (not
the encoder), so the pooled embedding is not asked to carry the batch; two
optional objectives make it shed the batch (:func:`diffbio_sc.tl.pretrain` turns
both on with a ``batch_key``): a variational bottleneck (``variational``: the
embedding is a posterior mean, the decoder reads a sample, KL to ``N(0, I)``)
and an adversarial batch classifier behind a gradient-reversal layer
(``batch_adversary_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _keys
from ._base import SavedModel, register_model
from ._latent import LatentEncoder
from ._layers import (
    TransformerBlock,
    gradient_reversal,
    masked_mean_pool,
    random_token_mask,
    sinusoidal_encoding,
    weights_to_bias,
)
from ._masked_config import MaskedExpressionConfig

__all__ = [
    "GENE_INIT_STD",
    "MaskedExpressionConfig",
    "MaskedExpressionModel",
    "abstract_model",
    "create_model",
    "param_count",
    "random_token_mask",
    "rank_encoding",
    "weights_to_bias",
]
#: Initial scale of gene-identity embeddings. Identity must dominate the
#: (cell-independent) rank code at initialisation, or every cell starts with
#: nearly the same pooled embedding.
GENE_INIT_STD = 1.0
#: Number of special tokens (<pad>, <mask>, <cls>, <eos>) before the genes.
N_SPECIAL = len(_keys.SPECIAL_TOKENS)
#: Scale of the sinusoidal rank code added to each token.
_RANK_SCALE = 0.5


def rank_encoding(ranks: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal encoding of continuous ranks: ``(...,)`` -> ``(..., dim)``.

    :func:`diffbio_sc.models._layers.sinusoidal_encoding`: integer ranks give
    exactly the positional encoding of those positions, and a soft rank between
    two integers gives a smooth interpolation.
    """
    return sinusoidal_encoding(ranks, dim)


@register_model("masked_expression")
class MaskedExpressionModel(SavedModel):
    """Masked-expression transformer over rank-value gene tokens.

    Parameters
    ----------
    config
        A :class:`MaskedExpressionConfig`.
    rngs
        ``nnx.Rngs`` for parameter initialisation. Dropout keys are passed per
        call (``dropout_key``), so the module holds no random state.

    Notes
    -----
    ``model.train()`` turns dropout on, ``model.eval()`` off. Models returned by
    :func:`diffbio_sc.tl.pretrain` or :func:`diffbio_sc.models.load` are in eval
    mode and carry ``model.metadata`` (gene vocabulary, medians, tokenizer
    settings, training summary) and ``model.history``.
    """

    config_class = MaskedExpressionConfig
    _repr_fields = (
        "vocab_size",
        "hidden_dim",
        "n_layers",
        "n_heads",
        "max_tokens",
        "n_latents",
        "n_batches",
        "n_profile_genes",
    )
    _repr_family = "native masked-expression transformer"

    def __init__(self, config: MaskedExpressionConfig, *, rngs: nnx.Rngs):
        super().__init__(config)
        cfg = config
        if cfg.vocab_size == 0:
            raise ValueError(
                "MaskedExpressionConfig.vocab_size is not set (0): pass the number of token "
                "ids, or let dfm.tl.pretrain build the model, which sets it from the data."
            )
        h = cfg.hidden_dim
        init = nnx.initializers.normal(0.02)
        self.gene_embed = nnx.Embed(
            cfg.vocab_size, h, embedding_init=nnx.initializers.normal(GENE_INIT_STD), rngs=rngs
        )
        self.value_in = nnx.Linear(1, h, rngs=rngs)
        self.value_hidden = nnx.Linear(h, h, rngs=rngs)
        self.mask_embed = nnx.Param(init(rngs.params(), (h,)))
        self.embed_norm = nnx.LayerNorm(h, rngs=rngs)
        self.embed_drop = nnx.Dropout(cfg.dropout)
        if cfg.n_latents:
            self.latent = LatentEncoder(
                h,
                cfg.n_heads,
                cfg.ff_dim,
                cfg.dropout,
                n_latents=cfg.n_latents,
                n_layers=cfg.n_layers,
                rngs=rngs,
            )
            # Masked values are decoded from the masked gene's identity and the
            # cell embedding (the latents hold no per-token state).
            self.value_query = nnx.Linear(h, h, rngs=rngs)
            self.value_cell = nnx.Linear(h, h, rngs=rngs)
        else:
            self.blocks = nnx.List(
                [
                    TransformerBlock(h, cfg.n_heads, cfg.ff_dim, cfg.dropout, rngs=rngs)
                    for _ in range(cfg.n_layers)
                ]
            )
            self.final_norm = nnx.LayerNorm(h, rngs=rngs)
        self.value_head = nnx.Linear(h, 1, rngs=rngs)
        if cfg.n_batches:
            self.batch_embed = nnx.Embed(cfg.n_batches, h, embedding_init=init, rngs=rngs)
        else:
            self.batch_embed = None
        if cfg.is_variational:
            # scVI-style posterior: mean (the embedding) and log-variance.
            self.z_mean = nnx.Linear(h, h, rngs=rngs)
            self.z_logvar = nnx.Linear(
                h, h, kernel_init=init, bias_init=nnx.initializers.constant(-2.0), rngs=rngs
            )
        else:
            self.z_mean = self.z_logvar = None
        if cfg.adversary_weight > 0:
            # Predicts the batch from the embedding through gradient reversal (loss()).
            self.adversary_in = nnx.Linear(h, cfg.decoder_dim, rngs=rngs)
            self.adversary_out = nnx.Linear(cfg.decoder_dim, cfg.n_batches, rngs=rngs)
        else:
            self.adversary_in = self.adversary_out = None
        if cfg.n_profile_genes and cfg.profile_likelihood == "nb":
            # scVI-style decoder: mean = library size x softmax(decoder(z + batch)).
            self.decoder_in = nnx.Linear(h, cfg.decoder_dim, rngs=rngs)
            self.decoder_norm = nnx.LayerNorm(cfg.decoder_dim, rngs=rngs)
            self.profile_head = nnx.Linear(cfg.decoder_dim, cfg.n_profile_genes, rngs=rngs)
            self.log_theta = nnx.Param(jnp.zeros((cfg.n_profile_genes,), jnp.float32))
        elif cfg.n_profile_genes:
            self.profile_head = nnx.Linear(h, cfg.n_profile_genes, rngs=rngs)
        else:
            self.profile_head = None
        self.eval()

    @classmethod
    def check_metadata(cls, config: MaskedExpressionConfig, metadata: Mapping[str, Any]) -> None:
        """Check the vocabulary, medians and tokenizer settings a loaded model relies on.

        Each part is checked when present (a model built by hand may have none):
        ``genes`` unique strings with one positive, finite ``medians`` entry each
        and no more than the vocabulary holds; ``tokenizer.target_sum`` positive
        and finite; ``profile_mean`` one finite value per bottleneck gene;
        ``batch_categories`` one per batch label.
        """
        genes = metadata.get("genes")
        medians = metadata.get("medians")
        if genes is not None:
            if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
                raise ValueError("'genes' must be a list of gene names (strings).")
            if len(set(genes)) != len(genes):
                raise ValueError("'genes' holds repeated gene names.")
            if len(genes) > config.vocab_size - len(_keys.SPECIAL_TOKENS):
                raise ValueError(
                    f"{len(genes)} genes do not fit the vocabulary of {config.vocab_size} tokens."
                )
        if medians is not None or genes is not None:
            if not isinstance(medians, list) or len(medians) != len(genes or []):
                raise ValueError("'medians' must be a list with one value per gene in 'genes'.")
            med = _finite_array("medians", medians)
            if (med <= 0).any():
                bad = [g for g, m in zip(genes, med, strict=True) if not m > 0][:5]
                raise ValueError(
                    f"gene medians must be positive; not so for {int((med <= 0).sum())} "
                    f"genes, e.g. {bad}."
                )
        tok = metadata.get("tokenizer")
        if tok is not None:
            if not isinstance(tok, dict):
                raise ValueError("'tokenizer' must be an object.")
            if "target_sum" in tok:
                ts = _finite_array("tokenizer.target_sum", [tok["target_sum"]])
                if not ts[0] > 0:
                    raise ValueError(f"tokenizer.target_sum must be > 0, got {tok['target_sum']}.")
        pmean = metadata.get("profile_mean")
        if pmean is not None and len(pmean):
            if len(pmean) != config.n_profile_genes:
                raise ValueError(
                    f"'profile_mean' has {len(pmean)} values for {config.n_profile_genes} "
                    "bottleneck genes."
                )
            _finite_array("profile_mean", pmean)
        cats = metadata.get("batch_categories")
        if cats and len(cats) != config.n_batches:
            raise ValueError(
                f"'batch_categories' has {len(cats)} entries for {config.n_batches} batches."
            )

    def init_gene_embeddings(
        self, token_ids: np.ndarray, vectors: np.ndarray, *, other_scale: float = 1.0
    ) -> None:
        """Set the embeddings of ``token_ids`` to ``vectors``; scale every other gene's.

        Used for data-driven initialisation (``dfm.tl.pretrain(init='pca')``): gene
        tokens not in ``token_ids`` are multiplied by ``other_scale``; the special
        tokens are left as they are.
        """
        emb = np.array(self.gene_embed.embedding.get_value())
        token_ids = np.asarray(token_ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=emb.dtype)
        if vectors.shape != (token_ids.size, emb.shape[1]):
            raise ValueError(
                f"vectors must have shape ({token_ids.size}, {emb.shape[1]}), got {vectors.shape}."
            )
        if token_ids.size and (token_ids.min() < N_SPECIAL or token_ids.max() >= emb.shape[0]):
            raise ValueError(f"token_ids must be gene tokens in [{N_SPECIAL}, {emb.shape[0]}).")
        emb[N_SPECIAL:] *= other_scale
        emb[token_ids] = vectors
        self.gene_embed.embedding.set_value(jnp.asarray(emb))

    # ------------------------------------------------------------------ encoder
    def encode(
        self,
        gene_ids: jax.Array,
        values: jax.Array,
        ranks: jax.Array,
        weights: jax.Array,
        *,
        masked: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Run the encoder on a general (hard or soft) token representation.

        Parameters
        ----------
        gene_ids
            ``(B, T)`` int token ids (pad id 0 where unused).
        values
            ``(B, T)`` non-negative tokenizer values (normalised, median-scaled).
        ranks
            ``(B, T)`` continuous 0-based ranks (the position for hard tokens).
        weights
            ``(B, T)`` token weights in ``[0, 1]``; 0 removes a token exactly.
        masked
            ``(B, T)`` bool, tokens whose value and rank are hidden (training).
        dropout_key
            PRNG key for dropout; required in training mode.

        Returns
        -------
        ``(hidden, embedding)``: ``(B, T', H)`` token states (``T' = T + 1`` with
        ``<cls>``, which is then first) and the ``(B, H)`` pooled cell embedding.
        With the latent encoder (``n_latents > 0``), ``hidden`` is the
        ``(B, n_latents, H)`` latent states and the embedding their mean (zero
        for a cell without tokens). A ``variational`` model's embedding is the
        posterior mean ``mu`` of that pooled vector.
        """
        cfg = self.config
        weights = weights.astype(jnp.float32)
        x_val = jnp.log1p(jnp.maximum(values.astype(jnp.float32), 0.0))[..., None]
        val = self.value_hidden(jax.nn.gelu(self.value_in(x_val)))
        content = val + _RANK_SCALE * rank_encoding(ranks, cfg.hidden_dim)
        if masked is not None:
            content = jnp.where(masked[..., None], self.mask_embed[...], content)
        x = self.gene_embed(gene_ids) + content
        if cfg.use_cls:
            b = x.shape[0]
            cls = jnp.broadcast_to(
                self.gene_embed(jnp.asarray([_keys.CLS_ID]))[0], (b, 1, cfg.hidden_dim)
            )
            x = jnp.concatenate([cls, x], axis=1)
            weights = jnp.concatenate([jnp.ones((b, 1), jnp.float32), weights], axis=1)
        keys: list[jax.Array | None] = [None] * (cfg.n_layers + 1)
        if dropout_key is not None:
            keys = list(jax.random.split(dropout_key, cfg.n_layers + 1))
        x = self.embed_drop(self.embed_norm(x), rngs=keys[0])
        bias = weights_to_bias(weights)
        if cfg.n_latents:
            lat = self.latent(x, bias, keys[1] if dropout_key is not None else None)
            # A cell without tokens embeds to the zero vector (as mean pooling gives).
            has = (weights.sum(axis=1) > 0).astype(lat.dtype)[:, None]
            return lat, self._posterior_mean(lat.mean(axis=1) * has)
        for block, k in zip(self.blocks, keys[1:], strict=True):
            x = block(x, bias, k)
        x = self.final_norm(x)
        if cfg.pooling == "cls":
            emb = x[:, 0]
        else:
            w = weights
            if cfg.use_cls:
                w = w.at[:, 0].set(0.0)
            emb = masked_mean_pool(x, w)
        return x, self._posterior_mean(emb)

    def _posterior_mean(self, pooled: jax.Array) -> jax.Array:
        """Return the embedding of a pooled state: itself, or ``mu`` of a variational model."""
        return pooled if self.z_mean is None else self.z_mean(pooled)

    def __call__(
        self,
        gene_ids: jax.Array,
        values: jax.Array,
        *,
        masked: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Hard path: rank-ordered tokens (``dfm.pp.tokenize`` layout).

        ``gene_ids`` ``(B, L)`` are token ids in rank order, right-padded with 0;
        ``values`` ``(B, L)`` their tokenizer values. Ranks are the positions
        ``0 .. L-1`` and weights are 1 for real tokens, 0 for padding.
        Returns ``(hidden, embedding)`` as :meth:`encode`.
        """
        gene_ids = jnp.asarray(gene_ids)
        b, t = gene_ids.shape
        ranks = jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32), (b, t))
        weights = (gene_ids != _keys.PAD_ID).astype(jnp.float32)
        return self.encode(gene_ids, values, ranks, weights, masked=masked, dropout_key=dropout_key)

    def embed(self, gene_ids: jax.Array, values: jax.Array) -> jax.Array:
        """Pooled ``(B, H)`` cell embeddings of hard tokens (no masking, current mode)."""
        return self(gene_ids, values)[1]

    def embed_soft(
        self,
        gene_ids: jax.Array,
        expression: jax.Array,
        mask: jax.Array | None = None,
        *,
        temperature: float = 1e-2,
        keep_temperature: float | None = None,
    ) -> jax.Array:
        """Differentiable path: embed cells from expression over a fixed gene set.

        Parameters
        ----------
        gene_ids
            ``(C,)`` or ``(B, C)`` token ids of the candidate genes.
        expression
            ``(B, C)`` tokenizer values of those genes (normalised counts times the
            gene scale ``1 / median``); differentiable.
        mask
            Optional ``(B, C)`` bool, candidates that may be ranked (default: all).
        temperature, keep_temperature
            Passed to :func:`diffbio_sc.ops.soft_rank_value_tokens` with
            ``max_tokens = config.max_tokens``.

        Returns
        -------
        ``(B, H)`` embeddings. As ``temperature -> 0`` they converge to the hard
        path's embeddings of the same cells.
        """
        from ..ops import soft_rank_value_tokens

        expression = jnp.asarray(expression, jnp.float32)
        b, c = expression.shape
        gene_ids = jnp.broadcast_to(jnp.asarray(gene_ids, jnp.int32), (b, c))
        ranks, keep = soft_rank_value_tokens(
            expression,
            mask,
            max_tokens=self.config.max_tokens,
            temperature=temperature,
            keep_temperature=keep_temperature,
        )
        if mask is not None:
            keep = jnp.where(jnp.asarray(mask), keep, 0.0)
        # Ranks outside the kept set carry ~zero weight; clip the fill so the
        # encoding stays well conditioned.
        ranks = jnp.clip(ranks, 0.0, float(c))
        return self.encode(gene_ids, expression, ranks, keep)[1]

    # ----------------------------------------------------------------- training
    def decode_counts(self, z: jax.Array, library: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Negative-binomial parameters of the profile genes (``profile_likelihood='nb'``).

        ``z`` ``(B, H)`` is the cell embedding plus, for a batch-conditioned model,
        the batch embedding; ``library`` ``(B,)`` the cells' total counts over the
        profile genes. Returns ``(mu, theta)``: means ``library x
        softmax(decoder(z))`` ``(B, G)`` and the per-gene inverse dispersions ``(G,)``.
        """
        h = jax.nn.gelu(self.decoder_norm(self.decoder_in(z)))
        rho = jax.nn.softmax(self.profile_head(h), axis=-1)
        return library[:, None] * rho, jnp.exp(self.log_theta[...])

    def profile_log_prob(self, z: jax.Array, counts: jax.Array) -> jax.Array:
        """``(B, G)`` NB log-probabilities of raw profile-gene ``counts`` given ``z``."""
        from ._likelihoods import nb_log_prob

        counts = jnp.asarray(counts, jnp.float32)
        mu, theta = self.decode_counts(z, counts.sum(axis=-1))
        return nb_log_prob(counts, mu, theta[None, :])

    def loss(
        self,
        gene_ids: jax.Array,
        values: jax.Array,
        *,
        key: jax.Array,
        profile: jax.Array | None = None,
        batch: jax.Array | None = None,
        cell_weight: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked-expression training loss for one minibatch.

        Each cell gets its own random mask of ``mask_ratio`` of its valid tokens
        (at least one). Dropout runs when the model is in training mode.

        Parameters
        ----------
        gene_ids, values
            Hard tokens as in :meth:`__call__`.
        key
            PRNG key for masking and dropout.
        profile
            ``(B, n_profile_genes)`` bottleneck targets, required when
            ``config.n_profile_genes > 0``: raw counts of the profile genes with
            ``profile_likelihood='nb'`` (negative-binomial NLL, mean over genes,
            library size = the cell's total over those genes), centred
            log-normalised expression with ``'mse'``.
        batch
            ``(B,)`` int batch codes; required when ``config.n_batches > 0``.
        cell_weight
            ``(B,)`` weights of cells in the loss (0 for padding rows).

        Returns
        -------
        ``(loss, parts)`` where ``parts`` holds ``'value'``, ``'profile'``,
        ``'adversary'`` (the batch classifier's cross-entropy; 0 without an
        adversary) and ``'kl'`` (the variational bottleneck's mean per-cell KL
        divergence to ``N(0, I)``; 0 unless ``variational``). With
        ``config.adversary_weight > 0`` the cross-entropy's gradient is added
        (the classifier minimises it; the encoder, through gradient reversal,
        maximises it) but not its value: the returned ``loss`` is the
        reconstruction loss (plus the weighted KL term of a variational model).
        """
        cfg = self.config
        gene_ids = jnp.asarray(gene_ids)
        values = jnp.asarray(values, jnp.float32)
        bsz = gene_ids.shape[0]
        if cell_weight is None:
            cell_weight = jnp.ones((bsz,), jnp.float32)
        mask_key, drop_key = jax.random.split(key)
        valid = gene_ids != _keys.PAD_ID
        masked = random_token_mask(mask_key, valid, cfg.mask_ratio)
        train = not self.embed_drop.deterministic
        hidden, emb = self(gene_ids, values, masked=masked, dropout_key=drop_key if train else None)
        if cfg.use_cls:
            hidden = hidden[:, 1:]
        cond_tok = 0.0
        cond_cell = 0.0
        if cfg.n_batches:
            if batch is None:
                raise ValueError("This model is batch-conditioned: pass batch= codes.")
            bemb = self.batch_embed(jnp.asarray(batch))
            cond_tok = bemb[:, None, :]
            cond_cell = bemb
        if cfg.n_latents:
            query = self.value_query(self.gene_embed(gene_ids))
            hidden = jax.nn.gelu(query + self.value_cell(emb)[:, None, :])
        pred = self.value_head(hidden + cond_tok)[..., 0]
        target = jnp.log1p(jnp.maximum(values, 0.0))
        m = masked.astype(jnp.float32) * cell_weight[:, None]
        value_loss = jnp.sum(m * (pred - target) ** 2) / jnp.maximum(m.sum(), 1.0)
        total = cfg.value_weight * value_loss
        profile_loss = jnp.zeros((), jnp.float32)
        kl = jnp.zeros((), jnp.float32)
        z = emb
        if cfg.is_variational:
            logvar = jnp.clip(self.z_logvar(emb), -10.0, 10.0)
            eps = jax.random.normal(jax.random.fold_in(key, 7), emb.shape, emb.dtype)
            z = emb + jnp.exp(0.5 * logvar) * eps
            kl_cell = 0.5 * jnp.sum(emb**2 + jnp.exp(logvar) - logvar - 1.0, axis=-1)
            kl = jnp.sum(kl_cell * cell_weight) / jnp.maximum(cell_weight.sum(), 1.0)
            if cfg.n_profile_genes:
                total = total + cfg.profile_weight * cfg.kl_weight * kl / cfg.n_profile_genes
        if cfg.n_profile_genes:
            if profile is None:
                raise ValueError("This model has a bottleneck objective: pass profile= targets.")
            if cfg.profile_likelihood == "nb":
                per_cell = -jnp.mean(self.profile_log_prob(z + cond_cell, profile), axis=-1)
            else:
                ppred = self.profile_head(z + cond_cell)
                per_cell = jnp.mean((ppred - profile) ** 2, axis=-1)
            profile_loss = jnp.sum(per_cell * cell_weight) / jnp.maximum(cell_weight.sum(), 1.0)
            total = total + cfg.profile_weight * profile_loss
        adv_loss = jnp.zeros((), jnp.float32)
        if cfg.adversary_weight > 0:
            logits = self.adversary_out(jax.nn.gelu(self.adversary_in(gradient_reversal(emb))))
            logp = jax.nn.log_softmax(logits, axis=-1)
            ce = -jnp.take_along_axis(logp, jnp.asarray(batch)[:, None], axis=-1)[:, 0]
            adv_loss = jnp.sum(ce * cell_weight) / jnp.maximum(cell_weight.sum(), 1.0)
            # Value 0, gradient that of weight x cross-entropy.
            total = total + cfg.adversary_weight * (adv_loss - jax.lax.stop_gradient(adv_loss))
        parts = {"value": value_loss, "profile": profile_loss, "adversary": adv_loss, "kl": kl}
        return total, parts


@partial(jax.jit, static_argnums=0)
def _init_state(config: MaskedExpressionConfig, key: jax.Array):
    return nnx.state(MaskedExpressionModel(config, rngs=nnx.Rngs(params=key)))


def create_model(config: MaskedExpressionConfig, key: jax.Array) -> MaskedExpressionModel:
    """Build a model with parameters initialised in one compiled call (fast)."""
    graphdef, _ = nnx.split(abstract_model(config))
    return nnx.merge(graphdef, _init_state(config, key))


def abstract_model(config: MaskedExpressionConfig) -> MaskedExpressionModel:
    """Build the model's structure with shape-only parameters (no computation)."""
    return MaskedExpressionModel.abstract(config)


def _finite_array(name: str, values) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name!r} must hold numbers only.") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name!r} holds {int((~np.isfinite(arr)).sum())} NaN/inf values.")
    return arr


def param_count(model: MaskedExpressionModel) -> int:
    """Count the trainable parameters."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
