"""The ``dfm`` command line: one subcommand per job of the library.

``dfm demo`` runs the main job on bundled data; ``tokenize``, ``embed``,
``load-embeddings`` and ``benchmark`` work on ``.h5ad`` files of cells;
``embed-sequences`` and ``embed-genes`` write ``.h5mu`` files. Run
``dfm <command> --help`` for each command's options, or read ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import os
import sys

# Only the standard library before main() installs the Ctrl-C handler: the rest
# (NumPy, the subcommands) is imported inside it.
from .. import _interrupt

__all__ = ["main", "build_parser"]

_EPILOG = """\
examples:
  dfm tokenize cells.h5ad -o tokens.h5ad
  dfm embed cells.h5ad -o embedded.h5ad --batch-key batch --save-model my_model
  dfm embed new_cells.h5ad -o new_embedded.h5ad --model my_model
  dfm load-embeddings cells.h5ad geneformer_emb.csv -o with_gf.h5ad --source geneformer
  dfm benchmark embedded.h5ad --use-rep X_dfm --batch-key batch --label-key cell_type -o report
  dfm embed-sequences promoters.fa -o promoters.h5mu --pretrain-epochs 3
  dfm embed-genes --reference ref.fa --gtf genes.gtf --vcf calls.vcf -o genetics.h5mu

exit status:
  0    success
  1    runtime failure (a full disk, an I/O error, out of memory, an unexpected
       error): one line on stderr, nothing written (--traceback shows the details)
  2    bad input or usage (a missing file, a wrong option, an existing output
       without --force): one line on stderr, nothing written
  130  interrupted (Ctrl-C): nothing written, temporary files removed

Outputs are written atomically (a failure or Ctrl-C leaves any previous output
intact), with the permissions your umask gives, and never overwrite an existing
file or folder without --force. Progress bars are shown only on a terminal.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the ``dfm`` argument parser with every subcommand registered."""
    from .._version import __version__
    from . import _benchmark, _cells, _demo, _sequences
    from ._common import RawHelpFormatter

    parser = argparse.ArgumentParser(
        prog="dfm",
        description="diffbio_sc command line: foundation-model embeddings for AnnData/MuData.",
        epilog=_EPILOG,
        formatter_class=RawHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"diffbio_sc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _demo.add_parser(sub)
    _cells.add_parsers(sub)
    _benchmark.add_parser(sub)
    _sequences.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dfm`` command; returns the exit status.

    0 on success, 1 after a runtime failure (a full disk ...), 2 for bad input (a
    one-line message on stderr; argparse's own usage errors have the same status),
    130 after Ctrl-C, 1 when no command is given. Ctrl-C is handled from the start
    (:mod:`diffbio_sc._interrupt`), wherever it lands.

    Called as the program (``argv`` is ``None``: the ``dfm`` script, ``python -m
    diffbio_sc._cli``), a failed or interrupted run ends the process at once with
    ``os._exit`` after flushing stdout and stderr, so that the teardown of
    half-finished JAX or HDF5 state cannot crash it (a segfault instead of the
    status); the outputs and their temporary files are settled before that.
    """
    with _interrupt.handling():
        try:
            status = _main(argv)
        except KeyboardInterrupt:  # before a command took over (parsing, imports)
            print("dfm: interrupted; no output was written.", file=sys.stderr, flush=True)
            status = 130
    if argv is None and status in (1, 130):  # EXIT_RUNTIME, EXIT_INTERRUPTED
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)
    return status


def _main(argv: list[str] | None) -> int:
    from ._common import run

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse printed them
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command is None:
        parser.print_help()
        return 1
    return run(args.command, args.handler, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
