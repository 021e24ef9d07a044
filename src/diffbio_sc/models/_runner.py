"""The one batched-inference runner: length buckets, fixed shapes, data parallel.

A transformer's cost follows the padded length of its batch: attention grows
with its square. Padding every item to the longest possible input wastes most
of it when items differ in length (a few hundred expressed genes next to
2,048; a 40-base sequence next to a 1,000-token window). :class:`BucketedRunner`
groups items by length into a few buckets (:func:`bucket_edges`), pads each
bucket only to its own edge, and runs fixed-shape batches through one
jit-compiled function per bucket shape (so each shape compiles once per model),
writing results back in the items' original order.

Every model of the package runs through it: the native single-cell model
(``tl.embed``), Geneformer and scGPT (``tl.embed_checkpoint``), the native
``SequenceEncoder`` and every DNA checkpoint family (``tl.embed_sequences``,
``tl.genomics_tasks``, the gene encoders of ``tl.embed_genes``). The
model-specific part is a *forward adapter*: a module-level function
``fn(static, params, *arrays)`` of a hashable ``static`` argument (e.g. an NNX
graph definition and settings), a parameter pytree and right-padded
``(B, L)`` arrays (tokens, values, padding masks) that returns the pooled
vectors (one array, or a tuple of arrays, with the batch on the first axis).
The adapters live in :mod:`diffbio_sc.models._adapters`.

Inputs come either as whole ``(n, max_length)`` arrays (``runner(lengths,
*arrays)``) or through a batch builder ``make_batch(indices, width)`` that
tokenizes just the items of one batch at the bucket's width
(:meth:`BucketedRunner.run`), so long inputs are never materialised at the
model's full context.

An item's result never depends on the other items in its batch, provided
``fn`` treats rows independently and ignores positions past a row's length
(masked attention): its bucket, and with it its padded width, follows its own
length; a batch's spare rows are copies of its first item (always a valid
input), and are discarded.

Memory is bounded by ``max_batch_tokens`` (rows x padded length per batch):
short buckets get more rows per batch, long ones fewer; or by a fixed number
of rows (``batch_rows``). With several JAX devices the batch axis is split
across them (parameters replicated), and the batch size is a multiple of the
device count.

Packing mode (``packed_fn``): cells much shorter than the batch's width are
laid side by side (:mod:`diffbio_sc.models._packing`, the slot layout)
instead of being padded, and run through ``packed_fn(static, params, ids,
segment_ids, positions, slots)``, a segment-aware forward that returns one
vector per segment (segment ``j`` of a call is item ``j - 1`` of that call):
either packed rows with block-diagonal attention (``slots`` ``None``;
``rows * max_segments`` outputs) or, when that saves attention work, items
sorted by length into calls whose attention runs on an ``(n_slots, width)``
per-item view ``slots`` (``n_slots`` outputs), so that a token attends over
about its own item's length (:meth:`BucketedRunner.iter_packed`). With ``packing=None`` (auto) a set
of items is packed when its median length is below half the packed row width
(the longest item rounded up to 64): a row then holds two or more typical
items; shorter spreads are bucketed as above. A packed item's result equals
its unpacked one to float rounding and does not depend on its row-mates.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .. import _malloc

__all__ = [
    "BucketedRunner",
    "SEQUENCE_BUCKETS",
    "bucket_edges",
    "data_parallel",
    "eval_split",
    "plan_batches",
    "slot_layout_for",
    "weights_digest",
]

#: Bucket layout of the sequence models: powers of two from 16 tokens
#: (``bucket_edges(max_length, **SEQUENCE_BUCKETS)``).
SEQUENCE_BUCKETS = {"min_length": 16, "growth": 2.0}


def data_parallel(params, devices=None):
    """Place ``params`` for data-parallel inference; return ``(params, data_sharding, n)``.

    With several devices, parameters are replicated over a 1-D ``('batch',)``
    mesh and ``data_sharding`` splits a batch's first axis across it (batches
    must hold a multiple of ``n`` rows); with one device both go to it.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(devices) if devices is not None else jax.devices()
    if len(devices) > 1:
        mesh = Mesh(np.asarray(devices), ("batch",))
        placed = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        return placed, NamedSharding(mesh, PartitionSpec("batch")), len(devices)
    return jax.device_put(params, devices[0]), devices[0], 1


def eval_split(module):
    """``nnx.split`` of ``module`` in eval mode, leaving the caller's module in its mode.

    The one eval-mode toggle of the package: every dropout (``deterministic``)
    and batch-norm (``use_running_average``) flag is set for inference for the
    split, then each is put back as it was.
    """
    from flax import nnx

    flags = ("deterministic", "use_running_average")
    saved = [
        (m, f, getattr(m, f))
        for _, m in nnx.iter_modules(module)
        for f in flags
        if isinstance(getattr(m, f, None), bool)
    ]
    module.eval()
    graphdef, state = nnx.split(module)
    for m, f, v in saved:
        setattr(m, f, v)
    return graphdef, state


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_digest(model) -> str:
    """``model.weights_sha256()``, computed once per model object and set of weights.

    The digest is cached on the model object; it is computed again only when a
    parameter array was replaced since (training, ``set_weights``), which is
    told by the identity of the parameter leaves (held weakly).
    """
    import jax
    from flax import nnx

    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    try:
        refs = tuple(weakref.ref(x) for x in leaves)
    except TypeError:  # a leaf that cannot be referenced weakly: no caching
        return model.weights_sha256()
    hit = _DIGESTS.get(model)
    if hit is not None and len(hit[0]) == len(refs):
        if all(r() is x for r, x in zip(hit[0], leaves, strict=True)):
            return hit[1]
    digest = model.weights_sha256()
    _DIGESTS[model] = (refs, digest)
    return digest


def bucket_edges(max_length: int, *, min_length: int = 32, growth: float = 1.25) -> list[int]:
    """Bucket edges ``min_length, ... , max_length`` growing by about ``growth``.

    Edges are multiples of 8 (of 64 above 512, so that long buckets split into
    query blocks). Each edge used is one compiled shape; with ``growth=1.25`` a
    row is padded by at most a quarter of its bucket's lower edge (about 12%
    on average), where padding to the input size costs up to 60x at 2,048.
    ``min_length=16, growth=2`` (:data:`SEQUENCE_BUCKETS`) gives the powers of
    two ``16, 32, ...`` below ``max_length``, then ``max_length``.
    """
    max_length = int(max_length)
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}.")
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}.")
    edges = []
    e = float(min(min_length, max_length))
    while e < max_length:
        step = 64 if e > 512 else 8
        v = int(-(-int(round(e)) // step) * step)
        if not edges or v > edges[-1]:
            edges.append(v)
        e *= growth
    edges = [v for v in edges if v < max_length]
    edges.append(max_length)
    return edges


def plan_batches(
    lengths: np.ndarray,
    edges: Sequence[int],
    max_batch_tokens: int | None,
    *,
    multiple: int = 1,
    batch_rows: int | None = None,
) -> list[tuple[int, int, np.ndarray]]:
    """Group item indices into ``(padded_length, batch_rows, indices)`` batches.

    Items are assigned to the smallest edge >= their length (order kept within a
    bucket); each bucket is cut into batches of ``rows`` rows, a multiple of
    ``multiple``: ``batch_rows`` when given, else the most with ``rows *
    padded_length <= max_batch_tokens`` (at least ``multiple``). A bucket with
    fewer items gets the rows it needs rounded up to a power of two (few
    shapes). The last batch of a bucket may hold fewer items (the caller fills
    it up to ``rows``).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    edges = np.asarray(sorted(set(int(e) for e in edges)), dtype=np.int64)
    if lengths.size and lengths.max() > edges[-1]:
        raise ValueError(f"an item has length {lengths.max()} > the largest edge {edges[-1]}.")
    which = np.searchsorted(edges, np.maximum(lengths, 1), side="left")
    plan = []
    for b, edge in enumerate(edges):
        idx = np.flatnonzero(which == b)
        if not idx.size:
            continue
        if batch_rows is not None:  # one shape per bucket, as many rows as asked
            rows = max(multiple, -(-int(batch_rows) // multiple) * multiple)
        else:
            rows = max(multiple, (int(max_batch_tokens) // int(edge)) // multiple * multiple)
            # Do not pad a small bucket up to a huge batch: use the rows it needs, rounded
            # up to a power of two (times ``multiple``) so that few shapes are compiled.
            need = 1 << int(np.ceil(np.log2(max(1, -(-idx.size // multiple)))))
            rows = min(rows, need * multiple)
        for s in range(0, idx.size, rows):
            plan.append((int(edge), rows, idx[s : s + rows]))
    return plan


_JITTED: dict = {}

#: XLA options of the packed programs (``packed_fn``) the runner compiles for a CPU
#: device: matrix products through YNNPACK one by one
#: (``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``) instead of YNNPACK fusions of several
#: operations. Such a fusion allocates its intermediate tensors (a layer's
#: feed-forward activations, tens of MiB) from the C allocator inside every call and
#: frees them at its end; glibc gives blocks that large back to the system, so the
#: next call faults every page in again. Embedding 1,000 PBMC cells packed at the
#: Geneformer-V1 size took 2.1-2.2 million minor page faults and 5.6 CPU-s of system
#: time that way, 0.57 million and 1.5 CPU-s with these options (-7% CPU time, peak
#: resident memory lower, embeddings equal to float rounding; ``docs/benchmarks.md``).
#: Local to these programs: the process's allocator and every other JAX program keep
#: their settings. Not used for the length-bucketed programs: on deep cells (2,048
#: tokens, attention-bound) the fusions' faster attention outweighs their faults
#: (8.4 vs 9.2 CPU-s for 8 cells).
PACKED_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}

_SUPPORTED: dict[tuple, dict] = {}


def supported_compiler_options(options: dict) -> dict:
    """``options`` if this XLA accepts them (checked once per set), else ``{}``.

    The options are experimental XLA flags: a newer jaxlib may rename or drop them,
    and compiling with an unknown option (or value) fails. The programs are then
    compiled with XLA's defaults (the same maths, more page faults), never refused.
    """
    key = tuple(sorted(options.items()))
    if key not in _SUPPORTED:
        import jax
        import jax.numpy as jnp

        checked = dict(options)
        try:  # lowered from a shape only: no array to build (each would be a program too)
            jax.jit(lambda x: x @ x + 1, compiler_options=checked).lower(
                jax.ShapeDtypeStruct((2, 2), jnp.float32)
            ).compile()
        except Exception:  # noqa: BLE001 - any refusal means: not this XLA's flag
            checked = {}
        _SUPPORTED[key] = checked
    return dict(_SUPPORTED[key])


def _jitted(fn: Callable, *, cpu_options: bool = False):
    """``jax.jit(fn, static_argnums=0)``, one per function and options for the session.

    ``cpu_options``: compiled with :data:`PACKED_CPU_OPTIONS` where this XLA knows
    them (for a CPU device).
    """
    key = (fn, cpu_options)
    if key not in _JITTED:
        import jax

        options = supported_compiler_options(PACKED_CPU_OPTIONS) if cpu_options else {}
        kw = {"compiler_options": options} if options else {}
        _JITTED[key] = jax.jit(fn, static_argnums=0, **kw)
    return _JITTED[key]


#: Slot widths of the packing mode's attention view are multiples of this many tokens (8
#: steps per doubling above 8 times it), and the calls of one width share one slot
#: count, so one compiled shape per width: 4 for 1,000 PBMC cells at the V1 size (7
#: with widths in multiples of 32 and a slot count per call, for 4% less attention work).
SLOT_GRID = 64
#: The packing mode uses the slot layout when its attention computes fewer than this
#: fraction of the packed rows' score elements (the rest of the work is the same; the
#: slot layout compiles one shape per slot width instead of one). 0.9: on 1,000 PBMC
#: cells at the V1 size, slots at 0.80 of the rows' score elements (widths in 64s) took
#: a warm process 28.7 CPU-s against 34.8 for the rows (``docs/benchmarks.md``).
SLOT_WORK_RATIO = 0.9
#: Jobs of fewer items than this run the packing mode's rows only (``slot_layout=False``
#: from :func:`~diffbio_sc.tl.embed_checkpoint`): the slot layout compiles one shape per
#: slot width (4 for 1,000 PBMC cells at the V1 size, against 1 for the rows); with the
#: layers scanned, each extra shape costs a fresh process about 1.3-1.5 CPU-s to
#: compile (0.2-0.3 when the persistent cache has it), and the slot layout saves about
#: 17% of the forward (about 0.0045 CPU-s per PBMC cell at the V1 size), so below a
#: few hundred cells the extra compilations cost more than they save. At 1,000 cells a
#: fresh process was quicker with the slots when its compilation cache was warm and
#: level when cold (quiet runs: warm 30.8 vs 32.5 CPU-s, cold 36.1 vs 35.8 for the rows;
#: ``docs/benchmarks.md``, time to the first embedding).
SLOT_MIN_ITEMS = 512
#: Jobs of at least this many items use the *fine* slot layout (``slot_layout="fine"``
#: from :func:`slot_layout_for`): slot widths in multiples of :data:`SLOT_FINE_GRID` and a
#: slot count per call, the least attention work (the layout before the coarse grid: on
#: 4,800 PBMC cells at the V1 size, 277 M score elements against 344 M for widths in 64s
#: with one count per width, 14 compiled shapes against 6). Same process, compiled, 3
#: alternating rounds: 106.9 against 113.4 CPU-s per call (median; per round 0.885 / 0.965
#: / 0.947): about the old tree's lead on that job in fresh processes (median 1.063x the
#: cells per CPU-s; ``docs/benchmarks.md``). The 8 extra programs cost a process with an empty compilation
#: cache about what one such job saves (first calls 123.0 vs 122.5 CPU-s), less once the
#: persistent cache holds them; below this size the few-shapes layout is kept.
SLOT_FINE_ITEMS = 4096
#: Slot-width grid of the fine slot layout (:data:`SLOT_FINE_ITEMS`).
SLOT_FINE_GRID = 32


def slot_layout_for(n_items: int):
    """Return the runner's ``slot_layout`` for a job of ``n_items`` items (deterministic).

    ``False`` (packed rows only, one compiled shape) below :data:`SLOT_MIN_ITEMS`;
    ``"fine"`` (widths in :data:`SLOT_FINE_GRID` s, a slot count per call) from
    :data:`SLOT_FINE_ITEMS`; ``None`` (widths in :data:`SLOT_GRID` s, one slot
    count per width: few compiled shapes) in between. Any of them gives every
    item the result it gets alone, to float rounding.
    """
    n = int(n_items)
    if n < SLOT_MIN_ITEMS:
        return False
    return "fine" if n >= SLOT_FINE_ITEMS else None


#: Default cap of tokens per forward call (:func:`default_batch_tokens`).
MAX_BATCH_TOKENS = 32_768
#: Elements of the widest per-token activation (the feed-forward intermediate) that
#: one call may hold by default: 2**24 float32 = 64 MiB.
ACTIVATION_ELEMENTS = 1 << 24


def default_batch_tokens(widest: int) -> int:
    """Default ``max_batch_tokens`` for a model whose widest per-token activation is ``widest``.

    :data:`MAX_BATCH_TOKENS` (32,768) for models up to 512 wide (Geneformer V1 and
    scGPT sizes, unchanged), fewer for wider ones so that one call's feed-forward
    activations stay near :data:`ACTIVATION_ELEMENTS` (64 MiB): 5,120 tokens for a
    3,072-wide intermediate (Geneformer V2-104M), in multiples of 1,024, at least
    1,024. At that size a 32,768-token call peaked at 3.8 GiB resident against 1.4
    GiB, for less CPU time (``docs/benchmarks.md``).
    """
    widest = max(int(widest), 1)
    tokens = ACTIVATION_ELEMENTS // widest // 1024 * 1024
    return int(min(MAX_BATCH_TOKENS, max(1024, tokens)))


class BucketedRunner:
    """Run a forward adapter ``fn(static, params, *arrays)`` in length buckets.

    Parameters
    ----------
    fn
        ``fn(static, params, *arrays) -> array | tuple[array, ...]``, each output
        with the batch first. Compiled with ``jax.jit`` (``static`` static) once
        per batch shape; use a module-level function so that the compiled code
        is reused across runners.
    params
        Parameter pytree (e.g. from :func:`eval_split`), placed on the devices
        once (replicated).
    static
        Hashable settings passed as ``fn``'s first argument (e.g. the graph
        definition, the layer to pool).
    max_length
        The longest possible input (tokens).
    max_batch_tokens
        Rows x padded length per batch; bounds activation memory.
    batch_rows
        Fixed rows per batch instead (rounded up to a multiple of the device
        count; one shape per bucket).
    bucketing
        ``False`` pads every batch to ``max_length`` (one shape), as a runner
        without buckets would.
    packed_fn
        Segment-aware forward ``packed_fn(static, params, ids, segment_ids,
        positions, slots)`` returning per-segment results: ``rows *
        max_segments`` of them when ``slots`` is ``None``, else ``n_slots``
        (packing mode, :meth:`iter_batches` with one token array; see
        :meth:`iter_packed`).
    packed_static
        ``packed_fn``'s hashable first argument (default ``static``).
    packing
        ``None`` (auto: pack when the items' median length is below half the
        packed row width), ``True`` (always) or ``False`` (never).
    pad_id
        Padding token of packed rows.
    max_segments
        Items per packed row at most.
    slot_layout
        ``None`` (auto: the slot layout where its attention work is below
        :data:`SLOT_WORK_RATIO` of the rows'; widths in :data:`SLOT_GRID` s,
        one slot count per width), ``"fine"`` (the same rule with widths in
        :data:`SLOT_FINE_GRID` s and a slot count per call: less attention
        work, more compiled shapes, for large jobs) or ``False`` (rows only:
        one compiled shape, which a short job in a fresh process prefers);
        :func:`slot_layout_for` picks one by the job's size.
    edges
        Bucket edges (default :func:`bucket_edges` of ``max_length``).
    devices
        JAX devices to split batches across (default all).
    """

    def __init__(
        self,
        fn: Callable,
        params,
        *,
        static=None,
        max_length: int,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        batch_rows: int | None = None,
        bucketing: bool = True,
        edges: Sequence[int] | None = None,
        devices=None,
        packed_fn: Callable | None = None,
        packed_static=None,
        packing: bool | None = None,
        pad_id: int = 0,
        max_segments: int = 32,
        slot_layout: bool | None = None,
    ) -> None:
        if packing and packed_fn is None:
            raise ValueError("packing=True needs a packed_fn (a segment-aware forward).")
        if int(max_segments) < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}.")
        self.packing = packing
        self.packed_static = static if packed_static is None else packed_static
        self.pad_id = int(pad_id)
        self.max_segments = int(max_segments)
        if not (slot_layout is None or slot_layout is False or slot_layout == "fine"):
            raise ValueError(f"slot_layout must be None, False or 'fine', got {slot_layout!r}.")
        self.slot_layout = slot_layout
        #: Items run packed so far.
        self.n_packed = 0
        self.max_length = int(max_length)
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        if isinstance(max_batch_tokens, bool) or int(max_batch_tokens) < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens!r}.")
        if batch_rows is not None and (isinstance(batch_rows, bool) or int(batch_rows) < 1):
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows!r}.")
        self.max_batch_tokens = int(max_batch_tokens)
        self.batch_rows = None if batch_rows is None else int(batch_rows)
        self.bucketing = bool(bucketing)
        if not self.bucketing:
            self.edges = [self.max_length]
        else:
            self.edges = list(edges) if edges is not None else bucket_edges(self.max_length)
            if not self.edges or max(self.edges) < self.max_length or min(self.edges) < 1:
                raise ValueError(
                    f"edges {self.edges} must be positive and reach max_length {self.max_length}."
                )
        import jax

        devices = list(devices) if devices is not None else jax.devices()
        self.params, self._data_sharding, self.n_devices = data_parallel(params, devices)
        on_cpu = devices[0].platform == "cpu"
        self._packed_fn = (
            None
            if packed_fn is None or packing is False
            else _jitted(packed_fn, cpu_options=on_cpu)
        )
        self.static = static
        self._fn = _jitted(fn)
        #: Shapes run so far (one compilation each), for reports and tests.
        self.shapes: set[tuple[int, int]] = set()
        _malloc.tune()  # freed buffers reused by the next call (dfm.settings.malloc_tuning)

    def _check_lengths(self, lengths, n: int) -> np.ndarray:
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or (n and lengths.dtype.kind not in "iu"):
            raise ValueError(f"lengths must be {n} integers, got shape {lengths.shape}.")
        if n and (lengths.min() < 0 or lengths.max() > self.max_length):
            raise ValueError(f"lengths must lie in [0, {self.max_length}].")
        return lengths.astype(np.int64)

    def plan(self, lengths: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Return the ``(width, rows, indices)`` batches :meth:`run` makes of ``lengths``."""
        return plan_batches(
            lengths,
            self.edges,
            self.max_batch_tokens,
            multiple=self.n_devices,
            batch_rows=self.batch_rows,
        )

    def iter_run(
        self, lengths, make_batch: Callable[[np.ndarray, int], Sequence[np.ndarray]]
    ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
        """Yield ``(indices, outputs)`` per batch: the items' positions and their results.

        ``make_batch(indices, width)`` returns the model's input arrays for those
        items, each ``(len(indices), width, ...)`` (right-padded to ``width``,
        the bucket's edge); ``lengths`` are the items' lengths (tokens).
        """
        import jax

        lengths = np.asarray(lengths)
        lengths = self._check_lengths(lengths, lengths.shape[0] if lengths.ndim else -1)
        for edge, rows, idx in self.plan(lengths):
            batch = []
            for x in make_batch(idx, edge):
                x = np.asarray(x)
                if x.shape[:2] != (idx.size, edge):
                    raise ValueError(
                        f"a batch array has shape {x.shape}, expected ({idx.size}, {edge}, ...)."
                    )
                if idx.size < rows:  # spare rows: copies of the first item, discarded
                    x = np.concatenate([x, np.repeat(x[:1], rows - idx.size, axis=0)])
                batch.append(jax.device_put(x, self._data_sharding))
            self.shapes.add((rows, edge))
            out = self._fn(self.static, self.params, *batch)
            outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            yield idx, tuple(np.asarray(o)[: idx.size] for o in outs)

    def run(
        self,
        lengths,
        make_batch: Callable[[np.ndarray, int], Sequence[np.ndarray]],
        *,
        progress: Callable[[int], object] | None = None,
    ):
        """Run every item (see :meth:`iter_run`) and return the outputs in input order.

        ``progress(k)`` is called after each batch with its number of items
        (e.g. a tqdm bar's ``update``; the caller owns the bar, so that this
        layer imports no display code). Returns one array (or a tuple, as
        ``fn`` returns) with ``len(lengths)`` rows.
        """
        return self._gather(
            int(np.asarray(lengths).shape[0]), self.iter_run(lengths, make_batch), progress
        )

    @staticmethod
    def _gather(n: int, batches, progress: Callable[[int], object] | None = None):
        """Collect ``(indices, outputs)`` batches into ``n``-row arrays in item order.

        ``progress(k)``, if given, is called after each batch with its number of items.
        """
        results: list[np.ndarray] | None = None
        for idx, outs in batches:
            if results is None:
                results = [np.empty((n, *o.shape[1:]), dtype=o.dtype) for o in outs]
            for r, o in zip(results, outs, strict=True):
                r[idx] = o
            if progress is not None:
                progress(int(idx.size))
        if results is None:
            raise ValueError("BucketedRunner was called with no items.")
        return results[0] if len(results) == 1 else tuple(results)

    def _arrays(self, lengths, arrays) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if not arrays:
            raise ValueError("BucketedRunner needs at least one token array.")
        arrays = tuple(np.asarray(a) for a in arrays)
        n = arrays[0].shape[0]
        for a in arrays:
            if a.ndim < 2 or a.shape[0] != n or a.shape[1] != self.max_length:
                raise ValueError(
                    f"token arrays must be (n, {self.max_length}, ...) with the same n; "
                    f"got shapes {[x.shape for x in arrays]}."
                )
        return self._check_lengths(lengths, n), arrays

    @staticmethod
    def packed_width(lengths) -> int:
        """Row width of packed items: the longest rounded up to a multiple of 64."""
        return int(-(-max(1, int(np.max(lengths, initial=1))) // 64) * 64)

    def will_pack(self, lengths) -> bool:
        """Whether :meth:`iter_batches` packs these items (see ``packing``)."""
        lengths = np.asarray(lengths)
        if self._packed_fn is None or not lengths.size:
            return False
        if self.packing:
            return True
        return bool(np.median(lengths) < self.packed_width(lengths) / 2)

    def iter_packed(
        self, lengths, tokens: np.ndarray
    ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
        """Yield ``(indices, outputs)`` per call of ``packed_fn``.

        ``tokens`` is ``(n, L)`` right-padded. Two layouts; the one whose
        attention computes fewer score elements is used (the slot layout only
        when below :data:`SLOT_WORK_RATIO` of the rows'):

        * rows: items packed best-fit into rows of :meth:`packed_width` tokens,
          at most ``max_segments`` per row, the rows divided evenly across calls
          of at most ``max_batch_tokens`` tokens (``batch_rows`` rows), rows a
          multiple of 8 and of the device count; every token attends over its
          whole row (block-diagonal mask); ``slots`` is ``None``; one compiled
          shape;
        * slots (:func:`~diffbio_sc.models._packing.plan_slots`): items sorted
          by length into calls of at most that many tokens, side by side in
          ``(rows, 64)`` arrays, and attention on an ``(n_slots, width)`` view,
          one slot per item as wide as the call's longest item rounded up to
          :data:`SLOT_GRID` (:data:`SLOT_FINE_GRID` for ``slot_layout="fine"``),
          so each token attends over about its own item's length; one
          compiled shape per distinct view.

        Segment ids are renumbered per call (segment ``j`` is the call's item
        ``j - 1``).
        """
        from ._packing import plan_packing, plan_slots, slot_work

        if self._packed_fn is None:
            raise ValueError("this runner has no packed_fn.")
        tokens = np.asarray(tokens)
        lengths = self._check_lengths(lengths, tokens.shape[0])
        if not lengths.size:
            return iter(())
        width = self.packed_width(lengths)
        plan = plan_packing(lengths, width, max_segments=self.max_segments)
        step = int(np.lcm(8, self.n_devices))
        if self.slot_layout is not False:  # rows only: no slot plan to make
            budget = (
                self.batch_rows * width if self.batch_rows is not None else self.max_batch_tokens
            )
            fine = self.slot_layout == "fine"
            n_tokens, calls = plan_slots(
                lengths,
                budget,
                grid=SLOT_FINE_GRID if fine else SLOT_GRID,
                slot_step=step,
                per_width=not fine,
            )
            if slot_work(calls) < SLOT_WORK_RATIO * plan.n_rows * width**2:
                return self._iter_slots(lengths, tokens, n_tokens, calls, step)
        return self._iter_rows(tokens, plan, step)

    def _iter_slots(self, lengths, tokens, n_tokens: int, calls, step: int):
        import jax

        from ._packing import slot_inputs

        n_tokens = -(-n_tokens // (64 * step)) * (64 * step)
        for call in calls:
            arrays = slot_inputs(tokens, lengths, call, n_tokens, pad_id=self.pad_id)
            batch = [jax.device_put(x, self._data_sharding) for x in arrays]
            self.shapes.add((n_tokens // 64, 64, call.n_slots, call.slot_width))
            out = self._packed_fn(self.packed_static, self.params, *batch)
            outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            self.n_packed += int(call.cells.size)
            yield call.cells, tuple(np.asarray(o)[: call.cells.size] for o in outs)

    def _iter_rows(self, tokens, plan, step: int):
        import jax

        from ._packing import pack_tokens

        width = plan.width
        ids, seg, pos = pack_tokens(tokens, plan, pad_id=self.pad_id)
        cap = self.batch_rows if self.batch_rows is not None else self.max_batch_tokens // width
        cap = max(step, int(cap) // step * step)
        per_call = -(-plan.n_rows // -(-plan.n_rows // cap))  # rows divided evenly
        rows = min(cap, -(-per_call // step) * step)
        lut = np.zeros(plan.n_cells + 1, dtype=np.int32)
        for r0 in range(0, plan.n_rows, rows):
            r1 = min(r0 + rows, plan.n_rows)
            cells = np.flatnonzero((plan.row >= r0) & (plan.row < r1))
            lut[cells + 1] = np.arange(1, cells.size + 1, dtype=np.int32)
            local = lut[seg[r0:r1]]
            batch = []
            for x, fill in ((ids[r0:r1], self.pad_id), (local, 0), (pos[r0:r1], 0)):
                if r1 - r0 < rows:  # spare rows: empty (all padding, segment 0)
                    x = np.pad(x, ((0, rows - (r1 - r0)), (0, 0)), constant_values=fill)
                batch.append(jax.device_put(x, self._data_sharding))
            lut[cells + 1] = 0
            self.shapes.add((rows, width))
            out = self._packed_fn(self.packed_static, self.params, *batch, None)
            outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            self.n_packed += int(cells.size)
            yield cells, tuple(np.asarray(o)[: cells.size] for o in outs)

    def iter_batches(
        self, lengths: np.ndarray, *arrays: np.ndarray
    ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
        """:meth:`iter_run` over whole ``(n, max_length, ...)`` right-padded arrays.

        Positions past an item's length are cut off when its bucket is
        shorter, so they must be padding. With a ``packed_fn`` and one token
        array, the items are packed instead when :meth:`will_pack` says so
        (:meth:`iter_packed`).
        """
        lengths, arrays = self._arrays(lengths, arrays)
        if len(arrays) == 1 and self.will_pack(lengths):
            return self.iter_packed(lengths, arrays[0])
        if self.packing and self._packed_fn is not None:
            raise ValueError("packing=True packs one token array; got several.")
        return self.iter_run(lengths, lambda idx, w: [a[idx, :w] for a in arrays])

    def __call__(self, lengths: np.ndarray, *arrays: np.ndarray):
        """:meth:`run` over whole right-padded arrays, or packed (see :meth:`iter_batches`)."""
        return self._gather(int(np.asarray(lengths).shape[0]), self.iter_batches(lengths, *arrays))
