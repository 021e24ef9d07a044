"""Package-level properties: light import, lazy submodules, CLI wiring, CI/README sync."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_is_light():
    code = (
        "import sys, diffbio_sc as dfm; "
        "heavy = [m for m in ('jax', 'scanpy', 'scib_metrics', 'muon', 'flax', 'optax', "
        "'matplotlib', 'sklearn', 'anndata') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import diffbio_sc pulled in: {out.stdout.strip()}"


def test_submodules_exposed():
    import diffbio_sc as dfm

    for name in ("pp", "tl", "pl", "models", "ops", "io", "datasets"):
        assert name in dir(dfm)
    assert callable(dfm.pp.tokenize)
    assert callable(dfm.pp.gene_medians)
    assert callable(dfm.pp.bin_expression)
    with pytest.raises(AttributeError, match="no attribute"):
        dfm.not_a_module  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute"):
        dfm.pp.not_a_function  # noqa: B018


def test_version_matches_metadata():
    from importlib.metadata import version

    import diffbio_sc as dfm

    assert dfm.__version__ == version("diffbio_sc")


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- test-command -->\s*```\s*\n(.+)\n", readme)
    assert m, "README.md lacks the test command block"
    command = m.group(1).strip()
    assert "pytest" in command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines, ".ci/run must run the README's test command verbatim"


def test_cli_help():
    from diffbio_sc._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert main([]) == 1


def test_demo_dataset():
    import numpy as np

    import diffbio_sc as dfm

    a = dfm.datasets.celllines_demo()
    assert a.shape == (1408, 2000)
    assert a.X.dtype == np.int32 and a.X.format == "csr"
    assert set(a.obs.columns) >= {"batch", "cell_type"}
    assert a.obs["cell_type"].nunique() == 5 and a.obs["batch"].nunique() == 5
    assert (np.asarray(a.X.sum(1)).ravel() > 0).all()
    assert a.var_names.str.startswith("ENSG").all()
    path = REPO / "src/diffbio_sc/datasets/data/celllines_demo.h5ad"
    assert path.stat().st_size < 5e6


def test_api_reference_is_current():
    """docs/api.md is generated from the docstrings; regenerate with python docs/make_api.py."""
    out = subprocess.run(
        [sys.executable, str(REPO / "docs" / "make_api.py"), "--check"], capture_output=True
    )
    assert out.returncode == 0, "docs/api.md is stale: run python docs/make_api.py"


def test_lint_clean():
    """ruff (lint rules in pyproject.toml) passes on the package, tests and benchmarks."""
    import shutil

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it is in the test extras)")
    out = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:]
