"""Tools: pretraining and embedding, embedding import, scoring and benchmarks.

Functions are imported on first use to keep ``import diffbio_sc`` light.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "pretrain": "._pretrain",
    "embed": "._embed",
    "embed_checkpoint": "._checkpoint",
    "load_embeddings": "._load_embeddings",
    "score_annotation": "._scoring",
    "score_integration": "._scoring",
    "benchmark": "._scoring",
    "compare_to_baseline": "._scoring",
    "save_baseline": "._scoring",
    "pca_baseline": "._baselines",
    "harmony_baseline": "._baselines",
    "embed_sequences": "._sequence._embed",
    "pretrain_sequences": "._sequence._pretrain",
    "genomics_tasks": "._sequence._tasks",
    "embedding_lookup": "._sequence._task_data",
    "embed_genes": "._genetics._embed_genes",
    "export_gene_sequences": "._genetics._embed_genes",
    "KmerEncoder": "._genetics._encoders",
    "FunctionEncoder": "._genetics._encoders",
    "PrecomputedEncoder": "._genetics._encoders",
    "logo_attribution": "._genetics._logo",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
