"""``dfm embed-sequences`` and ``dfm embed-genes``: MuData outputs (``.h5mu``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    EPOCH_BUDGET_SEQUENCES,
    DeprecatedAlias,
    Reporter,
    add_common,
    collect,
    command,
    given,
    input_file,
    output_dir,
    output_file,
    parse_mapping,
    positive_int,
    quiet_mudata,
    read_list,
    seed,
    write_h5mu,
)

H5MU = (".h5mu",)
_RC = ("average", "equivariant", "none")


def _rc(value: str) -> str | None:
    return None if value == "none" else value


# ---------------------------------------------------------------- embed-sequences

#: Architecture options of the encoder trained when no ``--encoder`` is given.
_ARCH_OPTS = (
    "hidden_dim",
    "num_layers",
    "num_heads",
    "intermediate_dim",
    "max_length",
    "tokenizer",
    "k",
)
_PRETRAIN_OPTS = ("pretrain_epochs", "save_model", *_ARCH_OPTS)


def _embed_sequences(args: argparse.Namespace) -> int:
    import mudata as md

    import diffbio_sc as dfm

    say = Reporter(args)
    src = input_file(args.input, "input FASTA")
    out = output_file(args.out, force=args.force, inputs=[src], suffixes=H5MU)
    kwargs: dict = {}
    if args.encoder is not None:
        wrong = given(args, _PRETRAIN_OPTS)
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} only apply when no --encoder is given (an encoder is "
                "then trained on the input); drop them or drop --encoder."
            )
        if not Path(args.encoder).is_dir():
            raise FileNotFoundError(
                f"--encoder {args.encoder!r} is not a directory; pass a folder written by "
                "`dfm embed-sequences --save-model` (or encoder.save) or a Nucleotide "
                "Transformer / GENERator checkpoint folder, or leave --encoder "
                "out to train one on the input."
            )
        encoder = args.encoder
    else:
        from ..models import SequenceEncoderConfig

        arch = collect(args, _ARCH_OPTS)
        if args.reverse_complement == "equivariant":
            arch["reverse_complement"] = "equivariant"
        kwargs["config"] = SequenceEncoderConfig(alphabet=args.alphabet, **arch)
        kwargs["seed"] = args.seed
        if args.pretrain_epochs is not None:
            kwargs["epochs"] = args.pretrain_epochs
        if args.save_model is not None:
            kwargs["save_model"] = str(
                output_dir(args.save_model, force=args.force, option="--save-model")
            )
        encoder = None
    adata = dfm.io.read_fasta(
        src, alphabet=args.alphabet, ambiguous=args.ambiguous, duplicates=args.duplicates
    )
    say(f"read {adata.n_obs} sequences from {src}")
    if encoder is None:
        say("training a sequence encoder on these sequences, then embedding them")
    with quiet_mudata():
        mdata = md.MuData({args.mod: adata})
        dfm.tl.embed_sequences(
            mdata,
            mod=args.mod,
            encoder=encoder,
            reverse_complement=_rc(args.reverse_complement),
            key_added=args.key_added,
            batch_size=args.batch_size,
            alphabet=args.alphabet,
            window=args.window,
            stride=args.stride,
            **kwargs,
        )
        write_h5mu(mdata, out)
    shape = mdata[args.mod].obsm[args.key_added].shape
    say(f"wrote {out}: ['{args.mod}'].obsm[{args.key_added!r}] {shape}")
    if kwargs.get("save_model"):
        say(f"saved the encoder to {kwargs['save_model']} (reuse it with --encoder)")
    return 0


def _add_embed_sequences(sub) -> None:
    p = command(
        sub,
        "embed-sequences",
        _embed_sequences,
        help="embed the records of a FASTA file into a MuData modality",
        description="Read a FASTA file (dfm.io.read_fasta: one observation per record, the "
        "sequence in .obs['sequence']) into a MuData modality and embed every sequence "
        "(dfm.tl.embed_sequences). Without --encoder, a sequence encoder is pretrained on "
        "these sequences (masked-language model, seeded) and used; keep it with --save-model. "
        "Writes ['MOD'].obsm[KEY] and ['MOD'].uns['dfm']['embeddings'][KEY].",
    )
    p.set_defaults(library_names={"epochs": "pretrain_epochs"})  # Python argument -> option dest
    p.add_argument("input", metavar="IN.fa", help="FASTA file (plain or gzipped)")
    p.add_argument(
        "-o", "--out", required=True, metavar="OUT.h5mu", help="output MuData (required)"
    )
    p.add_argument("--mod", default="dna", help="modality name in the MuData")
    p.add_argument(
        "--encoder",
        metavar="DIR",
        help="saved sequence encoder (--save-model of an earlier run, or encoder.save), or a "
        "Nucleotide Transformer / GENERator checkpoint folder (config.json, weights, vocab.txt); "
        "default: pretrain one on the input",
    )
    p.add_argument(
        "--reverse-complement",
        choices=_RC,
        default="average",
        help="average: embed both strands and average; equivariant: strand-invariant encoder "
        "(built so when trained here); none: forward strand only",
    )
    p.add_argument("--key-added", default="X_dfm_seq", help=".obsm key of the embeddings")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sequences per forward pass")
    p.add_argument("--alphabet", choices=("dna", "rna"), default="dna", help="sequence alphabet")
    p.add_argument(
        "--window",
        type=positive_int,
        help="embed sequences longer than this many bases as overlapping windows of this "
        "length, averaged by length (default: a longer sequence is an error)",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        help="most bases between window starts (default: half the window)",
    )
    p.add_argument(
        "--ambiguous",
        choices=("keep", "N", "error"),
        default="keep",
        help="IUPAC ambiguity codes: keep them, replace them by N, or refuse them",
    )
    p.add_argument(
        "--duplicates",
        choices=("error", "make_unique"),
        default="error",
        help="repeated record ids: refuse, or suffix them to make them unique",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the pretraining")
    train = p.add_argument_group("pretraining (no --encoder)")
    train.add_argument(
        "--pretrain-epochs",
        type=positive_int,
        help=f"epochs (default: the library's budget, {EPOCH_BUDGET_SEQUENCES})",
    )
    train.add_argument(
        "--save-model",
        metavar="DIR",
        help="folder to save the trained encoder to (default: not saved)",
    )
    train.add_argument("--hidden-dim", type=positive_int, help="embedding width (default: 256)")
    train.add_argument(
        "--n-layers",
        dest="num_layers",
        metavar="N_LAYERS",
        type=positive_int,
        help="transformer layers (default: 4)",
    )
    train.add_argument(
        "--n-heads",
        dest="num_heads",
        metavar="N_HEADS",
        type=positive_int,
        help="attention heads (default: 4)",
    )
    for old, new, dest in (
        ("--num-layers", "--n-layers", "num_layers"),
        ("--num-heads", "--n-heads", "num_heads"),
    ):
        train.add_argument(
            old,
            dest=dest,
            type=positive_int,
            action=DeprecatedAlias,
            new=new,
            help=argparse.SUPPRESS,
        )
    train.add_argument(
        "--intermediate-dim", type=positive_int, help="feed-forward width (default: 1024)"
    )
    train.add_argument(
        "--max-length", type=positive_int, help="longest input in tokens (default: 512)"
    )
    train.add_argument(
        "--tokenizer",
        choices=("char", "kmer", "nt6"),
        help="char: one token per base (library default); kmer: overlapping k-mers; "
        "nt6: non-overlapping 6-mers",
    )
    train.add_argument(
        "--k", type=positive_int, help="k-mer size for --tokenizer kmer (default: 6)"
    )
    add_common(p)


# ---------------------------------------------------------------- embed-genes


def _gene_encoder(args: argparse.Namespace):
    from ..tl._genetics._encoders import KmerEncoder, PrecomputedEncoder

    if args.encoder == "kmer":
        if args.encoder_source is not None or args.encoder_max_length is not None:
            raise ValueError(
                "--encoder-source and --encoder-max-length describe a precomputed "
                "embedding file given with --encoder FILE; drop them for --encoder kmer."
            )
        return KmerEncoder(args.k, canonical=args.canonical)
    if args.k != 4 or args.canonical:
        raise ValueError("--k and --canonical apply to --encoder kmer only; drop them.")
    path = Path(args.encoder)
    if path.is_dir():
        if args.encoder_source is not None or args.encoder_max_length is not None:
            raise ValueError(
                "--encoder-source and --encoder-max-length apply to a precomputed embedding "
                "file, not to a saved encoder folder; drop them."
            )
        from ..models import load

        return load(path)
    input_file(args.encoder, "--encoder embedding file")
    return PrecomputedEncoder(
        path, source=args.encoder_source or "generic", max_length=args.encoder_max_length
    )


def _embed_genes(args: argparse.Namespace) -> int:
    import diffbio_sc as dfm

    say = Reporter(args)
    fasta = input_file(args.reference, "--reference FASTA")
    gtf_path = input_file(args.gtf, "--gtf annotation")
    vcf = input_file(args.vcf, "--vcf calls")
    inputs = [fasta, gtf_path, vcf]
    out = output_file(args.out, force=args.force, inputs=inputs, suffixes=H5MU)
    log = None
    if args.log is not None:
        log = output_file(
            args.log, force=args.force, inputs=inputs, suffixes=(".json",), option="--log"
        )
        if log.resolve() == out.resolve():
            raise ValueError("--log and -o name the same file; choose two names.")
    contig_map = parse_mapping(args.contig_map, "--contig-map")
    transcripts = parse_mapping(args.transcripts, "--transcripts")
    vcf_contig_map = parse_mapping(args.vcf_contig_map, "--vcf-contig-map")
    samples = read_list(args.samples, "--samples")
    train_subjects = read_list(args.train_subjects, "--train-subjects")
    genes = read_list(args.genes, "--genes")
    encoder = _gene_encoder(args)
    if genes is None:
        gtf = dfm.io.read_gtf(gtf_path)
        column = "gene_name" if "gene_name" in gtf.columns else "gene_id"
        if column not in gtf.columns:
            raise ValueError(
                f"{str(gtf_path)!r} has neither gene_name nor gene_id attributes; name the "
                "genes with --genes."
            )
        genes = gtf[column].dropna().astype(str).unique().tolist()
    say(f"embedding {len(genes)} genes for the subjects of {vcf}")
    with quiet_mudata():
        mdata = dfm.tl.embed_genes(
            fasta,
            gtf_path,  # the path, so that the run log records it and its SHA-256
            vcf,
            genes=genes,
            encoder=encoder,
            feature=args.feature,
            transcripts=transcripts,
            samples=samples,
            contig_map=contig_map,
            vcf_contig_map=vcf_contig_map,
            reference_version=args.reference_version,
            reverse_complement=_rc(args.reverse_complement),
            window=args.window,
            stride=args.stride,
            subject_pooling=args.subject_pooling,
            projection=None if args.projection == "none" else args.projection,
            n_components=args.n_components,
            train_subjects=train_subjects,
            unphased=args.unphased,
            missing=args.missing,
            batch_size=args.batch_size,
            use_index=args.use_index,
            seed=args.seed,
            mod=args.mod,
            key_added=args.key_added,
            log_path=log,
        )
        write_h5mu(mdata, out)
    g = mdata[args.mod]
    say(f"wrote {out}: ['{args.mod}'] {g.n_obs} subjects x {g.n_vars} genes")
    if log is not None:
        say(f"wrote the run log {log}")
    return 0


def _add_embed_genes(sub) -> None:
    p = command(
        sub,
        "embed-genes",
        _embed_genes,
        help="subject x gene embeddings from a reference FASTA, a GTF and a VCF",
        description="For every gene, patch the reference sequence with each subject's "
        "alleles (two haplotypes per subject), embed it, average the haplotypes, join the "
        "genes into a subject vector and project it (dfm.tl.embed_genes). Writes a MuData "
        "whose modality MOD has subjects as observations and genes as variables: "
        ".obsm['X_dfm_genes'], .obsm['X_dfm_subject'], .obsm[KEY], .uns['dfm']['genetics'] "
        "(gene_list, reference_version, embedding_strategy_id).",
    )
    p.set_defaults(library_names={"log_path": "log"})  # Python argument -> option dest
    p.add_argument("--reference", required=True, metavar="REF.fa", help="reference FASTA")
    p.add_argument("--gtf", required=True, metavar="GENES.gtf", help="gene annotation (GTF)")
    p.add_argument(
        "--vcf", required=True, metavar="CALLS.vcf", help="variant calls, subjects as samples"
    )
    p.add_argument(
        "-o", "--out", required=True, metavar="OUT.h5mu", help="output MuData (required)"
    )
    p.add_argument(
        "--genes",
        nargs="+",
        metavar="GENE",
        help="gene names or ids, in output order (@FILE: one per line); default: every "
        "gene of the GTF",
    )
    p.add_argument(
        "--samples",
        nargs="+",
        metavar="ID",
        help="subjects to keep, in order (@FILE); default: all",
    )
    enc = p.add_argument_group("encoder")
    enc.add_argument(
        "--encoder",
        default="kmer",
        metavar="kmer|DIR|FILE",
        help="kmer: k-mer frequencies (training-free); DIR: a saved sequence encoder; FILE: "
        "precomputed embeddings keyed by dfm.tl.export_gene_sequences ids",
    )
    enc.add_argument("--k", type=positive_int, default=4, help="k-mer length for --encoder kmer")
    enc.add_argument(
        "--canonical",
        action="store_true",
        help="merge each k-mer with its reverse complement (strand-invariant)",
    )
    enc.add_argument(
        "--encoder-source", help="upstream model name of a precomputed FILE (default: generic)"
    )
    enc.add_argument(
        "--encoder-max-length",
        type=positive_int,
        help="window (bases) the precomputed FILE was exported with (default: not windowed)",
    )
    p.add_argument(
        "--feature",
        choices=("exon", "CDS", "transcript", "gene"),
        default="exon",
        help="exon/CDS: spliced; transcript/gene: unspliced spans",
    )
    p.add_argument(
        "--transcripts",
        nargs="+",
        metavar="GENE=TRANSCRIPT",
        help="transcript to use for a gene, overriding the default choice",
    )
    p.add_argument(
        "--contig-map",
        nargs="+",
        metavar="GTF=FASTA",
        help="contig renames from the GTF to the FASTA, e.g. MT=chrM (default: none)",
    )
    p.add_argument(
        "--vcf-contig-map",
        nargs="+",
        metavar="GTF=VCF",
        help="contig renames from the GTF to the VCF (default: none)",
    )
    p.add_argument("--reference-version", help="assembly label (default: file name + digest)")
    p.add_argument(
        "--reverse-complement",
        choices=_RC,
        default="average",
        help="average both strands; equivariant: the encoder is strand-invariant; none",
    )
    p.add_argument(
        "--window", type=positive_int, help="window (bases) for long genes (default: whole genes)"
    )
    p.add_argument(
        "--stride", type=positive_int, help="largest step between windows (default: the window)"
    )
    p.add_argument(
        "--window-stride",
        dest="stride",
        type=positive_int,
        action=DeprecatedAlias,
        new="--stride",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--subject-pooling",
        choices=("concat", "mean"),
        default="concat",
        help="gene vectors -> subject vector",
    )
    p.add_argument(
        "--projection",
        choices=("pca", "random", "none"),
        default="pca",
        help="projection of the subject vector",
    )
    p.add_argument("--n-components", type=positive_int, default=512, help="projection width")
    p.add_argument(
        "--train-subjects",
        nargs="+",
        metavar="ID",
        help="subjects the projection is fitted on (@FILE); default: all",
    )
    p.add_argument(
        "--unphased", choices=("ordered", "error"), default="ordered", help="unphased calls"
    )
    p.add_argument(
        "--missing", choices=("reference", "error"), default="reference", help="missing alleles"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=256, help="sequences per encoder call"
    )
    p.add_argument("--use-index", action="store_true", help="query the VCF through its index")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random projection")
    p.add_argument("--mod", default="genetics", help="modality name")
    p.add_argument("--key-added", default="X_dfm_genetics", help=".obsm key of the projection")
    p.add_argument("--log", metavar="FILE.json", help="write the JSON run log here (default: none)")
    add_common(p)


def add_parsers(sub) -> None:
    """Register the two MuData subcommands."""
    _add_embed_sequences(sub)
    _add_embed_genes(sub)
