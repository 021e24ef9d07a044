"""Atomic file and directory writes.

Every file diffbio_sc writes goes through here: the content is written to a
temporary name beside the target, flushed and fsynced, then renamed over the
target. A crash, a full disk or an exception at any point leaves the previous
file (or model directory) intact and no partial file under the target name.

Permissions: a new file gets ``0o666 & ~umask`` and a new directory
``0o777 & ~umask``, as a plain ``open(path, "w")`` or ``os.mkdir`` would give
(the temporary names are created private, ``0o600`` / ``0o700``, and opened up
only when committed); a replaced file or directory keeps the mode it had.

Once Ctrl-C was pressed (:func:`diffbio_sc._interrupt.pending`), nothing is
committed: the block raises ``KeyboardInterrupt`` instead of renaming.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import _interrupt

__all__ = [
    "atomic_path",
    "atomic_dir",
    "check_writable_target",
    "fsync_dir",
    "current_umask",
    "committed",
]

_umask_lock = threading.Lock()
#: Targets committed by this process, in order (the command line reports them).
_COMMITTED: list[Path] = []


def committed() -> list[Path]:
    """Return the targets committed so far by this process (oldest first)."""
    return list(_COMMITTED)


def current_umask() -> int:
    """Return the process umask without changing it, even briefly, where possible.

    Linux reports it in ``/proc/self/status``; elsewhere it is read with an
    ``os.umask`` round trip under a lock (other threads creating files in that
    instant would see the umask ``0o077``, never a looser one).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _final_mode(target: Path, *, directory: bool) -> int:
    """Mode of the committed target: the replaced one's, else the umask's default."""
    try:
        st = os.stat(target)
    except OSError:
        return (0o777 if directory else 0o666) & ~current_umask()
    return stat.S_IMODE(st.st_mode)


def _commit_check(target: Path) -> None:
    if _interrupt.pending():
        raise KeyboardInterrupt(f"interrupted before writing {str(target)!r}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry to disk (best effort where the OS does not allow it)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable_target(path: str | os.PathLike, *, what: str = "output file") -> Path:
    """Check, before any work, that ``path`` can be written; return it as a ``Path``.

    Raises ``FileNotFoundError`` when the parent directory does not exist,
    ``IsADirectoryError`` when a file is expected and a directory is there, and
    ``PermissionError`` when the directory is not writable, each naming the path
    and the fix.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(
            f"Cannot write the {what} {str(target)!r}: the directory {str(parent)!r} does "
            "not exist. Create it first (e.g. os.makedirs) or choose another path."
        )
    if not parent.is_dir():
        raise NotADirectoryError(
            f"Cannot write the {what} {str(target)!r}: {str(parent)!r} is not a directory."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES,
            f"Cannot write the {what} {str(target)!r}: the directory {str(parent)!r} is "
            "not writable. Choose a writable location",
            str(parent),
        )
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, what: str = "output file") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    Use as::

        with atomic_path(target) as tmp:
            write_something(tmp)

    The temporary file keeps the target's suffix (some writers pick the format from
    it). On any exception the temporary file is removed and ``path`` is untouched.
    """
    target = check_writable_target(path, what=what)
    if target.is_dir():
        raise IsADirectoryError(
            f"Cannot write the {what} {str(target)!r}: a directory is there. "
            "Remove it or choose a file name."
        )
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.",
        suffix=".tmp" + "".join(target.suffixes[-1:]),
        dir=target.parent if str(target.parent) else ".",
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, _final_mode(target, directory=tmp.is_dir()))
        _commit_check(target)
        os.replace(tmp, target)
        _COMMITTED.append(target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, what: str = "output directory") -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success swap it into place.

    Every file written inside is fsynced before the swap. An existing directory at
    ``path`` is moved aside, the new one renamed in, and only then is the old one
    deleted, so at every instant either the old or the new complete directory is
    under ``path`` (a crash between the two renames leaves the old one under a
    ``.<name>.old-*`` name beside it, never a partial one under ``path``).
    """
    target = check_writable_target(path, what=what)
    if target.exists() and not target.is_dir():
        raise FileExistsError(
            f"Cannot write the {what} {str(target)!r}: a file is there, not a directory. "
            "Remove it or choose another path."
        )
    parent = target.parent if str(target.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    old: Path | None = None
    try:
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                _fsync_file(Path(root) / name)
            fsync_dir(root)
        os.chmod(tmp, _final_mode(target, directory=True))
        _commit_check(target)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            old.rmdir()
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None and not target.exists():
                os.replace(old, target)
                old = None
            raise
        _COMMITTED.append(target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        # what was committed inside the discarded directory was never written
        _COMMITTED[:] = [p for p in _COMMITTED if tmp not in p.parents]
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
