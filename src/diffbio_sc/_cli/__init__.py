"""The ``dfm`` command line: one subcommand per job of the library.

``dfm demo`` runs the main job on bundled data; ``tokenize``, ``embed``,
``load-embeddings`` and ``benchmark`` work on ``.h5ad`` files of cells;
``embed-sequences`` and ``embed-genes`` write ``.h5mu`` files. Run
``dfm <command> --help`` for each command's options, or read ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import sys

from ._common import RawHelpFormatter, run

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

Bad input exits with status 2 and a one-line message on stderr; outputs are
written atomically and never overwrite an existing file without --force.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the ``dfm`` argument parser with every subcommand registered."""
    from .._version import __version__
    from . import _benchmark, _cells, _demo, _sequences

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

    0 on success, 2 for bad input (a one-line message on stderr; argparse's own
    usage errors have the same status), 130 after Ctrl-C, 1 when no command is given.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: argparse printed them
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command is None:
        parser.print_help()
        return 1
    if args.command == "demo":  # unchanged behaviour: its own messages and exit
        return args.handler(args)
    return run(args.command, args.handler, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
