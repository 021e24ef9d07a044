"""Flax NNX models: the native masked-expression transformer and its save/load.

Imported on first attribute access (``dfm.models.MaskedExpressionModel``), so
that ``import diffbio_sc`` does not import JAX.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "MaskedExpressionModel": "._masked",
    "MaskedExpressionConfig": "._masked",
    "load": "._io",
    "SequenceEncoder": "._sequence",
    "SequenceEncoderConfig": "._sequence",
    "SequenceClassifier": "._sequence",
    "SequenceClassifierConfig": "._sequence",
    "create_dna_encoder": "._sequence",
    "create_rna_encoder": "._sequence",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
