"""Packing several cells into one input row (no padding computed between them).

Pure NumPy, no model: the runner plans a chunk of tokenized cells with
:func:`plan_packing`, builds the model inputs with :func:`pack_tokens`, runs the
model's segment-aware forward (``BertEncoder.packed_states`` with a
block-diagonal attention mask: a token attends only to tokens of its own
cell) and reads one embedding per cell back with ``BertEncoder.pool_packed``.
Each cell's positions restart at 0, so its result equals its unpacked result up
to float rounding (tested to 1e-5) and never depends on its row-mates.

Example::

    plan = plan_packing(n_tokens, width=2048)
    ids, seg, pos = pack_tokens(tokens, plan, pad_id=0)
    states = model.packed_states(ids, seg, pos, n_layers=layer)[layer]
    emb = model.pool_packed(ids, seg, states, n_cells=plan.n_cells)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

__all__ = ["PackingPlan", "plan_packing", "pack_tokens"]


@dataclass(frozen=True)
class PackingPlan:
    """Where each cell goes: row ``row[i]``, columns ``offset[i] : offset[i] + length[i]``.

    ``width`` is the row length, ``n_rows`` the number of rows.
    """

    width: int
    n_rows: int
    row: np.ndarray
    offset: np.ndarray
    length: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(self.length.size)

    @property
    def fill(self) -> float:
        """Fraction of the ``n_rows x width`` slots that hold a token."""
        return float(self.length.sum()) / max(1, self.n_rows * self.width)


def plan_packing(lengths, width: int, *, max_segments: int | None = None) -> PackingPlan:
    """Pack cells of the given token counts into rows of ``width`` tokens.

    Best-fit decreasing: cells in decreasing length (ties by cell index), each
    into the row whose free space is the smallest that still holds it, else a
    new row. Deterministic: the plan depends only on ``lengths``, ``width`` and
    ``max_segments``.

    Parameters
    ----------
    lengths
        Tokens per cell, ``(n_cells,)`` non-negative integers, each at most ``width``.
    width
        Tokens per row.
    max_segments
        At most this many cells per row (default: no limit).

    Returns
    -------
    PackingPlan
        Row, offset and length of every cell (cells of length 0 get a row and
        no token; their pooled embedding is 0, as unpacked).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or (lengths.size and not np.issubdtype(lengths.dtype, np.integer)):
        raise ValueError("lengths must be a 1-D array of integers (tokens per cell).")
    lengths = lengths.astype(np.int64)
    width = int(width)
    if width < 1:
        raise ValueError(f"width must be positive, got {width}.")
    if lengths.size and (lengths.min() < 0 or lengths.max() > width):
        bad = int(np.flatnonzero((lengths < 0) | (lengths > width))[0])
        raise ValueError(
            f"cell {bad} has {int(lengths[bad])} tokens, outside [0, width={width}]; "
            "truncate the tokens or pack into wider rows."
        )
    if max_segments is not None and int(max_segments) < 1:
        raise ValueError(f"max_segments must be positive, got {max_segments}.")
    cap = np.inf if max_segments is None else int(max_segments)
    n = lengths.size
    row = np.zeros(n, dtype=np.int64)
    offset = np.zeros(n, dtype=np.int64)
    used: list[int] = []  # tokens used per row
    count: list[int] = []  # cells per row
    free: list[tuple[int, int]] = []  # (free space, row) of rows that can take more cells
    for i in np.lexsort((np.arange(n), -lengths)):
        li = int(lengths[i])
        j = bisect.bisect_left(free, (li, -1))
        if j < len(free):
            _, r = free.pop(j)
        else:
            r = len(used)
            used.append(0)
            count.append(0)
        row[i], offset[i] = r, used[r]
        used[r] += li
        count[r] += 1
        if count[r] < cap and used[r] < width:
            bisect.insort(free, (width - used[r], r))
    return PackingPlan(width=width, n_rows=len(used), row=row, offset=offset, length=lengths)


def pack_tokens(
    tokens: np.ndarray, plan: PackingPlan, *, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs for a plan: ``(ids, segment_ids, positions)``, each ``(n_rows, width)`` int32.

    ``tokens`` is ``(n_cells, L)``; cell ``i``'s first ``plan.length[i]`` tokens
    are copied. ``segment_ids`` is ``1 + i`` on cell ``i``'s tokens and 0 on
    padding; ``positions`` restart at 0 for each cell (0 on padding).
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] != plan.n_cells:
        raise ValueError(f"tokens must be ({plan.n_cells}, L), got shape {tokens.shape}.")
    if plan.n_cells and plan.length.max() > tokens.shape[1]:
        raise ValueError("the plan has a cell longer than the token array's width.")
    shape = (plan.n_rows, plan.width)
    ids = np.full(shape, pad_id, dtype=np.int32)
    seg = np.zeros(shape, dtype=np.int32)
    pos = np.zeros(shape, dtype=np.int32)
    cell = np.repeat(np.arange(plan.n_cells), plan.length)
    within = np.arange(cell.size) - np.repeat(np.cumsum(plan.length) - plan.length, plan.length)
    r, c = plan.row[cell], plan.offset[cell] + within
    ids[r, c] = tokens[cell, within]
    seg[r, c] = cell + 1
    pos[r, c] = within
    return ids, seg, pos
