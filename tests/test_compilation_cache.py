"""The persistent JAX compilation cache: on by default, shared safely, off on request."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A fresh process: soft ranks through the package (which turns the cache on), with
# JAX's own counters of persistent-cache hits and misses.
_PROBE = textwrap.dedent(
    """
    import json, sys
    import jax
    from jax import monitoring
    counts = {"hits": 0, "misses": 0}
    def listen(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            counts["misses"] += 1
    monitoring.register_event_listener(listen)
    import numpy as np
    import diffbio_sc as dfm
    from diffbio_sc import _compilation_cache
    x = np.arange(24, dtype=np.float32).reshape(3, 8)[:, ::-1]
    r = np.asarray(dfm.ops.soft_rank(x, temperature=0.5))
    print(json.dumps({"dir": str(jax.config.jax_compilation_cache_dir),
                      "enabled": str(_compilation_cache._state["enabled_dir"]),
                      "ranks": r.tolist(), **counts}))
    """
)


_ALL_PROGRAMS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _run(env_extra: dict, code: str = _PROBE) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JAX_COMPILATION_CACHE") and k != "DFM_COMPILATION_CACHE"
    }
    # every program is written, however fast it compiled (the probe's compile in < 0.2 s)
    env.update({"PYTHONPATH": SRC, "JAX_PLATFORMS": "cpu", **_ALL_PROGRAMS, **env_extra})
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_reads_compiled_programs_from_the_cache(tmp_path):
    env = {"DFM_CACHE_DIR": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "x")}
    first = _run(env)
    root = tmp_path / "c" / "jax"
    (sub,) = list(root.iterdir())  # one folder per JAX version, machine and CPU features
    assert first["dir"] == str(sub) and first["enabled"] == str(sub)
    assert first["misses"] >= 1 and first["hits"] == 0
    entries = [p for p in sub.iterdir() if p.name.endswith("-cache")]
    assert entries, "the first process wrote no compiled program"
    # private to the user: the cache holds code that is run
    assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    second = _run(env)
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["ranks"] == first["ranks"]
    assert not (tmp_path / "x").exists()  # DFM_CACHE_DIR wins over XDG_CACHE_HOME


@pytest.mark.slow
def test_two_processes_share_the_cache_at_once(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")},
        "PYTHONPATH": SRC,
        "JAX_PLATFORMS": "cpu",
        "DFM_CACHE_DIR": str(tmp_path),
        **_ALL_PROGRAMS,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert results[0]["ranks"] == results[1]["ranks"]
    assert (Path(results[0]["dir"]) / ".lockfile").exists()  # JAX locked every read/write
    third = _run({"DFM_CACHE_DIR": str(tmp_path)})
    assert third["misses"] == 0 and third["ranks"] == results[0]["ranks"]


@pytest.mark.slow
def test_switches_off_and_leaves_a_users_own_cache_alone(tmp_path):
    off = _run({"DFM_CACHE_DIR": str(tmp_path / "a"), "DFM_COMPILATION_CACHE": "0"})
    assert off["dir"] == "None" and off["enabled"] == "None"
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    own = _run({"DFM_CACHE_DIR": str(tmp_path / "b"), "JAX_COMPILATION_CACHE_DIR": str(mine)})
    assert own["dir"] == str(mine) and own["enabled"] == "None"
    assert not (tmp_path / "b").exists()


def test_settings_switch_and_unsafe_folder(tmp_path, monkeypatch):
    import jax

    import diffbio_sc as dfm
    from diffbio_sc import _compilation_cache as cc

    if jax.config.jax_compilation_cache_dir and cc._state["enabled_dir"] is None:
        pytest.skip("this test process has its own JAX cache")
    before = (dfm.settings.compilation_cache, dfm.settings.compilation_cache_dir)
    previous_dir = cc._state["enabled_dir"]
    try:
        dfm.settings.compilation_cache = False
        assert cc._state["enabled_dir"] is None
        assert jax.config.jax_compilation_cache_dir in (None, "")
        assert cc.enable() is None  # stays off while the setting says so
        with pytest.raises(ValueError, match="True or False"):
            dfm.settings.compilation_cache = "yes"
        # a folder others can write to is refused (the cache runs the code it holds)
        shared = tmp_path / "shared"
        monkeypatch.setattr(cc, "cache_dir", lambda base=None: shared)
        shared.mkdir()
        shared.chmod(0o777)
        dfm.settings.compilation_cache = True
        assert cc._state["enabled_dir"] is None
        assert jax.config.jax_compilation_cache_dir in (None, "")
        shared.chmod(0o700)
        assert cc.enable() == shared
        assert jax.config.jax_compilation_cache_dir == str(shared)
    finally:
        dfm.settings.compilation_cache = False
        dfm.settings.compilation_cache_dir = before[1]
        monkeypatch.undo()
        dfm.settings.compilation_cache = before[0]
        if previous_dir is None:
            cc.disable()
