"""Packing several cells into one input row (no padding computed between them).

Pure NumPy, no model: the runner plans a chunk of tokenized cells with
:func:`plan_packing`, builds the model inputs with :func:`pack_tokens`, runs the
model's segment-aware forward (``BertEncoder.packed_states`` with a
block-diagonal attention mask: a token attends only to tokens of its own
cell) and reads one embedding per cell back with ``BertEncoder.pool_packed``.
Each cell's positions restart at 0, so its result equals its unpacked result up
to float rounding (tested to 1e-5) and never depends on its row-mates.

The *slot layout* (:func:`plan_slots`, :func:`slot_inputs`) sorts cells by
length into calls instead, lays each call's cells side by side for the
per-token layers and runs attention on a per-cell ``(n_slots, width)`` view
(``BertEncoder.packed_states(..., slots=...)``), so a token attends over about
its own cell's length rather than a whole row; the runner picks it when that
computes fewer attention scores.

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

__all__ = [
    "PackingPlan",
    "SlotCall",
    "plan_packing",
    "pack_tokens",
    "plan_slots",
    "slot_inputs",
    "slot_work",
]


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


@dataclass(frozen=True)
class SlotCall:
    """One call of the slot layout: ``cells`` (longest first), ``n_slots`` x ``slot_width``."""

    cells: np.ndarray
    n_slots: int
    slot_width: int


def plan_slots(
    lengths, tokens_per_call: int, *, grid: int = 32, slot_step: int = 8, per_width: bool = True
) -> tuple[int, list[SlotCall]]:
    """Length-sorted calls for attention over each cell's own keys only (the slot layout).

    Cells are sorted by length (longest first, ties by index) and cut into
    consecutive calls of at most ``tokens`` tokens each: the total divided
    evenly over ``ceil(total / tokens_per_call)`` calls plus the longest cell,
    rounded up to 1,024 tokens (so that chunks of similar cells share shapes),
    at most ``tokens_per_call`` (rounded up to 64) and at least the longest
    cell; a multiple of 64. A call's cells lie
    side by side in a flat token array (no padding between them) for the
    per-token layers, and its attention runs on an ``(n_slots, slot_width)``
    view, one slot per cell: ``slot_width`` is the call's longest cell rounded
    up to a multiple of ``grid`` and, above ``8 * grid``, to one of 8 steps per
    doubling; ``n_slots`` the largest cell count of the calls of that width,
    rounded up to a multiple of ``slot_step`` and, above ``8 * slot_step``, to
    one of 8 steps per doubling (at most 1/8 empty slots), so that the calls of
    one width, and chunks of similar cells, compile one shape. With
    ``per_width=False`` each call's ``n_slots`` is its own cell count so
    rounded (fewer empty slots, more compiled shapes). As a call's cells have
    similar lengths, each token attends over about its own cell's length, not
    a packed row's.

    Returns ``(tokens, calls)``.
    """
    lengths = np.asarray(lengths).astype(np.int64)
    if lengths.ndim != 1 or (lengths.size and lengths.min() < 0):
        raise ValueError("lengths must be a 1-D array of non-negative token counts.")
    grid, slot_step = int(grid), int(slot_step)
    if grid < 1 or slot_step < 1:
        raise ValueError(f"grid and slot_step must be positive, got {grid}, {slot_step}.")
    longest = int(lengths.max(initial=1))
    total = int(lengths.sum())
    budget = max(int(tokens_per_call), longest, 1)
    n_calls = max(1, -(-total // budget))
    # the total divided evenly over the calls (one longest cell of slack, so the greedy cut
    # needs no extra call), rounded up to 1,024 tokens so that chunks share shapes; at most
    # the budget (rounded up to 64) and at least the longest cell
    per = min(-(-total // n_calls) + longest, budget)
    per = max(longest, min(-(-per // 1024) * 1024, -(-budget // 64) * 64))
    per = -(-per // 64) * 64
    order = np.lexsort((np.arange(lengths.size), -lengths))
    ends = np.cumsum(lengths[order])
    cuts = []
    i = 0
    while i < order.size:
        # the most cells from i whose tokens fit in `per` (at least one)
        j = max(i + 1, int(np.searchsorted(ends, (ends[i - 1] if i else 0) + per, side="right")))
        cells = order[i:j]
        cuts.append((cells, _slot_count(int(lengths[cells].max()), grid)))
        i = j
    if not per_width:
        return per, [SlotCall(c, _slot_count(c.size, slot_step), w) for c, w in cuts]
    # one slot count per width: the calls of a width share one compiled shape
    slots: dict[int, int] = {}
    for cells, width in cuts:
        slots[width] = max(slots.get(width, 0), _slot_count(cells.size, slot_step))
    return per, [SlotCall(cells, slots[width], width) for cells, width in cuts]


def _slot_count(n: int, step: int) -> int:
    """``n`` rounded up to a multiple of ``step``, then to 8 steps per doubling above ``8 * step``."""
    n = -(-max(n, 1) // step) * step
    if n <= 8 * step:
        return n
    unit = step << (int(np.log2(n / step)) - 3)
    return -(-n // unit) * unit


def slot_work(calls: list[SlotCall]) -> int:
    """Attention score elements of the slot layout (``sum n_slots * slot_width**2``)."""
    return int(sum(c.n_slots * c.slot_width**2 for c in calls))


def slot_inputs(
    tokens: np.ndarray, lengths, call: SlotCall, n_tokens: int, *, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs of one :func:`plan_slots` call: ``(ids, segment_ids, positions, slots)``.

    ``ids, segment_ids, positions``: ``(n_tokens // 64, 64)`` int32, the call's
    cells side by side in row-major order (cell ``j`` of the call is segment
    ``j + 1``; positions restart at 0 per cell; the rest is padding, segment
    0). ``slots``: ``(n_slots, slot_width)`` int32, the flat index of cell
    ``j``'s token ``p`` at ``[j, p]`` and ``n_tokens`` (no token) elsewhere.
    """
    lengths = np.asarray(lengths)
    ln = lengths[call.cells].astype(np.int64)
    if ln.sum() > n_tokens or (ln.size and ln.max() > call.slot_width):
        raise ValueError("the call's cells do not fit its token array or slot width.")
    cell = np.repeat(np.arange(ln.size), ln)
    start = np.cumsum(ln) - ln
    within = np.arange(cell.size) - np.repeat(start, ln)
    ids = np.full(n_tokens, pad_id, dtype=np.int32)
    seg = np.zeros(n_tokens, dtype=np.int32)
    pos = np.zeros(n_tokens, dtype=np.int32)
    ids[: cell.size] = np.asarray(tokens)[call.cells[cell], within]
    seg[: cell.size] = cell + 1
    pos[: cell.size] = within
    slots = np.full((call.n_slots, call.slot_width), n_tokens, dtype=np.int32)
    slots[cell, within] = np.arange(cell.size, dtype=np.int32)
    shape = (n_tokens // 64, 64)
    return ids.reshape(shape), seg.reshape(shape), pos.reshape(shape), slots
