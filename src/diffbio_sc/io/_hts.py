"""Keep htslib's own stderr messages (cyvcf2, pysam) out of the user's terminal.

htslib writes notes such as ``[E::idx_find_and_load] Could not retrieve index
file`` (a plain VCF read without an index, which is how the package reads it)
or ``[W::vcf_parse] Contig 'MT' is not defined in the header`` straight to the
C-level stderr, where Python's warning filters and loggers cannot reach them.
:func:`quiet_htslib` points file descriptor 2 at a temporary file while a
block runs and turns what was written there into **one** line of the
``diffbio_sc`` logger: at debug level when every message is one of the known
harmless notes, at warning level otherwise (so a real problem still shows).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_htslib"]

logger = logging.getLogger("diffbio_sc")

#: htslib notes that say nothing about the result of a full, unindexed read.
_HARMLESS = (
    re.compile(r"^\[E::idx_find_and_load\] Could not retrieve index file"),
    re.compile(r"^\[W::vcf_parse\] Contig '.*' is not defined in the header"),
    re.compile(r"^\[W::bcf_hdr_check_sanity\]"),
)


@contextmanager
def quiet_htslib(what: str) -> Iterator[list[str]]:
    """Capture C-level stderr during the block; log it as one line afterwards.

    ``what`` says what was being done (``'reading the VCF x.vcf'``) in the log
    line. Yields a list that holds the captured lines once the block has left
    (also when it raised), so an error message can quote htslib's reason.
    Where file descriptor 2 cannot be redirected (no real stderr), the block
    runs unchanged.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield lines
        return
    sink = tempfile.TemporaryFile()
    try:
        os.dup2(sink.fileno(), 2)
        yield lines
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):  # pragma: no cover - closed stderr
            pass
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", errors="replace")
        sink.close()
        lines.extend(ln.strip() for ln in text.splitlines() if ln.strip())
        _log(what, lines)


def _log(what: str, lines: list[str]) -> None:
    if not lines:
        return
    harmless = all(any(p.match(ln) for p in _HARMLESS) for ln in lines)
    first = next((ln for ln in lines if not any(p.match(ln) for p in _HARMLESS)), lines[0])
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    logger.log(
        logging.DEBUG if harmless else logging.WARNING,
        "htslib, %s: %s%s",
        what,
        first,
        more,
    )
