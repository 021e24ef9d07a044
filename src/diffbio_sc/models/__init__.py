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
    "load_checkpoint": "._pretrained",
    "CheckpointModel": "._pretrained",
    "BertConfig": "._bert",
    "BertEncoder": "._bert",
    "ScGPTConfig": "._scgpt",
    "ScGPTEncoder": "._scgpt",
    "BucketedRunner": "._runner",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
