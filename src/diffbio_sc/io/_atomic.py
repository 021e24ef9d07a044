"""Atomic file and directory writes.

Every file diffbio_sc writes goes through here: the content is written to a
temporary name beside the target, flushed and fsynced, then renamed over the
target. A crash, a full disk or an exception at any point leaves the previous
file (or model directory) intact and no partial file under the target name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "check_writable_target", "fsync_dir"]


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
        os.replace(tmp, target)
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
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
