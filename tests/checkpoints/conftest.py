"""Fixtures shared by the checkpoint tests: the fixture cells, no progress bars."""

from __future__ import annotations

import pytest

import diffbio_sc as dfm


@pytest.fixture(autouse=True)
def _no_bar():
    old = dfm.settings.progress_bar
    dfm.settings.progress_bar = False
    yield
    dfm.settings.progress_bar = old


@pytest.fixture
def cells(checkpoint_cells):
    """The 7 fixture cells x 48 genes (``checkpoint_cells`` of tests/conftest.py)."""
    return checkpoint_cells
