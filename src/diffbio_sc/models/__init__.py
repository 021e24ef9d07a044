"""Flax NNX models, their shared layers, save/load and the trainer.

Imported on first attribute access (``dfm.models.MaskedExpressionModel``), so
that ``import diffbio_sc`` does not import JAX.

* ``MaskedExpressionModel`` / ``MaskedExpressionConfig``: the native model.
* ``load(path)``: rebuild any saved model (its class is read from ``config.json``).
* ``ModelConfig``, ``SavedModel``, ``ModelFormatError``: the base every saveable model
  builds on (``models/_base.py``).
* ``fit``, ``TrainConfig``, ``TrainResult``: the shared training loop (``models/_train.py``).
* ``load_checkpoint``, ``CheckpointModel``: published Geneformer / scGPT checkpoints
  (``BertEncoder``, ``ScGPTEncoder``); GENERator / Nucleotide Transformer (v1, v2) DNA
  checkpoints load as ``DnaCheckpointModel`` (``LlamaDecoder``, ``EsmEncoder``).
* ``from_pretrained(repo_id, revision=, subfolder=, cache_dir=)``: the same checkpoints
  fetched from the Hugging Face Hub, or its local cache when offline (needs
  ``huggingface_hub``); ``HUB_REPOSITORIES`` lists the repositories per family (Geneformer's
  subfolders; the genomic families' ids are the ``checkpoints`` of ``GENOMICS_MODELS``).

Internals for the package's own code and its developers (importable, not listed in
``__all__``, ``dir()`` or the API reference): ``register_model`` (the class registry behind
``load``), ``BucketedRunner`` (length-bucketed inference) and ``genomics_models_markdown``
(the documentation's table of ``GENOMICS_MODELS``).
"""

from __future__ import annotations

from .. import _compilation_cache, _malloc
from .._lazy import lazy_exports

_compilation_cache.enable()
_malloc.tune()  # before JAX starts its threads (dfm.settings.malloc_tuning)

_EXPORTS = {
    "MaskedExpressionModel": "._masked",
    "MaskedExpressionConfig": "._masked",
    "load": "._io",
    "load_checkpoint": "._pretrained",
    "CheckpointModel": "._pretrained",
    "from_pretrained": "._hub",
    "HUB_REPOSITORIES": "._hub",
    "BertConfig": "._bert",
    "BertEncoder": "._bert",
    "ScGPTConfig": "._scgpt",
    "ScGPTEncoder": "._scgpt",
    "DnaCheckpointModel": "._dna_checkpoints",
    "EsmConfig": "._esm",
    "EsmEncoder": "._esm",
    "LlamaConfig": "._llama",
    "LlamaDecoder": "._llama",
    "BucketedRunner": "._runner",
    "GENOMICS_MODELS": "._genomics_registry",
    "genomics_models_markdown": "._genomics_registry",
    "ModelConfig": "._base",
    "SavedModel": "._base",
    "ModelFormatError": "._base",
    "register_model": "._base",
    "fit": "._train",
    "TrainConfig": "._train",
    "TrainResult": "._train",
    "SequenceEncoder": "._sequence",
    "SequenceEncoderConfig": "._sequence",
    "SequenceClassifier": "._sequence",
    "SequenceClassifierConfig": "._sequence",
    "create_dna_encoder": "._sequence",
    "create_rna_encoder": "._sequence",
}
#: Importable for the package's developers, but not user API.
_INTERNAL = ("BucketedRunner", "genomics_models_markdown", "register_model")
__all__ = [name for name in _EXPORTS if name not in _INTERNAL]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
