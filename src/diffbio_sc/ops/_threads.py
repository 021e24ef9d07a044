"""BLAS thread control for the small dense solves of the genetics tools."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def single_thread_blas(n: int, limit: int = 2048):
    """Run the enclosed linear algebra with one BLAS thread when matrices have <= ``limit`` rows.

    Matrices of a few hundred to a couple of thousand rows gain little from BLAS
    threads, and on a shared machine idle-spinning OpenBLAS threads make them
    10-100x slower (measured here: a batched 16 x 120 x 120 solve took 0.26 s with
    2 threads under load and 2.5 ms with one).
    """
    if n > limit:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
