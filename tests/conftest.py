"""Shared fixtures. Real datasets live in ../shared/data beside the repository."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The persistent JAX compilation cache (on by default) goes to a folder of this test
# session, shared by the subprocesses the tests start, never the user's own cache.
if "DFM_CACHE_DIR" not in os.environ:
    _TEST_CACHE = tempfile.mkdtemp(prefix="dfm-test-cache-")
    os.environ["DFM_CACHE_DIR"] = _TEST_CACHE
else:
    _TEST_CACHE = None


def pytest_unconfigure(config):
    if _TEST_CACHE is not None:
        shutil.rmtree(_TEST_CACHE, ignore_errors=True)


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DFM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason where it is absent."""
    if not (SHARED_DATA / "singlecell").is_dir():
        pytest.skip(
            f"real datasets not found at {SHARED_DATA} (set DFM_SHARED_DATA or place "
            "shared/data beside the repository)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def pbmc_path(shared_data) -> Path:
    return shared_data / "singlecell" / "pbmc_3batch_symphony.h5ad"


@pytest.fixture
def small_counts():
    """200 cells x 300 genes of synthetic integer counts (CSR), 3 types, 2 batches."""
    import diffbio_sc as dfm

    return dfm.datasets.synthetic_counts(200, 300, seed=0)


@pytest.fixture
def checkpoint_cells():
    """The 48-gene cells of the checkpoint fixtures (Ensembl ids; symbols in .var['symbol'])."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    c = np.load(Path(__file__).parent / "checkpoints" / "fixtures" / "cells.npz")
    return ad.AnnData(
        X=sp.csr_matrix(c["counts"].astype(np.float32)),
        obs=pd.DataFrame(index=c["obs"]),
        var=pd.DataFrame({"symbol": c["symbols"]}, index=c["ensembl"]),
    )


@pytest.fixture
def dfm_log(caplog):
    """caplog that sees the ``diffbio_sc`` logger (which does not propagate to root)."""
    import logging

    logger = logging.getLogger("diffbio_sc")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="diffbio_sc")
    yield caplog
    logger.removeHandler(caplog.handler)


def pytest_collection_modifyitems(config, items):
    """Deselect ``slow`` tests unless asked for: ``python -m pytest`` runs the fast set.

    Slow tests run when a marker expression is given (``-m slow``, ``-m "slow or not
    slow"``) or when they are named by node id (``tests/x.py::test_y``).
    """
    if config.option.markexpr:
        return
    named = []  # (file, "test_name[param]" prefix) of tests named by node id
    for arg in config.args:
        if "::" in arg:
            path, rest = arg.split("::", 1)
            named.append((Path(config.invocation_params.dir, path).resolve(), rest))

    def asked_for(item) -> bool:
        rest = item.nodeid.split("::", 1)[-1]
        return any(
            item.path.resolve() == path
            and (rest == name or rest.startswith((name + "[", name + "::")))
            for path, name in named
        )

    keep, deselected = [], []
    for item in items:
        if item.get_closest_marker("slow") and not asked_for(item):
            deselected.append(item)
        else:
            keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep
