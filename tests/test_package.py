"""Package-level properties: light import, lazy submodules, CLI wiring, CI/README sync."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("pp", "tl", "pl", "models", "ops", "io", "datasets")


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

    assert set(dfm.__all__) >= {"pp", "tl", "pl", "models", "ops", "io", "datasets"}
    for name in SUBPACKAGES:
        module = getattr(dfm, name)
        assert module.__name__ == f"diffbio_sc.{name}"
        assert module.__all__, f"dfm.{name} exports nothing"
        assert len(set(module.__all__)) == len(module.__all__), f"dfm.{name}.__all__ repeats"
    with pytest.raises(AttributeError, match="no attribute"):
        dfm.not_a_module  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute"):
        dfm.pp.not_a_function  # noqa: B018


def test_dir_shows_public_names_only():
    """dir() / tab completion list what users call, not the package's own helpers."""
    import diffbio_sc as dfm

    assert dir(dfm) == sorted(dfm.__all__) and "settings" in dir(dfm)
    for name in SUBPACKAGES:
        module = getattr(dfm, name)
        assert dir(module) == sorted(module.__all__), name
        assert not {"annotations", "lazy_exports", "_EXPORTS"} & set(dir(module)), name
    # internals stay importable but are not presented as user API
    for internal in ("BucketedRunner", "register_model", "genomics_models_markdown"):
        assert internal not in dfm.models.__all__ and internal not in dir(dfm.models)
        assert callable(getattr(dfm.models, internal))


def test_public_functions_document_every_parameter():
    """Every exported function has a numpydoc docstring covering each parameter and the return.

    The API reference on the documentation site is rendered from these docstrings.
    """
    import importlib
    import inspect

    docscrape = pytest.importorskip("numpydoc.docscrape", reason="numpydoc is in the docs extra")
    problems = []
    for mod in SUBPACKAGES:
        module = importlib.import_module(f"diffbio_sc.{mod}")
        for name in module.__all__:
            obj = getattr(module, name)
            where = f"dfm.{mod}.{name}"
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # data (e.g. a table of presets) is documented by its module
            if not inspect.getdoc(obj):
                problems.append(f"{where}: no docstring")
                continue
            if inspect.isclass(obj):
                continue
            doc = docscrape.FunctionDoc(obj)
            documented = {
                part.strip().lstrip("*") for p in doc["Parameters"] for part in p.name.split(",")
            }
            missing = [p for p in inspect.signature(obj).parameters if p not in documented]
            if missing:
                problems.append(f"{where}: parameters {missing} not in 'Parameters'")
            if not (doc["Returns"] or doc["Yields"]):
                problems.append(f"{where}: no 'Returns' section")
    assert not problems, "\n".join(problems)


def test_layers_import_downward_only():
    """No module imports a layer above its own (docs/architecture.md, "Layers")."""
    import ast

    # ops shares the bottom layer with the base modules (the chunk reader in
    # _validate uses ops' CSR kernels; ops reads _settings).
    # The command line (_cli/) sits above every layer; nothing below may import it.
    # Every top-level module (_schema.py, _keys.py, ...) is the base.
    rank = {"ops": 0, "io": 2, "datasets": 2.5, "models": 3, "pp": 4, "tl": 4, "pl": 5, "_cli": 6}
    src = REPO / "src" / "diffbio_sc"
    problems = []
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).parts
        if len(parts) == 1:  # top-level modules are the base, except the entry points
            own = 99 if parts[0] in ("__init__.py", "__main__.py") else 0
        else:
            own = rank.get(parts[0])
        if own is None:  # a new folder must be given its place in the layers
            problems.append(f"{path.relative_to(src)}: folder {parts[0]!r} has no layer")
            continue
        package = ["diffbio_sc", *parts[:-1]]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = [*base, *(node.module.split(".") if node.module else [])]
                targets = [mod] if node.module else [[*mod, a.name] for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".") for a in node.names]
            for target in targets:
                if target[:1] != ["diffbio_sc"] or len(target) < 2:
                    continue
                other = rank.get(target[1], 0)
                if other > own:
                    problems.append(
                        f"{path.relative_to(src)}:{node.lineno} imports {'.'.join(target)}"
                    )
    assert not problems, "imports from a higher layer:\n" + "\n".join(problems)


def test_version_matches_metadata():
    from importlib.metadata import version

    import diffbio_sc as dfm

    assert dfm.__version__ == version("diffbio_sc")


def test_ci_runs_the_readme_test_command_then_the_slow_tests():
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- test-command -->\s*```\s*\n(.+)\n", readme)
    assert m, "README.md lacks the test command block"
    command = m.group(1).strip()
    assert "pytest" in command
    ci = (REPO / ".ci" / "run").read_text()
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert command in ci_lines, ".ci/run must run the README's test command verbatim"
    slow = [i for i, line in enumerate(ci_lines) if "pytest -m slow" in line]
    assert slow and slow[0] > ci_lines.index(command), ".ci/run must run -m slow after it"
    # pytest exits with 5 when it selects no test: that is not a failure of the slow set
    assert re.search(r"-ne 5", ci), ".ci/run must accept exit code 5 from the slow run"


def test_slow_tests_are_deselected_by_default_and_run_on_request():
    target = "tests/test_cli_demo.py"
    node = f"{target}::test_demo_writes_results"
    runs = {"default": [target], "marker": ["-m", "slow", target], "node id": [node]}
    code = (
        "import sys, pytest\n"
        f"for name, args in {runs!r}.items():\n"
        "    print('=== ' + name, flush=True)\n"
        "    pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', *args])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    sections = dict(part.split("\n", 1) for part in out.stdout.split("=== ")[1:])
    assert set(sections) == set(runs), out.stdout + out.stderr
    assert node not in sections["default"], "python -m pytest must skip slow tests"
    assert "1 deselected" in sections["default"]
    assert node in sections["marker"], "-m slow must select the slow tests"
    assert node in sections["node id"], "a slow test named by its node id must run"


def test_cli_help():
    from diffbio_sc._cli import main

    assert main(["--version"]) == 0  # argparse's exit is returned as the status
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
