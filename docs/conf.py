"""Sphinx configuration of the diffbio_sc documentation.

Build: ``pip install -e ".[docs]"`` then
``sphinx-build -W -b html docs docs/_build/html`` from the repository root.

Two things are generated at build time, so that they cannot drift from the code:

* ``api/<module>.md``: one page per public subpackage, listing every name in
  its ``__all__`` (autosummary then renders each docstring). A name exported by
  a subpackage appears in the reference as soon as it is exported; internals kept
  importable for developers (e.g. ``dfm.models.BucketedRunner``) are not in
  ``__all__`` and so not in the reference. ``api/settings.md``: ``dfm.settings``.
* ``tutorials/*.ipynb``: copies of ``notebooks/*.ipynb``, executed by myst-nb at
  build time in their quick mode (``DFM_TUTORIAL_QUICK=1``: a small training
  budget). ``DFM_DOCS_EXECUTE=off`` builds without executing them (no figures),
  e.g. while editing prose. ``DFM_DOCS_NOTEBOOKS=<folder>`` renders the
  notebooks of that folder instead, as they are (the test suite passes the
  copies it has just executed, so they run once per CI run).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO / "src") not in sys.path:  # document this checkout, installed or not
    sys.path.insert(0, str(REPO / "src"))

import diffbio_sc  # noqa: E402

# -- project -------------------------------------------------------------------
project = "diffbio_sc"
author = "diffbio_sc developers"
copyright = "diffbio_sc developers"  # noqa: A001
release = version = diffbio_sc.__version__

# -- extensions ----------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]
# .rst first: autosummary writes its stub pages with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "make_api.py"]
templates_path = ["_templates"]

# MyST
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
# Engineering notes are appended to by several people and skip heading levels
# in places; that is a style matter, not a broken page.
suppress_warnings = ["myst.header"]

# myst-nb: execute the tutorials at build time, in their quick mode. DFM_DOCS_NOTEBOOKS
# names a folder of notebooks executed elsewhere (the test suite's run), rendered as they are.
NOTEBOOKS = Path(os.environ.get("DFM_DOCS_NOTEBOOKS", REPO / "notebooks"))
nb_execution_mode = os.environ.get(
    "DFM_DOCS_EXECUTE", "off" if "DFM_DOCS_NOTEBOOKS" in os.environ else "cache"
)
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_merge_streams = True
os.environ.setdefault("DFM_TUTORIAL_QUICK", "1")
# The DNA tutorial reads real sequences from shared/data beside the repository.
os.environ.setdefault("DFM_SHARED_DATA", str(REPO.parent / "shared" / "data"))
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures inline

# autodoc / autosummary / numpydoc
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc docstrings describe the types; signatures show them
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
add_module_names = False

# -- HTML ----------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"diffbio_sc {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path: list[str] = []

# -- generated sources -----------------------------------------------------------

#: Public subpackages, in the order of the API reference.
API_MODULES = ("pp", "tl", "pl", "models", "ops", "io", "datasets")


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds it (keeps incremental builds)."""
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def api_page(name: str) -> str:
    """Return the MyST source of the reference page of ``diffbio_sc.<name>``."""
    module = importlib.import_module(f"diffbio_sc.{name}")
    names = list(getattr(module, "__all__", []))
    if not names:
        raise RuntimeError(f"diffbio_sc.{name} has no __all__; the API page would be empty.")
    entries = "\n".join(f"   {n}" for n in names)
    return (
        f"# `dfm.{name}`\n\n"
        "```{eval-rst}\n"
        f".. automodule:: diffbio_sc.{name}\n\n"
        f".. currentmodule:: diffbio_sc.{name}\n\n"
        ".. autosummary::\n"
        "   :toctree: generated\n"
        "   :nosignatures:\n\n"
        f"{entries}\n"
        "```\n"
    )


def settings_page() -> str:
    """Return the MyST source of the ``dfm.settings`` page (from its class docstring).

    ``dfm.settings`` is an object, not a subpackage: its attributes are listed in a table
    with their defaults, read from the numpydoc ``Attributes`` section of its class.
    """
    import inspect
    from dataclasses import fields

    from numpydoc.docscrape import NumpyDocString

    settings = diffbio_sc.settings
    doc = NumpyDocString(inspect.getdoc(type(settings)) or "")
    defaults = {f.name.lstrip("_"): f.default for f in fields(settings)}
    rows = []
    for attr in doc["Attributes"]:
        what = " ".join(line.strip() for line in attr.desc).replace("``", "`")
        rows.append(f"| `{attr.name}` | `{defaults.get(attr.name)!r}` | {what} |")
    return (
        "# `dfm.settings`\n\n"
        "Package-wide settings: one object, changed by assignment, e.g.\n"
        "`dfm.settings.verbosity = 'info'` (log each step, and the INFO lines of scib-metrics)\n"
        "or `dfm.settings.progress_bar = False`.\n\n"
        "| setting | default | what it does |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def generate_sources() -> None:
    """Write the API pages and copy the tutorial notebooks into the source tree."""
    api = HERE / "api"
    for name in API_MODULES:
        _write_if_changed(api / f"{name}.md", api_page(name))
    _write_if_changed(api / "settings.md", settings_page())
    tutorials = HERE / "tutorials"
    tutorials.mkdir(exist_ok=True)
    wanted = {p.name: p for p in sorted(NOTEBOOKS.glob("*.ipynb"))}
    for stale in tutorials.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name, src in wanted.items():
        dst = tutorials / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


generate_sources()


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """Show ``__init__``'s signature for classes whose metaclass hides it (Flax NNX modules)."""
    import inspect

    if what == "class" and signature == "(*args, **kwargs)" and "__init__" in vars(obj):
        params = list(inspect.signature(obj.__init__).parameters.values())[1:]
        return str(inspect.Signature(params)), return_annotation
    return None


def setup(app):
    """Register the signature fix."""
    app.connect("autodoc-process-signature", _init_signature)
