"""Configuration of the sequence encoder and classifier (frozen dataclasses).

:class:`SequenceEncoderConfig` names the architecture, tokenizer and
reverse-complement mode of :class:`~diffbio_sc.models.SequenceEncoder`;
:class:`SequenceClassifierConfig` adds the number of classes of the
fine-tuning head. The modules themselves live in :mod:`._sequence`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..ops._sequence import ALPHABETS, TOKENIZERS, get_tokenizer
from ._base import ModelConfig

__all__ = ["RC_MODES", "SequenceEncoderConfig", "SequenceClassifierConfig"]

RC_MODES = (None, "average", "equivariant")


@dataclass(frozen=True)
class SequenceEncoderConfig(ModelConfig):
    """Architecture of :class:`SequenceEncoder` (frozen; compared by value).

    Parameters
    ----------
    alphabet
        ``'dna'`` or ``'rna'``.
    tokenizer
        ``'char'`` (single nucleotide, one-hot input), ``'kmer'`` (overlapping
        ``k``-mers) or ``'nt6'`` (Nucleotide Transformer 6-mers); see
        :mod:`diffbio_sc.ops._sequence` for the vocabularies.
    k
        k-mer size for ``tokenizer='kmer'``.
    hidden_dim, num_layers, num_heads, intermediate_dim
        Width, depth, attention heads and feed-forward width.
    max_length
        Most tokens per sequence, ``<cls>`` included.
    dropout
        Dropout on embeddings, attention and feed-forward outputs (training only).
    pooling
        ``'mean'`` over valid positions or ``'cls'`` (needs ``use_cls``).
    use_cls
        Put a learned ``<cls>`` state first.
    reverse_complement
        ``None``, ``'average'`` or ``'equivariant'`` (module docstring).
    mask_ratio
        Fraction of maskable tokens hidden in masked-language pretraining.
    """

    alphabet: str = "dna"
    tokenizer: str = "char"
    k: int = 6
    hidden_dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_dim: int = 1024
    max_length: int = 512
    dropout: float = 0.1
    pooling: str = "mean"
    use_cls: bool = False
    reverse_complement: str | None = None
    mask_ratio: float = 0.15

    def validate(self) -> None:
        """Check the fields (``ValueError`` naming the field)."""

        def bad(msg: str) -> None:
            raise ValueError(f"{type(self).__name__}: {msg}")

        if self.alphabet not in ALPHABETS:
            bad(f"alphabet must be 'dna' or 'rna', got {self.alphabet!r}.")
        if self.tokenizer not in TOKENIZERS:
            bad(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}.")
        if not 1 <= self.k <= 8:
            bad(f"k must be in 1..8, got {self.k}.")
        for name in ("hidden_dim", "num_layers", "num_heads", "intermediate_dim"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.hidden_dim % self.num_heads:
            bad(
                f"hidden_dim ({self.hidden_dim}) must be a multiple of num_heads ({self.num_heads})."
            )
        if self.hidden_dim % 2:
            bad(f"hidden_dim must be even (sinusoidal positions), got {self.hidden_dim}.")
        if self.max_length < 2:
            bad(f"max_length must be >= 2, got {self.max_length}.")
        if not 0.0 <= self.dropout < 1.0:
            bad(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.pooling not in ("mean", "cls"):
            bad(f"pooling must be 'mean' or 'cls', got {self.pooling!r}.")
        if self.pooling == "cls" and not self.use_cls:
            bad("pooling='cls' needs use_cls=True.")
        if self.reverse_complement not in RC_MODES:
            bad(
                "reverse_complement must be None, 'average' or 'equivariant', got "
                f"{self.reverse_complement!r}."
            )
        if self.reverse_complement == "equivariant" and self.tokenizer != "char":
            bad(
                "reverse_complement='equivariant' needs tokenizer='char' (the k-mer tokens of "
                "the reverse strand are not the reversed forward tokens); use 'average'."
            )
        if not 0.0 < self.mask_ratio < 1.0:
            bad(f"mask_ratio must be in (0, 1), got {self.mask_ratio}.")

    def get_tokenizer(self):
        """Return the tokenizer this config names (:func:`diffbio_sc.ops._sequence.get_tokenizer`)."""
        return get_tokenizer(self.tokenizer, alphabet=self.alphabet, k=self.k)

    @property
    def vocab_size(self) -> int:
        """Number of token ids of the tokenizer."""
        return self.get_tokenizer().vocab_size

    @property
    def n_targets(self) -> int:
        """Classes of the masked-token head: 4 bases (``char``) or the vocabulary."""
        return 4 if self.tokenizer == "char" else self.vocab_size

    @property
    def max_sequence_tokens(self) -> int:
        """Most sequence tokens (``max_length`` less the ``<cls>`` slot)."""
        return self.max_length - int(self.use_cls)


@dataclass(frozen=True)
class SequenceClassifierConfig(SequenceEncoderConfig):
    """A :class:`SequenceEncoderConfig` plus ``n_classes`` for a classification head."""

    n_classes: int = 2

    def validate(self) -> None:
        """Check the encoder fields and ``n_classes >= 2``."""
        super().validate()
        if self.n_classes < 2:
            raise ValueError(
                f"SequenceClassifierConfig: n_classes must be >= 2, got {self.n_classes}."
            )

    def encoder_config(self) -> SequenceEncoderConfig:
        """Return the encoder part of this config."""
        names = {f.name for f in dataclasses.fields(SequenceEncoderConfig)}
        return SequenceEncoderConfig(**{n: getattr(self, n) for n in names})
