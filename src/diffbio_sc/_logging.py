"""Logging helpers in scanpy's style: a start message, then ``finished`` with the time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("diffbio_sc")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False


@contextmanager
def timed(message: str) -> Iterator[dict]:
    """Log ``message``, run the block, then log ``finished`` with the elapsed time.

    The yielded dict may be filled with ``added`` (a list of keys written), which
    is logged at debug level.
    """
    info: dict = {}
    logger.info(message)
    start = time.perf_counter()
    yield info
    elapsed = time.perf_counter() - start
    logger.info("    finished (%.2fs)", elapsed)
    if info.get("added"):
        logger.debug("    added %s", ", ".join(map(str, info["added"])))
    info["elapsed_s"] = elapsed


@contextmanager
def quiet_library(name: str) -> Iterator[None]:
    """Hide the INFO lines of a library's logger unless ``dfm.settings.verbosity`` asks.

    scib-metrics, for one, logs colour-coded INFO lines ("isolated labels: ...",
    kBET's per-label notes) through its own handler. Inside this block the logger
    ``name`` shows warnings and errors only, unless the ``diffbio_sc`` logger is at
    ``'info'`` or ``'debug'``; its level is restored afterwards. The library is
    imported first where it is importable, because some set their level on import.
    """
    import importlib
    from importlib.util import find_spec

    if find_spec(name) is not None:
        importlib.import_module(name)
    other = logging.getLogger(name)
    old = other.level
    if not logger.isEnabledFor(logging.INFO):
        other.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        other.setLevel(old)


#: Seconds between redraws of a bar whose stream is not a terminal (a log file, a pipe).
NON_TTY_INTERVAL_S = 60.0


def _is_terminal_or_notebook(stream) -> bool:
    """Whether ``stream`` shows a redrawn bar in place (a terminal or a Jupyter output)."""
    if stream is None:
        return False
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def tqdm(*args, **kwargs):
    """Return a tqdm progress bar that never warns about a missing notebook widget.

    ``tqdm.auto`` picks the notebook widget inside Jupyter, and where ipywidgets is
    not installed it warns "IProgress not found" on import, even for a bar that is
    switched off. The widget is used here only when ipywidgets is importable;
    otherwise the plain text bar of ``tqdm.std``, which a notebook shows as text.

    When the bar's stream (stderr unless ``file=`` is given) is neither a terminal
    nor a notebook, a log file would receive every redraw (a carriage return and a
    line, ten times a second); there the bar redraws at most once a minute
    (:data:`NON_TTY_INTERVAL_S`), a few lines for a run of a few minutes.
    Arguments are those of ``tqdm.tqdm``.
    """
    import sys
    from importlib.util import find_spec

    if not _is_terminal_or_notebook(kwargs.get("file", sys.stderr)):
        for key in ("mininterval", "maxinterval"):
            kwargs[key] = max(float(kwargs.get(key) or 0.0), NON_TTY_INTERVAL_S)

    if find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm as bar
    else:
        from tqdm.std import tqdm as bar
    return bar(*args, **kwargs)
