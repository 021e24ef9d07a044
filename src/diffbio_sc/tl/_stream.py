"""Out-of-core model data for ``dfm.tl.pretrain(..., stream=True)``.

Pass 2 of :mod:`~diffbio_sc.tl._model_data` (tokens and bottleneck targets) is
written chunk by chunk to a temporary directory instead of whole-dataset
arrays, and the trainer reads it back one chunk at a time:

* :func:`write_chunks` tokenizes every chunk (through
  :func:`~diffbio_sc.tl._model_data.iter_token_chunks`, the same tokens as the
  in-memory path) and saves its token ids, values and sparse HVG targets as
  ``.npy`` files; it also accumulates what needs every training cell (the
  column sums for the profile mean) and keeps the rows of the few cells the
  PCA initialisation uses.
* :func:`chunk_order` is the epoch order: chunks in a seeded random order,
  the cells of each chunk shuffled, so a batch spans at most two chunks.
* :class:`ChunkStore` serves ``get_batch(idx)`` from at most two chunks held in
  memory (files are read with ``np.load``, not memory-mapped, so the resident
  memory is the chunks, whatever the number of cells).

Memory: two chunks of model inputs plus the model, plus per-cell
bookkeeping of a few bytes (indices, batch codes), not the token arrays.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

#: Chunks kept in memory by :class:`ChunkStore` (a batch spans at most two).
CACHED_CHUNKS = 2


def _save_csr(directory: Path, name: str, m: sp.csr_matrix) -> None:
    for part in ("data", "indices", "indptr"):
        np.save(directory / f"{name}.{part}.npy", getattr(m, part))


def _load_csr(directory: Path, name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    parts = [np.load(directory / f"{name}.{p}.npy") for p in ("data", "indices", "indptr")]
    return sp.csr_matrix(tuple(parts), shape=shape)


class ChunkStore:
    """Model inputs of consecutive cell chunks, saved in ``directory``, read back lazily.

    Parameters
    ----------
    directory
        An existing, empty directory (one subdirectory per chunk is created).
    bounds
        Chunk boundaries: chunk ``i`` holds cells ``bounds[i] .. bounds[i + 1]``.
    profile_mean
        Subtracted from the log-normalised HVG profile targets (when used).
    """

    def __init__(self, directory: str | os.PathLike, bounds: np.ndarray):
        self.directory = Path(directory)
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.n_profile = 0
        self.has_profile = self.has_counts = False
        self.profile_mean: np.ndarray | None = None
        self.batch_codes: np.ndarray | None = None
        self._cache: OrderedDict[int, dict] = OrderedDict()

    def _dir(self, i: int) -> Path:
        return self.directory / f"chunk{i:07d}"

    def write(self, i: int, ids, vals, profile=None, counts=None) -> None:
        """Save chunk ``i``'s token ids, values and (sparse) targets."""
        d = self._dir(i)
        d.mkdir()
        np.save(d / "ids.npy", np.ascontiguousarray(ids, dtype=np.int32))
        np.save(d / "vals.npy", np.ascontiguousarray(vals, dtype=np.float32))
        if profile is not None:
            _save_csr(d, "profile", profile)
            self.has_profile, self.n_profile = True, profile.shape[1]
        if counts is not None:
            _save_csr(d, "counts", counts)
            self.has_counts = True

    def load(self, i: int) -> dict:
        """Chunk ``i``'s arrays (cached: the two most recently used chunks)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        d = self._dir(i)
        rows = int(self.bounds[i + 1] - self.bounds[i])
        item = {"ids": np.load(d / "ids.npy"), "vals": np.load(d / "vals.npy")}
        shape = (rows, self.n_profile)
        item["profile"] = _load_csr(d, "profile", shape) if self.has_profile else None
        item["counts"] = _load_csr(d, "counts", shape) if self.has_counts else None
        self._cache[i] = item
        while len(self._cache) > CACHED_CHUNKS:
            self._cache.popitem(last=False)
        return item

    def get_batch(self, idx: np.ndarray) -> dict:
        """Return the batch of sorted cell indices ``idx`` (as the in-memory path builds it)."""
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(self.bounds, idx, side="right") - 1
        ids, vals, prof = [], [], []
        for c in np.unique(which):
            item = self.load(int(c))
            local = idx[which == c] - self.bounds[c]
            ids.append(item["ids"][local])
            vals.append(item["vals"][local])
            if item["counts"] is not None:
                prof.append(item["counts"][local].toarray())
            elif item["profile"] is not None:
                prof.append(item["profile"][local].toarray() - self.profile_mean[None, :])
        return {
            "ids": np.concatenate(ids),
            "vals": np.concatenate(vals),
            "profile": np.concatenate(prof) if prof else None,
            "batch_codes": None if self.batch_codes is None else self.batch_codes[idx],
        }


def chunk_order(bounds: np.ndarray):
    """``epoch_order(rng, train_idx)`` for :func:`~diffbio_sc.models.fit`: a chunk-level shuffle.

    The chunks come in a random order and the training cells of each chunk in a
    random order; every draw comes from the trainer's seeded generator, so the
    order is reproducible with the seed and depends only on the cell indices
    and the chunk boundaries (not on where the data came from).
    """
    bounds = np.asarray(bounds, dtype=np.int64)

    def order(rng: np.random.Generator, train_idx: np.ndarray) -> np.ndarray:
        train_idx = np.sort(train_idx)
        cuts = np.searchsorted(train_idx, bounds)
        parts = [train_idx[cuts[i] : cuts[i + 1]] for i in range(bounds.size - 1)]
        return np.concatenate([rng.permutation(parts[c]) for c in rng.permutation(len(parts))])

    return order


def write_chunks(
    adata,
    layer,
    gene_scale,
    col_to_token,
    *,
    store: ChunkStore,
    target_sum: float,
    max_tokens: int,
    chunk_size: int,
    hvg_cols: np.ndarray | None,
    with_counts: bool,
    train_idx: np.ndarray,
    pca_cells: np.ndarray | None,
):
    """Pass 2, out of core: write every chunk to ``store``.

    Returns ``(profile_mean, pca_rows)``: the float32 column means of the
    log-normalised HVG profile over the training cells (float64 sums), and the
    profile rows of ``pca_cells`` (sorted) as CSR, or ``None``s without HVGs.
    """
    from ._model_data import iter_token_chunks, log_normalised

    col_sum = None if hvg_cols is None else np.zeros(hvg_cols.size, np.float64)
    train_idx = np.sort(train_idx)
    pca_parts = []
    for i, (start, stop, ids, vals, chunk, totals) in enumerate(
        iter_token_chunks(
            adata,
            layer,
            gene_scale,
            col_to_token,
            target_sum=target_sum,
            max_tokens=max_tokens,
            chunk_size=chunk_size,
            with_chunks=True,
        )
    ):
        profile = counts = None
        if hvg_cols is not None:
            profile = sp.csr_matrix(log_normalised(chunk, totals, target_sum)[:, hvg_cols])
            lo, hi = np.searchsorted(train_idx, [start, stop])
            col_sum += np.asarray(profile[train_idx[lo:hi] - start].sum(axis=0, dtype=np.float64))[
                0
            ]
            if pca_cells is not None:
                lo, hi = np.searchsorted(pca_cells, [start, stop])
                pca_parts.append(profile[pca_cells[lo:hi] - start])
            if with_counts:
                counts = sp.csr_matrix(chunk[:, hvg_cols], dtype=np.float32)
        store.write(i, ids, vals, profile, counts)
    if hvg_cols is None:
        return None, None
    mean = (col_sum / max(train_idx.size, 1)).astype(np.float32)
    store.profile_mean = mean
    pca_rows = sp.vstack(pca_parts, format="csr") if pca_parts else None
    return mean, pca_rows
