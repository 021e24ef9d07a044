"""The README's example runs as written, and its local links point at files that exist."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_example_is_public_api_python():
    blocks = python_blocks()
    assert len(blocks) >= 2, "README.md lost its example"
    code = "\n".join(blocks)
    ast.parse(code)  # a syntax error fails here, before the slow run
    assert not re.search(r"\b(dfm|diffbio_sc)(\.\w+)*\._\w", code), "private names in README"
    assert "import matplotlib" not in code and "matplotlib.use" not in code
    # Leiden must not need leidenalg, which is not a dependency.
    for call in re.findall(r"sc\.tl\.leiden\((.*?)\)", code, flags=re.S):
        assert 'flavor="igraph"' in call


def test_readme_local_links_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "no local links found"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    code = "\n".join(python_blocks())
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "scores.png").stat().st_size > 10_000
    assert (tmp_path / "dfm_model" / "config.json").exists()
    ranks = [float(v) for v in re.findall(r"[-\d.]+", out.stdout.splitlines()[0])]
    assert [round(r) for r in ranks] == [3, 1, 2], out.stdout
