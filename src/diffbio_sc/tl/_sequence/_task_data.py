"""Data, split, baseline features and scores of :func:`diffbio_sc.tl.genomics_tasks`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..._validate import DfmInputError
from ...ops._sequence import KmerTokenizer, one_hot

SCORES = ("accuracy", "macro_f1", "mcc", "auroc")

_CNNPROM = (
    "CNNProm, Umarov & Solovyev 2017 (PLOS One), via nmach22/Promoter-Classification dataset/ (MIT)"
)
TASKS: dict[str, dict] = {
    "splice_junctions": {
        "files": {"csv": "splice_junction_uci.csv"},
        "source": "UCI Molecular Biology (Splice-junction Gene Sequences) via "
        "pauldhein/splice-junction-detector data/splice.csv (CC BY 4.0)",
        "description": "primate splice junctions, 60 bp, classes EI / IE / N",
    },
    "promoters_mouse_tata": {
        "files": {
            "promoter": "promoters_cnnprom/Mouse_tata.fa",
            "non_promoter": "promoters_cnnprom/Mouse_nonprom.fa",
        },
        "source": _CNNPROM,
        "description": "mouse TATA promoters (EPDnew) vs non-promoters, 251 bp",
    },
    "promoters_ecoli": {
        "files": {
            "promoter": "promoters_cnnprom/Ecoli_prom.fa",
            "non_promoter": "promoters_cnnprom/Ecoli_non_prom.fa",
        },
        "source": _CNNPROM,
        "description": "E. coli sigma-70 promoters (RegulonDB) vs non-promoters, 81 bp",
    },
}


def default_data_dir() -> Path:
    """``../shared/data/dna`` relative to the working directory."""
    return Path("..") / "shared" / "data" / "dna"


# ---------------------------------------------------------------------- data
def load_task(name: str, data_dir: str | Path | None = None) -> tuple[list[str], np.ndarray, dict]:
    """Return ``(sequences, labels, info)`` of a task (labels as strings).

    Raises ``FileNotFoundError`` naming the missing file and ``DfmInputError``
    for an unknown task.
    """
    from ...io._fasta import read_fasta, sequences_to_adata

    if name not in TASKS:
        raise DfmInputError(f"Unknown task {name!r}; available: {list(TASKS)}.")
    spec = TASKS[name]
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    paths = {k: root / v for k, v in spec["files"].items()}
    for p in paths.values():
        if not p.is_file():
            raise FileNotFoundError(
                f"Task {name!r} needs {str(p)!r}, which does not exist. Pass data_dir= "
                "pointing at the folder with the shared DNA data."
            )
    if "csv" in paths:
        df = pd.read_csv(paths["csv"], dtype=str)
        missing = {"label", "sequence"} - set(df.columns)
        if missing:
            raise DfmInputError(f"{paths['csv']} lacks the columns {sorted(missing)}.")
        df["sequence"] = df["sequence"].str.strip()
        # validate with the FASTA rules (IUPAC codes kept; errors name the row)
        ad = sequences_to_adata(
            df["sequence"].tolist(), ids=[f"row{i}" for i in range(len(df))], ambiguous="keep"
        )
        seqs = ad.obs["sequence"].tolist()
        labels = df["label"].str.strip().to_numpy(dtype=object)
    else:
        seqs, labels = [], []
        for label, p in paths.items():
            ad = read_fasta(p, duplicates="make_unique", ambiguous="keep")
            seqs += ad.obs["sequence"].tolist()
            labels += [label] * ad.n_obs
        labels = np.asarray(labels, dtype=object)
    info = {
        "task": name,
        "source": spec["source"],
        "description": spec["description"],
        "data": "real",
        "files": [str(p) for p in paths.values()],
        "n_sequences": len(seqs),
        "class_counts": {
            str(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True), strict=True)
        },
    }
    return seqs, labels.astype(str), info


SPLIT_VALUES = ("train", "test")


def load_user_task(
    data,
    *,
    mod: str | None,
    sequence_key: str,
    label_key: str,
    split_key: str | None,
    task_name: str,
) -> tuple[list[str], np.ndarray, np.ndarray | None, list[str], dict]:
    """Return ``(sequences, labels, split, names, info)`` of the user's labelled sequences.

    ``data`` is an AnnData of sequences (as :func:`diffbio_sc.io.read_fasta`
    returns) or a MuData whose ``mod`` holds them. Sequences are checked with
    the rules of :func:`~diffbio_sc.tl.embed_sequences` (DNA/IUPAC symbols,
    non-empty, unique ids); labels come from ``.obs[label_key]`` (no missing
    values, at least two classes); ``split`` is ``None`` or the boolean mask of
    the test rows read from ``.obs[split_key]`` (values ``'train'``/``'test'``
    only). Nothing is written into ``data``.
    """
    from ._common import check_sequences, resolve_target

    tgt = resolve_target(data, mod)
    target = tgt.adata
    obs = target.obs
    if label_key not in obs.columns:
        raise DfmInputError(
            f".obs[{label_key!r}] (the labels) not found; available columns: "
            f"{list(obs.columns)}. Pass label_key= naming the column with each sequence's class."
        )
    if split_key is not None and split_key not in obs.columns:
        raise DfmInputError(
            f".obs[{split_key!r}] (the train/test split) not found; available columns: "
            f"{list(obs.columns)}. Pass split_key=None for a seeded stratified split."
        )
    seqs = [s.upper() for s in check_sequences(target, alphabet="dna", sequence_key=sequence_key)]
    raw = obs[label_key]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise DfmInputError(
            f".obs[{label_key!r}] has {int(missing.sum())} missing label(s), e.g. sequence "
            f"{str(obs.index[np.flatnonzero(missing)[0]])!r}; drop those rows or label them."
        )
    labels = raw.astype(str).to_numpy(dtype=object).astype(str)
    classes, counts = np.unique(labels, return_counts=True)
    class_counts = {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
    if classes.size < 2:
        raise DfmInputError(
            f".obs[{label_key!r}] holds a single class {class_counts}; a classification task "
            "needs at least two."
        )
    split = None
    if split_key is not None:
        values = obs[split_key].to_numpy(dtype=object)
        ok = np.array([isinstance(v, str) and v in SPLIT_VALUES for v in values], dtype=bool)
        if not ok.all():
            bad = sorted({repr(v) for v in values[~ok]})
            raise DfmInputError(
                f".obs[{split_key!r}] must hold only 'train' or 'test'; {int((~ok).sum())} row(s) "
                f"hold {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} (e.g. sequence "
                f"{str(obs.index[np.flatnonzero(~ok)[0]])!r}). Map them to 'train'/'test', or "
                "pass split_key=None for a seeded stratified split."
            )
        split = values == "test"
    info = {
        "task": task_name,
        "source": "user data",
        "description": f"user's labelled sequences, classes from .obs[{label_key!r}]",
        "data": "user",
        "mod": tgt.mod,
        "sequence_key": sequence_key,
        "label_key": label_key,
        "split_key": split_key,
        "n_sequences": len(seqs),
        "class_counts": class_counts,
    }
    return seqs, labels, split, [str(n) for n in obs.index], info


def check_split_classes(labels: np.ndarray, is_test: np.ndarray, split_key: str) -> None:
    """Refuse a given split where a class is missing from either side, with the counts."""
    classes = np.unique(labels)
    n_train = {str(c): int(((labels == c) & ~is_test).sum()) for c in classes}
    n_test = {str(c): int(((labels == c) & is_test).sum()) for c in classes}
    short = [c for c in n_train if n_train[c] == 0 or n_test[c] == 0]
    if short:
        raise DfmInputError(
            f"The split in .obs[{split_key!r}] leaves class(es) {short} without training or "
            f"test rows (train counts {n_train}, test counts {n_test}); every class needs "
            "at least one row on each side (the probes learn from the train part and the "
            "scores, AUROC included, need every class in the test part)."
        )


def check_splittable(sequences: list[str], labels: np.ndarray) -> None:
    """Refuse classes with fewer than two distinct sequences (too few to split), with counts."""
    distinct = (
        pd.DataFrame({"s": list(sequences), "y": labels}).groupby("y")["s"].nunique().to_dict()
    )
    short = {str(c): int(n) for c, n in distinct.items() if n < 2}
    if short:
        raise DfmInputError(
            f"Class(es) {sorted(short)} have fewer than 2 distinct sequences (distinct "
            f"sequences per class: { {str(c): int(n) for c, n in distinct.items()} }): too "
            "few to split into train and test. Add sequences or drop those classes."
        )


def grouped_stratified_split(
    sequences: list[str], labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split, stratified by class, identical sequences kept on one side.

    Identical sequences form one group; a group's class is that of its first
    row. Within each class, ``round(test_fraction * n_groups)`` groups (at least
    one) go to the test part. Returns sorted ``(train_idx, test_idx)``.
    """
    group = pd.factorize(pd.Series(list(sequences), dtype=object))[0]
    first = np.unique(group, return_index=True)[1]  # first row of each group
    group_label = np.asarray(labels)[first]
    rng = np.random.default_rng(seed)
    test_groups = []
    for c in np.unique(group_label):
        g = np.flatnonzero(group_label == c)
        g = g[rng.permutation(g.size)]
        k = max(1, int(round(test_fraction * g.size)))
        if k >= g.size:
            raise DfmInputError(
                f"Class {c!r} has {g.size} distinct sequence(s): too few to split with "
                f"test_fraction={test_fraction}."
            )
        test_groups.append(g[:k])
    is_test = np.isin(group, np.concatenate(test_groups))
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def subsample(labels: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
    """Row indices keeping at most ``max_per_class`` per class (seeded), sorted."""
    if max_per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed + 7)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, max_per_class, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------------- features
def kmer_features(sequences: list[str], ks=(3, 4, 5, 6), alphabet: str = "dna"):
    """Sparse ``(n, sum 4**k)`` k-mer frequencies (each k's block sums to 1 per row).

    k-mers containing an ambiguity code are not counted.
    """
    import scipy.sparse as sp

    blocks = []
    for k in ks:
        tok = KmerTokenizer(k, alphabet)
        ids, valid = tok.encode(sequences)
        keep = valid & (ids >= len(tok.specials))
        rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)[keep]
        cols = ids[keep] - len(tok.specials)
        m = sp.csr_matrix(
            (np.ones(rows.size, np.float32), (rows, cols)), shape=(ids.shape[0], 4**k)
        )
        tot = np.maximum(np.asarray(m.sum(axis=1)).ravel(), 1.0)
        blocks.append(sp.diags(1.0 / tot) @ m)
    return sp.hstack(blocks, format="csr")


def positional_one_hot(sequences: list[str], width: int, alphabet: str = "dna") -> np.ndarray:
    """``(n, width * 4)`` float32 one-hot codes, right-padded with zeros (IUPAC rule)."""
    x, _ = one_hot(sequences, alphabet=alphabet, max_length=width)
    return x.reshape(x.shape[0], -1)


def classification_scores(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1, MCC and AUROC (binary, or one-vs-rest macro) from probabilities."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    pred = proba.argmax(axis=1)
    n_classes = proba.shape[1]
    if n_classes == 2:
        auroc = roc_auc_score(y_true, proba[:, 1])
    else:
        auroc = roc_auc_score(y_true, proba, multi_class="ovr", average="macro")
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, average="macro")),
        "mcc": float(matthews_corrcoef(y_true, pred)),
        "auroc": float(auroc),
    }


def _logreg(seed: int, C: float = 1.0):  # noqa: N803
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000, random_state=seed)


def _fit_predict_logreg(Xtr, ytr, Xte, *, seed, scale="standard"):  # noqa: N803
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    scaler = StandardScaler() if scale == "standard" else MaxAbsScaler()
    clf = make_pipeline(scaler, _logreg(seed))
    clf.fit(Xtr, ytr)
    return clf.predict_proba(Xte)


def embedding_lookup(adata, use_rep: str, *, sequence_key: str = "sequence"):
    """Return ``f(list_of_sequences) -> (n, d)`` reading vectors from ``adata.obsm[use_rep]``.

    Bridges imported embeddings (e.g. DNABERT-2 / Nucleotide Transformer files
    loaded with :func:`diffbio_sc.tl.load_embeddings` onto an AnnData of
    sequences) into ``genomics_tasks(frozen_encoders=...)``: each sequence is
    looked up by its string. Identical sequences must carry identical vectors;
    a sequence without a vector is an error naming it.

    Parameters
    ----------
    adata
        AnnData of sequences with the vectors in ``.obsm[use_rep]``.
    use_rep
        The ``.obsm`` key of the vectors.
    sequence_key
        The ``.obs`` column holding each row's sequence.

    Returns
    -------
    Callable
        ``f(list_of_sequences) -> (n, d)`` float32 array.
    """
    from ..._validate import check_obsm_rep

    if sequence_key not in adata.obs.columns:
        raise DfmInputError(f".obs[{sequence_key!r}] not found; pass sequence_key=.")
    rep = np.asarray(check_obsm_rep(adata, use_rep), dtype=np.float32)
    keys = adata.obs[sequence_key].astype(str).str.upper().to_numpy()
    table = pd.DataFrame(rep, index=keys)
    dup = table.index.duplicated(keep=False)
    if dup.any():
        grouped = table[dup].groupby(level=0)
        if (grouped.max() - grouped.min()).to_numpy().max() > 0:
            raise DfmInputError(
                f"Identical sequences carry different vectors in .obsm[{use_rep!r}]; a "
                "lookup by sequence needs one vector per sequence."
            )
    table = table[~table.index.duplicated()]

    def lookup(seqs):
        wanted = pd.Index([str(s).upper() for s in seqs])
        missing = wanted[~wanted.isin(table.index)]
        if len(missing):
            raise DfmInputError(
                f"{len(missing)} sequence(s) have no vector in .obsm[{use_rep!r}], e.g. "
                f"{missing[0][:30]!r}..."
            )
        return table.loc[wanted].to_numpy()

    lookup.__qualname__ = f"embedding_lookup({use_rep!r})"
    return lookup
