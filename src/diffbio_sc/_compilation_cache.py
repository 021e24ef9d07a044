"""A persistent JAX compilation cache, on by default, in the user's cache directory.

A fresh process that embeds cells compiles one XLA program per bucket shape (a few
seconds each on a CPU). With JAX's persistent compilation cache, the second process
on the same shapes reads the compiled programs from disk instead. This module turns
that cache on the first time a JAX-using part of the package is imported
(``dfm.ops``, ``dfm.models``), unless:

* ``dfm.settings.compilation_cache`` is ``False`` (or the environment variable
  ``DFM_COMPILATION_CACHE=0``), or
* the user already chose a cache for JAX (``jax_compilation_cache_dir`` set, by
  ``jax.config.update`` or ``JAX_COMPILATION_CACHE_DIR``): theirs is left alone.

Where: ``dfm.settings.compilation_cache_dir``, else ``$DFM_CACHE_DIR/jax``, else
``$XDG_CACHE_HOME/diffbio_sc/jax`` (``~/.cache/diffbio_sc/jax``), in a sub-folder
per JAX version, machine type and CPU feature set, so a home directory shared by
nodes of different CPUs never serves one node's programs to another.

Safety. The cache holds executable code, so its folder is created private to the
user (mode 0700) and a folder that others can write to is refused with a warning
(the cache is then off). Two processes may share it: the cache is given a size
limit (2 GiB, least recently used entries evicted), which makes JAX guard every
read and write with a file lock (``filelock``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import stat
import sys
import threading
from pathlib import Path

log = logging.getLogger("diffbio_sc")

#: Size limit of the cache in bytes; a limit (not -1) turns on JAX's file locks.
MAX_SIZE_BYTES = 2 * 1024**3
#: Programs that compile faster than this are not written (JAX's default is 1 s;
#: the bucket programs of a small model compile in 0.2-2 s on a CPU).
MIN_COMPILE_SECONDS = 0.2

_lock = threading.Lock()
_state: dict[str, object] = {"enabled_dir": None}


def _env_disabled() -> bool:
    return os.environ.get("DFM_COMPILATION_CACHE", "").strip().lower() in {
        "0",
        "false",
        "off",
        "no",
    }


def _cpu_fingerprint() -> str:
    """Return a short digest of the CPU's feature flags (x86 ``flags``, ARM ``Features``)."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        flags = platform.processor()
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


def default_base_dir() -> Path:
    """Return the cache folder before the per-version, per-machine sub-folder."""
    base = os.environ.get("DFM_CACHE_DIR")
    if base:
        return Path(base).expanduser() / "jax"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "diffbio_sc" / "jax"


def cache_dir(base: str | os.PathLike | None = None) -> Path:
    """Return the folder the compiled programs go to (created by :func:`enable`)."""
    import jax

    root = Path(base).expanduser() if base is not None else default_base_dir()
    tag = f"jax{jax.__version__}-{platform.machine() or 'unknown'}-{_cpu_fingerprint()}"
    return root / tag


def _private_dir(path: Path) -> bool:
    """Create ``path`` (0700) or check an existing one is the user's and not writable by others."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as err:
        log.warning("compilation cache off: cannot create %s (%s)", path, err)
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        log.warning("compilation cache off: %s belongs to another user", path)
        return False
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning(
            "compilation cache off: %s is writable by other users, and a compilation cache "
            "runs the code it holds; make it private (chmod 700) or set "
            "dfm.settings.compilation_cache_dir",
            path,
        )
        return False
    return True


def enable() -> Path | None:
    """Turn the persistent compilation cache on for this process (idempotent).

    Returns the folder in use by this package, or ``None`` when the cache is off
    (disabled by the settings, a folder chosen by the user, or a folder that
    cannot be used safely).
    """
    from ._settings import settings

    if not settings.compilation_cache or _env_disabled():
        return None
    with _lock:
        if _state["enabled_dir"] is not None:
            return _state["enabled_dir"]  # type: ignore[return-value]
        try:
            import jax
            from jax.experimental.compilation_cache import compilation_cache as cc
        except Exception:  # pragma: no cover - jax is a dependency
            return None
        if jax.config.jax_compilation_cache_dir:  # the user's own cache: leave it alone
            return None
        try:
            import filelock  # noqa: F401  (JAX locks the cache with it once a size limit is set)
        except ImportError:  # pragma: no cover - a dependency
            log.warning("compilation cache off: the 'filelock' package is missing")
            return None
        path = cache_dir(settings.compilation_cache_dir)
        if not _private_dir(path):
            return None
        jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
        if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default
            jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
        cc.set_cache_dir(str(path))
        # If this process compiled something before the package was imported, JAX has
        # already decided "no cache"; make it look again at the next compilation.
        cc.reset_cache()
        _state["enabled_dir"] = path
        log.debug("JAX compilation cache: %s", path)
        return path


def disable() -> None:
    """Stop using the package's compilation cache in this process (a user's own cache stays)."""
    with _lock:
        if _state["enabled_dir"] is None or "jax" not in sys.modules:
            _state["enabled_dir"] = None
            return
        import jax
        from jax.experimental.compilation_cache import compilation_cache as cc

        if jax.config.jax_compilation_cache_dir == str(_state["enabled_dir"]):
            jax.config.update("jax_compilation_cache_dir", None)
            cc.reset_cache()
        _state["enabled_dir"] = None
