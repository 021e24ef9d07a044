"""The tutorial notebooks: stored clean, generated from their source, and executed (slow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PLOTS = re.compile(r"\b(plt|sc\.pl|dfm\.pl)\.\w+\(")


def _cells(path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4).cells


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert "01_single_cell.ipynb" in names and "02_external_models.ipynb" in names


def test_notebooks_match_their_source():
    pytest.importorskip("nbformat")
    out = subprocess.run(
        [sys.executable, str(REPO / "notebooks" / "make_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean_public_and_tagged(path):
    code = [c for c in _cells(path) if c.cell_type == "code"]
    assert code
    for cell in code:
        src = cell.source
        assert not cell.get("outputs") and cell.get("execution_count") is None, "outputs stored"
        assert not re.search(r"\b(dfm|diffbio_sc)(\.\w+)*\._\w", src), f"private import: {src}"
        assert "matplotlib.use" not in src and "%matplotlib" not in src, "forced backend"
        tagged = "plot" in cell.metadata.get("tags", [])
        assert tagged == bool(PLOTS.search(src)), f"plot tag wrong on cell:\n{src}"
    setup = code[0].source
    assert "tempfile.mkdtemp" in setup and "DFM_TUTORIAL_QUICK" in setup


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_and_shows_its_figures(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DFM_TUTORIAL_QUICK", "1")  # the small training budget
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as a user's kernel: inline figures
    # the kernel imports this checkout's package, as the test process does
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p),
    )
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    for cell in nb.cells:
        if "plot" not in cell.metadata.get("tags", []):
            continue
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{len(images)} images from plotting cell:\n{cell.source}"
    assert not list(tmp_path.iterdir()), "the notebook wrote into its working directory"
