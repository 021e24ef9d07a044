"""``dfm.tl.embed_genes``: reference + GTF + VCF -> subjects x genes embeddings in MuData.

Cost follows unique sequences, not subjects: each gene's haplotypes are
deduplicated (most subjects share most alleles), the windows and reverse
complements fed to the encoder are deduplicated again across all genes and
haplotypes, and each distinct input is embedded exactly once. The reference
haplotype of every gene is one of those inputs, so it is embedded once and
reused for every subject that carries no variant in the gene (it is also kept
in ``.varm``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ... import _keys
from ..._deprecate import renamed_arguments
from ..._logging import tqdm
from ..._settings import settings
from ..._uns import provenance, to_h5ad_safe
from ..._validate import (
    DfmInputError,
    check_bool,
    check_choice,
    check_int,
    check_key,
    check_seed,
)
from ...io._atomic import atomic_path, check_writable_target
from ...io._genome import Genome, reverse_complement, sequence_digest
from ...io._gtf import read_gtf, select_gene_models
from ...io._vcf import read_vcf
from ...ops._projection import project_subjects
from ...ops._sequence import tile_sequences
from ._encoders import GeneEncoder, as_encoder, strategy_digest, unique_in_order
from ._haplotypes import GeneHaplotypes, gene_haplotypes

__all__ = ["embed_genes", "export_gene_sequences", "genetics_record", "project_subjects"]

logger = logging.getLogger("diffbio_sc")

RC_MODES = ("average", "equivariant", None)
SUBJECT_POOLING = ("concat", "mean")
PROJECTIONS = ("pca", "random", None)
#: Released argument names that changed (docs/architecture.md, "One vocabulary of arguments").
STRIDE_RENAMED = {"window_stride": "stride"}


@dataclass
class _Prepared:
    genome_version: str
    models: list
    haplotypes: list[GeneHaplotypes]
    samples: list[str]
    vcf_counts: dict
    timings: dict


def _prepare(
    fasta,
    gtf,
    vcf,
    *,
    genes,
    feature="exon",
    transcripts=None,
    samples=None,
    contig_map=None,
    vcf_contig_map=None,
    reference_version=None,
    unphased="ordered",
    missing="reference",
    use_index=False,
    unique=True,
) -> _Prepared:
    timings = {}
    t0 = time.perf_counter()
    table = gtf if isinstance(gtf, pd.DataFrame) else read_gtf(gtf)
    models = select_gene_models(table, list(genes), feature=feature, transcripts=transcripts)
    with Genome(fasta, contig_map=contig_map, version=reference_version) as genome:
        for m in models:  # contigs and bounds checked before the VCF is read
            genome.fetch(m.seqname, m.span[0], m.span[1])
        timings["annotation_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vcf_contig_map = dict(vcf_contig_map or {})
        regions = [(m.seqname, m.span[0], m.span[1]) for m in models]
        # A VCF may name a contig as the FASTA does: contig_map's FASTA name is tried
        # for a GTF contig that has no records under its own name.
        aliases = {k: [v] for k, v in (contig_map or {}).items() if k not in vcf_contig_map}
        variants = read_vcf(
            vcf,
            regions=regions,
            samples=samples,
            contig_map=vcf_contig_map,
            contig_aliases=aliases,
            use_index=use_index,
        )
        timings["read_vcf_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        haps = [
            gene_haplotypes(
                genome,
                m,
                variants,
                vcf_contig=variants.contig_names.get(m.seqname, m.seqname),
                unphased=unphased,
                missing=missing,
                unique=unique,
            )
            for m in models
        ]
        timings["haplotypes_s"] = time.perf_counter() - t0
        version = genome.version
    counts = dict(variants.counts)
    counts["contig_names"] = dict(variants.contig_names)
    return _Prepared(version, models, haps, list(variants.samples), counts, timings)


def _encoder_inputs(
    haps: list[GeneHaplotypes], window: int | None, stride: int | None, rc_mode
) -> tuple[list[str], sp.csr_matrix]:
    """All encoder inputs (with repeats) and the averaging matrix (gene sequences x inputs)."""
    inputs: list[str] = []
    rows, cols, vals = [], [], []
    r = 0
    for hap in haps:
        for seq in hap.sequences:
            # the one window rule (mirror-symmetric: strand-invariant with 'average')
            pieces, _, weight = tile_sequences([seq], window, stride)
            weight = weight / weight.sum()
            if rc_mode == "average":
                pieces = pieces + [reverse_complement(p) for p in pieces]
                weight = np.concatenate([weight, weight]) / 2.0
            for p, w in zip(pieces, weight.tolist(), strict=True):
                rows.append(r)
                cols.append(len(inputs))
                vals.append(w)
                inputs.append(p)
            r += 1
    avg = sp.csr_matrix((vals, (rows, cols)), shape=(r, len(inputs)), dtype=np.float64)
    return inputs, avg


def _embed_batched(
    encoder: GeneEncoder, seqs: list[str], batch_size: int, show_bar: bool = False
) -> np.ndarray:
    parts = []
    bar = tqdm(total=len(seqs), desc="embed_genes", unit="seq", disable=not show_bar, leave=False)
    with bar:
        for i in range(0, len(seqs), batch_size):
            out = np.asarray(encoder.embed(seqs[i : i + batch_size]), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(seqs[i : i + batch_size]):
                raise DfmInputError(
                    f"The encoder returned shape {out.shape} for {len(seqs[i : i + batch_size])} "
                    "sequences; expected (n_sequences, n_dims)."
                )
            parts.append(out)
            bar.update(len(out))
    dims = {p.shape[1] for p in parts}
    if len(dims) > 1:
        raise DfmInputError(f"The encoder returned different widths across batches: {dims}.")
    return np.concatenate(parts, axis=0)


def _check_train(train_subjects, samples: list[str]) -> np.ndarray:
    n = len(samples)
    if train_subjects is None:
        if n < 2:
            raise DfmInputError(
                f"The VCF gives {n} subject(s) ({', '.join(map(repr, samples[:3]))}); a "
                "projection is learnt from at least 2, and from one every projected value "
                "would be 0. Pass projection=None (CLI: --projection none) to keep the gene "
                "and subject vectors unprojected, or add subjects."
            )
        return np.ones(n, dtype=bool)
    arr = np.asarray(train_subjects)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise DfmInputError(
                f"train_subjects as a boolean mask needs {n} entries (one per subject), got "
                f"shape {arr.shape}."
            )
        mask = arr.copy()
    else:
        names = [str(x) for x in np.atleast_1d(arr)]
        missing = sorted(set(names) - set(samples))
        if missing:
            raise DfmInputError(
                f"train_subjects names {len(missing)} subjects not in the VCF, e.g. {missing[:5]}."
            )
        mask = np.isin(np.asarray(samples), names)
    if mask.sum() < 2:
        raise DfmInputError("train_subjects must hold at least 2 subjects to fit a projection.")
    return mask


def _gtf_record(gtf) -> dict:
    """Run-log entries for the annotation: its path and SHA-256, or a table digest.

    A table from :func:`~diffbio_sc.io.read_gtf` remembers its file
    (``.attrs['path']``), which is recorded as ``gtf_source``; since the table
    may have been edited since, its own content digest is ``gtf_table_sha256``.
    """
    if not isinstance(gtf, pd.DataFrame):
        return {"gtf": str(gtf), "gtf_sha256": _file_sha256(gtf)}
    import hashlib

    hashed = pd.util.hash_pandas_object(gtf, index=True).to_numpy()
    header = "\t".join(map(str, gtf.columns)).encode()
    digest = hashlib.sha256(header + hashed.tobytes()).hexdigest()
    return {
        "gtf": "<DataFrame>",
        "gtf_source": gtf.attrs.get("path"),
        "gtf_sha256": None,
        "gtf_table_sha256": digest,
    }


def _file_sha256(path) -> str | None:
    if isinstance(path, pd.DataFrame):
        return None
    from ...io._embeddings import file_sha256

    return file_sha256(path)


def embed_genes(
    fasta: str | os.PathLike,
    gtf: str | os.PathLike | pd.DataFrame,
    vcf: str | os.PathLike,
    *,
    genes: Sequence[str],
    encoder: Any = None,
    feature: str = "exon",
    transcripts: Mapping[str, str] | None = None,
    samples: Sequence[str] | None = None,
    contig_map: Mapping[str, str] | None = None,
    vcf_contig_map: Mapping[str, str] | None = None,
    reference_version: str | None = None,
    reverse_complement: str | None = "average",
    window: int | None = None,
    stride: int | None = None,
    subject_pooling: str = "concat",
    projection: str | None = "pca",
    n_components: int = 512,
    train_subjects: Sequence[str] | np.ndarray | None = None,
    unphased: str = "ordered",
    missing: str = "reference",
    haplotype_cache: bool = True,
    batch_size: int = 256,
    use_index: bool = False,
    seed: int = 0,
    mdata=None,
    mod: str = _keys.GENETICS_MOD,
    key_added: str = _keys.GENETICS_EMBEDDING_KEY,
    log_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    copy: bool = False,
    progress_bar: bool | None = None,
    **renamed: Any,
):
    """Embed each subject's gene sequences and combine them into a subject vector.

    For every gene the reference sequence (``feature`` intervals from ``gtf``,
    read from ``fasta``, spliced, reverse-complemented on the minus strand) is
    patched with each subject's alleles from ``vcf`` (two haplotypes per
    subject; rules in ``docs/notes/genetics.md``), embedded, and the two
    haplotype vectors averaged into the subject's gene vector. Gene vectors
    are joined into a subject vector (``subject_pooling``) and projected to
    ``n_components`` dimensions, fitted on ``train_subjects`` only.

    Parameters
    ----------
    fasta
        Reference FASTA (indexed or not; an index is built privately if absent).
    gtf
        GTF path, or a table from :func:`diffbio_sc.io.read_gtf`.
    vcf
        VCF with the subjects as samples (plain, gzip or bgzip).
    genes
        Gene names or ids (``gene_name`` or ``gene_id`` in the GTF), in the order
        kept in ``gene_list``.
    encoder
        A :class:`~diffbio_sc.tl.KmerEncoder`, :class:`~diffbio_sc.tl.FunctionEncoder`
        (e.g. a frozen model), :class:`~diffbio_sc.tl.PrecomputedEncoder` or a path
        to precomputed embeddings (see :func:`export_gene_sequences`), a
        ``dfm.models.SequenceEncoder``, a published DNA checkpoint loaded by
        :func:`diffbio_sc.models.load_checkpoint` / ``from_pretrained``
        (Nucleotide Transformer, GENERator: its own pooling, windows of at most
        the bases that fit its token context, not RC-equivariant), or any
        object with ``embed``, ``description``, ``max_length`` and
        ``rc_equivariant``. ``None``: ``KmerEncoder(k=4)``. Pooling (mean or
        CLS) is the encoder's own setting and is part of its description.
    feature
        ``'exon'`` (spliced exons of the chosen transcript), ``'CDS'``,
        ``'transcript'`` or ``'gene'`` (unspliced spans).
    transcripts
        ``{gene: transcript_id}`` overrides of the transcript choice.
    samples
        Subjects to keep (VCF sample ids), in this order; ``None``: all.
    contig_map, vcf_contig_map
        ``{GTF contig: FASTA contig}`` and ``{GTF contig: VCF contig}`` where names
        differ (e.g. ``{'MT': 'chrM'}``).
    reference_version
        Label of the reference assembly; ``None``: file name + contig digest.
    reverse_complement
        ``'average'``: embed each input and its reverse complement and average;
        ``'equivariant'``: the encoder is RC-invariant by construction (e.g.
        ``KmerEncoder(canonical=True)``), one pass; ``None``: forward strand only.
    window, stride
        Genes longer than ``window`` bases are cut into windows of exactly
        ``window`` bases, the first at the gene start and the last at its end,
        evenly spread with consecutive starts at most ``stride``
        (default ``window``) apart: the one window rule of the package
        (:func:`~diffbio_sc.ops._sequence.tile_sequences`, as in
        :func:`~diffbio_sc.tl.embed_sequences`). The layout is
        mirror-symmetric, so with ``reverse_complement='average'`` a gene and
        its reverse complement get the same vector. The gene vector is the
        mean of the window vectors. ``None``: the encoder's ``max_length``
        (whole genes if it has none). The stride is recorded as
        ``strategy['window_stride']`` (its released name, so that strategy
        ids do not change).
    subject_pooling
        ``'concat'`` (genes side by side, in ``gene_list`` order) or ``'mean'``.
    projection
        ``'pca'``, ``'random'`` (seeded Gaussian map) or ``None`` (no projection).
    n_components
        Width of the projection (512 by default).
    train_subjects
        Subjects (ids or a boolean mask) the projection is fitted on; ``None``:
        all. Use the training split of a downstream model to avoid leakage
        (:func:`logo_attribution` refits it inside every fold itself).
    unphased
        ``'ordered'`` (unphased calls used in written order) or ``'error'``
        (refuse subjects unphased-heterozygous at >= 2 variants of a gene).
    missing
        ``'reference'`` (missing alleles read as the reference) or ``'error'``.
    haplotype_cache
        Embed each distinct input once (default). ``False`` embeds every
        subject's haplotypes one by one (same result, for benchmarking).
    batch_size
        Sequences per encoder call.
    use_index
        Query the VCF through its tabix/CSI index (large files) instead of one
        full read; out-of-gene records are then not counted.
    seed
        Seed of the ``'random'`` projection.
    mdata
        A MuData to add the modality to; ``None`` creates one (and returns it).
    mod
        Name of the modality. An existing modality of that name in ``mdata`` is
        replaced only with ``overwrite=True``.
    key_added
        ``.obsm`` key of the projected subject vectors.
    log_path
        Where to write the JSON run log (atomically); ``None``: not written
        (the same record is in ``.uns['dfm']['genetics']['run_log']``).
    overwrite
        Replace an existing modality ``mod`` of ``mdata`` (otherwise an error,
        ``mdata`` unchanged).
    progress_bar
        Show a tqdm bar over the encoder batches; ``None`` follows
        ``dfm.settings.progress_bar``.
    copy
        With ``mdata``: ``False`` (default) adds the modality to ``mdata`` in
        place and returns ``None``; ``True`` leaves ``mdata`` unchanged and
        returns a modified copy. Without ``mdata`` a new MuData is returned.
    **renamed
        The old name ``window_stride`` of ``stride`` (``FutureWarning``).

    Returns
    -------
    mudata.MuData or None
        A new MuData (``mdata=None`` or ``copy=True``), else ``None`` (``mdata``
        was changed in place). Its modality ``mod`` has subjects as
        observations and genes as variables:

        - ``.X``: non-reference alleles applied per subject and gene (int32, 0..)
        - ``.obsm['X_dfm_genes']``: per-gene vectors, ``n_genes * d`` columns in
          ``gene_list`` order
        - ``.obsm['X_dfm_subject']``: the subject vector (``concat`` or ``mean``)
        - ``.obsm[key_added]``: the projection (``n_components`` columns), unless
          ``projection=None``
        - ``.obs['dfm_train']``: subjects the projection was fitted on
        - ``.varm['dfm_reference_embedding']``: each gene's reference embedding
        - ``.var``: ``gene_id``, ``transcript_id``, ``seqname``, ``strand``,
          ``feature``, ``start``, ``end`` (1-based closed span), ``n_bases``,
          ``n_unique_haplotypes`` (-1 with ``haplotype_cache=False``),
          ``n_variants``, ``n_applied``, ``n_boundary_skipped``
        - ``.uns['dfm']['genetics']``: ``gene_list``, ``reference_version``,
          ``embedding_strategy_id``, ``strategy`` (the dict the id digests),
          ``gene_dim``, ``subject_pooling``, ``key_added``, ``projection``
          (``mean``, ``components``), ``counts`` (VCF records read, ignored
          outside the genes ...), ``run_log`` (a dict) and ``created_by``;
          read it with :func:`genetics_record` (which also reads files of
          0.2, where the first three were at the top of ``.uns`` and
          ``strategy``/``run_log`` were JSON strings)
        - ``.uns['dfm']['embeddings'][key]`` for each of ``'X_dfm_genes'``,
          ``'X_dfm_subject'`` and ``key_added``: the embedding record shared
          by every writer (``source``, ``model_family``, ``adapter_mode``,
          ``artifact_id``, ``artifact_sha256``, ``preprocessing_version``,
          ``pooling_strategy``, ``n_dims``, ``weights_retrievable``,
          ``created_by``; ``docs/architecture.md``)

    Raises
    ------
    DfmInputError
        Among others: a gene contig with no VCF records (under its own name,
        its ``vcf_contig_map`` name, or its ``contig_map`` FASTA name, which is
        tried too) while the VCF has records on other contigs only (every
        subject would equal the reference); a projection with fewer than 2
        training subjects (pass ``projection=None``); a genotype allele beyond
        a record's ALT alleles.

    Notes
    -----
    The run log (``log_path`` and ``run_log``) records the GTF path and its
    SHA-256, or for a table its source file (``.attrs['path']``) and a digest
    of the table itself. A PCA of ``n`` training subjects has at most
    ``n - 1`` informative axes; the remaining columns are zero and a warning
    says so. mudata 0.3 itself warns (``FutureWarning``) about its future
    ``pull_on_update`` default whenever a MuData is written or read; set
    ``mudata.set_options(pull_on_update=False)`` to adopt that default.
    """
    import anndata as ad
    import mudata as md

    # ---- validate every argument before reading anything
    stride = renamed_arguments(
        "embed_genes", renamed, STRIDE_RENAMED, {"stride": stride}, {"stride": None}
    )["stride"]
    if isinstance(genes, str) or not isinstance(genes, Sequence) or not len(genes):
        raise DfmInputError("genes must be a non-empty list of gene names or ids.")
    check_choice("reverse_complement", reverse_complement, RC_MODES)
    check_choice("subject_pooling", subject_pooling, SUBJECT_POOLING)
    check_choice("projection", projection, PROJECTIONS)
    check_choice("unphased", unphased, ("ordered", "error"))
    check_choice("missing", missing, ("reference", "error"))
    n_components = check_int("n_components", n_components, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    window = check_int("window", window, minimum=1, allow_none=True)
    stride = check_int("stride", stride, minimum=1, allow_none=True)
    seed = check_seed(seed)
    check_key("mod", mod)
    check_key("key_added", key_added)
    if mdata is not None and not isinstance(mdata, md.MuData):
        raise TypeError(f"mdata must be a MuData or None, got {type(mdata).__name__}.")
    overwrite = check_bool("overwrite", overwrite)
    show_bar = (
        settings.progress_bar if progress_bar is None else check_bool("progress_bar", progress_bar)
    )
    copy = check_bool("copy", copy)
    if mdata is not None and mod in mdata.mod and not overwrite:
        raise DfmInputError(
            f"The MuData already has a modality {mod!r}; pass overwrite=True to replace it "
            "or mod=<another name> to keep both."
        )
    if log_path is not None:
        check_writable_target(log_path, what="run log")
    enc = as_encoder(encoder, batch_size=batch_size)
    to_h5ad_safe(enc.description, "encoder.description")  # stored in .uns: fail before reading
    if reverse_complement == "equivariant" and not enc.rc_equivariant:
        raise DfmInputError(
            "reverse_complement='equivariant' needs an encoder that is RC-invariant by "
            "construction (KmerEncoder(canonical=True), a SequenceEncoder created with "
            "reverse_complement='equivariant'); use reverse_complement='average' for this one."
        )
    if window is None:
        window = enc.max_length
    elif enc.max_length is not None and window > enc.max_length:
        raise DfmInputError(
            f"window={window} exceeds the encoder's max_length {enc.max_length}; pass "
            f"window <= {enc.max_length} (or None to use it)."
        )
    if stride is not None and window is None:
        raise DfmInputError("stride= needs a window (or an encoder with max_length).")
    if window is not None and stride is not None and stride > window:
        raise DfmInputError(
            f"stride={stride} > window={window} would skip bases; use a stride <= window."
        )
    stride = stride or window

    t_start = time.perf_counter()
    prep = _prepare(
        fasta,
        gtf,
        vcf,
        genes=genes,
        feature=feature,
        transcripts=transcripts,
        samples=samples,
        contig_map=contig_map,
        vcf_contig_map=vcf_contig_map,
        reference_version=reference_version,
        unphased=unphased,
        missing=missing,
        use_index=use_index,
        unique=haplotype_cache,
    )
    if projection is None and train_subjects is None:
        train = np.ones(len(prep.samples), dtype=bool)  # nothing is fitted
    else:
        train = _check_train(train_subjects, prep.samples)
    n_sub, n_genes = len(prep.samples), len(prep.models)

    # ---- embed distinct inputs once
    t0 = time.perf_counter()
    inputs, avg = _encoder_inputs(prep.haplotypes, window, stride, reverse_complement)
    if haplotype_cache:
        distinct, inverse = unique_in_order(inputs)
        emb = _embed_batched(enc, distinct, batch_size, show_bar)
        seq_emb = avg @ emb[inverse].astype(np.float64)
        n_embedded = len(distinct)
    else:
        emb = _embed_batched(enc, inputs, batch_size, show_bar)
        seq_emb = avg @ emb.astype(np.float64)
        n_embedded = len(inputs)
    if not np.isfinite(seq_emb).all():
        raise DfmInputError("The encoder produced NaN or infinite embeddings.")
    prep.timings["embed_s"] = time.perf_counter() - t0
    d = seq_emb.shape[1]

    # ---- gene vectors (mean of the two haplotypes), subject vectors, projection
    t0 = time.perf_counter()
    gene_vecs = np.empty((n_sub, n_genes, d), dtype=np.float32)
    ref_vecs = np.empty((n_genes, d), dtype=np.float32)
    offset = 0
    for g, hap in enumerate(prep.haplotypes):
        block = seq_emb[offset : offset + len(hap.sequences)]
        gene_vecs[:, g] = 0.5 * (block[hap.index[:, 0]] + block[hap.index[:, 1]])
        ref_vecs[g] = block[0]
        offset += len(hap.sequences)
    flat = gene_vecs.reshape(n_sub, n_genes * d)
    subject = flat if subject_pooling == "concat" else gene_vecs.mean(axis=1)
    proj_info = None
    Z = None
    if projection is not None:
        Z, proj_info = project_subjects(
            subject, train, method=projection, n_components=n_components, seed=seed
        )
        if proj_info["n_informative"] < n_components:
            logger.warning(
                "embed_genes: the PCA of %d training subjects has %d informative axes; "
                "columns %d..%d of .obsm[%r] are zero. Pass n_components=%d to drop them.",
                int(train.sum()),
                proj_info["n_informative"],
                proj_info["n_informative"],
                n_components - 1,
                key_added,
                max(proj_info["n_informative"], 1),
            )
    prep.timings["project_s"] = time.perf_counter() - t0
    prep.timings["total_s"] = time.perf_counter() - t_start

    # ---- metadata
    strategy = {
        "encoder": dict(enc.description),
        "reverse_complement": reverse_complement,
        "window": window,
        # the record field keeps its released name (the argument is now stride=)
        "window_stride": stride if window is not None else None,
        "window_pooling": "mean",
        "window_layout": "mirror_symmetric",
        "haplotype_pooling": "mean",
        "feature": feature,
        "transcripts": dict(sorted((transcripts or {}).items())),
        "subject_pooling": subject_pooling,
        "projection": projection,
        "n_components": n_components if projection is not None else None,
        "projection_seed": seed if projection == "random" else None,
        "unphased": unphased,
        "missing": missing,
    }
    strategy_id = strategy_digest(strategy)
    gene_list = [m.gene for m in prep.models]
    counts = {
        "n_subjects": n_sub,
        "n_genes": n_genes,
        "vcf_records_read": prep.vcf_counts.get("n_records"),
        "vcf_records_in_gene_spans": prep.vcf_counts.get("n_kept"),
        "vcf_records_outside_genes": prep.vcf_counts.get("n_outside"),
        "n_distinct_gene_sequences": int(sum(len(h.sequences) for h in prep.haplotypes)),
        "n_encoder_inputs": len(inputs),
        "n_encoder_calls_sequences": n_embedded,
    }
    for key in (
        "n_variants",
        "n_applied",
        "n_boundary_skipped",
        "n_between_intervals",
        "n_missing_calls",
        "n_unphased_het",
        "n_star_alleles",
    ):
        counts[key] = int(sum(h.counts[key] for h in prep.haplotypes))
    run_log = {
        "created_by": provenance("tl.embed_genes"),
        "inputs": {
            "fasta": str(fasta),
            **_gtf_record(gtf),
            "vcf": str(vcf),
            "vcf_sha256": _file_sha256(vcf),
            "vcf_contig_names": prep.vcf_counts.get("contig_names", {}),
        },
        "gene_list": gene_list,
        "reference_version": prep.genome_version,
        "embedding_strategy_id": strategy_id,
        "strategy": strategy,
        "haplotype_cache": bool(haplotype_cache),
        "counts": counts,
        "timings_s": {k: round(float(v), 4) for k, v in prep.timings.items()},
    }

    # ---- build the modality (nothing written yet)
    var = pd.DataFrame(
        {
            "gene_id": [m.gene_id for m in prep.models],
            "transcript_id": [m.transcript_id or "" for m in prep.models],
            "seqname": [m.seqname for m in prep.models],
            "strand": [m.strand for m in prep.models],
            "feature": [m.feature for m in prep.models],
            "start": [m.span[0] for m in prep.models],
            "end": [m.span[1] for m in prep.models],
            "n_bases": [m.length for m in prep.models],
            "n_unique_haplotypes": [
                len(np.unique(h.index)) if haplotype_cache else -1 for h in prep.haplotypes
            ],
            "n_variants": [h.counts["n_variants"] for h in prep.haplotypes],
            "n_applied": [h.counts["n_applied"] for h in prep.haplotypes],
            "n_boundary_skipped": [h.counts["n_boundary_skipped"] for h in prep.haplotypes],
        },
        index=pd.Index(gene_list, name="gene"),
    )
    obs = pd.DataFrame({_keys.TRAIN_KEY: train}, index=pd.Index(prep.samples, name="subject"))
    X = np.stack([h.alt_alleles for h in prep.haplotypes], axis=1).astype(np.int32)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm[_keys.GENE_EMBEDDINGS_KEY] = flat
    adata.obsm[_keys.SUBJECT_VECTOR_KEY] = subject.astype(np.float32)
    if Z is not None:
        adata.obsm[key_added] = Z
    adata.varm[_keys.REFERENCE_EMBEDDING_KEY] = ref_vecs
    created_by = provenance("tl.embed_genes")
    section = {
        "gene_list": gene_list,
        "reference_version": prep.genome_version,
        "embedding_strategy_id": strategy_id,
        "strategy": strategy,
        "gene_dim": int(d),
        "subject_pooling": subject_pooling,
        "key_added": key_added if Z is not None else None,
        "counts": counts,
        "projection": proj_info,
        "run_log": run_log,
        "created_by": created_by,
    }
    widths = {_keys.GENE_EMBEDDINGS_KEY: flat.shape[1], _keys.SUBJECT_VECTOR_KEY: subject.shape[1]}
    poolings = {
        _keys.GENE_EMBEDDINGS_KEY: "haplotype_mean;genes_concat",
        _keys.SUBJECT_VECTOR_KEY: f"haplotype_mean;genes_{subject_pooling}",
    }
    if Z is not None:
        widths[key_added] = Z.shape[1]
        poolings[key_added] = f"{poolings[_keys.SUBJECT_VECTOR_KEY]};{projection}"
    base = _embedding_record(enc, strategy_id, prep.genome_version, created_by)
    records = {
        k: {**base, "pooling_strategy": poolings[k], "n_dims": int(w)} for k, w in widths.items()
    }
    adata.uns[_keys.UNS_KEY] = {
        _keys.UNS_GENETICS: to_h5ad_safe(section, ".uns['dfm']['genetics']"),
        _keys.UNS_EMBEDDINGS: to_h5ad_safe(records, ".uns['dfm']['embeddings']"),
    }

    # ---- write last: the log file, then the MuData
    if log_path is not None:
        with atomic_path(log_path, what="run log") as tmp:
            Path(tmp).write_text(json.dumps(run_log, indent=2, sort_keys=True, default=str))
    logger.info(
        "embed_genes: %d subjects x %d genes, %d distinct encoder inputs of %d "
        "(strategy %s) in %.2fs",
        n_sub,
        n_genes,
        n_embedded,
        len(inputs),
        strategy_id,
        prep.timings["total_s"],
    )
    with warnings.catch_warnings():
        # mudata 0.3 announces a change of .update() defaults; it does not affect us.
        warnings.filterwarnings("ignore", message=".*pull_on_update.*", category=FutureWarning)
        # Two genetics modalities share their gene names (e.g. two encoders); mudata then
        # does not pull .var columns into the global .var, which nothing here relies on.
        warnings.filterwarnings(
            "ignore", message="Cannot join columns with the same name", category=UserWarning
        )
        if mdata is None:
            return md.MuData({mod: adata})
        out = mdata.copy() if copy else mdata
        out.mod[mod] = adata
        out.update()
    return out if copy else None


def _embedding_record(enc, strategy_id: str, genome_version: str, created_by: dict) -> dict:
    """Return the core ``.uns['dfm']['embeddings']`` fields of an ``embed_genes`` result."""
    desc = dict(enc.description)
    kind = str(desc.get("kind", "custom"))
    family, mode = _ENCODER_KINDS.get(kind, ("external", "frozen_encoder"))
    if kind == "dna_checkpoint":
        family = str(desc.get("model_family", family))
    sha = desc.get("artifact_sha256") or desc.get("checkpoint_sha256") or desc.get("weights_sha256")
    return {
        "source": str(desc.get("source", kind)),
        "model_family": family,
        "adapter_mode": mode,
        "artifact_id": f"{kind}-{strategy_id}",
        "artifact_sha256": sha if isinstance(sha, str) else None,
        "preprocessing_version": f"haplotypes;reference={genome_version};strategy={strategy_id}",
        "weights_retrievable": mode != "frozen_encoder",
        "embedding_strategy_id": strategy_id,
        "created_by": created_by,
    }


#: encoder ``description['kind']`` -> (``model_family``, ``adapter_mode``)
_ENCODER_KINDS = {
    "kmer_frequency": ("kmer_frequency", "fixed_features"),
    "precomputed": ("external", "precomputed"),
    "dfm_sequence_encoder": ("sequence_transformer", "native_trainable"),
    "dna_checkpoint": ("external", "checkpoint"),
}


def genetics_record(adata) -> dict:
    """Return the ``.uns['dfm']['genetics']`` record of an :func:`embed_genes` modality.

    Reads the layout of this version and that of 0.2 (``gene_list``,
    ``reference_version`` and ``embedding_strategy_id`` at the top of ``.uns``,
    ``strategy`` and ``run_log`` as JSON strings), so files written before keep
    working. Raises :class:`DfmInputError` when the modality has none.
    """
    uns = adata.uns
    sec = dict((uns.get(_keys.UNS_KEY) or {}).get(_keys.UNS_GENETICS) or {})
    for key in (_keys.GENE_LIST_KEY, _keys.REFERENCE_VERSION_KEY, _keys.STRATEGY_ID_KEY):
        if key not in sec and key in uns:  # 0.2 layout
            sec[key] = uns[key]
    for key in ("strategy", "run_log"):
        if isinstance(sec.get(key), str):
            sec[key] = json.loads(sec[key])
    if _keys.GENE_LIST_KEY not in sec:
        raise DfmInputError(
            "No embed_genes record (.uns['dfm']['genetics']['gene_list']) found; run "
            "dfm.tl.embed_genes first."
        )
    sec[_keys.GENE_LIST_KEY] = [str(g) for g in sec[_keys.GENE_LIST_KEY]]
    return sec


_EXPORT_OPTIONS = (
    "feature",
    "transcripts",
    "samples",
    "contig_map",
    "vcf_contig_map",
    "unphased",
    "missing",
    "use_index",
)


def export_gene_sequences(
    fasta: str | os.PathLike,
    gtf: str | os.PathLike | pd.DataFrame,
    vcf: str | os.PathLike,
    path: str | os.PathLike,
    *,
    genes: Sequence[str],
    window: int | None = None,
    stride: int | None = None,
    reverse_complement: str | None = "average",
    **options: Any,
) -> pd.DataFrame:
    """Write the distinct sequences :func:`embed_genes` would embed, for an external model.

    Each record id is the sequence's digest (``seq_`` + 20 hex digits of its
    SHA-256), which is how :class:`~diffbio_sc.tl.PrecomputedEncoder` finds the
    vectors again. Use the same settings here and in :func:`embed_genes`
    (``window`` = the upstream model's context, the same ``reverse_complement``).

    Parameters
    ----------
    fasta, gtf, vcf, genes, window, stride, reverse_complement
        As in :func:`embed_genes`.
    path
        FASTA to write (atomically).
    **options
        ``feature``, ``transcripts``, ``samples``, ``contig_map``,
        ``vcf_contig_map``, ``unphased``, ``missing``, ``use_index``, as in
        :func:`embed_genes`; and ``window_stride``, the old name of ``stride``
        (``FutureWarning``).

    Returns
    -------
    pandas.DataFrame
        ``sequence_id`` and ``length`` of each record written.
    """
    old = {k: options.pop(k) for k in list(options) if k in STRIDE_RENAMED}
    stride = renamed_arguments(
        "export_gene_sequences", old, STRIDE_RENAMED, {"stride": stride}, {"stride": None}
    )["stride"]
    unknown = sorted(set(options) - set(_EXPORT_OPTIONS))
    if unknown:
        raise TypeError(
            f"export_gene_sequences got unexpected options {unknown}; allowed: "
            f"{list(_EXPORT_OPTIONS)}."
        )
    check_choice("reverse_complement", reverse_complement, RC_MODES)
    window = check_int("window", window, minimum=1, allow_none=True)
    stride = check_int("stride", stride, minimum=1, allow_none=True)
    check_writable_target(path, what="FASTA")
    prep = _prepare(fasta, gtf, vcf, genes=genes, **options)
    inputs, _ = _encoder_inputs(prep.haplotypes, window, stride or window, reverse_complement)
    distinct, _ = unique_in_order(inputs)
    ids = [sequence_digest(s) for s in distinct]
    with atomic_path(path, what="FASTA") as tmp, open(tmp, "w") as fh:
        for i, s in zip(ids, distinct, strict=True):
            fh.write(f">{i}\n")
            for k in range(0, len(s), 80):
                fh.write(s[k : k + 80] + "\n")
    return pd.DataFrame({"sequence_id": ids, "length": [len(s) for s in distinct]})
