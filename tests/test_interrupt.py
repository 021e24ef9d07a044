"""Ctrl-C (issue 24): every ``dfm`` command exits 130 with nothing written, wherever it lands.

Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread is; in a
garbage-collection callback (JAX has one) or a finalizer it is printed as
"Exception ignored" and lost, and the run went on to write its output and exit 0.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pytest

import diffbio_sc as dfm
from diffbio_sc import _interrupt
from diffbio_sc._cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _sigint_delivered():
    """Run each test with Python's own SIGINT handler, whatever pytest inherited.

    A test run started in the background (``nohup``, ``cmd &`` in a script) inherits
    an ignored SIGINT, which ``dfm`` then rightly leaves ignored, and which child
    processes would inherit too; these tests are about a delivered Ctrl-C.
    """
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _interrupt_in_gc_callback(handled: bool) -> str:
    """Send SIGINT from inside a gc callback; return what the main code then saw."""
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
            sum(range(1000))  # the handler runs here, inside the callback

    gc.callbacks.append(callback)
    try:
        with _interrupt.handling() if handled else contextlib.nullcontext():
            gc.collect()
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                time.sleep(0.01)
            return "ran on"
    except KeyboardInterrupt:
        return "interrupted"
    finally:
        gc.callbacks.remove(callback)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_control_python_loses_an_interrupt_raised_in_a_gc_callback():
    assert _interrupt_in_gc_callback(handled=False) == "ran on"


def test_interrupt_in_a_gc_callback_is_delivered_after_it():
    assert _interrupt_in_gc_callback(handled=True) == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert not _interrupt.pending()


def test_an_ignored_sigint_stays_ignored():
    """A background job (``nohup``, ``cmd &`` in a script) keeps ignoring Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the fixture restores it
    assert _interrupt_in_gc_callback(handled=True) == "ran on"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert not _interrupt.pending()


def test_a_swallowed_interrupt_still_exits_130_and_writes_nothing(tmp_path, capsys, monkeypatch):
    adata = dfm.datasets.synthetic_counts(20, 30, seed=0)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    real = dfm.pp.tokenize

    def swallowing(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGINT)
            sum(range(1000))
        except BaseException:  # a library that swallows everything
            pass
        return real(*args, **kwargs)

    monkeypatch.setattr(dfm.pp, "tokenize", swallowing)
    rc = main(["tokenize", str(tmp_path / "cells.h5ad"), "-o", str(tmp_path / "t.h5ad")])
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted; no output was written" in err, err
    assert sorted(os.listdir(tmp_path)) == ["cells.h5ad"]


# ---------------------------------------------------------------- the real command


TINY = ["--hidden-dim", "8", "--n-layers", "1", "--n-heads", "2", "--max-tokens", "8",
        "--n-top-genes", "20", "--pretrain-batch-size", "32", "--epochs", "300"]  # fmt: skip


@pytest.mark.slow  # five short runs of `dfm embed` in a subprocess (~20 s)
@pytest.mark.parametrize("when", [0.3, 1.0, 2.0, 3.0, "training"])
def test_ctrl_c_anywhere_exits_130_with_nothing_written(tmp_path, when):
    """SIGINT during start-up, imports, JAX's start (its gc callback) and training."""
    adata = dfm.datasets.synthetic_counts(60, 40, n_cell_types=3, n_batches=2, seed=0)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "diffbio_sc._cli", "embed", "cells.h5ad", "-o", "out.h5ad",
           "--save-model", "model", *TINY]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    if when == "training":
        for line in proc.stdout:  # "[  5.7s] training a native model ..."
            if "training" in line:
                break
        time.sleep(1.5)
    else:
        time.sleep(when)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "interrupted" in err and "no output was written" in err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert sorted(os.listdir(tmp_path)) == ["cells.h5ad"]  # no output, no temporary file
    assert ad.read_h5ad(tmp_path / "cells.h5ad").n_obs == 60
