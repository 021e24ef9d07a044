"""GTF annotation: reading and gene interval selection.

Coordinates follow GTF itself: **1-based, closed** (``start`` and ``end`` are
both inside the feature; a feature of one base has ``start == end``). They are
kept that way in every table returned here; :mod:`diffbio_sc.io._genome`
converts to Python's 0-based half-open slices in one place.

No maintained GTF reader among the project's dependencies keeps the nine
columns and all attributes as plain pandas columns without pulling in a large
framework, so the file is read with :func:`pandas.read_csv` and the attribute
column is parsed with one vectorised regular expression.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._validate import DfmInputError

__all__ = ["read_gtf", "GeneModel", "select_gene_models", "GTF_COLUMNS", "FEATURES"]

#: The nine GTF columns, in file order.
GTF_COLUMNS = ("seqname", "source", "feature", "start", "end", "score", "strand", "frame")
#: Interval kinds :func:`select_gene_models` can return.
FEATURES = ("gene", "transcript", "exon", "CDS")

_ATTR_RE = r'\s*([^\s;"]+)\s+(?:"([^"]*)"|([^\s;"]+))\s*;?'


def _parse_attributes(attrs: pd.Series) -> pd.DataFrame:
    """Parse ``key "value";`` pairs into one column per key (repeated keys joined by ',')."""
    if attrs.empty:
        return pd.DataFrame(index=attrs.index)
    pairs = attrs.fillna("").str.extractall(_ATTR_RE)
    if pairs.empty:
        return pd.DataFrame(index=attrs.index)
    pairs.columns = ["key", "quoted", "bare"]
    pairs["value"] = pairs["quoted"].fillna(pairs["bare"])
    pairs = pairs.reset_index(level="match")
    # GTF allows a key to repeat (tag "basic"; tag "CCDS";): keep every value.
    joined = pairs.groupby([pairs.index, "key"], sort=False)["value"].agg(",".join)
    wide = joined.unstack("key")
    wide = wide.reindex(attrs.index)
    wide.columns.name = None
    return wide


_GFF3_ATTR = r"^\s*[^\s=;\"]+=[^;]*(?:;|$)"
_GTF_ATTR = r'^\s*[^\s=;"]+\s+(?:"[^"]*"|[^\s;"]+)\s*(?:;|$)'


def _refuse_gff3(path: Path, attributes: pd.Series) -> None:
    """Raise when the attribute column is written GFF3-style (``key=value;``)."""
    sample = attributes[attributes.str.len() > 0].head(1000)
    if sample.empty:
        return
    gff3 = sample.str.contains(_GFF3_ATTR, regex=True)
    gtf = sample.str.contains(_GTF_ATTR, regex=True)
    if gff3.mean() > 0.5 and not gtf.any():
        raise DfmInputError(
            f"{str(path)!r} looks like a GFF3 file, not GTF: its attributes are written "
            f"'key=value' (e.g. {sample[gff3].iloc[0][:80]!r}) and have no gene_id \"...\" "
            "entries. Convert it to GTF first, e.g. 'gffread in.gff3 -T -o out.gtf' or "
            "AGAT's agat_convert_sp_gff2gtf.pl, or download the GTF of the same release."
        )


def read_gtf(
    path: str | os.PathLike,
    *,
    features: str | list[str] | None = None,
) -> pd.DataFrame:
    """Read a GTF (GFF2) annotation file into a DataFrame.

    Parameters
    ----------
    path
        A ``.gtf`` file, plain or gzip-compressed (``.gtf.gz``).
    features
        Keep only these feature types (e.g. ``['exon', 'CDS']``); ``None`` keeps all.

    Returns
    -------
    pandas.DataFrame
        One row per record, with columns ``seqname, source, feature, start, end,
        score, strand, frame`` followed by one column per attribute key
        (``gene_id``, ``gene_name``, ``transcript_id``, ``exon_number`` ...; a key
        repeated in one record, such as ``tag``, keeps every value joined by
        ``','``; a key absent from a record is NaN). ``start`` and ``end`` are
        **1-based and closed**, as in the file (``int64``); ``score`` is float
        (NaN for ``'.'``); ``frame`` is a nullable integer (``<NA>`` for ``'.'``);
        ``strand`` is ``'+'``, ``'-'`` or ``'.'``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    DfmInputError
        A line does not have nine tab-separated columns, coordinates are not
        positive integers with ``start <= end``, a strand is not ``+``/``-``/``.``,
        or the file is GFF3 (``key=value`` attributes) rather than GTF.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GTF file {str(path)!r} not found. Check the path.")
    try:
        raw = pd.read_csv(
            path,
            sep="\t",
            comment="#",
            header=None,
            dtype=str,
            keep_default_na=False,
            quoting=3,  # csv.QUOTE_NONE: attribute values carry their own quotes
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise DfmInputError(f"GTF file {str(path)!r} holds no records.") from None
    except pd.errors.ParserError as err:
        raise DfmInputError(
            f"GTF file {str(path)!r} could not be parsed as 9 tab-separated columns ({err}). "
            "Is it a GFF3 or BED file? Convert it to GTF first."
        ) from None
    if raw.shape[1] != 9:
        raise DfmInputError(
            f"GTF file {str(path)!r} has {raw.shape[1]} tab-separated columns; GTF has 9 "
            "(seqname, source, feature, start, end, score, strand, frame, attributes)."
        )
    raw.columns = [*GTF_COLUMNS, "attributes"]
    if features is not None:
        wanted = [features] if isinstance(features, str) else list(features)
        raw = raw[raw["feature"].isin(wanted)].reset_index(drop=True)
    out = raw[list(GTF_COLUMNS)].copy()
    for col in ("start", "end"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() | (values < 1) | (values != np.floor(values))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DfmInputError(
                f"GTF file {str(path)!r}, record {i + 1}: {col} {out[col].iloc[i]!r} is not a "
                "positive integer (GTF coordinates are 1-based)."
            )
        out[col] = values.astype(np.int64)
    inverted = out["start"] > out["end"]
    if inverted.any():
        i = int(np.flatnonzero(inverted.to_numpy())[0])
        raise DfmInputError(
            f"GTF file {str(path)!r}, record {i + 1}: start {out['start'].iloc[i]} > end "
            f"{out['end'].iloc[i]} (GTF intervals are 1-based, closed, start <= end)."
        )
    bad_strand = ~out["strand"].isin(["+", "-", "."])
    if bad_strand.any():
        i = int(np.flatnonzero(bad_strand.to_numpy())[0])
        raise DfmInputError(
            f"GTF file {str(path)!r}, record {i + 1}: strand {out['strand'].iloc[i]!r} is not "
            "'+', '-' or '.'."
        )
    out["score"] = pd.to_numeric(out["score"].where(out["score"] != "."), errors="coerce")
    out["frame"] = pd.to_numeric(out["frame"].where(out["frame"] != "."), errors="coerce")
    out["frame"] = out["frame"].astype("Int64")
    _refuse_gff3(path, raw["attributes"])
    attrs = _parse_attributes(raw["attributes"])
    clash = [c for c in attrs.columns if c in out.columns]
    attrs = attrs.rename(columns={c: f"attr_{c}" for c in clash})
    out = pd.concat([out, attrs], axis=1)
    out.attrs["path"] = str(path)
    return out


@dataclass(frozen=True)
class GeneModel:
    """The intervals chosen for one gene, ready for sequence extraction.

    Attributes
    ----------
    gene
        The name the caller asked for.
    gene_id
        The GTF ``gene_id``.
    transcript_id
        The transcript the intervals come from (``None`` for ``feature='gene'``).
    seqname
        Contig, as named in the GTF.
    strand
        ``'+'`` or ``'-'`` (``'.'`` is read as ``'+'``).
    feature
        ``'gene'``, ``'transcript'``, ``'exon'`` or ``'CDS'``.
    intervals
        ``(start, end)`` pairs, **1-based closed**, sorted by genomic start and
        non-overlapping. The transcript (5' to 3') order is this order on the
        plus strand and the reverse on the minus strand.
    """

    gene: str
    gene_id: str
    transcript_id: str | None
    seqname: str
    strand: str
    feature: str
    intervals: tuple[tuple[int, int], ...] = field(default_factory=tuple)

    @property
    def length(self) -> int:
        """Number of bases of the spliced feature."""
        return int(sum(e - s + 1 for s, e in self.intervals))

    @property
    def span(self) -> tuple[int, int]:
        """``(first start, last end)``, 1-based closed."""
        return self.intervals[0][0], self.intervals[-1][1]


def _gene_key_column(gtf: pd.DataFrame, genes: list[str]) -> pd.Series:
    """For each record, the name under which the caller may ask for it.

    A requested name matches ``gene_id`` or ``gene_name``; returns per record the
    requested name it matches (NaN for none).
    """
    wanted = set(genes)
    key = pd.Series(np.nan, index=gtf.index, dtype=object)
    for col in ("gene_name", "gene_id"):
        if col in gtf.columns:
            hit = gtf[col].isin(wanted) & key.isna()
            key[hit] = gtf.loc[hit, col]
    return key


def _missing_gene_error(gtf: pd.DataFrame, missing: list[str], where: str) -> DfmInputError:
    known = set()
    for col in ("gene_name", "gene_id"):
        if col in gtf.columns:
            known.update(gtf[col].dropna().astype(str).unique().tolist())
    hints = []
    for name in missing[:5]:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        if close:
            hints.append(f"{name!r}: did you mean {', '.join(map(repr, close))}?")
    return DfmInputError(
        f"{len(missing)} gene(s) not found in {where} (by gene_name or gene_id): "
        f"{', '.join(map(repr, missing[:10]))}{' ...' if len(missing) > 10 else ''}. "
        + (" ".join(hints) + " " if hints else "")
        + f"The GTF has {len(known)} gene names/ids."
    )


def _merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort and merge overlapping or touching intervals (1-based closed)."""
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((int(s), int(e)) for s, e in out)


def select_gene_models(
    gtf: pd.DataFrame,
    genes: list[str],
    *,
    feature: str = "exon",
    transcripts: dict[str, str] | None = None,
) -> list[GeneModel]:
    """Choose, for each gene, the intervals to extract.

    Parameters
    ----------
    gtf
        A table from :func:`read_gtf`.
    genes
        Gene names or ids (matched against ``gene_name``, then ``gene_id``).
    feature
        ``'gene'``: the gene record's span; ``'transcript'``: the chosen transcript's
        span (unspliced); ``'exon'``: the chosen transcript's exons, spliced;
        ``'CDS'``: its coding segments, spliced (GTF CDS records exclude the stop
        codon where the annotation lists it as a separate ``stop_codon`` feature).
    transcripts
        Optional ``{gene: transcript_id}`` choices. Otherwise the transcript is the
        one tagged ``Ensembl_canonical`` if any, else the one with the most bases
        of ``feature``, ties broken by the smallest ``transcript_id``.

    Returns
    -------
    list of GeneModel
        In the order of ``genes``.
    """
    if feature not in FEATURES:
        raise DfmInputError(f"feature must be one of {FEATURES}; got {feature!r}.")
    genes = [str(g) for g in genes]
    if not genes:
        raise DfmInputError("genes is empty; name at least one gene.")
    dup = sorted({g for g in genes if genes.count(g) > 1})
    if dup:
        raise DfmInputError(f"genes lists {dup} more than once; name each gene once.")
    where = f"the GTF {gtf.attrs.get('path', '')!r}".replace(" ''", "")
    if "gene_id" not in gtf.columns:
        raise DfmInputError(
            f"{where} has no gene_id attribute, which every GTF record carries "
            '(gene_id "..."; transcript_id "...";). Is it a GFF3 or another table? Convert '
            "it to GTF first (e.g. gffread in.gff3 -T -o out.gtf)."
        )
    key = _gene_key_column(gtf, genes)
    missing = [g for g in genes if not (key == g).any()]
    if missing:
        raise _missing_gene_error(gtf, missing, where)
    transcripts = dict(transcripts or {})
    unknown = sorted(set(transcripts) - set(genes))
    if unknown:
        raise DfmInputError(f"transcripts names genes not in genes: {unknown}.")
    models = []
    for gene in genes:
        rows = gtf[key == gene]
        gene_ids = rows["gene_id"].dropna().unique() if "gene_id" in rows else np.array([gene])
        if len(gene_ids) > 1:
            raise DfmInputError(
                f"Gene {gene!r} matches several gene_ids in {where}: {list(gene_ids)}. "
                "Ask for it by gene_id instead."
            )
        gene_id = str(gene_ids[0]) if len(gene_ids) else gene
        seqnames = rows["seqname"].unique()
        if len(seqnames) > 1:
            raise DfmInputError(
                f"Gene {gene!r} has records on several contigs {list(seqnames)}; ask for it "
                "by gene_id."
            )
        strands = set(rows["strand"]) - {"."}
        if len(strands) > 1:
            raise DfmInputError(f"Gene {gene!r} has records on both strands in {where}.")
        strand = strands.pop() if strands else "+"
        if feature == "gene":
            recs = rows[rows["feature"] == "gene"]
            if recs.empty:
                recs = rows  # no gene line: the span of all its records
            ivs = _merge([(int(recs["start"].min()), int(recs["end"].max()))])
            models.append(GeneModel(gene, gene_id, None, str(seqnames[0]), strand, feature, ivs))
            continue
        sub_feature = "exon" if feature == "transcript" else feature
        recs = rows[rows["feature"] == sub_feature]
        if "transcript_id" not in recs.columns or recs["transcript_id"].isna().all():
            raise DfmInputError(
                f"Gene {gene!r} has no {sub_feature!r} records with a transcript_id in "
                f"{where}"
                + ("; it is probably non-coding: use feature='exon'." if feature == "CDS" else ".")
            )
        recs = recs[recs["transcript_id"].notna()]
        if gene in transcripts:
            tid = transcripts[gene]
            if tid not in set(recs["transcript_id"]):
                raise DfmInputError(
                    f"Transcript {tid!r} has no {sub_feature!r} records for gene {gene!r}; "
                    f"available: {sorted(recs['transcript_id'].unique())}."
                )
        else:
            lengths = (recs["end"] - recs["start"] + 1).groupby(recs["transcript_id"]).sum()
            order = pd.DataFrame({"len": lengths, "tid": lengths.index})
            if "tag" in gtf.columns:
                canon = rows.loc[
                    rows["tag"].fillna("").str.contains("Ensembl_canonical"), "transcript_id"
                ]
                order["canon"] = order["tid"].isin(set(canon.dropna()))
            else:
                order["canon"] = False
            order = order.sort_values(["canon", "len", "tid"], ascending=[False, False, True])
            tid = str(order["tid"].iloc[0])
        chosen = recs[recs["transcript_id"] == tid]
        pairs = list(zip(chosen["start"].tolist(), chosen["end"].tolist(), strict=True))
        if feature == "transcript":
            pairs = [(min(s for s, _ in pairs), max(e for _, e in pairs))]
        models.append(
            GeneModel(gene, gene_id, tid, str(seqnames[0]), strand, feature, _merge(pairs))
        )
    return models
