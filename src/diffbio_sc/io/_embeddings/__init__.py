"""Read and write embedding artifacts exported by upstream models.

One module per format (``_arrays``: ``.npz``/``.npy``/``.safetensors``;
``_h5ad``; ``_table``: ``.csv``/``.tsv``/``.parquet``) behind one reader/writer
table in ``_api``; the shared checks and the id logic live in ``_common``. The
layouts and the rules for tables are documented in :func:`read_embeddings`.
"""

from __future__ import annotations

from ._api import FORMAT_TABLE, make_parent_dirs, read_embeddings, write_embeddings
from ._common import (
    FORMATS,
    ID_ARRAYS,
    ID_COLUMNS,
    MAX_DIMS,
    EmbeddingArtifact,
    file_sha256,
    ids_to_str,
    infer_format,
    overflow_note,
)

__all__ = [
    "FORMATS",
    "FORMAT_TABLE",
    "ID_ARRAYS",
    "ID_COLUMNS",
    "MAX_DIMS",
    "EmbeddingArtifact",
    "file_sha256",
    "ids_to_str",
    "infer_format",
    "make_parent_dirs",
    "overflow_note",
    "read_embeddings",
    "write_embeddings",
]
