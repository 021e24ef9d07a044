"""Package-wide settings: verbosity, progress bars and default sizes."""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass
class _Settings:
    """Mutable package settings, available as ``dfm.settings``.

    Attributes
    ----------
    verbosity
        Logging level name for the ``diffbio_sc`` logger
        (``'warning'``, ``'info'`` or ``'debug'``).
    progress_bar
        Show tqdm progress bars in long loops (training, embedding, streaming).
        Where stderr is neither a terminal nor a notebook (a log file, a pipe), a
        bar redraws at most once a minute.
    chunk_size
        Cells per chunk when streaming a matrix (tokenization, bins, soft ranks).
    n_jobs
        Threads used by chunked NumPy kernels; ``None`` means all cores.
    """

    _verbosity: str = "warning"
    progress_bar: bool = True
    chunk_size: int = 4096
    n_jobs: int | None = None

    @property
    def verbosity(self) -> str:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: str | int) -> None:
        if isinstance(value, int):
            level = value
            name = logging.getLevelName(value).lower()
        else:
            name = str(value).lower()
            level = logging.getLevelName(name.upper())
            if not isinstance(level, int):
                raise ValueError(f"Unknown verbosity {value!r}; use 'warning', 'info' or 'debug'.")
        logging.getLogger("diffbio_sc").setLevel(level)
        self._verbosity = name


settings = _Settings()
logging.getLogger("diffbio_sc").setLevel(logging.WARNING)
