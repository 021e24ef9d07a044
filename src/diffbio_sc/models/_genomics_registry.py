"""Genomics foundation models, as plain data: what each one is and how dfm imports it.

diffbio_sc runs six of these families in-process, in JAX, from a checkpoint
directory you provide, or fetched from the Hugging Face Hub only when you call
:func:`diffbio_sc.models.from_pretrained` with one of the ``checkpoints`` keys (they are
Hub repository ids): GENERator,
Nucleotide Transformer (v1 and v2), DNABERT-2, HyenaDNA and Caduceus (Ph and PS), through
:func:`diffbio_sc.models.load_checkpoint` (``dfm_in_process`` below; equal within 1e-5
in float32 to the ``transformers`` reference, for NT v2 to InstaDeep's own JAX/Haiku
model, for DNABERT-2 to its published ``bert_layers.py`` remote code, for HyenaDNA
to the ``-hf`` checkpoints' ``modeling_hyena.py`` remote code, for Caduceus to
kuleshov-group/caduceus with mamba_ssm's reference scan). Evo 2 cannot run on a CPU
machine (CUDA-only kernels; FP8 through Transformer Engine for its 1B model). For the others, embed gene sequences with the upstream code, then
bring the vectors in:

* gene / haplotype level: :func:`diffbio_sc.tl.export_gene_sequences` writes the
  distinct sequences (FASTA, content-addressed ids) and
  :class:`diffbio_sc.tl.PrecomputedEncoder` reads the vectors back into
  :func:`diffbio_sc.tl.embed_genes`;
* sequence level: :func:`diffbio_sc.tl.load_embeddings` with ``mod='dna'``.

Each record lists the architecture, tokenizer, context length, embedding width of
common checkpoints (``None`` where the checkpoint's ``config.json`` is the only
authority we have not checked), the pooling convention of the authors' own
embedding examples, and how reverse complements are handled. The docs table is
rendered from these records by :func:`genomics_models_markdown`.
"""

from __future__ import annotations

__all__ = ["GENOMICS_MODELS", "genomics_models_markdown", "TOKENIZER_KINDS"]

#: Tokenizer families used below.
TOKENIZER_KINDS = ("character", "BPE", "6-mer", "byte")

_GENE_LOADER = "tl.export_gene_sequences -> tl.PrecomputedEncoder"

GENOMICS_MODELS: tuple[dict, ...] = (
    {
        "name": "Caduceus-PS",
        "reference": "Schiff et al. 2024, arXiv:2403.03234",
        "architecture": "bidirectional Mamba (BiMamba) SSM with reverse-complement parameter sharing",
        "tokenizer": "character",
        "context_length_bp": 131_072,
        "checkpoints": {
            "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16": 256,
            "kuleshov-group/caduceus-ps_seqlen-1k_d_model-256_n_layer-4_lr-8e-3": 256,
        },
        "width_note": "d_model; the hidden states carry 2 x d_model channels (forward and RC halves)",
        "pooling": "mean over positions",
        "rc_handling": "equivariant by construction (parameter sharing); pooled output is RC-invariant",
        "dfm_rc_mode": "equivariant",
        "dfm_loader": _GENE_LOADER
        + " (rc_equivariant=True)"
        + "; in-process: models.load_checkpoint",
        "dfm_in_process": "models.load_checkpoint: BiMamba (chunked associative selective scan), "
        "RCPS embedding / blocks / add-norm; pooled (fwd + flipped RC half) / 2 is exactly "
        "strand-invariant; character tokenizer",
    },
    {
        "name": "Caduceus-Ph",
        "reference": "Schiff et al. 2024, arXiv:2403.03234",
        "architecture": "bidirectional Mamba (BiMamba) SSM",
        "tokenizer": "character",
        "context_length_bp": 131_072,
        "checkpoints": {
            "kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16": 256,
            "kuleshov-group/caduceus-ph_seqlen-1k_d_model-256_n_layer-4_lr-8e-3": 256,
        },
        "width_note": "d_model",
        "pooling": "mean over positions",
        "rc_handling": "RC data augmentation in training; post-hoc conjoining (average forward and RC) at inference",
        "dfm_rc_mode": "average",
        "dfm_loader": _GENE_LOADER + "; in-process: models.load_checkpoint",
        "dfm_in_process": "models.load_checkpoint: BiMamba (chunked associative selective scan); "
        "character tokenizer",
    },
    {
        "name": "DNABERT-2",
        "reference": "Zhou et al. 2024, ICLR; arXiv:2306.15006",
        "architecture": "BERT encoder with ALiBi positions and FlashAttention (117M parameters)",
        "tokenizer": "BPE",
        "context_length_bp": None,
        "context_note": "no fixed position table (ALiBi); vocabulary of 4,096 BPE tokens; "
        "diffbio_sc runs up to the config's max_position_embeddings (512 tokens)",
        "checkpoints": {"zhihan1996/DNABERT-2-117M": 768},
        "width_note": "hidden size",
        "pooling": "mean over token states (the model card's example; max pooling also shown)",
        "rc_handling": "none (strand-specific); average forward and RC embeddings",
        "dfm_rc_mode": "average",
        "dfm_loader": _GENE_LOADER
        + "; tl.load_embeddings(source='dnabert2', mod='dna')"
        + "; in-process: models.load_checkpoint(...).embed",
        "dfm_in_process": "models.load_checkpoint: ALiBi BERT, gated GELU feed-forward, "
        "post-LayerNorm; BPE tokenizer.json read with the tokenizers library",
    },
    {
        "name": "Evo 2",
        "reference": "Brixi et al. 2025, bioRxiv 2025.02.18.638918",
        "architecture": "StripedHyena 2 (convolutional multi-hybrid with attention), autoregressive",
        "tokenizer": "byte",
        "context_length_bp": 1_000_000,
        "context_note": "1M bp for evo2_7b / evo2_40b; 8,192 bp for evo2_1b_base and the *_base models",
        "checkpoints": {
            "arcinstitute/evo2_7b": 4096,
            "arcinstitute/evo2_40b": 8192,
            "arcinstitute/evo2_1b_base": 1920,
        },
        "width_note": "embedding dimension; embeddings are usually read from an intermediate block (e.g. blocks.28.mlp.l3 for 7B, blocks.20.mlp.l3 for 1B)",
        "pooling": "mean over positions of an intermediate layer",
        "rc_handling": "none (causal); average forward and RC embeddings",
        "dfm_rc_mode": "average",
        "dfm_loader": _GENE_LOADER + " (import only: not run in-process. Its reference code, "
        "ArcInstitute/evo2 on Vortex, needs CUDA 12.1+ GPU kernels (Flash Attention), and "
        "evo2_1b_base / 20b / 40b need FP8 through NVIDIA Transformer Engine on a Hopper GPU; "
        "there is no CPU reference to check a port against)",
    },
    {
        "name": "GENERator",
        "reference": "Wu et al. 2025, arXiv:2502.07272",
        "architecture": "Llama-style transformer decoder, autoregressive",
        "tokenizer": "6-mer",
        "context_length_bp": 98_000,
        "context_note": "98k bp (16k 6-mer tokens); inputs should be a multiple of 6 bases",
        "checkpoints": {
            "GenerTeam/GENERator-eukaryote-1.2b-base": None,
            "GenerTeam/GENERator-eukaryote-3b-base": None,
        },
        "width_note": "read hidden_size from the checkpoint's config.json",
        "pooling": "last hidden layer at the last non-padding token (</s>), as the authors' "
        "sequence-understanding code reads it; mean over tokens as an option",
        "rc_handling": "none (causal); average forward and RC embeddings",
        "dfm_rc_mode": "average",
        "dfm_loader": _GENE_LOADER + "; in-process: models.load_checkpoint",
        "dfm_in_process": "models.load_checkpoint: Llama decoder (default rotary) + 6-mer tokenizer",
    },
    {
        "name": "HyenaDNA",
        "reference": "Nguyen et al. 2023, NeurIPS; arXiv:2306.15794",
        "architecture": "Hyena long-convolution decoder, autoregressive",
        "tokenizer": "character",
        "context_length_bp": 1_000_000,
        "context_note": "checkpoints at 1k, 32k, 160k, 450k and 1M bp",
        "checkpoints": {
            "LongSafari/hyenadna-tiny-1k-seqlen-hf": 128,
            "LongSafari/hyenadna-small-32k-seqlen-hf": 256,
            "LongSafari/hyenadna-medium-160k-seqlen-hf": 256,
            "LongSafari/hyenadna-medium-450k-seqlen-hf": 256,
            "LongSafari/hyenadna-large-1m-seqlen-hf": 256,
        },
        "width_note": "d_model",
        "pooling": "mean over positions (or the last position, as the model is causal); "
        "diffbio_sc: mean of the final-LayerNorm state over the sequence's tokens "
        "(characters + [SEP], padding excluded)",
        "rc_handling": "none; RC augmentation in fine-tuning; average forward and RC embeddings",
        "dfm_rc_mode": "average",
        "dfm_loader": _GENE_LOADER + "; in-process: models.load_checkpoint",
        "dfm_in_process": "models.load_checkpoint: Hyena operator (implicit filters, FFT long "
        "convolution, O(L log L)) + character tokenizer",
    },
    {
        "name": "Nucleotide Transformer",
        "reference": "Dalla-Torre et al. 2024, Nature Methods",
        "architecture": "BERT-style transformer encoder (ESM layout), masked-LM pretraining",
        "tokenizer": "6-mer",
        "context_length_bp": 12_282,
        "context_note": "1,000 tokens (~6 kb) for v1 models, 2,048 tokens (~12 kb) for v2; non-overlapping 6-mers, leftover bases and N as single tokens, <cls> first",
        "checkpoints": {
            "InstaDeepAI/nucleotide-transformer-500m-human-ref": 1280,
            "InstaDeepAI/nucleotide-transformer-2.5b-multi-species": 2560,
            "InstaDeepAI/nucleotide-transformer-v2-50m-multi-species": 512,
            "InstaDeepAI/nucleotide-transformer-v2-100m-multi-species": 512,
            "InstaDeepAI/nucleotide-transformer-v2-250m-multi-species": 768,
            "InstaDeepAI/nucleotide-transformer-v2-500m-multi-species": 1024,
        },
        "width_note": "hidden size",
        "pooling": "mean of the last layer over non-padding tokens, <cls> included (the model cards' example)",
        "rc_handling": "none (strand-specific); average forward and RC embeddings",
        "dfm_rc_mode": "average",
        "dfm_loader": _GENE_LOADER
        + "; tl.load_embeddings(source='nucleotide_transformer', mod='dna')"
        + "; in-process: models.load_checkpoint",
        "dfm_in_process": "models.load_checkpoint: v1 (ESM, learned absolute positions) and "
        "v2 (rotary, bias-free SwiGLU feed-forward)",
    },
)


def _fmt_bp(rec: dict) -> str:
    bp = rec["context_length_bp"]
    text = "no fixed limit" if bp is None else f"{bp:,} bp"
    return f"{text} ({rec['context_note']})" if rec.get("context_note") else text


def _fmt_widths(rec: dict) -> str:
    parts = [
        f"`{name.split('/')[-1]}`: {width if width is not None else 'see config'}"
        for name, width in rec["checkpoints"].items()
    ]
    return "; ".join(parts) + f" ({rec['width_note']})"


def genomics_models_markdown(models: tuple[dict, ...] = GENOMICS_MODELS) -> str:
    """Render the registry as a Markdown table (one row per model).

    Parameters
    ----------
    models
        Registry records (default: :data:`GENOMICS_MODELS`).

    Returns
    -------
    str
        The Markdown table, header included.
    """
    header = (
        "| model | architecture | tokenizer | context | embedding width | pooling | "
        "reverse complement | dfm RC mode | import into dfm |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for rec in models:
        cells = [
            f"{rec['name']} ({rec['reference']})",
            rec["architecture"],
            rec["tokenizer"],
            _fmt_bp(rec),
            _fmt_widths(rec),
            rec["pooling"],
            rec["rc_handling"],
            f"`{rec['dfm_rc_mode']}`",
            rec["dfm_loader"],
        ]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return header + "\n".join(rows) + "\n"
