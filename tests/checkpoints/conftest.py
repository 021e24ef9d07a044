"""Fixtures shared by the checkpoint tests: the fixture cells, no progress bars."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import diffbio_sc as dfm

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _no_bar():
    old = dfm.settings.progress_bar
    dfm.settings.progress_bar = False
    yield
    dfm.settings.progress_bar = old


@pytest.fixture
def cells():
    """The 7 fixture cells x 48 genes (Ensembl IDs in ``var_names``, symbols in ``.var``)."""
    c = np.load(FIX / "cells.npz")
    return ad.AnnData(
        X=sp.csr_matrix(c["counts"].astype(np.float32)),
        obs=pd.DataFrame(index=c["obs"]),
        var=pd.DataFrame({"symbol": c["symbols"]}, index=c["ensembl"]),
    )
