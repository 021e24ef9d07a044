"""Pure JAX kernels: differentiable ranking and sorting.

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

Importing this module imports JAX; the host sorting kernel (numba) is compiled
on first use.
"""

from __future__ import annotations

from ._neural_sort import neural_sort
from ._sequence import (
    CharTokenizer,
    KmerTokenizer,
    NucleotideTransformerTokenizer,
    get_tokenizer,
    one_hot,
    reverse_complement,
)
from ._soft_rank import soft_rank, soft_sort
from ._tokens import soft_rank_value_tokens

__all__ = ["neural_sort", "soft_rank", "soft_sort", "soft_rank_value_tokens"]
__all__ += [
    "CharTokenizer",
    "KmerTokenizer",
    "NucleotideTransformerTokenizer",
    "get_tokenizer",
    "one_hot",
    "reverse_complement",
]
