"""Shared pieces of the ``dfm`` command line: help formatting, paths, errors, I/O.

Every subcommand follows the same rules: check every path and option before any
work, never overwrite an existing output without ``--force``, never write over an
input, write each output atomically (:func:`diffbio_sc.io._atomic.atomic_path`),
and turn a user error into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .. import _interrupt
from .._validate import DfmInputError
from ..io._atomic import atomic_path, check_writable_target, committed

#: Errors our validation raises for bad input; the CLI reports them in one line.
USER_ERRORS = (DfmInputError, ValueError, TypeError, OSError)

#: Exit status after a runtime failure (a full disk, an I/O error, running out of
#: memory, an unexpected error): one line on stderr, nothing written.
EXIT_RUNTIME = 1
#: Exit status for bad input (argparse's own, so scripts see one code for both).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

#: ``errno`` values of an ``OSError`` that is a failure of the machine, not of the input.
RUNTIME_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.ENOMEM, errno.EROFS}
)
_MACHINE_FAILURES = {
    errno.EFBIG: "the output is larger than one file may be here (File too large: see "
    "`ulimit -f` or the file system's limit); write it elsewhere",
    errno.EIO: "input/output error (the disk or a network file system failed); check the "
    "storage and run again",
    errno.EROFS: "the file system is read-only; write the output elsewhere",
    errno.ENOMEM: "out of memory; use a smaller input (or --backed where the command has it)",
}
#: Errors of failed runs, kept alive until the process ends: releasing one can close a
#: half-written HDF5 file held by its traceback, which crashes HDF5 (a segfault after a
#: full disk); ``main`` ends the process with ``os._exit`` instead.
_FAILED: list[BaseException] = []
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "storagefull", "errno = 28")


class HelpFormatter(argparse.HelpFormatter):
    """Show each option's default when it has one (not for flags or unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default is None
            or default is False
            or default == argparse.SUPPRESS
        ):
            return text
        if isinstance(default, (list, tuple)):
            if not default:
                return text
            shown = " ".join(map(str, default))
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the epilog's line breaks (the examples)."""


def one_line(err: BaseException) -> str:
    """Return the error's message on one line (whitespace runs collapsed)."""
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.strerror and err.filename and str(err.filename) not in text:
        text = f"{text} ({err.filename})"
    return text or type(err).__name__


def command(
    sub, name: str, handler: Callable[[argparse.Namespace], int], *, help: str, description: str
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` run by ``handler``, with the house help format."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
    p.set_defaults(handler=handler, cli_parser=p)
    return p


#: The native model's default training budget and its time, for ``--help``
#: (``dfm.tl.pretrain`` / ``auto_epochs``: ceil(600 / steps per epoch), 5 to 40 epochs).
EPOCH_BUDGET_CELLS = (
    "chosen from the data's size: ceil(600 / (training cells / 64)) epochs, between 5 "
    "and 40, i.e. about 600 training steps of 64 cells from ~1,000 to ~7,700 cells, "
    "40 epochs below, 5 epochs above; a step takes about 0.3 CPU-s on a 2-core CPU: "
    "about 200 CPU-s for 1,200 cells, ~25 CPU-s per 1,000 cells at 5 epochs"
)
#: The same for the sequence encoder (``dfm.tl.pretrain_sequences``).
EPOCH_BUDGET_SEQUENCES = (
    "about 300 training steps of 32 sequences: 300 / (sequences / 32) epochs, between 2 "
    "and 100, so 2 epochs beyond ~4,800 sequences; a few minutes on a 2-core CPU for "
    "sequences of a few hundred bases, longer ones in proportion to their length"
)


class DeprecatedAlias(argparse.Action):
    """A hidden old name of an option: stores into the new one's ``dest`` and warns.

    Register with ``help=argparse.SUPPRESS`` and ``new="--new-name"``.
    """

    def __init__(self, option_strings, dest, *, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use {self.new} "
            "(same meaning).",
            file=sys.stderr,
            flush=True,
        )
        setattr(namespace, self.dest, values)


def add_common(parser: argparse.ArgumentParser, *, force: bool = True, quiet: bool = True) -> None:
    """Add the options every subcommand has (``--force``, ``--no-progress``, ``--quiet`` ...).

    ``quiet=False`` leaves out ``--quiet`` (for a command that always reports).
    """
    group = parser.add_argument_group("general options")
    if force:
        group.add_argument(
            "--force",
            action="store_true",
            help="overwrite existing outputs (by default an existing output is an error)",
        )
    group.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress bars (they are shown only when stderr is a terminal)",
    )
    if quiet:
        group.add_argument(
            "--quiet",
            action="store_true",
            help="print nothing on success (errors still go to stderr)",
        )
    group.add_argument(
        "--verbose",
        action="store_true",
        help="log each library step with its time (dfm.settings.verbosity = 'info')",
    )
    group.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show the full Python traceback instead of the one-line message",
    )


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``/``__context__``)."""
    out: list[BaseException] = []
    while err is not None and err not in out and len(out) < 20:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it came from) reports a full disk or quota.

    h5py and safetensors report it as text (``errno = 28``, ``StorageFull``), not as
    an ``OSError`` with ``errno.ENOSPC``.
    """
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            return True
    return False


def exit_status(err: BaseException) -> int:
    """Return the exit status for an error: :data:`EXIT_USAGE` or :data:`EXIT_RUNTIME`.

    Bad input (our checks' ``DfmInputError``, ``ValueError``, ``TypeError``, a
    missing or unwritable path) is a usage error; a full disk, an I/O error, running
    out of memory and any unexpected exception are runtime failures.
    """
    if is_disk_full(err) or isinstance(err, MemoryError):
        return EXIT_RUNTIME
    if isinstance(err, OSError) and err.errno in RUNTIME_ERRNOS:
        return EXIT_RUNTIME
    if isinstance(err, USER_ERRORS):
        return EXIT_USAGE
    return EXIT_RUNTIME


def _written_since(start: int) -> str:
    new = committed()[start:]
    if not new:
        return "no output was written (any previous one is intact)"
    return f"only {', '.join(str(p) for p in new)} was written (complete); nothing else"


def error_message(err: BaseException, parser: argparse.ArgumentParser | None = None) -> str:
    """Return the one-line message for ``err``, in the command line's words."""
    if is_disk_full(err):
        where = next(
            (str(e.filename) for e in _chain(err) if isinstance(e, OSError) and e.filename), None
        )
        text = "no space left on the device" + (f" writing {where!r}" if where else "")
        return f"{text}; free some space or write the output elsewhere"
    if isinstance(err, MemoryError):
        return "out of memory; use a smaller input (or --backed where the command has it)"
    if isinstance(err, OSError) and err.errno in _MACHINE_FAILURES:
        return _MACHINE_FAILURES[err.errno]
    text = one_line(err)
    if exit_status(err) == EXIT_RUNTIME and not isinstance(err, OSError):
        kind = getattr(err, "child_type", type(err).__name__)
        text = f"{kind}: {text} (rerun with --traceback for the details)"
    return cli_language(text, parser) if parser is not None else text


def _option_table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    table: dict[str, argparse.Action] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.help != argparse.SUPPRESS:
            table.setdefault(action.dest, action)
    return table


_VALUE = r"""(\{[^{}]*\}|'[^']*'|"[^"]*"|[^\s,;)]+)?"""


def cli_language(text: str, parser: argparse.ArgumentParser) -> str:
    """Rewrite the library's ``name=value`` advice as the command's options.

    ``layer='counts'`` becomes ``--layer counts``, ``contig_map={'MT': 'chrM'}``
    becomes ``--contig-map MT=chrM`` and ``allow_positional=True`` becomes
    ``--allow-positional``, for every option of ``parser`` (plus the names in its
    ``library_names`` default, for Python arguments the option is named
    differently).
    """
    table = _option_table(parser)
    aliases = dict(parser.get_default("library_names") or {})
    names = {**{d: a for d, a in table.items()}}
    for py_name, dest in aliases.items():
        if dest in table:
            names[py_name] = table[dest]
    if not names:
        return text

    def repl(match: re.Match) -> str:
        action = names[match.group(1)]
        flag = next(o for o in action.option_strings if o.startswith("--"))
        value = match.group(2)
        if action.nargs == 0:  # a flag: allow_positional=True -> --allow-positional
            return flag
        if value is None:
            return flag
        if value.startswith("{"):
            pairs = re.findall(r"""['"]([^'"]*)['"]\s*:\s*['"]([^'"]*)['"]""", value)
            if pairs:
                return f"{flag} " + " ".join(f"{k}={v}" for k, v in pairs)
            return f"{flag} NAME=OTHER_NAME"
        return f"{flag} {value.strip(chr(39) + chr(34))}"

    pattern = (
        r"(?<![\w.\[-])("
        + "|".join(map(re.escape, sorted(names, key=len)[::-1]))
        + r")=(?!=)"
        + _VALUE
    )
    return re.sub(pattern, repl, text)


def run(command: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run ``func(args)`` with the package settings the options ask for.

    Exit statuses (unless ``--traceback`` was passed, which re-raises): bad input
    ``dfm <command>: error: <message>`` on stderr and :data:`EXIT_USAGE` (2); a
    runtime failure (a full disk, an I/O error, an unexpected error) one line and
    :data:`EXIT_RUNTIME` (1); Ctrl-C :data:`EXIT_INTERRUPTED` (130), also when the
    interrupt was swallowed somewhere below (outputs are then never committed, see
    :mod:`diffbio_sc._interrupt`). The message says what, if anything, was
    written. The settings changed here (progress bars, verbosity) are restored.
    """
    from .._settings import settings

    saved = settings.progress_bar, settings.verbosity
    settings.progress_bar = not getattr(args, "no_progress", False)
    if getattr(args, "verbose", False):
        settings.verbosity = "info"
    start = len(committed())
    parser = getattr(args, "cli_parser", None)
    try:
        status = func(args)
        _interrupt.check()  # an interrupt that some library swallowed is still one
        return status
    except KeyboardInterrupt as err:
        if getattr(args, "traceback", False):
            raise
        _FAILED.append(err)
        print(f"dfm {command}: interrupted; {_written_since(start)}.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as err:
        if getattr(args, "traceback", False):
            raise
        _FAILED.append(err)
        status = exit_status(err)
        message = error_message(err, parser)
        if status == EXIT_RUNTIME:
            message = f"{message}; {_written_since(start)}"
        print(f"dfm {command}: error: {message}", file=sys.stderr, flush=True)
        return status
    finally:
        settings.progress_bar, settings.verbosity = saved


class Reporter:
    """Timestamped status lines on stdout (silent with ``--quiet``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quiet = bool(getattr(args, "quiet", False))
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {message}", flush=True)


# ---------------------------------------------------------------- options


def _whole_number(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """Argparse type: a whole number >= 1."""
    return _whole_number(text, 1, "a number")


def seed(text: str) -> int:
    """Argparse type: a seed, a whole number >= 0."""
    return _whole_number(text, 0, "a seed")


def given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """Return the flags (``--like-this``) of the options in ``names`` that were set."""
    parser = getattr(args, "cli_parser", None)
    table = _option_table(parser) if parser is not None else {}

    def flag(dest: str) -> str:
        action = table.get(dest)
        longs = [o for o in action.option_strings if o.startswith("--")] if action else []
        return longs[0] if longs else "--" + dest.replace("_", "-")

    return [flag(n) for n in names if getattr(args, n) not in (None, False)]


def collect(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """Return ``{name: value}`` of the options in ``names`` that were set."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


# ---------------------------------------------------------------- paths


def input_file(path: str, what: str) -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` naming it when it is not a file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"the {what} {path!r} does not exist; check the path (relative paths start "
            f"from {os.getcwd()!r})."
        )
    if p.is_dir():
        raise IsADirectoryError(f"the {what} {path!r} is a directory; pass a file.")
    return p


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def output_file(
    path: str,
    *,
    force: bool,
    inputs: Sequence[Path] = (),
    suffixes: Sequence[str] = (),
    what: str = "output file",
    option: str = "-o",
) -> Path:
    """Check an output file before any work is done; return it as a ``Path``.

    Refuses a wrong suffix, an input file as the output (inputs are never
    modified, even with ``--force``), an existing file without ``force``, a
    directory, and a missing or read-only parent directory.
    """
    p = Path(path)
    if suffixes and not p.name.lower().endswith(tuple(suffixes)):
        raise ValueError(
            f"{option} {path!r} must end in {' or '.join(suffixes)}; choose a file name "
            f"like out{suffixes[0]}."
        )
    for src in inputs:
        if _same(p, src) or p.resolve() == src.resolve():
            raise ValueError(
                f"{option} {path!r} is the input file; inputs are never modified. "
                "Write to a new file."
            )
    if p.is_dir():
        raise IsADirectoryError(f"{option} {path!r} is a directory; pass a file name.")
    if p.exists() and not force:
        raise FileExistsError(
            f"{option} {path!r} already exists; pass --force to overwrite it or choose "
            "another name."
        )
    check_writable_target(p, what=what)
    return p


def output_dir(path: str, *, force: bool, option: str) -> Path:
    """Check an output directory (written whole, atomically) before any work is done."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{option} {path!r} is a file; pass a directory name.")
    if p.exists() and not force:
        raise FileExistsError(
            f"{option} {path!r} already exists; pass --force to replace it or choose another name."
        )
    check_writable_target(p, what="output directory")
    return p


def report_dir(path: str, names: Sequence[str], *, force: bool, option: str = "-o") -> Path:
    """Check a folder that will receive the files ``names`` (created if missing).

    The folder's parent must exist; an existing file among ``names`` is an error
    without ``force``.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{option} {path!r} is a file; pass a folder for the results.")
    if p.is_dir():
        there = [n for n in names if (p / n).exists()]
        if there and not force:
            raise FileExistsError(
                f"{option} {path!r} already holds {', '.join(there)}; pass --force to "
                "overwrite them or choose another folder."
            )
        for n in names:
            check_writable_target(p / n, what="result file")
    else:
        check_writable_target(p, what="results folder")
    return p


# ---------------------------------------------------------------- reading / writing


def read_h5ad(path: Path, *, backed: bool = False):
    """Read an ``.h5ad`` file, with our message for a file that is not one.

    ``backed=True`` opens it read-only (``backed='r'``): the expression matrix
    stays on disk and is streamed in chunks by the functions that support it; the
    file cannot be written through this object.
    """
    import anndata as ad

    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except (OSError, KeyError, ValueError) as err:
        raise DfmInputError(
            f"cannot read {str(path)!r} as an .h5ad file ({one_line(err)}). Pass an "
            "AnnData written with adata.write_h5ad."
        ) from err


def isolated(write: Callable[[], object]) -> None:
    """Run ``write()`` (an HDF5 write) in a forked child process; re-raise its error here.

    When a write fails half-way (a full disk, a file-size limit), HDF5 can crash the
    whole process with a segfault while h5py closes the file, before any cleanup
    runs. In a child, only the child dies: this process then removes the temporary
    file and reports the failure. The error is passed back as its type name, errno
    and message (``OSError`` keeps its errno; a ``KeyboardInterrupt`` is re-raised
    as such; anything else becomes a ``RuntimeError`` naming the original type).
    Only on Linux (elsewhere forking a process with system frameworks loaded is not
    safe, and Windows has no fork), ``write()`` runs in this process otherwise.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        write()
        return
    import json
    import signal
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    child_stderr = tempfile.TemporaryFile()
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # JAX warns at every fork that its threads could deadlock the child; the child
        # only writes HDF5 (JAX arrays are made NumPy arrays before, see write_h5ad)
        warnings.filterwarnings(
            "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning
        )
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage cannot follow it
        code = 0
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child at once
            os.dup2(child_stderr.fileno(), 2)  # h5py's noise while it fails: not for the user
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 (also a replaced sys.stderr)
            write()
        except BaseException as err:
            code = 1
            # h5py replaces the write error by one of its own while closing the file:
            # report the first error of the chain that has an errno
            first = next(
                (e for e in _chain(err) if isinstance(getattr(e, "errno", None), int)), err
            )
            payload = {
                "type": type(first).__name__,
                "errno": getattr(first, "errno", None),
                "message": str(first),
            }
            with contextlib.suppress(BaseException):
                os.write(write_fd, json.dumps(payload).encode()[:60_000])
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    try:
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    except BaseException:  # Ctrl-C while the child writes: stop it, then go on stopping
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_fd)
    child_stderr.seek(0)
    noise = child_stderr.read().decode(errors="replace")
    child_stderr.close()
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        if noise:  # warnings of a successful write
            sys.stderr.write(noise)
            sys.stderr.flush()
        return
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT:
        raise KeyboardInterrupt
    try:
        info = json.loads(b"".join(chunks).decode() or "{}")
    except ValueError:
        info = {}
    kind, message, err_no = info.get("type"), info.get("message", ""), info.get("errno")
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if isinstance(err_no, int):
        raise OSError(err_no, message)
    if kind is None:  # killed: a crash in the HDF5 library (e.g. closing a file on a full disk)
        found = re.search(r"errno = (\d+), error message = '([^']*)'", noise)
        if found:  # the write failure HDF5 reported before it crashed
            raise OSError(int(found.group(1)), found.group(2))
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}"
        failure = RuntimeError(
            f"the HDF5 writer crashed ({how}), most often because the disk is full or the "
            "file too large; check the free space and run again"
        )
        failure.child_type = "crash"
        raise failure
    failure = RuntimeError(message)
    failure.child_type = kind  # the type of the error in the child, for the message
    raise failure


def _numpy_arrays(adata) -> None:
    """Turn JAX arrays in ``adata``'s array slots into NumPy arrays (in place).

    The forked writer (:func:`isolated`) must not call into JAX, whose threads do not
    exist in the child.
    """
    jax = sys.modules.get("jax")
    if jax is None:
        return
    import numpy as np

    for slot in ("obsm", "varm", "layers", "obsp", "varp"):
        mapping = getattr(adata, slot, None)
        if mapping is None:
            continue
        for key in list(mapping.keys()):
            if isinstance(mapping[key], jax.Array):
                mapping[key] = np.asarray(mapping[key])


def write_h5ad(adata, path: Path) -> None:
    """Write ``adata`` to ``path`` atomically (the previous file survives a failure).

    A backed AnnData is written to a new file too: anndata copies its matrix from
    the (read-only) input file into the temporary file. The write runs in a child
    process (:func:`isolated`), so that a crash of HDF5 on a full disk is reported.
    """
    _numpy_arrays(adata)
    with atomic_path(path, what="output AnnData") as tmp:
        if getattr(adata, "isbacked", False):
            tmp.unlink()  # anndata appends to an existing file when the AnnData is backed
        isolated(lambda: adata.write_h5ad(tmp))


@contextlib.contextmanager
def quiet_mudata() -> Iterator[None]:
    """Silence mudata's notice about its future ``pull_on_update`` default (not ours to act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pull_on_update.*", category=FutureWarning)
        yield


def write_h5mu(mdata, path: Path) -> None:
    """Write a MuData to ``path`` atomically."""
    for mod in getattr(mdata, "mod", {}).values():
        _numpy_arrays(mod)
    _numpy_arrays(mdata)
    with atomic_path(path, what="output MuData") as tmp:
        isolated(lambda: mdata.write(tmp))


def parse_mapping(items: Sequence[str] | None, option: str) -> dict[str, str] | None:
    """Parse ``A=B`` pairs given on the command line into a dict (``None`` when absent)."""
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"{option} {item!r} is not of the form NAME=OTHER_NAME (e.g. {option} MT=chrM)."
            )
        out[key] = value
    return out


def read_list(values: Sequence[str] | None, option: str) -> list[str] | None:
    """Names from the command line; ``@FILE`` reads one name per line from FILE."""
    if values is None:
        return None
    out: list[str] = []
    for v in values:
        if v.startswith("@"):
            p = input_file(v[1:], f"{option} list file")
            out.extend(line.strip() for line in p.read_text().splitlines() if line.strip())
        else:
            out.append(v)
    if not out:
        raise ValueError(f"{option} was given no names.")
    return out
