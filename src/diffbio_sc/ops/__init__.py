"""Pure array kernels: differentiable ranking and sorting (JAX), tokenization kernels.

* :func:`soft_rank`, :func:`soft_sort`: projection onto the permutahedron
  (Blondel et al., ICML 2020), O(n log n) forward, O(n) backward, ``jit``/
  ``vmap``/``grad``-safe, with masked ranking for sparse cells.
* :func:`neural_sort`: the O(n^2) NeuralSort relaxation (Grover et al., 2019),
  for small n and comparison.
* :func:`soft_rank_value_tokens`: soft rank-value tokens (soft ranks and soft
  top-k membership) that converge to ``dfm.pp.tokenize`` as the temperature
  goes to 0.

* Sequence kernels (:mod:`diffbio_sc.ops._sequence`): vectorised DNA/RNA
  tokenizers (``char``, ``kmer``, ``nt6``), :func:`one_hot` with the IUPAC
  rule and :func:`reverse_complement`.

The host (NumPy) kernels behind ``dfm.pp`` live in private modules here too,
one per job, and know nothing of AnnData: ``_rank_value`` (rank-value
encoding), ``_medians`` (nonzero gene medians), ``_bins`` (per-cell quantile
bins), ``_csr`` (row sums and CSR helpers) and ``_plan`` (tokenizer plans:
the resolved vocabulary, gene scaling, special ids and length cap of a scheme,
built once and applied to CSR chunks by every tokenizing path); and those behind
``dfm.tl``: ``_scoring`` (probes and integration metrics), ``_stats`` (AUC,
corrected resampled t-test, Benjamini-Hochberg), ``_logo`` (leave-one-gene-out
fold fits), ``_projection`` (subject projection) and ``_threads`` (BLAS threads).

Functions are imported on first use: importing the package imports neither JAX
nor numba; the host sorting kernel (numba) is compiled on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "neural_sort": "._neural_sort",
    "soft_rank": "._soft_rank",
    "soft_sort": "._soft_rank",
    "soft_rank_value_tokens": "._tokens",
    "CharTokenizer": "._sequence",
    "KmerTokenizer": "._sequence",
    "NucleotideTransformerTokenizer": "._sequence",
    "get_tokenizer": "._sequence",
    "one_hot": "._sequence",
    "reverse_complement": "._sequence",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
