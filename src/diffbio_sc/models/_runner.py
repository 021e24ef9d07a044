"""Length-bucketed, fixed-shape, data-parallel inference for token models.

A transformer's cost follows the padded length of its batch: attention grows
with its square. Padding every cell to the longest possible input wastes most
of it when cells differ in length (a few hundred expressed genes next to
2,048). :class:`BucketedRunner` groups items by length into a few buckets,
pads each bucket only to its own edge, and runs fixed-shape batches through one
jit-compiled function per bucket shape (so each shape compiles once), writing
results back in the items' original order.

It is generic: ``fn(static, params, *arrays)`` is any JAX function of a
hashable ``static`` argument (e.g. an NNX graph definition and settings), a
parameter pytree and right-padded ``(B, L)`` token arrays that returns one
array, or a tuple of arrays, with the batch on the first axis. ``fn`` is
jit-compiled once per module-level function (``static`` is a static argument),
so runners built again for the same model and shapes reuse the compiled code. An item's result never
depends on the other items in its batch, provided ``fn`` treats rows
independently and ignores positions past a row's length (masked attention).

Memory is bounded by ``max_batch_tokens`` (rows x padded length per batch):
short buckets get more rows per batch, long ones fewer. With several JAX
devices the batch axis is split across them (parameters replicated), and the
batch size is a multiple of the device count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = ["BucketedRunner", "bucket_edges", "plan_batches", "data_parallel"]


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


def bucket_edges(max_length: int, *, min_length: int = 32, growth: float = 1.25) -> list[int]:
    """Bucket edges ``min_length, ... , max_length`` growing by about ``growth``.

    Edges are multiples of 8 (of 64 above 512, so that long buckets split into
    query blocks). Each edge used is one compiled shape; with ``growth=1.25`` a
    row is padded by at most a quarter of its bucket's lower edge (about 12%
    on average), where padding to the input size costs up to 60x at 2,048.
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
    max_batch_tokens: int,
    *,
    multiple: int = 1,
) -> list[tuple[int, int, np.ndarray]]:
    """Group item indices into ``(padded_length, batch_rows, indices)`` batches.

    Items are assigned to the smallest edge >= their length (order kept within a
    bucket); each bucket is cut into batches of ``batch_rows`` rows, where
    ``batch_rows * padded_length <= max_batch_tokens`` (at least ``multiple``
    rows) and ``batch_rows`` is a multiple of ``multiple``. The last batch of a
    bucket may hold fewer items (the caller pads it to ``batch_rows``).
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
        rows = max(multiple, (int(max_batch_tokens) // int(edge)) // multiple * multiple)
        # Do not pad a small bucket up to a huge batch: use the rows it needs, rounded
        # up to a power of two (times ``multiple``) so that few shapes are compiled.
        need = 1 << int(np.ceil(np.log2(max(1, -(-idx.size // multiple)))))
        rows = min(rows, need * multiple)
        for s in range(0, idx.size, rows):
            plan.append((int(edge), rows, idx[s : s + rows]))
    return plan


_JITTED: dict = {}


def _jitted(fn: Callable):
    """``jax.jit(fn, static_argnums=0)``, one per function for the whole session."""
    if fn not in _JITTED:
        import jax

        _JITTED[fn] = jax.jit(fn, static_argnums=0)
    return _JITTED[fn]


class BucketedRunner:
    """Run ``fn(static, params, *arrays)`` over right-padded token arrays in length buckets.

    Parameters
    ----------
    fn
        ``fn(static, params, *arrays) -> array | tuple[array, ...]``, each output
        with the batch first. Compiled with ``jax.jit`` (``static`` static) once
        per batch shape; use a module-level function so that the compiled code
        is reused across runners.
    params
        Parameter pytree (e.g. ``nnx.split(model)[1]``), placed on the devices
        once (replicated).
    static
        Hashable settings passed as ``fn``'s first argument (e.g. the graph
        definition, the layer to pool).
    max_length
        Length of the token arrays (the longest possible input).
    max_batch_tokens
        Rows x padded length per batch; bounds activation memory.
    bucketing
        ``False`` pads every batch to ``max_length`` (one shape), as a runner
        without buckets would.
    edges
        Bucket edges (default :func:`bucket_edges` of ``max_length``).
    pad_values
        Value used to pad each input array's extra rows (default 0 for all).
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
        max_batch_tokens: int = 32_768,
        bucketing: bool = True,
        edges: Sequence[int] | None = None,
        pad_values: Sequence | None = None,
        devices=None,
    ) -> None:
        self.max_length = int(max_length)
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        if isinstance(max_batch_tokens, bool) or int(max_batch_tokens) < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens!r}.")
        self.max_batch_tokens = int(max_batch_tokens)
        self.bucketing = bool(bucketing)
        if not self.bucketing:
            self.edges = [self.max_length]
        else:
            self.edges = list(edges) if edges is not None else bucket_edges(self.max_length)
            if not self.edges or max(self.edges) < self.max_length or min(self.edges) < 1:
                raise ValueError(
                    f"edges {self.edges} must be positive and reach max_length {self.max_length}."
                )
        self.pad_values = None if pad_values is None else tuple(pad_values)
        self.params, self._data_sharding, self.n_devices = data_parallel(params, devices)
        self.static = static
        self._fn = _jitted(fn)
        #: Shapes run so far (one compilation each), for reports and tests.
        self.shapes: set[tuple[int, int]] = set()

    def _check(self, lengths: np.ndarray, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
        if not arrays:
            raise ValueError("BucketedRunner needs at least one token array.")
        n = arrays[0].shape[0]
        for a in arrays:
            if a.ndim < 2 or a.shape[0] != n or a.shape[1] != self.max_length:
                raise ValueError(
                    f"token arrays must be (n, {self.max_length}, ...) with the same n; "
                    f"got shapes {[x.shape for x in arrays]}."
                )
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"lengths must be {n} integers, got shape {lengths.shape}.")
        if n and (lengths.min() < 0 or lengths.max() > self.max_length):
            raise ValueError(f"lengths must lie in [0, {self.max_length}].")
        if self.pad_values is not None and len(self.pad_values) != len(arrays):
            raise ValueError("pad_values needs one value per token array.")
        return lengths.astype(np.int64)

    def iter_batches(
        self, lengths: np.ndarray, *arrays: np.ndarray
    ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
        """Yield ``(indices, outputs)`` per batch: the items' positions and their results.

        ``arrays`` are ``(n, max_length, ...)`` right-padded inputs; ``lengths``
        each item's number of leading valid positions (positions past it are
        cut off when the bucket is shorter, so they must be padding).
        """
        import jax

        arrays = tuple(np.asarray(a) for a in arrays)
        lengths = self._check(lengths, arrays)
        plan = plan_batches(lengths, self.edges, self.max_batch_tokens, multiple=self.n_devices)
        pads = self.pad_values or (0,) * len(arrays)
        for edge, rows, idx in plan:
            batch = []
            for a, pad in zip(arrays, pads, strict=True):
                x = a[idx, :edge]
                if idx.size < rows:
                    fill = np.full((rows - idx.size, *x.shape[1:]), pad, dtype=x.dtype)
                    x = np.concatenate([x, fill])
                batch.append(jax.device_put(x, self._data_sharding))
            self.shapes.add((rows, edge))
            out = self._fn(self.static, self.params, *batch)
            single = not isinstance(out, (tuple, list))
            outs = (out,) if single else tuple(out)
            yield idx, tuple(np.asarray(o)[: idx.size] for o in outs)

    def __call__(self, lengths: np.ndarray, *arrays: np.ndarray):
        """Run every item and return the outputs in the items' original order.

        Returns one array (or a tuple, as ``fn`` returns) with ``n`` rows.
        """
        n = np.asarray(arrays[0]).shape[0] if arrays else 0
        results: list[np.ndarray] | None = None
        single = True
        for idx, outs in self.iter_batches(lengths, *arrays):
            if results is None:
                results = [np.empty((n, *o.shape[1:]), dtype=o.dtype) for o in outs]
                single = len(outs) == 1
            for r, o in zip(results, outs, strict=True):
                r[idx] = o
        if results is None:
            raise ValueError("BucketedRunner was called with no items.")
        return results[0] if single else tuple(results)
