"""Every AnnData key and ``.uns['dfm']`` section name used by diffbio_sc.

One module owns the names; everything else imports them from here.
"""

from __future__ import annotations

# .uns
UNS_KEY = "dfm"
UNS_TOKENIZER = "tokenizer"
UNS_EMBEDDINGS = "embeddings"
UNS_BENCHMARKS = "benchmarks"
UNS_SOFT_RANK = "soft_rank"
UNS_BINS = "bins"
UNS_MEDIANS = "gene_medians"
UNS_SEQUENCES = "sequences"

# .var
MEDIAN_KEY = "dfm_median"

# .obsm / .obs
TOKENS_KEY = "dfm_tokens"
N_TOKENS_KEY = "dfm_n_tokens"
EMBEDDING_KEY = "X_dfm"
SEQ_EMBEDDING_KEY = "X_dfm_seq"
SEQUENCE_KEY = "sequence"
PCA_BASELINE_KEY = "X_pca_baseline"
HARMONY_BASELINE_KEY = "X_harmony_baseline"

# .layers
SOFT_RANK_KEY = "dfm_soft_rank"
BINS_KEY = "dfm_bins"

# Special tokens, in the order of Geneformer's token dictionary (<pad>=0,
# <mask>=1; the v2 dictionary adds <cls> and <eos>).
PAD_TOKEN = "<pad>"
MASK_TOKEN = "<mask>"
CLS_TOKEN = "<cls>"
EOS_TOKEN = "<eos>"
SPECIAL_TOKENS = (PAD_TOKEN, MASK_TOKEN, CLS_TOKEN, EOS_TOKEN)
PAD_ID = 0
MASK_ID = 1
CLS_ID = 2
EOS_ID = 3

# Values allowed in .uns['dfm']['embeddings'][key]
# (the published DNA checkpoints name their own family, as dfm.tl.embed_sequences records them)
MODEL_FAMILIES = (
    "single_cell_transformer",
    "sequence_transformer",
    "nucleotide_transformer_v1",
    "nucleotide_transformer_v2",
    "generator",
    "kmer_frequency",
    "external",
)
# How an embedding was made (docs/architecture.md, "Embedding records"):
# native_trainable: weights trained by diffbio_sc; precomputed: vectors computed elsewhere and
# imported; frozen_encoder: a function the user passed (weights unknown to diffbio_sc);
# checkpoint: published weights loaded from a file and run in-process; fixed_features: a
# deterministic feature map without weights (k-mer frequencies).
ADAPTER_MODES = (
    "native_trainable",
    "precomputed",
    "frozen_encoder",
    "checkpoint",
    "fixed_features",
)

# Default MuData modality of the sequence tools (embed_sequences, pretrain_sequences, genomics_tasks)
SEQUENCE_MOD = "dna"

# Genetics modality written by dfm.tl.embed_genes (subjects as observations, genes as vars)
GENETICS_MOD = "genetics"
GENE_EMBEDDINGS_KEY = "X_dfm_genes"  # .obsm: per-gene vectors, concatenated in gene_list order
SUBJECT_VECTOR_KEY = "X_dfm_subject"  # .obsm: genes combined (concatenation or mean)
GENETICS_EMBEDDING_KEY = "X_dfm_genetics"  # .obsm: the subject vector projected (512 dims)
REFERENCE_EMBEDDING_KEY = "dfm_reference_embedding"  # .varm: each gene's reference embedding
TRAIN_KEY = "dfm_train"  # .obs: subjects the projection was fitted on
UNS_GENETICS = "genetics"  # .uns['dfm']['genetics']: gene list, strategy, counts, projection
GENE_LIST_KEY = "gene_list"  # .uns['dfm']['genetics'] (top of .uns in files of 0.2)
REFERENCE_VERSION_KEY = "reference_version"  # .uns['dfm']['genetics']
STRATEGY_ID_KEY = "embedding_strategy_id"  # .uns['dfm']['genetics']
