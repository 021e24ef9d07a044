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


# ------------------------------------------------ bars of the one runner (issue 21, item 4)


@pytest.fixture
def bars(monkeypatch):
    """Record each bar opened through ``diffbio_sc._logging.tqdm``: its options and updates."""
    import diffbio_sc._logging as logging_

    made, real = [], logging_.tqdm

    def spy(*args, **kwargs):
        bar = real(*args, **kwargs)
        rec = {**kwargs, "updates": []}
        update = bar.update

        def counted(n=1):
            rec["updates"].append(n)
            return update(n)

        bar.update = counted
        made.append(rec)
        return bar

    monkeypatch.setattr(logging_, "tqdm", spy)
    return made


def test_runner_reports_each_batch():
    import jax.numpy as jnp
    import numpy as np

    from diffbio_sc.models._runner import BucketedRunner

    def fn(static, params, x):
        return x.sum(axis=1) * params["w"]

    runner = BucketedRunner(fn, {"w": jnp.ones(())}, max_length=8, batch_rows=2, edges=[4, 8])
    lengths = np.array([3, 8, 2, 7, 1])
    x = np.ones((5, 8), np.float32)
    seen = []
    out = runner.run(lengths, lambda idx, w: [x[idx, :w]], progress=seen.append)
    np.testing.assert_array_equal(out, [4, 8, 4, 8, 4])  # results unchanged by the hook
    # edge 4: 3 items -> batches of 2 and 1; edge 8: 2 items -> one batch
    assert sorted(seen) == [1, 2, 2] and len(seen) == len(runner.plan(lengths))


def test_embed_sequences_bar_advances_per_batch(bars, capsys):
    import numpy as np
    from flax import nnx

    import diffbio_sc as dfm
    from diffbio_sc.models import SequenceEncoder, SequenceEncoderConfig
    from diffbio_sc.ops._sequence import tile_sequences

    cfg = SequenceEncoderConfig(
        hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16, max_length=40, dropout=0.0
    )
    enc = SequenceEncoder(cfg, rngs=nnx.Rngs(params=0))
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (20, 45, 31, 60, 12)]
    n_windows = len(tile_sequences(seqs, 24, 12)[0])
    kw = {"encoder": enc, "window": 24, "batch_size": 2, "copy": True}

    shown = dfm.tl.embed_sequences(dfm.io.sequences_to_adata(seqs), progress_bar=True, **kw)
    (bar,) = [b for b in bars if b.get("desc") == "embed_sequences"]
    assert bar["total"] == n_windows > len(seqs) and not bar["disable"]
    assert sum(bar["updates"]) == n_windows  # advanced to the number of windows
    assert len(bar["updates"]) >= n_windows // 2 and max(bar["updates"]) <= 2  # per batch
    assert "embed_sequences" in capsys.readouterr().err

    bars.clear()
    hidden = dfm.tl.embed_sequences(dfm.io.sequences_to_adata(seqs), progress_bar=False, **kw)
    assert all(b["disable"] for b in bars) and bars
    assert capsys.readouterr().err == ""  # nothing shown
    np.testing.assert_array_equal(hidden.obsm["X_dfm_seq"], shown.obsm["X_dfm_seq"])

    # a frozen callable: per batch of batch_size sequences
    bars.clear()
    fn = lambda s: np.ones((len(s), 2), np.float32)  # noqa: E731
    dfm.tl.embed_sequences(
        dfm.io.sequences_to_adata(seqs), encoder=fn, batch_size=2, progress_bar=True, copy=True
    )
    (bar,) = [b for b in bars if b.get("desc") == "embed_sequences"]
    assert bar["updates"] == [2, 2, 1] and bar["total"] == 5
