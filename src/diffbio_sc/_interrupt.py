"""Ctrl-C that always stops a run, with nothing written.

Python delivers SIGINT as a ``KeyboardInterrupt`` raised wherever the main thread
happens to be. Inside a garbage-collection callback (JAX registers one) or a
finalizer (``__del__``) such an exception cannot propagate: Python prints
"Exception ignored" and the run goes on to write its output. :func:`handling`
installs a handler that

* records the interrupt (:func:`pending`), so the atomic writers
  (:mod:`diffbio_sc.io._atomic`) refuse to commit any output afterwards, whatever
  happened to the exception;
* raises ``KeyboardInterrupt`` at once where it can propagate, and otherwise
  re-delivers the signal to the main thread a few milliseconds later, once the
  garbage collector or finalizer has returned.

The command line (``dfm``) runs every command inside :func:`handling`.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import signal
import threading
import time
from collections.abc import Iterator

__all__ = ["handling", "pending", "check"]

#: Seconds before an interrupt that landed in a gc callback or finalizer is re-raised.
RETRY_S = 0.02
#: Seconds after a raised interrupt during which another Ctrl-C is only recorded, so
#: that cleanup (removing temporary files) runs to its end.
GRACE_S = 2.0

_state = {"pending": False, "in_gc": False, "active": False, "raised_at": None}


def pending() -> bool:
    """Return whether Ctrl-C was pressed inside :func:`handling` (until it ends)."""
    return _state["pending"]


def check() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt is pending (a safe point)."""
    if _state["pending"]:
        raise KeyboardInterrupt


def _gc_phase(phase: str, info: dict) -> None:
    # first in gc.callbacks: True from the start of a collection (finalizers
    # included) until its stop phase; the other callbacks' stop phases are found
    # on the stack by _cannot_raise.
    _state["in_gc"] = phase == "start"


def _cannot_raise(frame) -> bool:
    """Whether an exception raised in ``frame`` would be swallowed by Python."""
    if _state["in_gc"]:
        return True
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    callbacks.discard(None)
    depth = 0
    while frame is not None and depth < 200:
        code = frame.f_code
        if code in callbacks or code.co_name in ("__del__", "_xla_gc_callback"):
            return True
        frame = frame.f_back
        depth += 1
    return False


def _redeliver() -> None:
    if _state["active"] and _state["pending"]:
        _thread.interrupt_main(signal.SIGINT)


def _handler(signum, frame) -> None:
    _state["pending"] = True
    raised_at = _state["raised_at"]
    if raised_at is not None and time.monotonic() - raised_at < GRACE_S:
        return  # already stopping: let the cleanup finish
    if _cannot_raise(frame):
        timer = threading.Timer(RETRY_S, _redeliver)
        timer.daemon = True
        timer.start()
        return
    _state["raised_at"] = time.monotonic()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Handle Ctrl-C as described in the module docstring for the block's duration.

    Outside the main thread (where Python cannot install signal handlers) this
    does nothing, and so it does when SIGINT is ignored (``SIG_IGN``: a job
    started in the background by a non-interactive shell, or under ``nohup``),
    as Python itself leaves an ignored SIGINT ignored. The previous handler and
    state are restored on exit.

    Yields
    ------
    None
    """
    if threading.current_thread() is not threading.main_thread() or _state["active"]:
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return
    _state.update(pending=False, in_gc=False, active=True, raised_at=None)
    gc.callbacks.insert(0, _gc_phase)
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(_gc_phase)
        _state.update(pending=False, in_gc=False, active=False, raised_at=None)
