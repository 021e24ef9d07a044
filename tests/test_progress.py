"""Progress bars: no tqdm warning in a notebook kernel without ipywidgets, bars on or off."""

from __future__ import annotations

import io
import re
import sys
import types
import warnings
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "diffbio_sc"
TQDM_CACHE = ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook")


@pytest.fixture
def kernel_without_widgets(monkeypatch):
    """Make tqdm believe it runs in a Jupyter kernel where ipywidgets is missing."""
    shell = type("ZMQInteractiveShell", (), {})()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails, find_spec -> None
    for env in [k for k in __import__("os").environ if k == "QT_API" or k.startswith("SPYDER")]:
        monkeypatch.delenv(env)

    def forget_tqdm_frontends():
        for name in TQDM_CACHE:
            monkeypatch.delitem(sys.modules, name, raising=False)

    forget_tqdm_frontends()
    return forget_tqdm_frontends


def test_simulated_kernel_reproduces_the_tqdm_auto_warning(kernel_without_widgets):
    # the control: plain tqdm.auto does warn here, so the test below can fail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import tqdm.auto  # noqa: F401

    assert any("IProgress not found" in str(w.message) for w in caught), caught


@pytest.mark.parametrize("disable", [True, False])
def test_package_bars_do_not_warn_without_ipywidgets(kernel_without_widgets, disable):
    from diffbio_sc._logging import tqdm

    kernel_without_widgets()
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bar = tqdm(total=3, desc="steps", disable=disable, file=out)
        for _ in range(3):
            bar.update(1)
        bar.close()
    assert not caught, [str(w.message) for w in caught]
    assert type(bar).__module__ == "tqdm.std"  # the text bar, not the widget
    assert ("3/3" in out.getvalue()) is not disable  # a text bar that counts, or silence


def test_every_bar_goes_through_the_package_helper():
    pattern = re.compile(r"^\s*(from tqdm(\.\w+)? import|import tqdm)", re.M)
    direct = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name != "_logging.py" and pattern.search(p.read_text())
    ]
    assert not direct, f"import tqdm through diffbio_sc._logging.tqdm instead: {direct}"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _redraws(stream) -> int:
    """Run a 1-second bar of 100 steps into ``stream``; return how often it was drawn."""
    import time

    from diffbio_sc._logging import tqdm

    bar = tqdm(total=100, desc="steps", file=stream)
    for _ in range(100):
        time.sleep(0.01)
        bar.update(1)
    bar.close()
    return stream.getvalue().count("steps")


def test_bars_redraw_in_a_terminal():
    # the control: a terminal gets a redraw every 0.1 s
    assert _redraws(_Terminal()) >= 5


def test_bars_into_a_log_file_print_a_few_lines():
    # a log file (not a terminal) got the same redraws, 120 KB of them in a demo (issue 24)
    log = io.StringIO()
    assert _redraws(log) <= 3
    assert "100/100" in log.getvalue()  # the final state is still there
