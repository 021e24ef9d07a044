"""The documentation site builds with warnings as errors (slow: it executes the tutorials)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("pp", "tl", "pl", "models", "ops", "io", "datasets")


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed")
    out = tmp_path / "html"
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "DFM_DOCS_EXECUTE": "force", "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), "docs", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-6000:]
    for page in ("index", "api", "architecture", "support", "benchmarks", "installation"):
        assert (out / f"{page}.html").exists(), page
    # Every exported name has its own reference page.
    for mod in SUBPACKAGES:
        module = importlib.import_module(f"diffbio_sc.{mod}")
        for name in module.__all__:
            assert (out / "api" / "generated" / f"diffbio_sc.{mod}.{name}.html").exists(), name
    # The tutorials were executed and show their figures.
    tutorials = sorted((out / "tutorials").glob("*.html"))
    assert {p.stem for p in tutorials} >= {"01_single_cell", "02_external_models"}
    for page in tutorials:
        html = page.read_text()
        assert html.count("<img") >= 2, f"{page.name} shows no figures"
