"""The tutorial notebooks and the documentation site.

Fast: the notebooks are stored clean, generated from their source, public-API only.
Slow: each notebook executes in quick mode and shows its figures; the site builds with
warnings as errors from those executed notebooks (so each runs once per test session).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
PLOTS = re.compile(r"\b(plt|sc\.pl|dfm\.pl)\.\w+\(")
SUBPACKAGES = ("pp", "tl", "pl", "models", "ops", "io", "datasets")
SHARED_DATA = Path(os.environ.get("DFM_SHARED_DATA", REPO.parent / "shared" / "data"))
NEEDS_SHARED_DATA = {"03_sequences.ipynb": "dna"}  # notebook -> folder of shared/data it reads


def _cells(path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4).cells


def _pythonpath() -> str:
    """This checkout's sources first, for kernels and subprocesses."""
    return os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)


def test_notebooks_exist():
    assert {
        "01_single_cell.ipynb",
        "02_external_models.ipynb",
        "03_sequences.ipynb",
        "04_genetics.ipynb",
    } <= set(IDS)


def test_notebooks_match_their_source():
    pytest.importorskip("nbformat")
    out = subprocess.run(
        [sys.executable, str(REPO / "notebooks" / "make_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
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


def test_sequences_notebook_finds_shared_data_from_its_folder(tmp_path):
    """Run the ordinary way (cwd notebooks/, no DFM_SHARED_DATA), 03 finds ../shared/data.

    The setup cell's ``shared_data()`` is run in a fresh interpreter: from notebooks/ and
    from a sub-folder of the checkout without the variable, with it (an override), and
    outside any checkout (a clear error).
    """
    setup = _cells(REPO / "notebooks" / "03_sequences.ipynb")[1].source
    start = setup.index("def shared_data()")
    func = setup[start : setup.index("\n\n\n", start)]
    code = "import os\nfrom pathlib import Path\n" + func + "\nprint(shared_data())"
    env = {k: v for k, v in os.environ.items() if k != "DFM_SHARED_DATA"}

    def run(cwd, **extra):
        return subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**env, **extra},
                              capture_output=True, text=True)  # fmt: skip

    expected = str(REPO.parent / "shared" / "data")
    for cwd in (REPO / "notebooks", REPO / "src" / "diffbio_sc"):
        out = run(cwd)
        assert out.returncode == 0 and out.stdout.strip() == expected, out.stderr
    out = run(REPO / "notebooks", DFM_SHARED_DATA=str(tmp_path))
    assert out.stdout.strip() == str(tmp_path)
    out = run(tmp_path)
    assert out.returncode != 0 and "set DFM_SHARED_DATA" in out.stderr


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Execute a notebook in quick mode once per session: ``executed(path) -> (nb, cwd)``."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cache: dict = {}
    outdir = tmp_path_factory.mktemp("executed_notebooks")

    def run(path: Path):
        if path.name not in cache:
            folder = NEEDS_SHARED_DATA.get(path.name)
            if folder and not (SHARED_DATA / folder).is_dir():
                pytest.skip(
                    f"{path.name} reads {SHARED_DATA / folder}, which is absent (set "
                    "DFM_SHARED_DATA or place shared/data beside the repository)"
                )
            cwd = tmp_path_factory.mktemp(path.stem)
            nb = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(
                nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
            )
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("DFM_TUTORIAL_QUICK", "1")  # the small budget
                mp.delenv("MPLBACKEND", raising=False)  # as a user's kernel: inline figures
                mp.setenv("PYTHONPATH", _pythonpath())
                mp.setenv("DFM_SHARED_DATA", str(SHARED_DATA))
                client.execute()  # raises CellExecutionError on the first failing cell
            nbformat.write(nb, outdir / path.name)
            cache[path.name] = (nb, cwd)
        return cache[path.name]

    run.outdir = outdir
    return run


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes_and_shows_its_figures(path, executed):
    nb, cwd = executed(path)
    plots = [c for c in nb.cells if "plot" in c.metadata.get("tags", [])]
    assert plots
    for cell in plots:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, f"{len(images)} images from plotting cell:\n{cell.source}"
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "IProgress" not in text and "TqdmWarning" not in text, "tqdm warned in the notebook"
    assert not list(cwd.iterdir()), "the notebook wrote into its working directory"


@pytest.mark.slow
def test_docs_build_without_warnings(executed, tmp_path):
    """sphinx-build -W of the site, rendering the notebooks executed above."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed")
    for path in NOTEBOOKS:
        executed(path)
    out = tmp_path / "html"
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "DFM_DOCS_NOTEBOOKS": str(executed.outdir)}
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), "docs", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-6000:]
    pages = ["index", "api", "api/settings", "architecture", "support", "benchmarks"]
    pages.append("installation")
    if (REPO / "docs" / "cli.md").exists():
        pages.append("cli")  # the command-line page, linked from the index
    for page in pages:
        assert (out / f"{page}.html").exists(), page
    # Every exported name has its own reference page.
    for mod in SUBPACKAGES:
        module = importlib.import_module(f"diffbio_sc.{mod}")
        for name in module.__all__:
            assert (out / "api" / "generated" / f"diffbio_sc.{mod}.{name}.html").exists(), name
    # Each tutorial page shows as many figures as its notebook has plotting cells.
    for path in NOTEBOOKS:
        html = (out / "tutorials" / f"{path.stem}.html").read_text()
        n_plots = sum("plot" in c.metadata.get("tags", []) for c in _cells(path))
        assert html.count("<img") >= n_plots, f"{path.stem}: figures missing"
