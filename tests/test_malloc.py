"""glibc malloc thresholds raised once when asked (opt-in); glibc's defaults otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

_PROBE = textwrap.dedent(
    """
    import json, sys
    import diffbio_sc as dfm
    from diffbio_sc import _malloc
    if len(sys.argv) > 1:
        dfm.settings.malloc_tuning = sys.argv[1] == "on"
    first = _malloc.tune()
    print(json.dumps({"first": first, "again": _malloc.tune(), "state": _malloc._state}))
    """
)

_GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _run(env_extra: dict, *args: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "DFM_MALLOC"))
    }
    env.update({"PYTHONPATH": SRC, **env_extra})
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _GLIBC, reason="glibc's mallopt only")
@pytest.mark.parametrize(("env", "args"), [({}, ("on",)), ({"DFM_MALLOC_TUNING": "1"}, ())])
def test_tuned_once_when_asked(env, args):
    out = _run(env, *args)
    assert out["first"] is True and out["again"] is True
    assert out["state"] == {"done": True, "tuned": True}


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({}, ()),  # off by default: the allocator is the whole process's
        ({"DFM_MALLOC_TUNING": "0"}, ("on",)),
        ({}, ("off",)),
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, ("on",)),  # the user's own choice is left alone
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, ("on",)),
    ],
)
def test_left_alone_when_asked(env, args):
    out = _run(env, *args)
    assert out["first"] is False and out["again"] is False
    assert out["state"]["tuned"] is False


def test_runner_tunes(monkeypatch):
    """Building the one runner applies the setting (a model is about to run)."""
    np = pytest.importorskip("numpy")
    from diffbio_sc import _malloc
    from diffbio_sc.models._runner import BucketedRunner

    calls = []
    monkeypatch.setattr(_malloc, "tune", lambda: calls.append(1) or False)
    BucketedRunner(lambda s, p, x: x, {"w": np.zeros(2, np.float32)}, max_length=8)
    assert calls == [1]


_TRIM_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import diffbio_sc as dfm
    from diffbio_sc import _malloc

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096

    # 2,000 heap blocks of 100 kB (below glibc's 128 KiB mmap threshold), every
    # other one freed: 100 MB of holes inside the heap, which free() keeps
    blocks = [np.ones(100_000, np.uint8) for _ in range(2000)]
    del blocks[::2]
    before = rss()
    first = _malloc.trim()
    after = rss()
    dfm.settings.malloc_tuning = True
    tuned = _malloc.tune()
    print(json.dumps({"first": first, "freed": before - after, "tuned": tuned,
                      "after_tune": _malloc.trim(), "kept": len(blocks)}))
    """
)


@pytest.mark.skipif(not _GLIBC, reason="glibc's malloc_trim only")
def test_trim_hands_heap_holes_back():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "DFM_MALLOC"))
    }
    env["PYTHONPATH"] = SRC
    res = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["first"] is True and out["kept"] == 1000
    assert out["freed"] > 80e6  # most of the 100 MB of holes left the process
    # once the thresholds are raised on request, freed memory is kept on purpose
    assert out["tuned"] is True and out["after_tune"] is False
