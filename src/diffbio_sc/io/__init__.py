"""Readers and writers for artifacts: embedding exports of upstream models.

Functions are imported on first use to keep ``import diffbio_sc`` light
(``read_embeddings`` imports h5py, anndata, pyarrow or safetensors only for the
format it reads).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "read_embeddings": "._embeddings",
    "write_embeddings": "._embeddings",
    "EmbeddingArtifact": "._embeddings",
    "EmbeddingPreset": "._presets",
    "PRESETS": "._presets",
    "get_preset": "._presets",
    "read_fasta": "._fasta",
    "sequences_to_adata": "._fasta",
    "read_checkpoint": "._checkpoints",
    "read_torch_weights": "._checkpoints",
    "Checkpoint": "._checkpoints",
    "CheckpointError": "._checkpoints",
    "read_gtf": "._gtf",
    "read_vcf": "._vcf",
    "Genome": "._genome",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
