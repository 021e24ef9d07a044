"""Keep freed model buffers in the process, so each model call does not fault its memory in again.

XLA's CPU backend takes every intermediate buffer of a model call from the C
allocator and gives it back at the end of the call. With glibc's defaults,
buffers above 32 MiB (a layer's activations at 32k tokens) are ``mmap``-ed and
unmapped on every call, and the heap's freed top is returned to the system
above 128 KiB; the next call then touches fresh pages, and the kernel zeroes
each one (a minor page fault). Embedding 1,000 PBMC cells with a Geneformer-V1
sized model took 2.4 million such faults and 5-6 CPU-s of system time (about 15%
of the process) this way.

:func:`tune` raises glibc's ``mmap`` threshold, trim threshold and top pad
(``mallopt``) to :data:`MMAP_THRESHOLD` / :data:`TRIM_THRESHOLD` / :data:`TOP_PAD`
and gives all threads one arena (:data:`ARENA_MAX`), once per process, when
``dfm.models`` is imported (before JAX starts its worker threads) or at the latest
when a model first runs (:class:`~diffbio_sc.models._runner.BucketedRunner`).
Memory a call freed is reused by the next one instead: 0.8 instead of 2.4 million
page faults, 2.1 instead of 5.9 CPU-s of system time in that run, peak resident
memory 1,149 instead of 1,222 MiB. The cost: up to :data:`TRIM_THRESHOLD`
of freed memory stays reserved by the process after the model ran (its resident
size stays near its peak; the peak itself is unchanged).

Without it, most of those faults are gone anyway: they came from YNNPACK fusions
allocating their intermediates inside every call, which the runner's packed programs
no longer use (:data:`~diffbio_sc.models._runner.PACKED_CPU_OPTIONS`, an option of
those programs only); what is left is XLA's per-call temporary allocation (0.57
million faults for those cells).

**Opt-in** (``dfm.settings.malloc_tuning = True`` before ``dfm.models`` is
imported, or ``DFM_MALLOC_TUNING=1``): ``mallopt`` changes the allocator of the
whole Python process, not only the package's calls (one arena for every thread,
freed memory kept), which a library should not do behind a user's back. Not done
(the process keeps glibc's defaults) unless asked, when ``DFM_MALLOC_TUNING=0``,
when the user set any glibc malloc
tunable (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_``, ``MALLOC_ARENA_MAX`` or ``GLIBC_TUNABLES``), or when the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

log = logging.getLogger("diffbio_sc")

#: Allocations below this come from the heap (glibc's default: 128 KiB, rising to 32 MiB).
MMAP_THRESHOLD = 256 * 1024**2
#: Freed memory at the heap's top kept up to this (glibc's default: 128 KiB).
TRIM_THRESHOLD = 512 * 1024**2
#: Extra memory asked of the system each time the heap grows (glibc's default: 128 KiB).
TOP_PAD = 64 * 1024**2
#: One allocation arena for all threads (glibc's default: 8 per core): a worker
#: thread's own arena holds at most 64 MiB, so XLA's larger buffers would be
#: ``mmap``-ed again whatever the threshold.
ARENA_MAX = 1

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_USER_TUNABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
)

_lock = threading.Lock()
_state: dict[str, object] = {"done": False, "tuned": False}


def _env_value() -> str:
    return os.environ.get("DFM_MALLOC_TUNING", "").strip().lower()


def _env_disabled() -> bool:
    return _env_value() in {"0", "false", "off", "no"}


def _env_enabled() -> bool:
    return _env_value() in {"1", "true", "on", "yes"}


def tune() -> bool:
    """Raise glibc's ``mmap`` and trim thresholds for this process if asked (once; see the module).

    Returns whether the thresholds are the package's (``False``: left as they were).
    """
    from ._settings import settings

    with _lock:
        if _state["done"]:
            return bool(_state["tuned"])
        if _env_disabled() or not (settings.malloc_tuning or _env_enabled()):
            return False  # not recorded as done: the setting may be turned on later
        _state["done"] = True
        if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_TUNABLES):
            return False
        try:
            libc = ctypes.CDLL(None)
            if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: no mallopt knobs
                return False
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # pragma: no cover - Linux without a usable libc
            return False
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        ok = True
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
            (_M_ARENA_MAX, ARENA_MAX),
        ):
            ok = mallopt(param, value) == 1 and ok
        _state["tuned"] = ok
        log.debug("glibc malloc thresholds %s", "raised" if ok else "left as they were")
        return ok


_trim_state: dict[str, object] = {"fn": None, "looked_up": False}


def _malloc_trim():
    """Return glibc's ``malloc_trim`` (through ctypes), or None where there is none."""
    with _lock:
        if not _trim_state["looked_up"]:
            _trim_state["looked_up"] = True
            if sys.platform.startswith("linux"):
                try:
                    libc = ctypes.CDLL(None)
                    if hasattr(libc, "gnu_get_libc_version"):
                        fn = libc.malloc_trim
                        fn.argtypes = (ctypes.c_size_t,)
                        fn.restype = ctypes.c_int
                        _trim_state["fn"] = fn
                except (OSError, AttributeError):  # pragma: no cover - no usable libc
                    pass
        return _trim_state["fn"]


def trim() -> bool:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``).

    Called by the streaming passes between chunks
    (:func:`~diffbio_sc._validate.iter_row_chunks` with ``reuse_buffers=True``):
    with glibc's defaults, the freed temporaries of a chunk (some tens of MiB)
    stay in the heap as holes that the next chunk's slightly different sizes do
    not fit, and the resident memory of a pass over a backed atlas creeps up
    with the number of chunks. A no-op (returns ``False``) where the C library
    is not glibc, and when :func:`tune` raised the thresholds for this process
    (it keeps freed memory on purpose).
    """
    if _state["tuned"]:
        return False
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
